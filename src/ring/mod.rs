//! The lock-free ring algorithms, over a validated segment's raw memory.
//!
//! Everything read from the shared data area or positions is range-checked before it
//! forms a slice: a bad value is [`crate::Error::Corrupt`], never undefined behaviour.

pub(crate) mod barrier;
pub mod copy;
pub mod floor;
pub(crate) mod mpmc;
pub(crate) mod spsc;

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
