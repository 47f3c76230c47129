//! Throughput of every backend, cross-process: one criterion group per message size, so
//! the backends sit side by side in the report (`target/criterion/report/index.html`).
//!
//! The peer is the `shmlane` binary re-run as `shmlane __peer`; each measurement counts
//! only messages the peer received and verified by checksum.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shmlane::Wait;
use shmlane_bench::backend::{BackendKind, Config};
use shmlane_bench::runner::{self as bench, Setup};

const SIZES: &[usize] = &[8, 64, 1024, 4096, 65536];

fn setup(wait: Wait) -> Setup {
    Setup {
        peer_exe: env!("CARGO_BIN_EXE_shmlane-bench-peer").into(),
        config: Config {
            max_message: 65536,
            capacity: bench::BENCH_CAPACITY,
            wait,
        },
        pin: false,
    }
}

fn throughput(c: &mut Criterion) {
    let setup = setup(Wait::Block);
    for &size in SIZES {
        let mut group = c.benchmark_group(format!("throughput/{size}B"));
        group.throughput(Throughput::Bytes(size as u64));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(3));
        for &backend in BackendKind::ALL {
            if backend.supports(size).is_err() {
                continue;
            }
            group.bench_with_input(BenchmarkId::from_parameter(backend), &size, |b, &size| {
                b.iter_custom(|iters| {
                    bench::throughput(backend, &setup, size, iters.max(1))
                        .unwrap_or_else(|e| panic!("{backend} {size} B: {e}"))
                        .elapsed
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, throughput);
criterion_main!(benches);
