//! One-way latency (round trip / 2) of every backend, cross-process, by message size.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use shmlane::Wait;
use shmlane_bench::backend::{BackendKind, Config};
use shmlane_bench::runner::{self as bench, Setup};

const SIZES: &[usize] = &[8, 64, 1024, 4096, 65536];

fn latency(c: &mut Criterion) {
    let setup = Setup {
        peer_exe: env!("CARGO_BIN_EXE_shmlane-bench-peer").into(),
        config: Config {
            max_message: 65536,
            capacity: bench::BENCH_CAPACITY,
            wait: Wait::Block,
        },
        pin: false,
    };
    for &size in SIZES {
        let mut group = c.benchmark_group(format!("latency/{size}B"));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(3));
        for &backend in BackendKind::ALL {
            if backend.supports(size).is_err() {
                continue;
            }
            group.bench_with_input(BenchmarkId::from_parameter(backend), &size, |b, &size| {
                b.iter_custom(|iters| {
                    let l = bench::latency(backend, &setup, size, iters.max(1))
                        .unwrap_or_else(|e| panic!("{backend} {size} B: {e}"));
                    Duration::from_nanos(l.one_way_ns.iter().sum())
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, latency);
criterion_main!(benches);
