//! The one place loom is switched in (tokio's `src/loom` shows the way): the atomics the
//! rings and the wake protocol share through a segment, the futex semaphore
//! ([`futex::SemCell`]), the membarrier scheme ([`barrier`]), the byte-access trackers
//! that stand for raw payload bytes, and the sizes loom's larger atomics force. Under
//! `cfg(loom)` each is loom's (or a model of it), so the loom models in `tests/loom.rs`
//! run the real ring code on heap memory; everywhere else, `std`'s and the kernel's.
//!
//! The atomic types here are thin `#[repr(transparent)]` wrappers of `std`'s, so that
//! `clippy.toml`'s `disallowed-types` can keep `std`'s atomics out of the ring and header
//! code: an atomic used there without this shim would be invisible to loom. Process-local
//! state (statistics, the membarrier registration) may use `std` atomics directly, with an
//! `allow` that says why.
#![allow(clippy::disallowed_types)] // the shim itself

pub(crate) mod barrier;
pub(crate) mod futex;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Defines an atomic wrapper with the operations the rings use, each `#[inline(always)]`
/// and the same as `std`'s.
#[cfg(not(loom))]
macro_rules! atomic {
    ($(#[$doc:meta])* $name:ident, $std:ty, $int:ty) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Debug, Default)]
        pub struct $name($std);

        #[allow(dead_code)] // not every type uses every operation
        impl $name {
            /// A new atomic holding `v`.
            #[inline(always)]
            pub const fn new(v: $int) -> Self {
                Self(<$std>::new(v))
            }
            /// `load`.
            #[inline(always)]
            pub fn load(&self, o: Ordering) -> $int {
                self.0.load(o)
            }
            /// `store`.
            #[inline(always)]
            pub fn store(&self, v: $int, o: Ordering) {
                self.0.store(v, o)
            }
            /// `swap`.
            #[inline(always)]
            pub fn swap(&self, v: $int, o: Ordering) -> $int {
                self.0.swap(v, o)
            }
            /// `fetch_add`.
            #[inline(always)]
            pub fn fetch_add(&self, v: $int, o: Ordering) -> $int {
                self.0.fetch_add(v, o)
            }
            /// `fetch_sub`.
            #[inline(always)]
            pub fn fetch_sub(&self, v: $int, o: Ordering) -> $int {
                self.0.fetch_sub(v, o)
            }
            /// `fetch_and`.
            #[inline(always)]
            pub fn fetch_and(&self, v: $int, o: Ordering) -> $int {
                self.0.fetch_and(v, o)
            }
            /// `fetch_or`.
            #[inline(always)]
            pub fn fetch_or(&self, v: $int, o: Ordering) -> $int {
                self.0.fetch_or(v, o)
            }
            /// `compare_exchange`.
            #[inline(always)]
            pub fn compare_exchange(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.0.compare_exchange(current, new, success, failure)
            }
            /// `compare_exchange_weak`.
            #[inline(always)]
            pub fn compare_exchange_weak(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.0.compare_exchange_weak(current, new, success, failure)
            }
            /// The address of the value (a futex word).
            #[inline(always)]
            pub fn as_ptr(&self) -> *mut $int {
                self.0.as_ptr()
            }
        }
    };
}

#[cfg(not(loom))]
atomic!(
    /// `std::sync::atomic::AtomicU64`, through the shim.
    AtomicU64,
    std::sync::atomic::AtomicU64,
    u64
);
#[cfg(not(loom))]
atomic!(
    /// `std::sync::atomic::AtomicU32`, through the shim.
    AtomicU32,
    std::sync::atomic::AtomicU32,
    u32
);
#[cfg(not(loom))]
atomic!(
    /// `std::sync::atomic::AtomicU8`, through the shim.
    AtomicU8,
    std::sync::atomic::AtomicU8,
    u8
);

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

/// Gives the CPU away inside a polling loop (`Wait::Yield`): `sched_yield` normally;
/// under loom a model yield, so the checker lets the other threads run.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
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

/// One [`Bytes`] per 8 bytes of a data area, under loom; nothing (a zero-sized value)
/// otherwise. The ring code calls [`Tracked::write`] / [`Tracked::read`] where it hands out
/// payload bytes.
#[derive(Debug)]
pub(crate) struct Tracked {
    #[cfg(loom)]
    words: Vec<Bytes>,
}

impl Tracked {
    /// Trackers for a data area of `len` bytes (under loom; none otherwise).
    pub(crate) fn new(len: usize) -> Tracked {
        #[cfg(not(loom))]
        let _ = len;
        Tracked {
            #[cfg(loom)]
            words: (0..len.div_ceil(8)).map(|_| Bytes::new()).collect(),
        }
    }

    /// No trackers: a mapping that is not a loom model.
    pub(crate) fn none() -> Tracked {
        Tracked {
            #[cfg(loom)]
            words: Vec::new(),
        }
    }

    /// Bytes `off .. off + len` are about to be written.
    #[inline(always)]
    pub(crate) fn write(&self, off: usize, len: usize) {
        #[cfg(loom)]
        for w in self.words.iter().skip(off / 8).take(len.div_ceil(8).max(1)) {
            w.write();
        }
        #[cfg(not(loom))]
        let _ = (off, len);
    }

    /// Bytes `off .. off + len` are about to be read.
    #[inline(always)]
    pub(crate) fn read(&self, off: usize, len: usize) {
        #[cfg(loom)]
        for w in self.words.iter().skip(off / 8).take(len.div_ceil(8).max(1)) {
            w.read();
        }
        #[cfg(not(loom))]
        let _ = (off, len);
    }
}

/// Sizes of the format that loom's larger atomics (and its small state space) change. The
/// format's constants (`HEADER_SIZE`, `MAX_ENDPOINTS`, `NAME_CAP`, `TYPE_NAME_CAP`,
/// `SLOT_HEADER`) take their values from here.
pub(crate) mod sizes {
    /// Bytes reserved for the header.
    pub(crate) const HEADER_SIZE: usize = if cfg!(loom) { 1 << 16 } else { 4096 };
    /// Endpoint slots in the registry.
    pub(crate) const MAX_ENDPOINTS: usize = if cfg!(loom) { 4 } else { 64 };
    /// Longest name stored in the header.
    pub(crate) const NAME_CAP: usize = if cfg!(loom) { 32 } else { 256 };
    /// Bytes of a typed channel's type name kept in the header.
    pub(crate) const TYPE_NAME_CAP: usize = if cfg!(loom) { 8 } else { 128 };
    /// Bytes of an MPMC slot header: exactly its size normally, room to spare under loom.
    pub(crate) const SLOT_HEADER: usize = if cfg!(loom) { 512 } else { 32 };
    /// Whether `SLOT_HEADER` must equal the slot header's size (not under loom, whose
    /// atomics are larger).
    pub(crate) const SLOT_HEADER_EXACT: bool = !cfg!(loom);
}
