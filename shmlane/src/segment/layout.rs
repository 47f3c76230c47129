//! The format's sizes and limits that both the rings and the validator need: record and
//! slot headers, record alignment, the capacity and message limits. Part of the layout
//! hash (`header::layout_hash`), so a build that changes one cannot open another's
//! segments.

/// The smallest data capacity a ring can have.
pub const MIN_CAPACITY: usize = 64;
/// The largest `max_message` any ring accepts (record lengths keep their top bit as a flag).
pub const MAX_MESSAGE_LIMIT: usize = (1 << 31) - 1;

/// Bytes of a record header `{ len: u32, tag: u32 }`.
pub const RECORD_HEADER: usize = 8;
/// Records start on multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Bytes of an MPMC slot header
/// `{ stamp: u64, producer_claim: u64, consumer_claim: u64, len: u32, tag: u32 }`.
/// (512 under loom, whose atomics are larger: see `sync::sizes`.)
pub const SLOT_HEADER: usize = crate::sync::sizes::SLOT_HEADER;
/// MPMC slots are a multiple of this (a cache line, so neighbours do not false-share).
pub const SLOT_ALIGN: usize = 64;

/// The bytes a record of `len` payload bytes takes in an SPSC ring: header plus payload,
/// rounded up to [`RECORD_ALIGN`].
#[inline]
pub const fn record_size(len: usize) -> usize {
    RECORD_HEADER + ((len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1))
}
