//! Cross-process measurements shared by `shmlane bench` and the criterion benchmarks.
//!
//! The peer is always another process: the benchmark re-runs a `shmlane` executable as
//! `shmlane __peer key=value ...` ([`peer_main`]). Throughput counts only messages that
//! were received and verified: the receiver checksums every byte, and the run fails if its
//! checksum differs from the sender's.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::backend::{BackendKind, Config, RxEnd, Transport, TxEnd};
use crate::with_backend;
use shmlane::wait::Wait;
use shmlane::{Error, Result};

/// A fast checksum that reads every byte of `msg` (summing 8-byte words, then the tail).
#[inline]
pub fn checksum(msg: &[u8]) -> u64 {
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let mut acc = [0u64; 4];
    let mut blocks = msg.chunks_exact(32);
    for b in blocks.by_ref() {
        for (k, a) in acc.iter_mut().enumerate() {
            *a = a.wrapping_add(word(&b[8 * k..8 * k + 8]));
        }
    }
    let mut sum = acc[0]
        .wrapping_add(acc[1].rotate_left(8))
        .wrapping_add(acc[2].rotate_left(16))
        .wrapping_add(acc[3].rotate_left(24));
    let mut words = blocks.remainder().chunks_exact(8);
    for w in words.by_ref() {
        sum = sum.wrapping_add(word(w).rotate_left(32));
    }
    for (i, b) in words.remainder().iter().enumerate() {
        sum = sum.wrapping_add(u64::from(*b) << (8 * i));
    }
    sum.wrapping_add(msg.len() as u64)
}

/// Folds one message's checksum into a running, order-sensitive total.
#[inline]
pub fn fold(total: u64, msg_sum: u64) -> u64 {
    total.rotate_left(7) ^ msg_sum
}

/// Message bodies of `size` bytes whose first bytes carry a sequence number and whose
/// every other byte differs from one message to the next: message `seq` is body
/// `seq % K` of `K` = 3 pseudo-random bodies, `K` odd (so a power-of-two ring lap is never a
/// multiple of it). A slot or record left holding an earlier message's bytes past its
/// first 8 (a torn copy after a lap) then fails the receiver's checksum. The bodies are
/// made once and cycled, so stamping a message still costs one 8-byte store; there are
/// only three (see [`Payload::new`]), so they stay in the L1 cache.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The bodies, `stride` bytes apart in one allocation.
    buf: Vec<u8>,
    size: usize,
    stride: usize,
    k: usize,
}

impl Payload {
    /// Bodies for messages of `size` bytes.
    pub fn new(size: usize) -> Payload {
        // Three bodies: odd, so an MPMC lap (a power of two of slots) never brings back the
        // same body, and few, so they stay in the sender's L1 cache like data it has just
        // produced. Cycling 61 bodies of 4 KiB (250 KiB) made the sender read its source
        // from L2 and measured the 4 KiB stream 4x slower (11 GB/s against 45, same run),
        // 5 bodies still 2x: a cost of the benchmark's sender, not of the channel.
        let k = 3;
        let stride = if size >= 1024 {
            size.next_multiple_of(4096)
        } else {
            size.max(1)
        };
        // A pseudo-random base; body `i` adds `i` to every byte, so two bodies differ in
        // every byte (k < 256).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let base: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect();
        let mut buf = vec![0u8; stride * k];
        for i in 0..k {
            for (d, b) in buf[i * stride..i * stride + size].iter_mut().zip(&base) {
                *d = b.wrapping_add(i as u8);
            }
        }
        Payload {
            buf,
            size,
            stride,
            k,
        }
    }

    /// How many bodies are cycled.
    pub fn bodies(&self) -> usize {
        self.k
    }

    /// Stamps message `seq` into its body and returns it.
    #[inline]
    pub fn stamp(&mut self, seq: u64) -> &[u8] {
        let at = (seq % self.k as u64) as usize * self.stride;
        let body = &mut self.buf[at..at + self.size];
        let n = body.len().min(8);
        body[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
        body
    }
}

/// What one throughput run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    /// Messages sent, received and verified.
    pub messages: u64,
    /// Bytes per message.
    pub size: usize,
    /// From the receiver being ready to it having verified the last message.
    pub elapsed: Duration,
    /// Semaphore waits and posts made by both processes during the run (shared-memory
    /// backends; the kernel backends make at least one system call per message anyway).
    pub wait_syscalls: u64,
}

impl Throughput {
    /// Messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    /// Payload bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        self.msgs_per_sec() * self.size as f64
    }
}

/// What one latency run measured: one-way latencies (round trip / 2), sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    /// Bytes per message.
    pub size: usize,
    /// One-way latency samples in nanoseconds, ascending.
    pub one_way_ns: Vec<u64>,
}

impl Latency {
    /// The `q` quantile (0.0 ..= 1.0) in nanoseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.one_way_ns.is_empty() {
            return 0;
        }
        let i = ((self.one_way_ns.len() - 1) as f64 * q).round() as usize;
        self.one_way_ns[i]
    }
}

/// How to run one measurement.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The executable to run as the peer (`shmlane`, which understands `__peer`).
    pub peer_exe: std::path::PathBuf,
    /// Channel configuration (capacity, max message, wait strategy).
    pub config: Config,
    /// Pin this process to CPU 0 and the peer to CPU 1.
    pub pin: bool,
}

/// The ring capacity the benchmarks use unless told otherwise: 4 MiB.
///
/// Larger than a core's L2 cache on current x86 parts (1-2 MiB). A streaming producer keeps
/// the ring nearly full, and a ring bigger than L2 then passes its data through the shared
/// L3 instead of pulling each line out of the other core's L2: on this project's AMD EPYC
/// machine 4 KiB messages stream at 46 GB/s through a 4 MiB ring and at 8 GB/s through a
/// 1 MiB one (the library's default, [`shmlane::DEFAULT_CAPACITY`], which suits
/// request/response traffic and costs a quarter of the memory).
pub const BENCH_CAPACITY: usize = 4 << 20;

static RUN: AtomicU32 = AtomicU32::new(0);

fn unique_name(tag: &str) -> String {
    format!(
        "/shmlane-bench-{}-{}-{tag}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    )
}

/// Pins the calling process to `cpu`, if the machine has it.
pub fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

struct Peer {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Peer {
    fn spawn(setup: &Setup, args: &[(&str, String)]) -> Result<Peer> {
        let mut cmd = Command::new(&setup.peer_exe);
        cmd.arg("__peer");
        for (k, v) in args {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.arg(format!("max={}", setup.config.max_message))
            .arg(format!("cap={}", setup.config.capacity))
            .arg(format!("wait={}", setup.config.wait));
        if setup.pin {
            cmd.arg("cpu=1");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::io("spawn benchmark peer", e))?;
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        if setup.pin {
            // The peer pins itself to CPU 1 (`cpu=1` above); this process takes CPU 0.
            pin_to(0);
        }
        Ok(Peer { child, out })
    }

    /// The peer's next line, or an error saying how it failed.
    fn line(&mut self) -> Result<String> {
        let mut s = String::new();
        let n = self
            .out
            .read_line(&mut s)
            .map_err(|e| Error::io("read from peer", e))?;
        if n == 0 {
            let status = self
                .child
                .wait()
                .map_err(|e| Error::io("wait for peer", e))?;
            return Err(Error::io(
                "benchmark peer",
                std::io::Error::other(format!("the peer process exited early ({status})")),
            ));
        }
        Ok(s.trim_end().to_string())
    }

    fn expect(&mut self, what: &str) -> Result<String> {
        let line = self.line()?;
        if let Some(rest) = line.strip_prefix(what) {
            return Ok(rest.trim().to_string());
        }
        Err(Error::io(
            "benchmark peer",
            std::io::Error::other(format!("expected {what:?} from the peer, got {line:?}")),
        ))
    }

    fn finish(mut self) -> Result<()> {
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io("wait for peer", e))?;
        if !status.success() {
            return Err(Error::io(
                "benchmark peer",
                std::io::Error::other(format!("the peer process failed ({status})")),
            ));
        }
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Only reached with the child still running on an error path: stop our own child.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn throughput_with<T: Transport>(setup: &Setup, size: usize, messages: u64) -> Result<Throughput> {
    let name = unique_name("tp");
    let mut peer = Peer::spawn(
        setup,
        &[
            ("mode", "rx".into()),
            ("backend", T::NAME.into()),
            ("name", name.clone()),
            ("size", size.to_string()),
            ("messages", messages.to_string()),
        ],
    )?;
    let mut payload = Payload::new(size);
    let mut expected = 0u64;
    for seq in 0..messages {
        expected = fold(expected, checksum(payload.stamp(seq)));
    }
    let mut tx = T::create_tx(&name, &setup.config)?;
    peer.expect("ready")?;
    let own_before = own_wait_syscalls();
    let start = Instant::now();
    tx.send_all(&mut payload, messages)?;
    let done = peer.expect("done")?;
    let elapsed = start.elapsed();
    let own = own_wait_syscalls() - own_before;
    drop(tx);
    peer.finish()?;
    let (got, peer_syscalls) = parse_done(&done)?;
    if got != expected {
        return Err(Error::corrupt(format!(
            "{}: the receiver's checksum {got:#x} differs from the sender's {expected:#x}",
            T::NAME
        )));
    }
    Ok(Throughput {
        messages,
        size,
        elapsed,
        wait_syscalls: own + peer_syscalls,
    })
}

fn latency_with<T: Transport>(setup: &Setup, size: usize, samples: u64) -> Result<Latency> {
    let ping = unique_name("ping");
    let pong = unique_name("pong");
    let warmup = (samples / 10).clamp(10, 10_000);
    let mut peer = Peer::spawn(
        setup,
        &[
            ("mode", "echo".into()),
            ("backend", T::NAME.into()),
            ("name", ping.clone()),
            ("name2", pong.clone()),
            ("size", size.to_string()),
            ("messages", (samples + warmup).to_string()),
        ],
    )?;
    let mut tx = T::create_tx(&ping, &setup.config)?;
    let mut rx = T::create_rx(&pong, &setup.config)?;
    peer.expect("ready")?;
    let mut payload = Payload::new(size);
    let mut rtts = Vec::with_capacity(samples as usize);
    for seq in 0..samples + warmup {
        let msg = payload.stamp(seq);
        let want = checksum(msg);
        let t0 = Instant::now();
        tx.send(msg)?;
        let ok = rx.recv_with(|m| checksum(m) == want)?;
        let rtt = t0.elapsed();
        if !ok {
            return Err(Error::corrupt(format!(
                "{}: echoed message {seq} differs",
                T::NAME
            )));
        }
        if seq >= warmup {
            rtts.push(rtt.as_nanos() as u64 / 2);
        }
    }
    peer.expect("done")?;
    drop(tx);
    drop(rx);
    peer.finish()?;
    rtts.sort_unstable();
    Ok(Latency {
        size,
        one_way_ns: rtts,
    })
}

/// Streams `messages` messages of `size` bytes from this process to a peer process over
/// `backend`, and measures how long until the peer has received and verified them all.
pub fn throughput(
    backend: BackendKind,
    setup: &Setup,
    size: usize,
    messages: u64,
) -> Result<Throughput> {
    with_backend!(backend, T => throughput_with::<T>(setup, size, messages))
}

/// One fan-out measurement: every one of `subscribers` peer processes received and
/// verified all `messages` messages within `elapsed` (timed from the first send until the
/// last peer said done), so each subscriber's rate is `messages / elapsed`.
#[derive(Debug, Clone)]
pub struct FanOut {
    /// Messages each subscriber received.
    pub messages: u64,
    /// Bytes per message.
    pub size: usize,
    /// Subscriber processes.
    pub subscribers: usize,
    /// Until the last subscriber had everything.
    pub elapsed: Duration,
    /// Semaphore sleeps and posts of the broadcast ring's endpoints (publisher and every
    /// subscriber together; 0 for pipes).
    pub wait_syscalls: u64,
}

impl FanOut {
    /// Messages per second each subscriber received.
    pub fn per_subscriber_msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    /// The same as a [`Throughput`] (per subscriber), for tables that take one.
    pub fn as_throughput(&self) -> Throughput {
        Throughput {
            messages: self.messages,
            size: self.size,
            elapsed: self.elapsed,
            wait_syscalls: self.wait_syscalls,
        }
    }
}

/// How a fan-out benchmark carries each message to its subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanOutKind {
    /// One `shmlane::broadcast` ring (Block mode) read by every subscriber.
    Broadcast,
    /// The natural baseline: the publisher writes each message to one pipe per
    /// subscriber.
    Pipes,
}

/// Streams `messages` messages of `size` bytes from this process to `subscribers` peer
/// processes, each of which receives and checksums all of them.
pub fn fanout_throughput(
    kind: FanOutKind,
    setup: &Setup,
    size: usize,
    messages: u64,
    subscribers: usize,
) -> Result<FanOut> {
    let mut payload = Payload::new(size);
    let mut expected = 0u64;
    for seq in 0..messages {
        expected = fold(expected, checksum(payload.stamp(seq)));
    }
    let base = unique_name("fan");
    let mut peers = Vec::new();
    let mut wait_syscalls = 0;
    let elapsed = match kind {
        FanOutKind::Broadcast => {
            let opts = shmlane::Options::new()
                .capacity(setup.config.capacity)
                .max_message(setup.config.max_message)
                .max_subscribers(subscribers.max(1))
                .wait(setup.config.wait)
                .evict_after(Duration::from_secs(30));
            let mut p = shmlane::broadcast::Publisher::create(&base, &opts)?;
            for _ in 0..subscribers {
                peers.push(Peer::spawn(
                    setup,
                    &[
                        ("mode", "bc-rx".into()),
                        ("backend", "shm-spsc".into()),
                        ("name", base.clone()),
                        ("size", size.to_string()),
                        ("messages", messages.to_string()),
                    ],
                )?);
            }
            for peer in &mut peers {
                peer.expect("ready")?;
            }
            let own_before = own_wait_syscalls();
            let start = Instant::now();
            for seq in 0..messages {
                p.send(payload.stamp(seq))?;
            }
            let mut results = Vec::new();
            for peer in &mut peers {
                results.push(peer.expect("done")?);
            }
            let elapsed = start.elapsed();
            wait_syscalls = own_wait_syscalls() - own_before;
            drop(p);
            wait_syscalls += check_done(&results, expected, "shm-broadcast")?;
            elapsed
        }
        FanOutKind::Pipes => {
            use crate::backend::Pipe;
            let mut txs = Vec::new();
            for i in 0..subscribers {
                let name = format!("{base}-{i}");
                peers.push(Peer::spawn(
                    setup,
                    &[
                        ("mode", "rx".into()),
                        ("backend", "pipe".into()),
                        ("name", name.clone()),
                        ("size", size.to_string()),
                        ("messages", messages.to_string()),
                    ],
                )?);
                txs.push(Pipe::create_tx(&name, &setup.config)?);
            }
            for peer in &mut peers {
                peer.expect("ready")?;
            }
            let start = Instant::now();
            for seq in 0..messages {
                let m = payload.stamp(seq);
                for tx in &mut txs {
                    tx.send(m)?;
                }
            }
            let mut results = Vec::new();
            for peer in &mut peers {
                results.push(peer.expect("done")?);
            }
            let elapsed = start.elapsed();
            drop(txs);
            check_done(&results, expected, "pipe fan-out")?;
            elapsed
        }
    };
    for peer in peers {
        peer.finish()?;
    }
    Ok(FanOut {
        messages,
        size,
        subscribers,
        elapsed,
        wait_syscalls,
    })
}

/// Checks each subscriber's `done <checksum> <wait syscalls>` line; returns the syscalls
/// of all of them.
fn check_done(results: &[String], expected: u64, what: &str) -> Result<u64> {
    let mut syscalls = 0;
    for done in results {
        let (got, peer_syscalls) = parse_done(done)?;
        if got != expected {
            return Err(Error::corrupt(format!(
                "{what}: a subscriber's result {done:?} differs from the sender's checksum {expected:#x}"
            )));
        }
        syscalls += peer_syscalls;
    }
    Ok(syscalls)
}

/// A peer's `done <checksum> <wait syscalls>` line.
fn parse_done(done: &str) -> Result<(u64, u64)> {
    let bad = || Error::corrupt(format!("peer sent a bad result line {done:?}"));
    let mut words = done.split_whitespace().map(|w| w.parse::<u64>());
    let checksum = words.next().and_then(|r| r.ok()).ok_or_else(bad)?;
    let syscalls = words.next().and_then(|r| r.ok()).ok_or_else(bad)?;
    Ok((checksum, syscalls))
}

/// Semaphore sleeps and posts of this process's shmlane endpoints so far (the sys/msg
/// column: a run takes the difference).
fn own_wait_syscalls() -> u64 {
    shmlane::wait::stats::sleeps() + shmlane::wait::stats::posts()
}

fn peer_bc_rx(name: &str, size: usize, messages: u64) -> Result<()> {
    use shmlane::broadcast::{StartAt, Subscriber};
    let mut rx = open_retry(|| Subscriber::open(name, StartAt::Oldest))?;
    let before = own_wait_syscalls();
    say("ready");
    let mut total = 0u64;
    for seq in 0..messages {
        let m = rx.recv()?;
        if m.len() != size {
            return Err(Error::corrupt(format!(
                "message {seq} has {} bytes, expected {size}",
                m.len()
            )));
        }
        total = fold(total, checksum(&m));
    }
    let syscalls = own_wait_syscalls() - before;
    say(&format!("done {total} {syscalls}"));
    Ok(())
}

/// Ping-pongs `samples` messages of `size` bytes with a peer process that echoes them,
/// and returns the one-way latencies (round trip / 2).
pub fn latency(backend: BackendKind, setup: &Setup, size: usize, samples: u64) -> Result<Latency> {
    with_backend!(backend, T => latency_with::<T>(setup, size, samples))
}

fn floor_chunks(setup: &Setup, size: usize) -> u64 {
    (setup.config.capacity / size.max(64)).max(2) as u64
}

/// The bandwidth floor: `messages` chunks of `size` bytes streamed through shared memory
/// to a peer process with nothing but one counter each way (see [`crate::floor`]).
pub fn floor_bandwidth(setup: &Setup, size: usize, messages: u64) -> Result<Throughput> {
    use crate::floor::Floor;
    use shmlane::{format::Segment, Backing};
    let name = unique_name("floor");
    let chunks = floor_chunks(setup, size);
    let seg = Segment::create(
        &name,
        Floor::segment_len(size, chunks),
        Backing::Posix,
        0o600,
    )?;
    let mut floor = Floor::new(seg, size, chunks)?;
    let mut peer = Peer::spawn(
        setup,
        &[
            ("mode", "floor-rx".into()),
            ("backend", "pipe".into()),
            ("name", name.clone()),
            ("size", size.to_string()),
            ("messages", messages.to_string()),
        ],
    )?;
    let mut payload = Payload::new(size);
    let src = payload.stamp(1).to_vec();
    let mut expected = 0u64;
    for _ in 0..messages {
        expected = fold(expected, checksum(&src));
    }
    peer.expect("ready")?;
    let start = Instant::now();
    floor.send(&src, messages);
    let done = peer.expect("done")?;
    let elapsed = start.elapsed();
    peer.finish()?;
    if done.split_whitespace().next() != Some(expected.to_string().as_str()) {
        return Err(Error::corrupt(format!("floor: checksum mismatch ({done})")));
    }
    Ok(Throughput {
        messages,
        size,
        elapsed,
        wait_syscalls: 0,
    })
}

/// The latency floor: one cache line bouncing between this process and a peer process,
/// `samples` round trips, reported one way (round trip / 2).
pub fn floor_latency(setup: &Setup, samples: u64) -> Result<Latency> {
    use crate::floor::Floor;
    use shmlane::{format::Segment, Backing};
    let name = unique_name("floorlat");
    let seg = Segment::create(&name, Floor::segment_len(64, 1), Backing::Posix, 0o600)?;
    let floor = Floor::new(seg, 64, 1)?;
    let warmup = (samples / 10).clamp(10, 10_000);
    let mut peer = Peer::spawn(
        setup,
        &[
            ("mode", "floor-pong".into()),
            ("backend", "pipe".into()),
            ("name", name.clone()),
            ("size", "64".into()),
            ("messages", (samples + warmup).to_string()),
        ],
    )?;
    peer.expect("ready")?;
    let rtts = floor.ping(samples + warmup);
    peer.expect("done")?;
    peer.finish()?;
    let mut one_way: Vec<u64> = rtts[warmup as usize..].iter().map(|r| r / 2).collect();
    one_way.sort_unstable();
    Ok(Latency {
        size: 64,
        one_way_ns: one_way,
    })
}

fn peer_floor(setup_cap: usize, name: &str, size: usize, messages: u64, pong: bool) -> Result<()> {
    use crate::floor::Floor;
    let seg = open_retry(|| shmlane::format::Segment::open(name))?;
    seg.prefault(seg.len()); // our own segment, populated by its creator
    let chunks = if pong {
        1
    } else {
        (setup_cap / size.max(64)).max(2) as u64
    };
    let floor = Floor::new(seg, size, chunks)?;
    say("ready");
    if pong {
        floor.pong(messages);
        say("done");
    } else {
        let mut total = 0u64;
        floor.recv(messages, |m| total = fold(total, checksum(m)));
        say(&format!("done {total} 0"));
    }
    Ok(())
}

fn peer_rx<T: Transport>(cfg: &Config, name: &str, size: usize, messages: u64) -> Result<()> {
    let mut rx = open_retry(|| T::open_rx(name, cfg))?;
    say("ready");
    let before = own_wait_syscalls();
    let mut total = 0u64;
    rx.recv_all(messages, |seq, m| {
        if m.len() != size {
            return Err(Error::corrupt(format!(
                "message {seq} has {} bytes, expected {size}",
                m.len()
            )));
        }
        total = fold(total, checksum(m));
        Ok(())
    })?;
    let syscalls = own_wait_syscalls() - before;
    say(&format!("done {total} {syscalls}"));
    Ok(())
}

fn peer_echo<T: Transport>(cfg: &Config, ping: &str, pong: &str, messages: u64) -> Result<()> {
    let mut rx = open_retry(|| T::open_rx(ping, cfg))?;
    let mut tx = open_retry(|| T::open_tx(pong, cfg))?;
    say("ready");
    for _ in 0..messages {
        rx.recv_with(|m| tx.send(m))??;
    }
    say("done");
    Ok(())
}

/// Opens a channel that the parent may not have created yet.
fn open_retry<X>(mut f: impl FnMut() -> Result<X>) -> Result<X> {
    let start = Instant::now();
    loop {
        match f() {
            Err(Error::NotFound { .. }) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return other,
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The peer side of a benchmark: `args` are the `key=value` words after `__peer`.
pub fn peer_main(args: &[String]) -> Result<()> {
    let get = |key: &str| -> Result<&str> {
        args.iter()
            .find_map(|a| a.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .ok_or_else(|| Error::InvalidOptions {
                reason: format!("__peer needs {key}=..."),
            })
    };
    let num = |key: &str| -> Result<u64> {
        get(key)?.parse().map_err(|_| Error::InvalidOptions {
            reason: format!("__peer: {key} is not a number"),
        })
    };
    let backend: BackendKind = get("backend")?
        .parse()
        .map_err(|reason| Error::InvalidOptions { reason })?;
    let wait: Wait = get("wait")?
        .parse()
        .map_err(|reason| Error::InvalidOptions { reason })?;
    let cfg = Config {
        max_message: num("max")? as usize,
        capacity: num("cap")? as usize,
        wait,
    };
    if let Ok(cpu) = num("cpu") {
        pin_to(cpu as usize);
    }
    let size = num("size")? as usize;
    let messages = num("messages")?;
    match get("mode")? {
        "rx" => with_backend!(backend, T => peer_rx::<T>(&cfg, get("name")?, size, messages)),
        "echo" => {
            with_backend!(backend, T => peer_echo::<T>(&cfg, get("name")?, get("name2")?, messages))
        }
        "bc-rx" => peer_bc_rx(get("name")?, size, messages),
        "floor-rx" => peer_floor(cfg.capacity, get("name")?, size, messages, false),
        "floor-pong" => peer_floor(cfg.capacity, get("name")?, size, messages, true),
        m => Err(Error::InvalidOptions {
            reason: format!("__peer: unknown mode {m}"),
        }),
    }
}

/// The executable that `shmlane bench` re-runs as its peer: this one.
pub fn this_exe() -> Result<std::path::PathBuf> {
    std::env::current_exe().map_err(|e| Error::io("current_exe", e))
}

/// Whether `path` looks runnable.
pub fn exe_exists(path: &Path) -> bool {
    path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte of a message body, not only the stamped sequence number, differs from
    /// the bodies of the messages around it, so a stale tail left by a torn copy changes
    /// the checksum whatever the ring's lap.
    #[test]
    fn payload_bodies_differ_past_the_stamp() {
        for size in [9usize, 64, 4096, 65536, 1 << 20] {
            let mut p = Payload::new(size);
            let first: Vec<Vec<u8>> = (0..64u64).map(|s| p.stamp(s).to_vec()).collect();
            for lap in [1usize, 2, 8, 16, 32, 63] {
                for s in lap..first.len() {
                    let (now, then) = (&first[s], &first[s - lap]);
                    let k = p.bodies();
                    if (s - lap) % k == s % k {
                        continue;
                    }
                    assert_eq!(now.len(), size);
                    let tail = size.min(64);
                    assert_ne!(
                        now[size - tail..],
                        then[size - tail..],
                        "size {size}: message {s} ends like message {}",
                        s - lap
                    );
                    let mut torn = now.clone();
                    torn[8..].copy_from_slice(&then[8..]);
                    assert_ne!(checksum(&torn), checksum(now), "size {size}, lap {lap}");
                }
            }
        }
    }
}
