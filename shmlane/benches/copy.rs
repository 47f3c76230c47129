//! The payload copy at several relative alignments: `shmlane::format::copy_bytes`
//! (what the rings use) against the standard library's `copy_from_slice` (glibc `memcpy`).
//!
//! A ring's record offsets move by `len + 8` per message, so the distance between the
//! caller's buffer and the record, modulo 4096, takes every value over time. glibc's
//! `memcpy` (`rep movsb` on this AMD EPYC) drops from ~95 GB/s to ~3 GB/s when that
//! distance is a few bytes (measured: 8 bytes); `copy_bytes` should stay fast at every
//! distance. One criterion group per (size, distance), both copies side by side.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shmlane::format::copy_bytes;

const SIZES: &[usize] = &[1024, 4096, 65536];
/// `dst - src` modulo 4096, in bytes.
const DISTANCES: &[usize] = &[0, 8, 16, 64, 2048, 4088];

fn copy(c: &mut Criterion) {
    // One page-aligned source, destinations 128 KiB further on at each distance.
    let mut buf = vec![0u8; 512 << 10];
    let base = buf.as_ptr() as usize;
    let src_off = base.next_multiple_of(4096) - base;
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31);
    }
    for &size in SIZES {
        for &d in DISTANCES {
            let dst_off = src_off + (128 << 10) + d;
            let (head, tail) = buf.split_at_mut(dst_off);
            let src = &head[src_off..src_off + size];
            let dst = &mut tail[..size];
            let mut group = c.benchmark_group(format!("copy/{size}B/dst-src={d}"));
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(BenchmarkId::from_parameter("copy_bytes"), |b| {
                b.iter(|| copy_bytes(std::hint::black_box(&mut *dst), std::hint::black_box(src)))
            });
            group.bench_function(BenchmarkId::from_parameter("memcpy"), |b| {
                b.iter(|| {
                    std::hint::black_box(&mut *dst).copy_from_slice(std::hint::black_box(src))
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, copy);
criterion_main!(benches);
