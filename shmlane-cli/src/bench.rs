//! `shmlane bench`: every backend across two processes, a table (progress on stderr).

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use shmlane::Wait;
use shmlane_bench::backend::{BackendKind, Config};
use shmlane_bench::runner::{self as bench, Setup};

#[derive(Parser)]
pub(crate) struct BenchArgs {
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
    /// counts the semaphore waits and posts (and so membarrier calls) of the shm-spsc,
    /// shm-mpmc and shm-broadcast rings per message, every process together.
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
    /// Fan-out rows: subscriber processes of the `shm-broadcast` ring (one broadcast
    /// ring, Block mode), beside the baseline `pipe-fanout` (the publisher writes each
    /// message to one pipe per subscriber); msgs/s is per subscriber. A 1-subscriber
    /// `shm-broadcast` row is added to compare with shm-spsc. 0 skips the fan-out rows.
    #[arg(long, default_value_t = 2)]
    subscribers: usize,
}

pub(crate) struct Row {
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
pub(crate) fn best_of(
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

pub(crate) fn default_messages(size: usize) -> u64 {
    ((512u64 << 20) / size.max(1) as u64).clamp(50_000, 2_000_000)
}

/// The capacity the benchmarks use: `--capacity`, or room for two records of the largest
/// message if that is more, rounded up to a power of two, so it is the shm-spsc ring's
/// real size (see `Options::max_message`) and what the table and JSON report. The default
/// 4 MiB with 64 KiB messages stays 4 MiB.
pub(crate) fn bench_capacity(capacity: usize, max_size: usize) -> usize {
    capacity
        .max(2 * shmlane::format::record_size(max_size))
        .next_power_of_two()
}

pub(crate) fn run_bench(a: BenchArgs) -> Result<(), String> {
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
                BackendKind::ShmSpsc
                    | BackendKind::ShmSpscTyped
                    | BackendKind::ShmMpmc
                    | BackendKind::ShmSpscAsync
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
        if a.subscribers > 0 {
            let mut counts = vec![a.subscribers];
            if a.subscribers != 1 {
                counts.insert(0, 1);
            }
            let mut runs = Vec::new();
            for &n in &counts {
                runs.push((bench::FanOutKind::Broadcast, n));
            }
            runs.push((bench::FanOutKind::Pipes, a.subscribers));
            for (kind, n) in runs {
                let label: &'static str = Box::leak(
                    match kind {
                        bench::FanOutKind::Broadcast => format!("shm-broadcast/{n}"),
                        bench::FanOutKind::Pipes => format!("pipe-fanout/{n}"),
                    }
                    .into_boxed_str(),
                );
                pb.set_message(format!("{label} {size} B"));
                let best = best_of(a.runs, || {
                    bench::fanout_throughput(kind, &setup, size, messages, n)
                        .map(|f| f.as_throughput())
                })
                .map_err(|e| format!("{label} {size} B: {e}"))?;
                let mut row = Row::new(label, size, messages);
                row.msgs_per_sec = best.msgs_per_sec();
                row.bytes_per_sec = best.bytes_per_sec();
                row.pct_of_floor = Some(100.0 * best.bytes_per_sec() / floor.bytes_per_sec());
                if kind == bench::FanOutKind::Broadcast {
                    row.wait_syscalls_per_msg =
                        Some(best.wait_syscalls as f64 / best.messages as f64);
                }
                rows.push(row);
            }
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
        print_fanout_summary(&rows, a.subscribers);
    }
    Ok(())
}

/// The fan-out ratios of each size: shm-broadcast per subscriber against shm-spsc (one
/// consumer) and against the N-pipe fan-out, all from this run.
fn print_fanout_summary(rows: &[Row], n: usize) {
    if n == 0 {
        return;
    }
    let rate = |name: &str, size: usize| {
        rows.iter()
            .find(|r| r.backend == name && r.size == size && r.note.is_none())
            .map(|r| r.msgs_per_sec)
    };
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.size).collect();
    sizes.dedup();
    for size in sizes {
        let spsc = rate("shm-spsc", size);
        let one = rate("shm-broadcast/1", size);
        let many = rate(&format!("shm-broadcast/{n}"), size);
        let pipes = rate(&format!("pipe-fanout/{n}"), size);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        println!(
            "fan-out {size} B: shm-broadcast/1 = {} shm-spsc; shm-broadcast/{n} each = {} shm-spsc, {} pipe-fanout/{n}",
            ratio(one, spsc),
            ratio(many, spsc),
            ratio(many, pipes),
        );
    }
}

pub(crate) fn human(x: f64) -> String {
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

pub(crate) fn ns(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 10_000 => format!("{:.1} us", v as f64 / 1000.0),
        Some(v) => format!("{v} ns"),
    }
}

pub(crate) fn print_table(rows: &[Row], a: &BenchArgs, capacity: usize) {
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

pub(crate) fn print_json(rows: &[Row], a: &BenchArgs, capacity: usize) {
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
