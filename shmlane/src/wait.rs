//! Waiting for the peer: spin, yield, or sleep on a process-shared semaphore.
//!
//! The wake protocol (no lost wake-up):
//! 1. sleeper: increment the waiter count, `fence(SeqCst)`, re-check the condition, then
//!    sleep on the semaphore for one slice (and re-check the peer's liveness after it);
//! 2. waker: publish its position (Release), `fence(SeqCst)`, and post the semaphore only if the
//!    waiter count is non-zero.
//!
//! With both fences in the single SeqCst order, either the waker's load sees the
//! sleeper's increment (and posts), or the sleeper's re-check sees the waker's position
//! (and does not sleep). Under load nobody sleeps, so no system call is made per message.
//!
//! Where the kernel offers `membarrier(2)`, the waker's fence is only a compiler barrier
//! and the sleeper issues a global expedited membarrier before it sleeps instead (see
//! `sync::barrier`): the message path then has no fence at all.

use std::sync::atomic::compiler_fence;

use crate::sync::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;

use crate::error::{Error, Result};
use crate::sync::barrier;
use crate::sync::futex::SemCell;

#[cfg(not(loom))]
pub(crate) mod reactor;

/// How an endpoint waits when the ring is full (producer) or empty (consumer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Wait {
    /// Busy-poll: the lowest latency, and a whole core burnt while waiting.
    Spin,
    /// Poll with `sched_yield` between tries: lets other threads run, still never sleeps.
    Yield,
    /// Spin briefly, then sleep on a process-shared semaphore until the peer posts it
    /// (the default). The peer only makes a system call when someone actually sleeps.
    #[default]
    Block,
}

impl Wait {
    pub(crate) fn to_raw(self) -> u32 {
        match self {
            Wait::Spin => 1,
            Wait::Yield => 2,
            Wait::Block => 3,
        }
    }

    pub(crate) fn from_raw(raw: u32) -> Wait {
        match raw {
            1 => Wait::Spin,
            2 => Wait::Yield,
            _ => Wait::Block,
        }
    }
}

impl std::str::FromStr for Wait {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Wait, String> {
        match s {
            "spin" => Ok(Wait::Spin),
            "yield" => Ok(Wait::Yield),
            "block" => Ok(Wait::Block),
            _ => Err(format!(
                "unknown wait strategy {s:?} (spin, yield or block)"
            )),
        }
    }
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Wait::Spin => "spin",
            Wait::Yield => "yield",
            Wait::Block => "block",
        })
    }
}

/// How the other side went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gone {
    /// It closed its end: [`Error::Disconnected`].
    Closed,
    /// Its process died without closing: [`Error::PeerDied`].
    Died,
}

impl Gone {
    pub(crate) fn error(self) -> Error {
        match self {
            Gone::Closed => Error::Disconnected,
            Gone::Died => Error::PeerDied,
        }
    }
}

/// How long a sleeper sleeps before it re-checks that its peer is alive.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// Counts of sleeps and wake-ups (this process), so tests and benchmarks can show that
/// no system call is made per message.
#[allow(clippy::disallowed_types)] // process-local statistics, not shared state
pub mod stats {
    use super::*;
    use std::sync::atomic::AtomicU64;

    pub(super) static SLEEPS: AtomicU64 = AtomicU64::new(0);
    pub(super) static POSTS: AtomicU64 = AtomicU64::new(0);
    pub(super) static WOKEN: AtomicU64 = AtomicU64::new(0);
    #[cfg(not(loom))] // the async reactor (not built under loom) counts these
    pub(super) static TICK_FOUND: AtomicU64 = AtomicU64::new(0);

    /// Semaphore waits (`FUTEX_WAIT` sleeps, with a membarrier before each where light
    /// wakers are in use) made by this process so far.
    pub fn sleeps() -> u64 {
        SLEEPS.load(Ordering::Relaxed)
    }

    /// Semaphore posts (`FUTEX_WAKE` calls) made by this process so far.
    pub fn posts() -> u64 {
        POSTS.load(Ordering::Relaxed)
    }

    /// Of [`sleeps`], those that ended by taking a post (the rest ran out their slice),
    /// so a test can tell a sleeper woken by its peer from one woken by its timer.
    pub fn woken() -> u64 {
        WOKEN.load(Ordering::Relaxed)
    }

    /// Async waits that found what they waited for only when their liveness tick came
    /// (the task polled by the tick, or the helper thread finding the post when its sleep
    /// timed out instead of being woken by it). Each is a wake-up the post did not
    /// deliver, so tests expect (almost) none: a post and a tick can race, very rarely.
    #[cfg(not(loom))]
    pub fn async_tick_found() -> u64 {
        TICK_FOUND.load(Ordering::Relaxed)
    }

    /// Helper threads the async endpoints have started in this process: one per 127
    /// waiting futures with `futex_waitv`, one per waiting future without it.
    #[cfg(not(loom))]
    pub fn async_helper_threads() -> usize {
        super::reactor::helper_threads()
    }

    /// Whether the async helper threads use `futex_waitv(2)` (Linux 5.16+; not when
    /// `SHMLANE_NO_FUTEX_WAITV` is set).
    #[cfg(not(loom))]
    pub fn async_uses_futex_waitv() -> bool {
        super::reactor::uses_futex_waitv()
    }
}

/// Tells sleepers on this segment that this process wakes with light barriers, if it
/// does; called once per endpoint at attach, before it publishes anything.
pub(crate) fn announce_light_waker(light_wakers: &AtomicU32) {
    if barrier::register() {
        light_wakers.fetch_or(1, Ordering::SeqCst);
        // Pairs with the sleeper's fence between its waiter increment and its load of
        // the flag: either it sees the flag, or our later waiter loads see its increment.
        fence(Ordering::SeqCst);
    }
}

/// The waker's half: after publishing, wake one sleeper if anyone sleeps.
///
/// The waker takes the sleeper off the count itself (one CAS), so a burst of messages to
/// a sleeping peer makes one post, not one per message, and one post wakes one
/// sleeper (no thundering herd).
#[inline]
pub(crate) fn wake(waiters: &AtomicU32, sem: &SemCell) {
    if barrier::light() {
        // The sleeper's membarrier stands in for our half of the fence.
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
    if waiters.load(Ordering::Relaxed) != 0 {
        wake_slow(waiters, sem);
    }
}

/// [`wake`], and then, only if someone sleeps, one more post for each further message (or
/// slot) that `ready(1)`, `ready(2)`, ... says is ready while sleepers remain (MPMC).
///
/// Why: an MPMC sleeper woken for a message behind a head that is claimed but not yet
/// published finds nothing it can take and sleeps again; that post is spent. When the head
/// is published, its publisher's one post wakes one sleeper, for the head, and the message
/// behind it would wait for another sleeper's slice to run out. So the publisher of the
/// head also posts for the published run behind it (and a releaser for the free run behind
/// its slot). Under load nobody sleeps: one relaxed load, as in [`wake`].
#[inline]
pub(crate) fn wake_run(waiters: &AtomicU32, sem: &SemCell, ready: impl FnMut(u64) -> bool) {
    if barrier::light() {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
    if waiters.load(Ordering::Relaxed) != 0 {
        wake_run_slow(waiters, sem, ready);
    }
}

#[cold]
fn wake_run_slow(waiters: &AtomicU32, sem: &SemCell, mut ready: impl FnMut(u64) -> bool) {
    wake_slow(waiters, sem);
    let mut n = 1;
    while waiters.load(Ordering::Relaxed) != 0 && ready(n) {
        wake_slow(waiters, sem);
        n += 1;
    }
}

/// The waker's half of a Dekker pattern (see [`sleeper_fence`]): a compiler fence when
/// this process's wakers use light barriers, else a full fence.
#[inline]
pub(crate) fn waker_fence() {
    if barrier::light() {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The sleeper's half of a Dekker pattern: a full fence, plus the heavy barrier when any
/// endpoint of the segment wakes with light barriers (so their [`waker_fence`] counts).
pub(crate) fn sleeper_fence(light_wakers: &AtomicU32) {
    fence(Ordering::SeqCst);
    if light_wakers.load(Ordering::Relaxed) != 0 && !barrier::heavy() {
        // The kernel refused: fall back to what a full fence gives (the caller re-checks).
        fence(Ordering::SeqCst);
    }
}

/// Wakes every sleeper (broadcast subscribers): like [`wake`], nothing but a barrier and
/// one load when nobody sleeps; otherwise posts until the count is 0.
#[inline]
pub(crate) fn wake_every(waiters: &AtomicU32, sem: &SemCell) {
    waker_fence();
    if waiters.load(Ordering::Relaxed) != 0 {
        wake_every_slow(waiters, sem);
    }
}

#[cold]
fn wake_every_slow(waiters: &AtomicU32, sem: &SemCell) {
    for _ in 0..1024 {
        if waiters.load(Ordering::Relaxed) == 0 {
            return;
        }
        wake_slow(waiters, sem);
    }
}

/// Wakes every sleeper (an endpoint leaving: all of them must see it). The fence pairs
/// with each sleeper's, like [`wake`]'s; always a full fence here (this is rare).
pub(crate) fn wake_all(waiters: &AtomicU32, sem: &SemCell) {
    fence(Ordering::SeqCst);
    // Bounded: each round takes one sleeper off the count; new sleepers see the change.
    for _ in 0..1024 {
        if waiters.load(Ordering::Relaxed) == 0 {
            return;
        }
        wake_slow(waiters, sem);
    }
}

#[cold]
fn wake_slow(waiters: &AtomicU32, sem: &SemCell) {
    let mut cur = waiters.load(Ordering::Relaxed);
    while cur != 0 {
        match waiters.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => {
                stats::POSTS.fetch_add(1, Ordering::Relaxed);
                sem.post();
                return;
            }
            Err(now) => cur = now,
        }
    }
}

/// A sleeper that woke without being posted takes itself off the count, unless a waker
/// already did (then its post is on the way and only causes one spurious wake later).
/// Returns whether it took a unit off.
fn unregister(waiters: &AtomicU32) -> bool {
    let mut cur = waiters.load(Ordering::Relaxed);
    while cur != 0 {
        match waiters.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
    false
}

/// The async sleeper's half of the wake protocol (the async endpoints, `reactor`): join
/// the waiter count, fence, then `check` once more. `Ok(r)` when the check found
/// something (the unit is given back); `Err(short)` when registered, holding one unit of
/// the count, which the peer's [`wake`] takes with its post or the caller gives back with
/// [`unregister`]. `short`: light wakers are in use and this process has no heavy barrier,
/// so a wake-up may be missed and the caller should look again soon (1 ms).
///
/// The same two steps and fence as `wait_until`'s before it sleeps, so either the waker's
/// load sees our increment (and posts, which the helper thread takes for us), or our
/// check sees its publish.
pub(crate) fn register_then_check<T>(
    waiters: &AtomicU32,
    sem: &SemCell,
    light_wakers: &AtomicU32,
    check: impl FnOnce() -> Option<T>,
) -> std::result::Result<T, bool> {
    waiters.fetch_add(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    let short = light_wakers.load(Ordering::Relaxed) != 0 && !barrier::heavy();
    match check() {
        Some(r) => {
            give_back(waiters, sem);
            Ok(r)
        }
        None => Err(short),
    }
}

/// Gives back a unit of the waiter count taken by [`register_then_check`] (a cancelled
/// or finished async wait). If a waker took it off already, its post is ours: take it
/// back from the semaphore if it has arrived, so that it wakes nobody later for nothing
/// (a post taken by a later waiter leaves that waiter's own unit on the count, and the
/// next publish would pay a post for it). One still on its way costs one spurious wake.
pub(crate) fn give_back(waiters: &AtomicU32, sem: &SemCell) {
    if !unregister(waiters) {
        sem.try_take();
    }
}

/// How long an async endpoint's `recv()` / `send()` looks again, holding its executor
/// thread, before it registers with the helper thread (once per call; `set_spin` on the
/// endpoint changes it, zero turns it off). A peer that is streaming or answering is
/// usually met within it, which saves the two thread wake-ups (helper thread, then the
/// executor's thread) a registered wait costs; longer would hold other tasks up.
pub const DEFAULT_ASYNC_SPIN: Duration = Duration::from_micros(10);

/// How long `Wait::Block` polls before it sleeps: long enough that a streaming peer is
/// met while polling, short enough that an idle endpoint soon stops burning a core.
pub(crate) const BLOCK_SPIN: Duration = Duration::from_micros(50);

/// What a wait loop asks of its caller.
pub(crate) struct Waiting<'a> {
    pub strategy: Wait,
    pub deadline: Option<Instant>,
    pub waiters: &'a AtomicU32,
    pub sem: &'a SemCell,
    /// The header's `light_wakers` flag.
    pub light_wakers: &'a AtomicU32,
    /// When the peer is gone, give `check` one last try (a consumer drains what was
    /// published); otherwise fail at once (a producer has nobody to send to).
    pub drain_when_gone: bool,
}

/// Polls `check` until it returns `Some`, waiting per the strategy. `peer_gone` is asked
/// after every sleep slice (Block), every 1024 polls (Spin) or 16 yields (Yield), and once
/// more when the deadline has passed; it keeps its own rate limit across calls (the
/// endpoint's, see `channel::LIVENESS_INTERVAL`), so a caller waiting in short slices is
/// told of a dead peer as soon as one waiting in long ones. When it says the peer is
/// gone, `check` gets one last try (when draining) and then the result is the error that
/// says how it went ([`Gone::error`]).
pub(crate) fn wait_until<T>(
    w: Waiting<'_>,
    mut check: impl FnMut() -> Option<Result<T>>,
    mut peer_gone: impl FnMut() -> Option<Gone>,
) -> Result<T> {
    let backoff = Backoff::new();
    let mut polls: u32 = 0;
    let mut spin_start: Option<Instant> = None;
    let gone =
        |how: Gone, drain: bool, check: &mut dyn FnMut() -> Option<Result<T>>| -> Result<T> {
            if drain {
                check().unwrap_or(Err(how.error()))
            } else {
                Err(how.error())
            }
        };
    loop {
        if let Some(r) = check() {
            return r;
        }
        match w.strategy {
            Wait::Spin => {
                crate::sync::spin_hint();
                polls = polls.wrapping_add(1);
                if polls % 1024 != 0 {
                    continue;
                }
            }
            Wait::Yield => {
                crate::sync::yield_now();
                polls = polls.wrapping_add(1);
                if polls % 16 != 0 {
                    continue;
                }
            }
            Wait::Block => {
                // Under loom, go straight to the sleep protocol: that is what is modelled.
                if !cfg!(loom) && !backoff.is_completed() {
                    backoff.snooze();
                    continue;
                }
                let now = Instant::now();
                let started = *spin_start.get_or_insert(now);
                if !cfg!(loom) && now.duration_since(started) < BLOCK_SPIN {
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                    continue;
                }
                let mut slice = SLICE;
                if let Some(d) = w.deadline {
                    if now >= d {
                        if let Some(r) = check() {
                            return r;
                        }
                        if let Some(how) = peer_gone() {
                            return gone(how, w.drain_when_gone, &mut check);
                        }
                        return Err(Error::Timeout);
                    }
                    slice = slice.min(d - now);
                }
                w.waiters.fetch_add(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if w.light_wakers.load(Ordering::Relaxed) != 0 && !barrier::heavy() {
                    // Light wakers, and no heavy barrier to pair with them: a wake-up may
                    // be missed, so sleep only briefly before looking again.
                    slice = slice.min(Duration::from_millis(1));
                }
                if let Some(r) = check() {
                    unregister(w.waiters);
                    return r;
                }
                stats::SLEEPS.fetch_add(1, Ordering::Relaxed);
                if w.sem.wait_for(slice) {
                    stats::WOKEN.fetch_add(1, Ordering::Relaxed);
                } else {
                    unregister(w.waiters);
                }
            }
        }
        if let Some(d) = w.deadline {
            if Instant::now() >= d {
                if let Some(r) = check() {
                    return r;
                }
                if let Some(how) = peer_gone() {
                    return gone(how, w.drain_when_gone, &mut check);
                }
                return Err(Error::Timeout);
            }
        }
        if let Some(how) = peer_gone() {
            return gone(how, w.drain_when_gone, &mut check);
        }
    }
}
