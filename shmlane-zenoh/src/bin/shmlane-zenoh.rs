//! `shmlane-zenoh`: carries a shmlane ring to another host over zenoh, and measures what
//! that costs beside zenoh alone.
#![deny(missing_docs)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use shmlane::spsc::{Consumer, Producer};
use shmlane::Options;
use shmlane_zenoh::{config, In, Out};
use zenoh::qos::CongestionControl;
use zenoh::Wait;

#[derive(Parser)]
#[command(
    name = "shmlane-zenoh",
    version,
    about = "Carry a shmlane ring to another host and back over zenoh"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Drain the ring NAME (waiting for it to appear) and publish each message on KEY.
    /// Exits 0 after the ring's producer finished and the end marker went out.
    Out(OutArgs),
    /// Feed the ring NAME (created, or opened if it exists) from KEY, until the far `out`
    /// sends its end marker. Gaps in the sequence are reported on stderr.
    In(InArgs),
    /// Measure ring -> zenoh -> ring over loopback beside zenoh put/subscribe alone.
    Bench(BenchArgs),
}

/// Where the zenoh session listens and connects. At least one of them.
#[derive(Args)]
struct Net {
    /// A zenoh endpoint to listen on, e.g. tcp/192.168.1.10:7447 or
    /// unixsock-stream//tmp/demo.sock (repeatable). Nothing is listened on by default.
    #[arg(long, value_name = "ENDPOINT")]
    listen: Vec<String>,
    /// A zenoh endpoint to connect to (repeatable); retried until the far side is up.
    #[arg(long, value_name = "ENDPOINT")]
    connect: Vec<String>,
}

#[derive(Args)]
struct OutArgs {
    /// The local ring to drain (`/name` or `name`).
    #[arg(long, value_name = "NAME")]
    ring: String,
    /// The zenoh key to publish on.
    #[arg(long)]
    key: String,
    #[command(flatten)]
    net: Net,
    /// zenoh's lossy mode: drop samples when the far side is slow instead of holding
    /// the local producer back (the far `in` counts the holes).
    #[arg(long)]
    drop: bool,
    /// How long to wait for the ring to appear, in seconds (0: forever).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    wait_for: f64,
}

#[derive(Args)]
struct InArgs {
    /// The local ring to feed (`/name` or `name`).
    #[arg(long, value_name = "NAME")]
    ring: String,
    /// The zenoh key to subscribe to.
    #[arg(long)]
    key: String,
    #[command(flatten)]
    net: Net,
    /// Ring capacity in bytes when `in` creates it (default 1M; K, M, G suffixes are
    /// powers of 1024).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    capacity: Option<usize>,
    /// Largest message when `in` creates the ring (default: 64K or capacity / 2 - 8); must
    /// hold the largest message of the far ring.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    max_message: Option<usize>,
}

#[derive(Args)]
struct BenchArgs {
    /// Message sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "64,4096", value_parser = parse_size)]
    sizes: Vec<usize>,
    /// Messages per run (default: 1,000,000 at 64 B, fewer for larger ones: ~400 MB).
    #[arg(long)]
    messages: Option<u64>,
    /// Runs of each; the best is shown.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Over a unix socket in a temp dir instead of TCP on 127.0.0.1.
    #[arg(long)]
    unix: bool,
    /// How the bench's own producer (into ring /a) and consumer (of ring /b) wait: block
    /// (the default, as most applications would), yield or spin.
    #[arg(long, default_value = "block")]
    wait: shmlane::Wait,
    /// Run only one of the two paths (`zenoh` or `bridge`), e.g. to profile it alone.
    #[arg(long, value_name = "PATH")]
    only: Option<Only>,
}

/// The path `bench --only` runs.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    /// zenoh put/subscribe alone.
    Zenoh,
    /// ring -> out -> zenoh -> in -> ring.
    Bridge,
}

/// `4096`, `64K`, `1M`, `2G` (powers of 1024).
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1usize),
        Some((i, _)) => {
            let m = match t[i..].to_ascii_uppercase().as_str() {
                "K" | "KIB" => 1 << 10,
                "M" | "MIB" => 1 << 20,
                "G" | "GIB" => 1 << 30,
                u => return Err(format!("unknown size unit {u:?} (K, M or G)")),
            };
            (&t[..i], m)
        }
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("not a size: {s:?}"))
}

/// `/name` as given; a bare `name` is `/name` (as `shmlane` does).
fn normalize(name: &str) -> String {
    if name.starts_with('/') || name.starts_with("shmid:") || name.is_empty() {
        name.to_string()
    } else {
        format!("/{name}")
    }
}

fn fail(cmd: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("shmlane-zenoh {cmd}: {e}");
    ExitCode::FAILURE
}

fn open(cmd: &str, net: &Net) -> Result<zenoh::Session, ExitCode> {
    if net.listen.is_empty() && net.connect.is_empty() {
        return Err(fail(
            cmd,
            "give --listen ENDPOINT or --connect ENDPOINT (e.g. --listen tcp/0.0.0.0:7447 on one side, --connect tcp/HOST:7447 on the other)",
        ));
    }
    let cfg = config(&net.listen, &net.connect).map_err(|e| fail(cmd, e))?;
    zenoh::open(cfg).wait().map_err(|e| fail(cmd, e))
}

fn run_out(a: OutArgs) -> ExitCode {
    let wait_for = match Duration::try_from_secs_f64(a.wait_for) {
        Ok(d) if d.is_zero() => None,
        Ok(d) => Some(d),
        Err(_) => return fail("out", "--wait-for takes a number of seconds >= 0"),
    };
    let session = match open("out", &a.net) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let ring = normalize(&a.ring);
    let r = Out::new(&session, &ring, &a.key)
        .drop_when_congested(a.drop)
        .ring_timeout(wait_for)
        .run();
    let code = match r {
        Ok(s) => {
            let line = format!(
                "shmlane-zenoh out: {} messages ({} bytes) from {ring} to {}, epoch {:016x}{}{}",
                s.messages,
                s.bytes,
                a.key,
                s.epoch,
                if s.producer_died {
                    "; the ring's producer died (the end marker says so)"
                } else {
                    ""
                },
                if s.end_acknowledged {
                    ""
                } else {
                    "; warning: the far `in` did not acknowledge the end marker within 10 s"
                }
            );
            eprintln!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => fail("out", e),
    };
    let _ = session.close().wait();
    code
}

fn run_in(a: InArgs) -> ExitCode {
    let session = match open("in", &a.net) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let ring = normalize(&a.ring);
    let mut b = In::new(&session, &ring, &a.key);
    if let Some(c) = a.capacity {
        b = b.capacity(c);
    }
    if let Some(m) = a.max_message {
        b = b.max_message(m);
    }
    let code = match b.run() {
        Ok(s) => {
            let line = format!(
                "shmlane-zenoh in: {} messages ({} bytes) from {} into {ring}; gaps: {} ({} messages known missing, {} `out` restarts), {} stale, {} malformed",
                s.messages, s.bytes, a.key, s.gaps, s.missing, s.restarts, s.stale, s.malformed
            );
            eprintln!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => fail("in", e),
    };
    let _ = session.close().wait();
    code
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The CPU time this process has used so far (all its threads, also those that ended), in
/// seconds, from /proc/self/stat (clock ticks, 1/100 s on Linux); None if unreadable.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// One measured run.
#[derive(Clone, Copy)]
struct Measured {
    /// Wall seconds for the `n` messages.
    secs: f64,
    /// CPU seconds the whole process used meanwhile (every thread: zenoh's, the bridge's,
    /// the bench's producer and consumer).
    cpu: Option<f64>,
}

type Run = Result<Measured, String>;

/// Measures `f` (which returns the wall seconds of its timed part) with the CPU time of
/// the whole call.
fn measured(f: impl FnOnce() -> Result<f64, String>) -> Run {
    let c0 = cpu_seconds();
    let secs = f()?;
    let cpu = cpu_seconds().zip(c0).map(|(c1, c0)| c1 - c0);
    Ok(Measured { secs, cpu })
}

/// zenoh alone: a publisher on `a` puts `n` payloads (each with the same 24-byte
/// attachment the bridge sends when `attachment`); a subscriber on `b` counts them. The
/// publisher is declared exactly as `out` declares its own (congestion control `Block`,
/// zenoh's defaults otherwise), and each payload is a fresh `Vec` copied from the body,
/// as `out` copies each message out of its ring.
fn zenoh_alone(
    a: &zenoh::Session,
    b: &zenoh::Session,
    key: &str,
    size: usize,
    n: u64,
    attachment: bool,
) -> Result<f64, String> {
    let got = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let g2 = Arc::clone(&got);
    let sub = b
        .declare_subscriber(key.to_string())
        .callback(move |_s| {
            if g2.fetch_add(1, Ordering::Relaxed) + 1 == n + 1 {
                let _ = done_tx.try_send(());
            }
        })
        .wait()
        .map_err(|e| e.to_string())?;
    let publisher = a
        .declare_publisher(key.to_string())
        .congestion_control(CongestionControl::Block)
        .wait()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    while !publisher
        .matching_status()
        .wait()
        .map_err(|e| e.to_string())?
        .matching()
    {
        if start.elapsed() > Duration::from_secs(10) {
            return Err("the subscriber did not match within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let body: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let put = |seq: u64| {
        let p = publisher.put(body[..].to_vec());
        let p = if attachment {
            let h = shmlane_zenoh::wire::Header {
                kind: shmlane_zenoh::wire::Kind::Data { tag: 0 },
                epoch: 1,
                seq,
            };
            p.attachment(h.encode())
        } else {
            p
        };
        p.wait().map_err(|e| e.to_string())
    };
    // One warm-up sample, then the clock runs for n.
    put(0)?;
    while got.load(Ordering::Relaxed) < 1 {
        std::thread::yield_now();
    }
    let start = Instant::now();
    for seq in 1..=n {
        put(seq)?;
    }
    done_rx
        .recv_timeout(Duration::from_secs(120))
        .map_err(|_| "the subscriber did not get every sample within 120 s")?;
    let t = start.elapsed().as_secs_f64();
    drop(publisher);
    sub.undeclare().wait().map_err(|e| e.to_string())?;
    Ok(t)
}

/// The bridge: a producer thread sends `n` messages into ring /a; `Out` on session `a`
/// publishes them; `In` on session `b` writes them into ring /b; a consumer thread reads
/// them. The clock runs from the first of the `n` to the consumer's Disconnected.
fn bridged(
    a: &zenoh::Session,
    b: &zenoh::Session,
    key: &str,
    size: usize,
    n: u64,
    wait: shmlane::Wait,
) -> Result<f64, String> {
    static ROUND: AtomicU64 = AtomicU64::new(0);
    let r = ROUND.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let ra = format!("/shmlane-zbench-a-{pid}-{r}");
    let rb = format!("/shmlane-zbench-b-{pid}-{r}");
    let opts = Options::new()
        .capacity(4 << 20)
        .max_message(64 << 10)
        .wait(wait);
    let body: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut tx = Producer::create(&ra, &opts).map_err(|e| e.to_string())?;
    let inb = In::new(b, &rb, key).options(opts.clone());
    // Named threads, so a profile (`perf report --sort comm`) tells them apart; this
    // (main) thread is the producer.
    let spawn = |name: &str| std::thread::Builder::new().name(name.to_string());
    let in_thread = spawn("bench-in")
        .spawn(move || inb.run())
        .map_err(|e| e.to_string())?;
    let out = Out::new(a, &ra, key);
    let out_thread = spawn("bench-out")
        .spawn(move || out.run())
        .map_err(|e| e.to_string())?;
    let rb2 = rb.clone();
    let (first_tx, first_rx) = mpsc::sync_channel(1);
    let consumer = spawn("bench-consumer")
        .spawn(move || -> Result<(u64, Instant), String> {
            let mut rx =
                Consumer::open_timeout(&rb2, Duration::from_secs(30)).map_err(|e| e.to_string())?;
            let mut count = 0u64;
            loop {
                match rx.recv() {
                    Ok(m) => {
                        std::hint::black_box(&m[..]);
                        count += 1;
                        if count == 1 {
                            let _ = first_tx.send(());
                        }
                    }
                    Err(shmlane::Error::Disconnected) => return Ok((count, Instant::now())),
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .map_err(|e| e.to_string())?;
    // Warm-up: one message through the whole path, then the clock runs for n.
    tx.send(&body).map_err(|e| e.to_string())?;
    first_rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "the warm-up message did not come through within 30 s".to_string())?;
    let start = Instant::now();
    for _ in 0..n {
        tx.send(&body).map_err(|e| e.to_string())?;
    }
    drop(tx);
    let (count, end) = consumer.join().map_err(|_| "consumer panicked")??;
    let out = out_thread.join().map_err(|_| "out panicked")?;
    let inn = in_thread.join().map_err(|_| "in panicked")?;
    let _ = shmlane::inspect::remove(&ra, false);
    let _ = shmlane::inspect::remove(&rb, false);
    out.map_err(|e| e.to_string())?;
    let s = inn.map_err(|e| e.to_string())?;
    if count != n + 1 || s.gaps != 0 {
        return Err(format!(
            "{count} of {} messages arrived, {} gaps",
            n + 1,
            s.gaps
        ));
    }
    Ok(end.duration_since(start).as_secs_f64())
}

fn run_bench(a: BenchArgs) -> ExitCode {
    let dir = std::env::temp_dir().join(format!("shmlane-zbench-{}", std::process::id()));
    let endpoint = if a.unix {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return fail("bench", e);
        }
        format!("unixsock-stream/{}", dir.join("z.sock").display())
    } else {
        match free_port() {
            Ok(p) => format!("tcp/127.0.0.1:{p}"),
            Err(e) => return fail("bench", e),
        }
    };
    let r = (|| -> Result<(), String> {
        let sa =
            zenoh::open(config(std::slice::from_ref(&endpoint), &[]).map_err(|e| e.to_string())?)
                .wait()
                .map_err(|e| e.to_string())?;
        let sb =
            zenoh::open(config(&[], std::slice::from_ref(&endpoint)).map_err(|e| e.to_string())?)
                .wait()
                .map_err(|e| e.to_string())?;
        println!(
            "ring -> zenoh -> ring beside zenoh put/subscribe alone (and with the bridge's 24-byte attachment: +att), over {endpoint}, {} rounds (best shown; cpu: least CPU time of all threads per message, ns, spinning waits included; cost: the bridge's time over zenoh alone's, and over zenoh with the attachment's), rings 4 MiB wait={:?}, ZENOH_RUNTIME={}",
            a.rounds,
            a.wait,
            std::env::var("ZENOH_RUNTIME").unwrap_or_else(|_| "(zenoh's default)".into())
        );
        println!(
            "{:>6} {:>8} | {:>11} {:>7} {:>6} | {:>11} {:>6} | {:>11} {:>7} {:>6} | {:>7} {:>7}",
            "size",
            "messages",
            "zenoh msg/s",
            "MB/s",
            "cpu",
            "+att msg/s",
            "cpu",
            "bridge msg/s",
            "MB/s",
            "cpu",
            "cost",
            "vs +att"
        );
        for (i, &size) in a.sizes.iter().enumerate() {
            if size == 0 || size > 64 << 10 {
                return Err(format!("size {size}: 1 to 64K bytes"));
            }
            let n = a
                .messages
                .unwrap_or_else(|| (400_000_000 / size as u64).clamp(10_000, 1_000_000));
            // Best wall time and least CPU per path: zenoh alone, zenoh with the
            // attachment, the bridge.
            let mut best: [Option<(f64, Option<f64>)>; 3] = [None; 3];
            let mut keep = |slot: usize, m: Measured| {
                let b = best[slot].get_or_insert((m.secs, m.cpu));
                b.0 = b.0.min(m.secs);
                b.1 = match (b.1, m.cpu) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
            };
            for round in 0..a.rounds {
                let key = format!("shmlane/bench/{}/{i}/{round}", std::process::id());
                if a.only != Some(Only::Bridge) {
                    keep(
                        0,
                        measured(|| zenoh_alone(&sa, &sb, &format!("{key}/z"), size, n, false))?,
                    );
                    keep(
                        1,
                        measured(|| zenoh_alone(&sa, &sb, &format!("{key}/za"), size, n, true))?,
                    );
                }
                if a.only != Some(Only::Zenoh) {
                    keep(
                        2,
                        measured(|| bridged(&sa, &sb, &format!("{key}/b"), size, n, a.wait))?,
                    );
                }
            }
            let rate = |b: Option<(f64, Option<f64>)>| {
                b.map_or("-".into(), |(t, _)| format!("{:.0}", n as f64 / t))
            };
            let mbs = |b: Option<(f64, Option<f64>)>| {
                b.map_or("-".into(), |(t, _)| {
                    format!("{:.1}", n as f64 * size as f64 / t / 1e6)
                })
            };
            // CPU time of all threads per message, in ns.
            let cpu = |b: Option<(f64, Option<f64>)>| {
                b.and_then(|(_, c)| c)
                    .map_or("-".into(), |c| format!("{:.0}", c * 1e9 / n as f64))
            };
            // The bridge's extra time over zenoh alone, and over zenoh with the attachment.
            let cost = |z: usize| match (best[z], best[2]) {
                (Some((z, _)), Some((b, _))) => format!("{:+6.1}%", (b / z - 1.0) * 100.0),
                _ => "-".into(),
            };
            println!(
                "{:>6} {:>8} | {:>11} {:>7} {:>6} | {:>11} {:>6} | {:>11} {:>7} {:>6} | {:>7} {:>7}",
                size,
                n,
                rate(best[0]),
                mbs(best[0]),
                cpu(best[0]),
                rate(best[1]),
                cpu(best[1]),
                rate(best[2]),
                mbs(best[2]),
                cpu(best[2]),
                cost(0),
                cost(1)
            );
        }
        let _ = sa.close().wait();
        let _ = sb.close().wait();
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("bench", e),
    }
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Out(a) => run_out(a),
        Cmd::In(a) => run_in(a),
        Cmd::Bench(a) => run_bench(a),
    }
}
