//! `shmlane`: benchmark the shared-memory ring against the kernel's IPC, look at and
//! remove segments like `ipcs` / `ipcrm`, and carry a byte stream between two shells.

use std::process::ExitCode;

mod json;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use shmlane::Wait;
use shmlane_bench::backend::{BackendKind, Config};
use shmlane_bench::runner::{self as bench, Setup};

#[derive(Parser)]
#[command(
    name = "shmlane",
    version,
    about = "Zero-copy shared-memory rings between processes, and the tools around them"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compare every backend across two processes: throughput and one-way latency.
    ///
    /// The peer is a second process (this executable, re-run). Each throughput figure
    /// counts only messages the peer received and verified by checksum; `vs pipe` is the
    /// ratio to the pipe measured in the same run.
    Bench(BenchArgs),
    /// List shmlane segments (POSIX and System V): kind, capacity, fill, endpoints.
    ///
    /// Like `ipcs -m`, for shmlane. Each segment is opened read-only and nothing in it is
    /// changed. Segments of other programs, of another shmlane version or layout, empty or
    /// half-created ones, and System V segments already removed but still attached are
    /// left out unless --all. STATUS is `ok`, `stale` (every endpoint dead or closed:
    /// `shmlane clean` removes it), or what is wrong with it (see `shmlane inspect`).
    Ls(LsArgs),
    /// Show everything about one segment: header, positions, waiters, endpoints, validity.
    ///
    /// NAME is `/name` (a POSIX segment first, then the System V segment keyed by the name,
    /// as `open` does) or `shmid:ID` (a System V segment by id, as in `ipcs -m`). Works on
    /// damaged and foreign segments too: it shows what it can read, read-only. Exit status:
    /// 0 if the segment is a valid shmlane segment, 2 if it was read but is not valid
    /// (foreign, damaged, another version, not initialised), 1 if it could not be read
    /// (not found, permission denied).
    Inspect(InspectArgs),
    /// Remove segments by name, like `ipcrm`.
    ///
    /// Removes the POSIX segment and the System V segment keyed by each NAME (or
    /// `shmid:ID`), whichever exist, if they are shmlane segments (any version, even
    /// damaged or half-created); another program's segment is refused unless --force.
    /// Processes still attached keep their mapping and go on working: only the name goes,
    /// so nobody new can open it. Exit status 1 if any NAME failed.
    Rm(RmArgs),
    /// Remove your shmlane segments whose endpoints are all dead or closed.
    ///
    /// A segment is stale when every registered endpoint's process has died or closed it
    /// cleanly (the kernel's answer, as the library's), or when no endpoint ever registered
    /// and it is more than a minute old. Only segments of this shmlane version and layout,
    /// owned by the user running it, made without `persist(true)` (unless
    /// --include-persistent), and not `pending` (messages a creator left for a reader) are
    /// considered. Each is looked at again just before it is removed; a process attaching
    /// in between keeps its mapping. Exit status 1 if a removal failed or a NAME does not
    /// exist.
    Clean(CleanArgs),
    /// Carry a byte stream through a shared-memory ring: a pipe between two shells.
    ///
    /// `cmd1 | shmlane cat --to /name` in one shell and `shmlane cat --from /name | cmd2`
    /// in another. --to creates the ring (or opens it if it exists) and sends stdin;
    /// --from waits for the name to appear, then writes what arrives to stdout and exits 0
    /// once the sender has finished and everything is read. The side that created the ring
    /// removes its name at the end, once a reader has attached. If the other side goes
    /// away (a reader's stdout closed, `| head`), the remaining side exits quietly with
    /// status 141, like a pipe writer killed by SIGPIPE. Errors are printed as
    /// `shmlane: <message>` with status 1.
    Cat(CatArgs),
    /// Internal: the peer process of `bench`.
    #[command(hide = true, name = "__peer")]
    Peer {
        /// key=value words.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Parser)]
struct BenchArgs {
    /// Backends to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    backends: Option<Vec<BackendKind>>,
    /// Message sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![64usize, 4096])]
    sizes: Vec<usize>,
    /// Messages per throughput run (default: about 512 MiB per run, 50k..2M messages).
    #[arg(long)]
    messages: Option<u64>,
    /// Round trips per latency run (0 skips latency).
    #[arg(long, default_value_t = 20_000)]
    latency_samples: u64,
    /// How the shared-memory endpoints wait: spin, yield or block. The sys/msg column
    /// counts the semaphore waits and posts (and so membarrier calls) of the shm-spsc
    /// and shm-mpmc rings per message, both processes together.
    #[arg(long, default_value_t = Wait::Block)]
    wait: Wait,
    /// Throughput runs per cell; the best is reported.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Pin this process to CPU 0 and the peer to CPU 1.
    #[arg(long)]
    pin: bool,
    /// Print JSON (an array of objects) instead of a table.
    #[arg(long)]
    json: bool,
    /// Ring capacity in bytes (also the pipe buffer size, within the kernel's limit). The
    /// default, 4 MiB, is larger than a core's L2 cache: see "Choosing a capacity" in the
    /// README for what that buys when streaming.
    #[arg(long, default_value_t = shmlane_bench::runner::BENCH_CAPACITY)]
    capacity: usize,
}

#[derive(Parser)]
struct LsArgs {
    /// Print a JSON array of objects (every header field) instead of a table.
    #[arg(long)]
    json: bool,
    /// Also list foreign, incompatible, uninitialised, unreadable and removed segments.
    #[arg(long, short)]
    all: bool,
}

#[derive(Parser)]
struct InspectArgs {
    /// The segment: `/name` (or `name`, as in /dev/shm) or `shmid:ID`.
    name: String,
    /// Print a JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Parser)]
struct RmArgs {
    /// The segments to remove: `/name` or `shmid:ID`.
    #[arg(required = true)]
    names: Vec<String>,
    /// Remove segments that are not shmlane's (or that cannot be read) too.
    #[arg(long, short)]
    force: bool,
}

#[derive(Parser)]
struct CleanArgs {
    /// Only list what would be removed.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Also remove stale segments made with `persist(true)` (kept by default: their
    /// creator asked for them to outlive it).
    #[arg(long)]
    include_persistent: bool,
    /// Only consider these segments (`/name`, `name` or `shmid:ID`; default: all of
    /// yours). A NAME that does not exist is an error.
    names: Vec<String>,
}

#[derive(Parser)]
#[command(group(clap::ArgGroup::new("direction").required(true).args(["to", "from"])))]
struct CatArgs {
    /// Send stdin into the ring NAME, creating it if it does not exist.
    #[arg(long, value_name = "NAME")]
    to: Option<String>,
    /// Read the ring NAME to stdout, waiting for it to appear.
    #[arg(long, value_name = "NAME")]
    from: Option<String>,
    /// One message per line: --to sends each line without its newline, --from writes each
    /// message followed by a newline. A line longer than the max message is an error.
    #[arg(long)]
    lines: bool,
    /// Ring capacity in bytes when --to creates it (default 1M; suffixes K, M, G are
    /// powers of 1024; rounded up to a power of two).
    #[arg(long, value_name = "BYTES", conflicts_with = "from", value_parser = parse_size)]
    capacity: Option<usize>,
    /// Largest message when --to creates the ring (default: 64K or capacity / 2 - 8, at
    /// most capacity / 2; above capacity / 2 - 8 the ring gets twice the capacity): stdin
    /// goes in chunks of up to this many bytes.
    #[arg(long, value_name = "BYTES", conflicts_with = "from", value_parser = parse_size)]
    max_message: Option<usize>,
    /// How long --from waits for NAME to appear, and --to for a reader to attach, in
    /// seconds (0: forever).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    wait_for: f64,
}

/// `4096`, `64K`, `1M`, `2G` (powers of 1024; `KiB`, `MiB`, `GiB` too).
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 4096, 64K, 1M)"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit (use K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

struct Row {
    backend: &'static str,
    size: usize,
    messages: u64,
    msgs_per_sec: f64,
    bytes_per_sec: f64,
    wait_syscalls_per_msg: Option<f64>,
    p50: Option<u64>,
    p99: Option<u64>,
    p999: Option<u64>,
    vs_pipe: Option<f64>,
    pct_of_floor: Option<f64>,
    note: Option<String>,
}

impl Row {
    fn new(backend: &'static str, size: usize, messages: u64) -> Row {
        Row {
            backend,
            size,
            messages,
            msgs_per_sec: 0.0,
            bytes_per_sec: 0.0,
            wait_syscalls_per_msg: None,
            p50: None,
            p99: None,
            p999: None,
            vs_pipe: None,
            pct_of_floor: None,
            note: None,
        }
    }
}

/// The best of `runs` throughput runs.
fn best_of(
    runs: u32,
    mut f: impl FnMut() -> shmlane::Result<bench::Throughput>,
) -> shmlane::Result<bench::Throughput> {
    let mut best: Option<bench::Throughput> = None;
    for _ in 0..runs.max(1) {
        let t = f()?;
        if best.as_ref().map_or(true, |b| t.elapsed < b.elapsed) {
            best = Some(t);
        }
    }
    Ok(best.expect("at least one run"))
}

fn default_messages(size: usize) -> u64 {
    ((512u64 << 20) / size.max(1) as u64).clamp(50_000, 2_000_000)
}

/// The capacity the benchmarks use: `--capacity`, or room for two records of the largest
/// message if that is more, rounded up to a power of two, so it is the shm-spsc ring's
/// real size (see `Options::max_message`) and what the table and JSON report. The default
/// 4 MiB with 64 KiB messages stays 4 MiB.
fn bench_capacity(capacity: usize, max_size: usize) -> usize {
    capacity
        .max(2 * shmlane::format::record_size(max_size))
        .next_power_of_two()
}

fn run_bench(a: BenchArgs) -> Result<(), String> {
    let backends = a
        .backends
        .clone()
        .unwrap_or_else(|| BackendKind::ALL.to_vec());
    if a.sizes.is_empty() {
        return Err("--sizes is empty".into());
    }
    let max_size = *a.sizes.iter().max().unwrap();
    let setup = Setup {
        peer_exe: bench::this_exe().map_err(|e| e.to_string())?,
        config: Config {
            max_message: max_size,
            capacity: bench_capacity(a.capacity, max_size),
            wait: a.wait,
        },
        pin: a.pin,
    };
    let cells = ((backends.len() + 1) * a.sizes.len()) as u64 + 1;
    let pb = ProgressBar::new(cells);
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap(),
    );
    let mut rows = Vec::new();
    pb.set_message("floor: cache-line latency");
    let floor_lat = if a.latency_samples > 0 {
        Some(
            bench::floor_latency(&setup, a.latency_samples)
                .map_err(|e| format!("floor latency: {e}"))?,
        )
    } else {
        None
    };
    pb.inc(1);
    for &size in &a.sizes {
        let messages = a.messages.unwrap_or_else(|| default_messages(size));
        pb.set_message(format!("floor {size} B"));
        let floor = best_of(a.runs, || bench::floor_bandwidth(&setup, size, messages))
            .map_err(|e| format!("floor {size} B: {e}"))?;
        let mut row = Row::new("floor", size, messages);
        row.msgs_per_sec = floor.msgs_per_sec();
        row.bytes_per_sec = floor.bytes_per_sec();
        row.pct_of_floor = Some(100.0);
        if let Some(l) = &floor_lat {
            row.p50 = Some(l.quantile(0.5));
            row.p99 = Some(l.quantile(0.99));
            row.p999 = Some(l.quantile(0.999));
        }
        rows.push(row);
        pb.inc(1);
        for &backend in &backends {
            pb.set_message(format!("{backend} {size} B"));
            let mut row = Row::new(backend.name(), size, messages);
            if let Err(why) = backend.supports(size) {
                row.note = Some(why);
                rows.push(row);
                pb.inc(1);
                continue;
            }
            let best = best_of(a.runs, || {
                bench::throughput(backend, &setup, size, messages)
            })
            .map_err(|e| format!("{backend} {size} B throughput: {e}"))?;
            row.msgs_per_sec = best.msgs_per_sec();
            row.bytes_per_sec = best.bytes_per_sec();
            row.pct_of_floor = Some(100.0 * best.bytes_per_sec() / floor.bytes_per_sec());
            if matches!(
                backend,
                BackendKind::ShmSpsc | BackendKind::ShmSpscTyped | BackendKind::ShmMpmc
            ) {
                row.wait_syscalls_per_msg = Some(best.wait_syscalls as f64 / best.messages as f64);
            }
            if a.latency_samples > 0 {
                let l = bench::latency(backend, &setup, size, a.latency_samples)
                    .map_err(|e| format!("{backend} {size} B latency: {e}"))?;
                row.p50 = Some(l.quantile(0.5));
                row.p99 = Some(l.quantile(0.99));
                row.p999 = Some(l.quantile(0.999));
            }
            rows.push(row);
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    for i in 0..rows.len() {
        let pipe = rows
            .iter()
            .find(|r| r.backend == "pipe" && r.size == rows[i].size && r.note.is_none())
            .map(|r| r.msgs_per_sec);
        if let (Some(p), None, false) = (pipe, &rows[i].note, rows[i].backend == "floor") {
            rows[i].vs_pipe = Some(rows[i].msgs_per_sec / p);
        }
    }
    if a.json {
        print_json(&rows, &a, setup.config.capacity);
    } else {
        print_table(&rows, &a, setup.config.capacity);
    }
    Ok(())
}

fn human(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn ns(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 10_000 => format!("{:.1} us", v as f64 / 1000.0),
        Some(v) => format!("{v} ns"),
    }
}

fn print_table(rows: &[Row], a: &BenchArgs, capacity: usize) {
    println!(
        "wait={} pin={} runs={} capacity={} (best run shown); latency = one-way (round trip / 2); floor = plain copies through shared memory, and a cache line bouncing between two processes",
        a.wait,
        a.pin,
        a.runs,
        shmlane::inspect::human_bytes(capacity as u64),
    );
    println!(
        "{:<14} {:>7} {:>10} {:>11} {:>11} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "backend",
        "size",
        "messages",
        "msgs/s",
        "MB/s",
        "vs pipe",
        "% floor",
        "p50",
        "p99",
        "p99.9",
        "sys/msg"
    );
    for r in rows {
        if let Some(note) = &r.note {
            println!("{:<14} {:>7} {note}", r.backend, r.size);
            continue;
        }
        println!(
            "{:<14} {:>7} {:>10} {:>11} {:>11.1} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
            r.backend,
            r.size,
            r.messages,
            human(r.msgs_per_sec),
            r.bytes_per_sec / 1e6,
            r.vs_pipe.map_or("-".into(), |v| format!("{v:.1}x")),
            r.pct_of_floor.map_or("-".into(), |v| format!("{v:.0}%")),
            ns(r.p50),
            ns(r.p99),
            ns(r.p999),
            r.wait_syscalls_per_msg
                .map_or("-".into(), |v| format!("{v:.4}")),
        );
    }
}

fn print_json(rows: &[Row], a: &BenchArgs, capacity: usize) {
    let arr: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "backend": r.backend,
                "size": r.size,
                "messages": r.messages,
                "msgs_per_sec": r.msgs_per_sec,
                "bytes_per_sec": r.bytes_per_sec,
                "p50_ns": r.p50,
                "p99_ns": r.p99,
                "p999_ns": r.p999,
                "vs_pipe": r.vs_pipe,
                "wait_syscalls_per_msg": r.wait_syscalls_per_msg,
                "pct_of_floor": r.pct_of_floor,
                "wait": a.wait.to_string(),
                "pin": a.pin,
                "capacity": capacity,
                "note": r.note,
            })
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&arr).expect("json"));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Bench(a) => run_bench(a),
        Cmd::Peer { args } => bench::peer_main(&args).map_err(|e| e.to_string()),
        Cmd::Ls(a) => return ops::ls(&a),
        Cmd::Inspect(a) => return ops::inspect(&a),
        Cmd::Rm(a) => return ops::rm(&a),
        Cmd::Clean(a) => return ops::clean(&a),
        Cmd::Cat(a) => return ops::cat(&a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmlane: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The operator commands: `ls`, `inspect`, `rm`, `clean` and `cat`.
mod ops {
    use std::fs::File;
    use std::io::{self, BufRead, BufWriter, ErrorKind, Read, Write};
    use std::os::fd::AsFd;
    use std::process::ExitCode;
    use std::time::{Duration, Instant, SystemTime};

    use shmlane::format::{layout_hash, MAGIC, SPSC_CONSUMER, STATE_READY, VERSION};
    use shmlane::inspect::{
        self, human_bytes, human_duration, utc_text, Class, Outcome, Report, DEV_SHM,
    };
    use shmlane::spsc::{Consumer, Producer};
    use shmlane::Backing;
    use shmlane::{Error, Kind, Options, TryRecvError};

    use super::{CatArgs, CleanArgs, InspectArgs, LsArgs, RmArgs};

    /// The status of a process killed by SIGPIPE: what `cat` exits with when its peer goes.
    const SIGPIPE_STATUS: u8 = 141;

    /// `/name` and `shmid:ID` as given; a bare `name` (as listed in /dev/shm) is `/name`.
    fn normalize(name: &str) -> String {
        if name.starts_with('/') || name.starts_with("shmid:") || name.is_empty() {
            name.to_string()
        } else {
            format!("/{name}")
        }
    }

    fn fail(e: impl std::fmt::Display) -> ExitCode {
        eprintln!("shmlane: {e}");
        ExitCode::FAILURE
    }

    /// A library error in an operator's words: names the command's flags, not the
    /// library's `Options` methods, and gives no advice meant for a program.
    fn cli_message(e: &Error) -> String {
        match e {
            Error::NotFound { name, key } => {
                if let Some(id) = name.strip_prefix("shmid:") {
                    format!("no System V segment with id {id} (see `ipcs -m`)")
                } else {
                    format!(
                        "no shared-memory segment named {name} (neither {}{name} nor a System V segment with key {key:#010x}; `shmlane ls` lists them)",
                        inspect::DEV_SHM
                    )
                }
            }
            Error::MessageTooLarge { len, max } => format!(
                "a message of {len} bytes is larger than this ring's max message of {max} bytes (--max-message sets it when `cat --to` creates the ring)"
            ),
            Error::PermissionDenied { name } => format!(
                "permission denied for shared-memory segment {name}: it belongs to another user or its mode does not allow it"
            ),
            Error::InvalidOptions { reason } => format!(
                "invalid ring size: {}",
                reason
                    .replace("max_message", "--max-message")
                    .replace("capacity", "--capacity")
            ),
            e => e.to_string(),
        }
    }

    fn fail_err(e: &Error) -> ExitCode {
        fail(cli_message(e))
    }

    fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
        v.map_or_else(|| "-".to_string(), |v| v.to_string())
    }

    fn status_text(r: &Report) -> String {
        match r.pending() {
            Some(n) => format!("pending ({n} unread)"),
            None => r.status().to_string(),
        }
    }

    fn kind_text(r: &Report) -> String {
        r.kind().map_or_else(|| "-".into(), |k| k.as_str().into())
    }

    fn capacity_text(r: &Report) -> String {
        let f = &r.fields;
        match r.kind() {
            Some(Kind::Spsc) => f.capacity.map_or_else(|| "-".into(), human_bytes),
            // Slots of up to max_message bytes each (the slot itself is 32 bytes more,
            // rounded up to 64: `inspect` shows it).
            Some(Kind::Mpmc) => match (f.slot_count, f.max_message) {
                (Some(n), Some(m)) => format!("{n} x {}", human_bytes(u64::from(m))),
                _ => "-".into(),
            },
            None => "-".into(),
        }
    }

    fn fill_text(r: &Report) -> String {
        match r.fill() {
            Some(f) if f.slots => format!(
                "{} slot{} ({:.1}%)",
                f.used,
                if f.used == 1 { "" } else { "s" },
                f.percent()
            ),
            Some(f) => format!("{} ({:.1}%)", human_bytes(f.used), f.percent()),
            None if r.fields.write_pos.is_some() && r.kind().is_some() => {
                "? (positions out of range)".into()
            }
            None => "-".into(),
        }
    }

    fn endpoints_text(r: &Report) -> String {
        if r.endpoints.is_empty() {
            return "-".into();
        }
        r.endpoints
            .iter()
            .map(|e| format!("{} {} {}", e.role, e.pid, e.liveness.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn created_text(r: &Report) -> String {
        r.created().map_or_else(|| "-".into(), utc_text)
    }

    /// Prints rows as columns, each as wide as its widest cell; the last is not padded.
    fn print_table(header: &[&str], rows: &[Vec<String>]) {
        let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for row in rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let last = cells.len() - 1;
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i == last {
                    s.push_str(c);
                } else {
                    s.push_str(&format!("{c:<w$}  ", w = width[i]));
                }
            }
            println!("{}", s.trim_end());
        };
        line(header.to_vec());
        for row in rows {
            line(row.iter().map(String::as_str).collect());
        }
    }

    pub fn ls(a: &LsArgs) -> ExitCode {
        let reports = match inspect::list() {
            Ok(r) => r,
            Err(e) => return fail_err(&e),
        };
        let shown: Vec<&Report> = reports
            .iter()
            .filter(|r| a.all || (r.class == Class::Shmlane && !r.sysv_removed))
            .collect();
        if a.json {
            let arr: Vec<serde_json::Value> =
                shown.iter().map(|r| crate::json::report(r)).collect();
            println!("{}", serde_json::to_string_pretty(&arr).expect("json"));
            return ExitCode::SUCCESS;
        }
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.backing.to_string(),
                    kind_text(r),
                    status_text(r),
                    capacity_text(r),
                    fill_text(r),
                    created_text(r),
                    endpoints_text(r),
                ]
            })
            .collect();
        print_table(
            &[
                "NAME",
                "BACKING",
                "KIND",
                "STATUS",
                "CAPACITY",
                "FILL",
                "CREATED",
                "ENDPOINTS",
            ],
            &rows,
        );
        ExitCode::SUCCESS
    }

    pub fn inspect(a: &InspectArgs) -> ExitCode {
        let r = match inspect::inspect(&normalize(&a.name)) {
            Ok(r) => r,
            Err(e) => return fail_err(&e),
        };
        if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::json::report(&r)).expect("json")
            );
        } else {
            print_report(&r);
        }
        if r.valid() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        }
    }

    fn print_report(r: &Report) {
        let f = &r.fields;
        let line = |k: &str, v: String| println!("{k:<16}{v}");
        line("name", r.name.clone());
        line(
            "backing",
            match r.backing {
                Backing::Posix => format!("posix ({DEV_SHM}{})", r.name),
                Backing::SysV => format!(
                    "sysv (key {}, shmid {}, {} process(es) attached{})",
                    r.sysv_key
                        .map_or_else(|| "-".into(), |k| format!("{k:#010x}")),
                    or_dash(r.sysv_id),
                    or_dash(r.sysv_nattch),
                    if r.sysv_removed {
                        "; already removed, kept by those attached"
                    } else {
                        ""
                    }
                ),
            },
        );
        line("class", r.class.as_str().into());
        line("validation", r.validation.clone());
        line("size", format!("{} bytes", r.len));
        match r.magic {
            None => line("magic", "- (shorter than 8 bytes)".into()),
            Some(m) if m == MAGIC => line("magic", "ok (\"SHMLANE\\0\")".into()),
            Some([0, 0, 0, 0, 0, 0, 0, 0]) => line("magic", "none yet (all zero)".into()),
            Some(m) => line(
                "magic",
                format!(
                    "not shmlane's: {:02x?} {:?}",
                    m,
                    String::from_utf8_lossy(&m)
                ),
            ),
        }
        if r.magic != Some(MAGIC) {
            return;
        }
        if r.layout_matches() == Some(false) || f.version.is_some_and(|v| v != VERSION) {
            println!("(another version or layout: the fields below are read with this build's layout and may be wrong)");
        }
        line(
            "version",
            format!("{} (this build: {VERSION})", or_dash(f.version)),
        );
        line(
            "kind",
            match (r.kind(), f.kind) {
                (Some(k), _) => k.as_str().into(),
                (None, Some(raw)) => format!("unknown ({raw})"),
                (None, None) => "-".into(),
            },
        );
        line(
            "layout hash",
            match f.layout_hash {
                Some(h) if h == layout_hash() => format!("{h:#018x} (matches this build)"),
                Some(h) => format!("{h:#018x} (this build: {:#018x})", layout_hash()),
                None => "-".into(),
            },
        );
        line(
            "state",
            match f.state {
                Some(STATE_READY) => "ready".into(),
                Some(0) => "initialising (0)".into(),
                other => format!("unknown ({})", or_dash(other)),
            },
        );
        line("segment_len", or_dash(f.segment_len));
        line("data_offset", or_dash(f.data_offset));
        line(
            "capacity",
            f.capacity
                .map_or_else(|| "-".into(), |c| format!("{c} bytes ({})", human_bytes(c))),
        );
        line("max_message", or_dash(f.max_message));
        line("type", r.message_type().unwrap_or_else(|| "-".into()));
        line(
            "slots",
            match r.kind() {
                Some(Kind::Spsc) => "- (spsc: variable-length records)".into(),
                _ => format!("{} x {} bytes", or_dash(f.slot_count), or_dash(f.slot_size)),
            },
        );
        line("wait", or_dash(r.wait()));
        line(
            "created",
            match r.created() {
                Some(t) => format!(
                    "{} ({} ago)",
                    utc_text(t),
                    human_duration(SystemTime::now().duration_since(t).unwrap_or_default())
                ),
                None => "-".into(),
            },
        );
        line("creator pid", or_dash(f.creator_pid));
        line(
            "stored name",
            f.stored_name
                .as_ref()
                .map_or_else(|| "-".into(), |n| format!("{n:?}")),
        );
        line(
            "positions",
            format!(
                "write {}, read {}",
                or_dash(f.write_pos),
                or_dash(f.read_pos)
            ),
        );
        line("in flight", fill_text(r));
        line(
            "waiters",
            format!(
                "data {}, space {}",
                or_dash(f.data_waiters),
                or_dash(f.space_waiters)
            ),
        );
        line("light_wakers", or_dash(f.light_wakers));
        line("lost", or_dash(f.lost));
        line(
            "unread",
            match (r.unread, r.pending()) {
                (_, Some(n)) => format!("{n} messages, left by the creator for a reader (pending)"),
                (Some(n), None) => format!("{n} messages"),
                (None, None) => "-".into(),
            },
        );
        line(
            "persistent",
            if r.persistent() { "yes" } else { "no" }.into(),
        );
        if r.kind() == Some(Kind::Mpmc) {
            let ever = f.mpmc_ever.unwrap_or(0);
            line(
                "mpmc live",
                format!(
                    "senders {}, receivers {} (registered and not closed: {}, {}; ever attached: senders {}, receivers {})",
                    r.alive("sender"),
                    r.alive("receiver"),
                    or_dash(f.mpmc_live[0]),
                    or_dash(f.mpmc_live[1]),
                    if ever & 1 != 0 { "yes" } else { "no" },
                    if ever & 2 != 0 { "yes" } else { "no" },
                ),
            );
        }
        if r.endpoints.is_empty() {
            line("endpoints", "none registered".into());
        } else {
            println!("endpoints");
            let rows: Vec<Vec<String>> = r
                .endpoints
                .iter()
                .map(|e| {
                    vec![
                        format!("  #{}", e.index),
                        e.role.clone(),
                        e.pid.to_string(),
                        e.state.clone(),
                        e.liveness.as_str().into(),
                    ]
                })
                .collect();
            print_table(&["  SLOT", "ROLE", "PID", "STATE", "LIVENESS"], &rows);
        }
    }

    /// `/name (posix spsc)`, and who is still attached.
    fn describe(r: &Report) -> String {
        let what = match (r.class, r.kind()) {
            (Class::Shmlane, Some(k)) => k.as_str().to_string(),
            (class, _) => class.as_str().to_string(),
        };
        let id = r
            .sysv_id
            .map_or(String::new(), |id| format!(", shmid {id}"));
        let mut s = format!("{} ({} {what}{id})", r.name, r.backing);
        let alive: Vec<String> = r
            .endpoints
            .iter()
            .filter(|e| e.liveness == inspect::Liveness::Alive)
            .map(|e| format!("{} {}", e.role, e.pid))
            .collect();
        if !alive.is_empty() {
            s.push_str(&format!(
                "; still attached: {} (they keep their mapping)",
                alive.join(", ")
            ));
        } else if let Some(n @ 1..) = r.sysv_nattch {
            s.push_str(&format!(
                "; {n} process(es) still attached keep their mapping"
            ));
        }
        s
    }

    pub fn rm(a: &RmArgs) -> ExitCode {
        let mut failed = false;
        for name in a.names.iter().map(|n| normalize(n)) {
            match inspect::remove(&name, a.force) {
                Ok(removed) => {
                    for r in removed {
                        println!("removed {}", describe(&r.report));
                    }
                }
                Err(
                    e @ (Error::NotShmlane { .. }
                    | Error::KeyCollision { .. }
                    | Error::PermissionDenied { .. }),
                ) => {
                    eprintln!("shmlane: {e} (`shmlane rm --force {name}` removes it anyway)");
                    failed = true;
                }
                Err(e) => {
                    eprintln!("shmlane: {}", cli_message(&e));
                    failed = true;
                }
            }
        }
        if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }

    pub fn clean(a: &CleanArgs) -> ExitCode {
        let names: Vec<String> = a.names.iter().map(|n| normalize(n)).collect();
        for n in &names {
            if let Err(e) = inspect::inspect(n) {
                return fail_err(&e);
            }
        }
        let me = nix::unistd::geteuid().as_raw();
        let wanted = |r: &Report| {
            let named = names.is_empty()
                || names.iter().any(|n| {
                    *n == r.name || r.sysv_id.is_some_and(|id| *n == format!("shmid:{id}"))
                });
            named && r.uid == Some(me) && (a.include_persistent || !r.persistent())
        };
        let stale = match inspect::clean_matching(a.dry_run, wanted) {
            Ok(s) => s,
            Err(e) => return fail_err(&e),
        };
        if stale.is_empty() {
            println!(
                "no stale segments{}",
                if a.include_persistent {
                    ""
                } else {
                    " (persistent ones are kept unless --include-persistent)"
                }
            );
        }
        let mut failed = false;
        for s in &stale {
            let what = describe(&s.report);
            match &s.outcome {
                Outcome::WouldRemove => println!("would remove {what}: {}", s.reason),
                Outcome::Removed => println!("removed {what}: {}", s.reason),
                Outcome::NoLongerStale => {
                    println!("kept {what}: an endpoint attached again")
                }
                Outcome::Failed(e) => {
                    eprintln!("shmlane: could not remove {}: {e}", s.report.name);
                    failed = true;
                }
            }
        }
        if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }

    /// How `cat` ends when it does not succeed.
    enum CatError {
        /// The other side went away: exit quietly, as a pipe's writer would.
        PeerGone,
        /// An error to print.
        Msg(String),
    }

    impl From<Error> for CatError {
        fn from(e: Error) -> CatError {
            match e {
                // The reader went away (closed, or died): like a pipe's writer, stop.
                Error::Disconnected => CatError::PeerGone,
                e => CatError::Msg(cli_message(&e)),
            }
        }
    }

    /// The writer died before finishing: not the normal end of the stream.
    fn writer_died(name: &str) -> CatError {
        CatError::Msg(format!(
            "the writer of {name} died without finishing (killed or crashed); everything it sent is above"
        ))
    }

    pub fn cat(a: &CatArgs) -> ExitCode {
        let wait_for = match Duration::try_from_secs_f64(a.wait_for) {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(_) => return fail("--wait-for takes a number of seconds >= 0"),
        };
        // One rule for names on the command line: `/name` or `name`, as `ls` shows them.
        let r = match (&a.to, &a.from) {
            (Some(name), _) => cat_to(&normalize(name), a, wait_for),
            (None, Some(name)) => cat_from(&normalize(name), a.lines, wait_for),
            (None, None) => unreachable!("clap requires --to or --from"),
        };
        match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(CatError::PeerGone) => ExitCode::from(SIGPIPE_STATUS),
            Err(CatError::Msg(m)) => fail(m),
        }
    }

    /// Whether a reader (the consumer) has attached to the ring, looked up at most every
    /// so often; and the deadline for one to come.
    struct ReaderWatch<'a> {
        name: &'a str,
        start: Instant,
        limit: Option<Duration>,
        seen: bool,
    }

    impl ReaderWatch<'_> {
        /// Fails once the deadline has passed with no reader.
        fn check(&mut self) -> Result<(), CatError> {
            if !self.seen {
                self.seen = inspect::inspect(self.name)
                    .map(|r| r.endpoints.iter().any(|e| e.index == SPSC_CONSUMER))
                    .unwrap_or(false);
            }
            match self.limit {
                Some(limit) if !self.seen && self.start.elapsed() >= limit => {
                    Err(CatError::Msg(format!(
                        "no reader attached to {} within {} s (`shmlane cat --from {}` reads it; --wait-for changes the limit)",
                        self.name,
                        limit.as_secs_f64(),
                        self.name
                    )))
                }
                _ => Ok(()),
            }
        }

        fn wait_attached(&mut self) -> Result<(), CatError> {
            loop {
                self.check()?;
                if self.seen {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Waits until `len` bytes fit; while no reader has attached yet, only as long as the
    /// deadline allows. (The probe's grant is dropped uncommitted, which sends nothing.)
    fn wait_for_room(
        tx: &mut Producer,
        len: usize,
        reader: &mut ReaderWatch,
    ) -> Result<(), CatError> {
        if reader.seen {
            return Ok(());
        }
        loop {
            match tx.reserve_timeout(len, Duration::from_millis(100)) {
                Ok(_) => return Ok(()),
                Err(Error::Timeout) => reader.check()?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn stdin_error(e: io::Error) -> CatError {
        CatError::Msg(format!("reading stdin: {e}"))
    }

    /// Sends stdin in chunks of up to max_message bytes, read straight into the ring.
    fn send_chunks(tx: &mut Producer, reader: &mut ReaderWatch) -> Result<(), CatError> {
        // A File on a duplicate of fd 0: reads go straight into the ring, no buffer between.
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(stdin_error)?;
        let mut stdin = File::from(fd);
        let max = tx.max_message();
        loop {
            wait_for_room(tx, max, reader)?;
            let mut grant = tx.reserve(max)?;
            let n = loop {
                match stdin.read(&mut grant) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(stdin_error(e)),
                }
            };
            if n == 0 {
                return Ok(()); // EOF; the empty grant is dropped, sending nothing
            }
            grant.truncate(n);
            grant.commit();
        }
    }

    /// Sends each line of stdin as one message, without its newline.
    fn send_lines(tx: &mut Producer, reader: &mut ReaderWatch) -> Result<(), CatError> {
        let mut stdin = io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            if stdin.read_until(b'\n', &mut line).map_err(stdin_error)? == 0 {
                return Ok(());
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            let max = tx.max_message();
            if line.len() > max {
                return Err(CatError::Msg(format!(
                    "a line of {} bytes is longer than this ring's max message of {max} bytes (--max-message raises it when the ring is created)",
                    line.len()
                )));
            }
            wait_for_room(tx, line.len(), reader)?;
            tx.send(&line)?;
        }
    }

    fn cat_to(name: &str, a: &CatArgs, wait_for: Option<Duration>) -> Result<(), CatError> {
        let mut opts = Options::new().capacity(a.capacity.unwrap_or(shmlane::DEFAULT_CAPACITY));
        if let Some(m) = a.max_message {
            opts = opts.max_message(m);
        }
        let (mut tx, created) = match Producer::create(name, &opts) {
            Ok(p) => (p, true),
            Err(Error::AlreadyExists { .. }) => (Producer::open(name)?, false),
            Err(e) => return Err(e.into()),
        };
        let mut reader = ReaderWatch {
            name,
            start: Instant::now(),
            limit: wait_for,
            seen: false,
        };
        let sent = if a.lines {
            send_lines(&mut tx, &mut reader)
        } else {
            send_chunks(&mut tx, &mut reader)
        };
        if created && sent.is_ok() {
            // Like a FIFO's writer, wait for a reader before leaving (an empty stream
            // included), so the reader finds the name.
            reader.wait_attached()?;
        }
        // Publishes what is left and closes the producer: the reader drains the ring, then
        // sees Disconnected. The library removes the name (only this ring's) once nobody
        // needs it: now if the reader is attached, else after a reader drained it.
        drop(tx);
        sent
    }

    fn stdout_error(e: io::Error) -> CatError {
        if e.kind() == ErrorKind::BrokenPipe {
            CatError::PeerGone
        } else {
            CatError::Msg(format!("writing stdout: {e}"))
        }
    }

    fn cat_from(name: &str, lines: bool, wait_for: Option<Duration>) -> Result<(), CatError> {
        let start = Instant::now();
        let mut rx = loop {
            match Consumer::open(name) {
                Ok(c) => break c,
                Err(e @ (Error::NotFound { .. } | Error::NotReady { .. })) => {
                    if let Some(limit) = wait_for.filter(|l| start.elapsed() >= *l) {
                        return Err(CatError::Msg(format!(
                            "{e} (waited {} s)",
                            limit.as_secs_f64()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let fd = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(stdout_error)?;
        let mut out = BufWriter::with_capacity(64 << 10, File::from(fd));
        let emit = |out: &mut BufWriter<File>, msg: &[u8]| -> Result<(), CatError> {
            out.write_all(msg).map_err(stdout_error)?;
            if lines {
                out.write_all(b"\n").map_err(stdout_error)?;
            }
            Ok(())
        };
        loop {
            let why = match rx.try_recv() {
                Ok(m) => {
                    emit(&mut out, &m)?;
                    continue;
                }
                Err(why) => why,
            };
            match why {
                TryRecvError::Empty => {
                    // About to wait: let what we have go out first.
                    out.flush().map_err(stdout_error)?;
                    match rx.recv() {
                        Ok(m) => emit(&mut out, &m)?,
                        Err(Error::Disconnected) => break,
                        Err(Error::PeerDied) => {
                            out.flush().map_err(stdout_error)?;
                            return Err(writer_died(name));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                TryRecvError::Disconnected => {
                    if matches!(rx.peer(), shmlane::PeerState::Dead(_)) {
                        out.flush().map_err(stdout_error)?;
                        return Err(writer_died(name));
                    }
                    break;
                }
                e => return Err(Error::from(e).into()),
            }
        }
        out.flush().map_err(stdout_error)
    }
}

#[cfg(test)]
mod tests {
    use super::bench_capacity;

    #[test]
    fn bench_capacity_is_the_asked_one_unless_two_records_need_more() {
        let bench = shmlane_bench::runner::BENCH_CAPACITY;
        assert_eq!(bench_capacity(bench, 64 << 10), 4 << 20);
        assert_eq!(bench_capacity(bench, 4096), 4 << 20);
        assert_eq!(bench_capacity(bench, 2 << 20), 8 << 20);
        assert_eq!(bench_capacity(4096, 2040), 4096);
        assert_eq!(bench_capacity(3 << 20, 64), 4 << 20);
    }
}
