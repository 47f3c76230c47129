//! Asymmetric memory barriers with `membarrier(2)`.
//!
//! The wake protocol is a Dekker pattern: the waker stores its position then loads the
//! waiter count; the sleeper stores the count then loads the position. Each side needs a
//! StoreLoad barrier between the two, and on x86 a full fence right after a store to a
//! contended cache line stalls until that line arrives: the waker would pay a cross-core
//! round trip on every message. `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` lets the
//! rare side (the sleeper, about to make a system call anyway) pay for both: it forces a
//! full barrier on every CPU running a registered process, so the frequent side (the
//! waker) needs only a compiler barrier. Processes register once; where the kernel or a
//! seccomp filter refuses, both sides keep full fences.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

const UNDECIDED: u8 = 0;
const LIGHT: u8 = 1;
const UNAVAILABLE: u8 = 2;
const DECIDING: u8 = 3;

/// The hot path's flag: [`LIGHT`] once this process is registered, else anything else.
/// A `fork` child starts with it cleared (see `after_fork_in_child`): registration
/// belongs to the address space, which the child does not share.
static STATE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// `pid << 8 | state`: who decided, and what. The decision is made once per process by
/// whoever wins the CAS to [`DECIDING`]; everyone else (another thread attaching at the
/// same moment) waits for it and returns the same answer, so no endpoint can announce
/// light wakers differently from how this process's wakers behave.
static DECISION: AtomicU64 = AtomicU64::new(0);

fn membarrier(cmd: libc::c_int) -> bool {
    // SAFETY: membarrier takes plain integers and touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
}

extern "C" fn after_fork_in_child() {
    // Async-signal-safe: two atomic stores. The child is not registered; until it
    // registers (at its next attach) its wakers use full fences.
    STATE.store(UNDECIDED, Ordering::SeqCst);
    DECISION.store(0, Ordering::SeqCst);
}

/// Registers this process for expedited global barriers (once per process, again in a
/// `fork` child) and says whether its wakers may use light barriers.
/// `SHMLANE_NO_MEMBARRIER` (any value) turns this off.
pub(crate) fn register() -> bool {
    let pid = u64::from(std::process::id());
    loop {
        let cur = DECISION.load(Ordering::Acquire);
        if cur >> 8 == pid {
            match cur as u8 {
                LIGHT => return true,
                UNAVAILABLE => return false,
                _ => {
                    // Another thread is deciding right now.
                    std::thread::yield_now();
                    continue;
                }
            }
        }
        // Undecided in this process (never tried, or decided by the parent before a fork).
        if DECISION
            .compare_exchange(
                cur,
                pid << 8 | u64::from(DECIDING),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            continue;
        }
        static AT_FORK: std::sync::Once = std::sync::Once::new();
        AT_FORK.call_once(|| {
            // SAFETY: registers a handler that only stores to atomics.
            unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        });
        let ok = std::env::var_os("SHMLANE_NO_MEMBARRIER").is_none()
            && !cfg!(loom)
            && membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED);
        let state = if ok { LIGHT } else { UNAVAILABLE };
        STATE.store(state, Ordering::Release);
        DECISION.store(pid << 8 | u64::from(state), Ordering::Release);
        return ok;
    }
}

/// Whether this process's wakers use light barriers.
#[inline]
pub(crate) fn light() -> bool {
    STATE.load(Ordering::Relaxed) == LIGHT
}

/// The sleeper's heavy barrier: a full barrier on every CPU that runs a registered
/// process. Returns false if the kernel refused (then light wakers cannot be trusted
/// and the caller must sleep only briefly).
pub(crate) fn heavy() -> bool {
    membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Threads attaching at once all get the one answer the process decided.
    #[test]
    fn concurrent_registration_agrees() {
        let answers: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(register)).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(answers.iter().all(|&a| a == answers[0]));
        assert_eq!(light(), answers[0]);
    }

    /// A `fork` child is not registered until it registers itself.
    #[test]
    fn fork_child_starts_unregistered() {
        register();
        // SAFETY: the child only reads an atomic and calls _exit (no allocation: other
        // test threads may hold the allocator's lock at the fork).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = if light() { 1 } else { 0 };
            // SAFETY: _exit is async-signal-safe and ends the child here.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child we forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child status {status}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the child used light barriers unregistered"
        );
    }
}
