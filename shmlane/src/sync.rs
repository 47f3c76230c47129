//! The atomics the rings and the wake protocol use: `std`'s normally, `loom`'s under
//! `cfg(loom)`, so the loom models in `tests/loom.rs` run the real ring code (on heap
//! memory instead of a shared segment).
//!
//! Only state shared through a segment goes through this shim; process-local counters
//! keep `std` atomics.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
/// The `Arc` shared by clones of an MPMC handle: loom's under `cfg(loom)`, so the model
/// sees the ordering that dropping the last clone provides.
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;

/// A hint inside a polling loop: a CPU spin hint normally; under loom a yield, so the
/// model checker lets the other threads run.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Stands for raw payload bytes in shared memory, which loom cannot see: under loom a
/// `loom::cell::UnsafeCell` whose accesses are recorded where the ring hands out a
/// payload slice, so a payload read that does not happen after its write (a weakened
/// ordering, a slot two claimers think they own) fails the model. Normally nothing.
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct Bytes(loom::cell::UnsafeCell<()>);

// SAFETY: the cell holds `()`, no data; sharing it between threads is what it is for: its
// `with`/`with_mut` record accesses, and loom itself reports two that race.
#[cfg(loom)]
unsafe impl Sync for Bytes {}

/// Stands for raw payload bytes in shared memory (nothing outside loom).
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct Bytes;

impl Bytes {
    /// A fresh tracker.
    #[cfg_attr(not(loom), allow(dead_code))]
    pub(crate) fn new() -> Bytes {
        #[cfg(loom)]
        return Bytes(loom::cell::UnsafeCell::new(()));
        #[cfg(not(loom))]
        Bytes
    }

    /// The bytes are about to be written.
    #[inline(always)]
    pub(crate) fn write(&self) {
        #[cfg(loom)]
        self.0.with_mut(|_| ());
    }

    /// The bytes are about to be read.
    #[inline(always)]
    pub(crate) fn read(&self) {
        #[cfg(loom)]
        self.0.with(|_| ());
    }
}
