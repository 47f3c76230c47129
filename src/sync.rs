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
