//! The lock-free ring algorithms, over a validated segment's raw memory.
//!
//! Everything read from the shared data area or positions is range-checked before it
//! forms a slice: a bad value is [`crate::Error::Corrupt`], never undefined behaviour.

pub(crate) mod barrier;
pub mod copy;
pub(crate) mod mpmc;
pub(crate) mod spsc;

/// Starts loading the cache line at `p` (a hint: no fault, no effect on memory). The
/// consumers call it for the second line of a message they are about to read: a line the
/// other core has just written takes a full cross-core transfer, and asking for it while
/// the first line is still on its way overlaps the two. On this project's AMD EPYC that
/// took the one-way latency of 64-byte messages from 140 to 110-115 ns.
#[inline(always)]
pub(crate) fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 (SSE, part of the x86_64 baseline) is a hint: it never faults,
    // whatever the address, and changes no memory.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Bytes of a record header `{ len: u32, tag: u32 }`.
pub const RECORD_HEADER: usize = 8;
/// Records start on multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Bytes of an MPMC slot header
/// `{ stamp: u64, producer_claim: u64, consumer_claim: u64, len: u32, tag: u32 }`.
#[cfg(not(loom))]
pub const SLOT_HEADER: usize = 32;
/// Bytes of an MPMC slot header (loom's atomics are larger).
#[cfg(loom)]
pub const SLOT_HEADER: usize = 512;
/// MPMC slots are a multiple of this (a cache line, so neighbours do not false-share).
pub const SLOT_ALIGN: usize = 64;

/// The bytes a record of `len` payload bytes takes in an SPSC ring: header plus payload,
/// rounded up to [`RECORD_ALIGN`].
#[inline]
pub const fn record_size(len: usize) -> usize {
    RECORD_HEADER + ((len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1))
}
