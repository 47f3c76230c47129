//! Test-only pause points inside the MPMC ring protocol (hidden from the docs).
//!
//! A test arms one point with [`arm`]; the first thread of this process that reaches it
//! disarms it and pauses there (sleeps, or stops the whole process with `SIGSTOP` so the
//! parent can kill it at exactly that step). Unarmed, a point costs one relaxed load of a
//! process-global word, and the points sit only where a claimer has just won a slot.

#![allow(clippy::disallowed_types)] // process-local pause points, not shared state

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// A step of the MPMC protocol a test can pause at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Point {
    /// A sender has won its slot's claim word and has not written a byte yet.
    SendOwned = 1,
    /// A receiver has won its slot's claim word and has not moved the dequeue index on.
    RecvOwned = 2,
    /// A receiver recovering a dead sender's slot has won its claim word and has not
    /// published it as cancelled yet.
    RecoverRecv = 3,
    /// A sender recovering a dead receiver's slot has won its claim word and has not
    /// freed the slot yet.
    RecoverSend = 4,
}

/// What to do at an armed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Sleep this long, then go on.
    Sleep(Duration),
    /// Raise `SIGSTOP` on this process (a parent then kills it, or continues it).
    Stop,
}

static ARMED: AtomicU32 = AtomicU32::new(0);
/// 0: stop; otherwise sleep this many microseconds.
static SLEEP_US: AtomicU64 = AtomicU64::new(0);
static HITS: AtomicU64 = AtomicU64::new(0);

/// Arms `point`: the next thread of this process to reach it pauses as `pause` says.
pub fn arm(point: Point, pause: Pause) {
    let us = match pause {
        Pause::Sleep(d) => (d.as_micros() as u64).max(1),
        Pause::Stop => 0,
    };
    SLEEP_US.store(us, Ordering::Relaxed);
    ARMED.store(point as u32, Ordering::SeqCst);
}

/// Disarms any point.
pub fn disarm() {
    ARMED.store(0, Ordering::SeqCst);
}

/// How many pauses have begun in this process (a pause counts as soon as it starts).
pub fn hits() -> u64 {
    HITS.load(Ordering::SeqCst)
}

/// A pause point: one relaxed load when nothing is armed.
#[inline(always)]
pub(crate) fn point(p: Point) {
    if ARMED.load(Ordering::Relaxed) != 0 {
        pause(p);
    }
}

#[cold]
#[inline(never)]
fn pause(p: Point) {
    if ARMED
        .compare_exchange(p as u32, 0, Ordering::SeqCst, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    HITS.fetch_add(1, Ordering::SeqCst);
    match SLEEP_US.load(Ordering::Relaxed) {
        0 => {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
        }
        us => std::thread::sleep(Duration::from_micros(us)),
    }
}
