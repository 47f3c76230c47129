//! The process-shared counting semaphore that lives in a segment header ([`SemCell`]): a
//! count and a futex on it. Under loom, a model made of loom's mutex and condvar.

use super::{AtomicU32, Ordering};

/// A process-shared counting semaphore living in the header: a count and a futex on it.
///
/// It does the job of a process-shared POSIX `sem_t`, but every state of it is harmless:
/// glibc's semaphore functions abort the process when a hostile peer writes garbage into a
/// `sem_t` (a futex error they do not expect), while here a garbage count only causes a
/// spurious wake-up, after which the caller re-checks its condition.
#[cfg(not(loom))]
#[repr(C)]
pub struct SemCell {
    count: AtomicU32,
}

/// Under loom: a counting semaphore built from loom's mutex and condvar, so the model
/// checker sees every wait and post.
#[cfg(loom)]
pub struct SemCell {
    count: loom::sync::Mutex<u32>,
    cv: loom::sync::Condvar,
    /// Waits still to end by a (spurious) timeout, taken from [`SPURIOUS_TIMEOUTS`] when
    /// the cell is made.
    spurious: AtomicU32,
}

#[cfg(loom)]
thread_local! {
    /// Under loom: how many waits on each semaphore of the model channels made on this
    /// (test) thread end by a timeout before any post (a sleeper's slice running out
    /// while the waker is on its way), so the models cover the sleeper taking itself off
    /// the count while a waker posts. loom runs a model on the thread that starts it.
    pub static SPURIOUS_TIMEOUTS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

#[cfg(loom)]
impl SemCell {
    pub(crate) fn new() -> SemCell {
        SemCell {
            count: loom::sync::Mutex::new(0),
            cv: loom::sync::Condvar::new(),
            spurious: AtomicU32::new(SPURIOUS_TIMEOUTS.with(|c| c.get())),
        }
    }

    /// Takes one from the count if it is non-zero; never waits.
    pub fn try_take(&self) -> bool {
        let mut n = self.count.lock().unwrap();
        if *n == 0 {
            return false;
        }
        *n -= 1;
        true
    }

    /// Adds one to the count and wakes one waiter.
    pub fn post(&self) {
        *self.count.lock().unwrap() += 1;
        self.cv.notify_one();
    }

    /// Waits until the count is non-zero and takes one. Loom has no clock, so there is
    /// no timeout: a lost wake-up shows up as a deadlock the model checker reports.
    pub fn wait_for(&self, _timeout: std::time::Duration) -> bool {
        let left = self.spurious.load(Ordering::Relaxed);
        if left > 0 {
            // The slice ran out first: no count taken, whatever a waker is doing.
            self.spurious.store(left - 1, Ordering::Relaxed);
            return false;
        }
        let mut n = self.count.lock().unwrap();
        while *n == 0 {
            n = self.cv.wait(n).unwrap();
        }
        *n -= 1;
        true
    }
}

impl std::fmt::Debug for SemCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemCell").finish_non_exhaustive()
    }
}

#[cfg(not(loom))]
impl SemCell {
    fn futex(&self, op: libc::c_int, val: u32, timeout: *const libc::timespec) -> libc::c_long {
        // SAFETY: the futex word is an aligned u32 inside a mapping we hold; FUTEX_WAIT
        // only reads it and FUTEX_WAKE does not touch it. Not FUTEX_PRIVATE: the word is
        // shared between processes.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.count.as_ptr(),
                op,
                val,
                timeout,
                std::ptr::null::<u32>(),
                0u32,
            )
        }
    }

    /// The futex word (the count), for a waiter that sleeps on many semaphores at once
    /// (the async helper thread's `futex_waitv`). It must only ever take one from the
    /// count with a compare-and-swap, as [`wait_for`](Self::wait_for) does.
    pub(crate) fn futex_word(&self) -> &AtomicU32 {
        &self.count
    }

    /// Takes one from the count if it is non-zero; never waits.
    pub fn try_take(&self) -> bool {
        let mut cur = self.count.load(Ordering::Acquire);
        while cur != 0 {
            match self.count.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    /// Adds one to the count and wakes one sleeper (or lets the next wait return at once).
    pub fn post(&self) {
        self.count.fetch_add(1, Ordering::Release);
        self.futex(libc::FUTEX_WAKE, 1, std::ptr::null());
    }

    /// Takes one from the count, sleeping while it is zero for at most `timeout`. Returns
    /// whether it took one. An interrupted sleep returns early; callers re-check their
    /// condition either way.
    pub fn wait_for(&self, timeout: std::time::Duration) -> bool {
        let mut cur = self.count.load(Ordering::Acquire);
        if cur == 0 {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // Sleeps only while the count is still 0 (relative timeout, CLOCK_MONOTONIC).
            self.futex(libc::FUTEX_WAIT, 0, &ts);
            cur = self.count.load(Ordering::Acquire);
        }
        while cur != 0 {
            match self.count.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }
}
