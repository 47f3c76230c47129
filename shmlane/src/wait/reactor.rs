//! Waiting without a thread per ring: the async endpoints' half of the sleeper protocol.
//!
//! An async endpoint waits like a blocking one (see the parent module): it adds itself to
//! the ring's waiter count, re-checks, and only then "sleeps", so the peer's ordinary
//! [`wake`](super::wake) posts the ring's semaphore for it. Instead of a thread sleeping
//! on that semaphore, the future hands a [`Slot`] (the semaphore's futex word, the task's
//! `Waker`, the endpoint's readiness eventfd) to this process's helper threads and
//! returns `Pending`.
//!
//! ## Helper threads
//! Each helper thread ([`Shard`]) watches up to [`PER_THREAD`] futex words with one
//! `futex_waitv(2)` call (Linux 5.16+; the kernel takes 128 words a call: 127 slots plus
//! the shard's own control word, bumped whenever its set of slots changes). When it
//! returns, the thread looks at every slot under the shard's lock: a slot whose semaphore
//! count is non-zero takes one from it (a compare-and-swap, as a blocking sleeper's
//! `wait_for` does: one post wakes one waiter, in whichever process), leaves the set and
//! wakes its task ("fired"); a slot armed for [`TICK`] without a post is woken too (and
//! stays armed), so its task asks whether the peer still lives, as a blocking sleeper does
//! after each slice. An idle shard sleeps in the kernel; nothing polls. More slots than
//! one thread takes start more threads; threads stay for the life of the process.
//!
//! Where `futex_waitv` is missing (`ENOSYS`, kernels before 5.16, or
//! `SHMLANE_NO_FUTEX_WAITV` set), each helper thread watches one slot with plain
//! `FUTEX_WAIT` and the same tick: one thread per waiting future, still no polling.
//!
//! ## Joining from a new ring kind
//! A ring kind names its sleeper cell with a [`Cell`]: the mapping and a function from it
//! to `(waiter count, semaphore)` (plus an index, for a kind with one cell per reader),
//! then drives an [`AsyncWait`] from its future with the same `check` and `peer_gone`
//! closures its blocking loop gives [`wait_until`](super::wait_until).

// Process-local state only (the helper threads' control words, flags and the futex_waitv
// probe): the shared futex words are the rings' `SemCell`s, `crate::sync` types.
#![allow(clippy::disallowed_types)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

use super::{give_back, stats, Gone};
use crate::error::Result;
use crate::segment::header::{Mapped, SemCell};

/// How long an armed slot waits for a post before its task is woken to ask whether the
/// peer still lives (a dead peer is reported within about this plus the liveness rate
/// limit, `channel::LIVENESS_INTERVAL`).
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// The tick of a slot whose wake-up may be missed: light wakers on the ring and no heavy
/// barrier in this process (the blocking sleeper's 1 ms slice, for the same reason).
const SHORT_TICK: Duration = Duration::from_millis(1);

/// Slots one helper thread watches: `futex_waitv` takes 128 words, one is the control word.
pub(crate) const PER_THREAD: usize = 127;

/// `futex_waitv` flags.
const FUTEX2_SIZE_U32: u32 = 0x02;
const FUTEX2_PRIVATE: u32 = 128;

/// One word of a `futex_waitv(2)` call (`struct futex_waitv`).
#[repr(C)]
#[derive(Clone, Copy)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// A ring's sleeper cell: the waiter count and the semaphore an async waiter joins.
#[derive(Clone)]
pub(crate) struct Cell {
    mapped: Arc<Mapped>,
    pick: for<'m> fn(&'m Mapped, usize) -> (&'m crate::sync::AtomicU32, &'m SemCell),
    index: usize,
}

impl Cell {
    /// The cell `pick(mapped, index)` names.
    pub(crate) fn new(
        mapped: Arc<Mapped>,
        pick: for<'m> fn(&'m Mapped, usize) -> (&'m crate::sync::AtomicU32, &'m SemCell),
        index: usize,
    ) -> Cell {
        Cell {
            mapped,
            pick,
            index,
        }
    }

    fn get(&self) -> (&crate::sync::AtomicU32, &SemCell) {
        (self.pick)(&self.mapped, self.index)
    }
}

/// The consumers' cell of a ring: `data_waiters` and `data_sem`.
pub(crate) fn data_cell(m: &Mapped, _: usize) -> (&crate::sync::AtomicU32, &SemCell) {
    let h = m.header();
    (&h.data_waiters, &h.data_sem)
}

/// The producers' cell of a ring: `space_waiters` and `space_sem`.
pub(crate) fn space_cell(m: &Mapped, _: usize) -> (&crate::sync::AtomicU32, &SemCell) {
    let h = m.header();
    (&h.space_waiters, &h.space_sem)
}

/// An endpoint's readiness fd: a non-blocking eventfd that a helper thread writes to when
/// one of the endpoint's waits is posted or ticks.
#[derive(Debug)]
pub(crate) struct Notify {
    fd: OwnedFd,
}

impl Notify {
    pub(crate) fn new() -> Result<Notify> {
        // SAFETY: eventfd takes plain integers; a non-negative result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(crate::Error::last_os("eventfd"));
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Notify { fd })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Makes the fd readable (adds one to the eventfd counter).
    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own fd; a full counter (EAGAIN)
        // already reads as readable, so the result does not matter.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Reads the counter back to zero (the fd is no longer readable until signalled).
    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own non-blocking fd.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// What one waiting future registered with the helper threads.
pub(crate) struct Slot {
    cell: Cell,
    notify: Option<Arc<Notify>>,
    st: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    waker: Option<Waker>,
    /// In a shard's set, holding one unit of the ring's waiter count.
    armed: bool,
    /// Left the set by taking a post: the unit was taken by the poster.
    fired: bool,
    /// When the slot was armed or last ticked.
    since: Option<Instant>,
    tick: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic under one of these locks leaves plain data behind: carry on with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Slot {
    fn word(&self) -> &crate::sync::AtomicU32 {
        self.cell.get().1.futex_word()
    }

    /// Takes one from the semaphore count if it is non-zero (as `SemCell::wait_for`).
    fn take(&self) -> bool {
        self.cell.get().1.try_take()
    }
}

/// One helper thread and the slots it watches.
struct Shard {
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Bumped (and futex-woken) whenever `slots` changes, so the thread re-arms.
    control: AtomicU32,
    /// Fallback mode (no `futex_waitv`): the thread is sleeping on an old slot's word and
    /// will not see a new one until it wakes; do not hand it one before.
    busy: std::sync::atomic::AtomicBool,
    cap: usize,
    /// When a slot was last armed here (the helper spins a little after it).
    last_arm: Mutex<Option<Instant>>,
}

impl Shard {
    fn poke(&self) {
        self.control.fetch_add(1, Ordering::SeqCst);
        // SAFETY: FUTEX_WAKE on a process-private aligned u32 we own; touches no memory.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.control.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                1,
                std::ptr::null::<libc::timespec>(),
                std::ptr::null::<u32>(),
                0u32,
            )
        };
    }
}

/// The helper threads of this process.
struct Reactor {
    shards: Mutex<Vec<Arc<Shard>>>,
    waitv: bool,
    pid: u32,
}

static REACTOR: OnceLock<Mutex<Option<Arc<Reactor>>>> = OnceLock::new();

/// Whether this kernel has `futex_waitv` (asked once per process).
fn have_waitv() -> bool {
    static HAVE: AtomicU8 = AtomicU8::new(0);
    match HAVE.load(Ordering::Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let yes = std::env::var_os("SHMLANE_NO_FUTEX_WAITV").is_none() && {
        // An empty call: EINVAL where the call exists, ENOSYS where it does not.
        // SAFETY: a null list of zero words; the kernel reads nothing.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                std::ptr::null::<FutexWaitv>(),
                0u32,
                0u32,
                std::ptr::null::<libc::timespec>(),
                libc::CLOCK_MONOTONIC,
            )
        };
        !(r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
    };
    HAVE.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
    yes
}

/// Whether the helper threads use `futex_waitv` (false: one thread per waiting future).
pub(crate) fn uses_futex_waitv() -> bool {
    have_waitv()
}

fn reactor() -> Arc<Reactor> {
    let mut g = lock(REACTOR.get_or_init(|| Mutex::new(None)));
    let pid = std::process::id();
    match &*g {
        // A fork child has none of its parent's threads: it starts its own.
        Some(r) if r.pid == pid => r.clone(),
        _ => {
            let r = Arc::new(Reactor {
                shards: Mutex::new(Vec::new()),
                waitv: have_waitv(),
                pid,
            });
            *g = Some(r.clone());
            r
        }
    }
}

/// Helper threads this process has started (for tests: 200 waits need two).
pub(crate) fn helper_threads() -> usize {
    REACTOR
        .get()
        .and_then(|m| lock(m).as_ref().map(|r| lock(&r.shards).len()))
        .unwrap_or(0)
}

impl Reactor {
    /// Puts `slot` into a shard with room (starting a thread if none has), and returns it.
    fn arm(&self, slot: &Arc<Slot>) -> io::Result<Arc<Shard>> {
        let mut shards = lock(&self.shards);
        for s in shards.iter() {
            let mut set = lock(&s.slots);
            if set.len() < s.cap && !s.busy.load(Ordering::Acquire) {
                set.push(slot.clone());
                drop(set);
                *lock(&s.last_arm) = Some(Instant::now());
                s.poke();
                return Ok(s.clone());
            }
        }
        let shard = Arc::new(Shard {
            slots: Mutex::new(vec![slot.clone()]),
            control: AtomicU32::new(0),
            busy: std::sync::atomic::AtomicBool::new(false),
            cap: if self.waitv { PER_THREAD } else { 1 },
            last_arm: Mutex::new(Some(Instant::now())),
        });
        let s = shard.clone();
        let waitv = self.waitv;
        let spawned = std::thread::Builder::new()
            .name("shmlane-async".into())
            .spawn(move || run(s, waitv));
        if let Err(e) = spawned {
            lock(&shard.slots).clear();
            return Err(e);
        }
        shards.push(shard.clone());
        Ok(shard)
    }
}

fn now_monotonic() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts
}

fn add(ts: libc::timespec, d: Duration) -> libc::timespec {
    let mut sec = ts.tv_sec + d.as_secs() as libc::time_t;
    let mut nsec = ts.tv_nsec + d.subsec_nanos() as libc::c_long;
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec += 1;
    }
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// How long a helper thread keeps looking at its words after a slot was armed, before it
/// sleeps in the kernel. A peer that answers within it wakes the task with one thread
/// wake-up (the executor's) instead of two (this thread's, then the executor's); the
/// executor's thread is parked meanwhile, so this spends the core it left.
const HELPER_SPIN: Duration = Duration::from_micros(50);

/// Looks (under the lock, briefly, again and again) for a posted word or a changed set
/// while a slot was armed less than [`HELPER_SPIN`] ago. True if something is there.
fn spin_for_post(shard: &Shard, ctl: u32) -> bool {
    let Some(armed) = *lock(&shard.last_arm) else {
        return false;
    };
    loop {
        if armed.elapsed() >= HELPER_SPIN {
            return false;
        }
        for _ in 0..64 {
            std::hint::spin_loop();
        }
        if shard.control.load(Ordering::SeqCst) != ctl {
            return true;
        }
        let set = lock(&shard.slots);
        if set
            .iter()
            .any(|s| s.word().load(crate::sync::Ordering::Relaxed) != 0)
        {
            return true;
        }
    }
}

/// A helper thread: look at every slot, then sleep until a word changes or a tick is due.
fn run(shard: Arc<Shard>, waitv: bool) {
    let mut wake: Vec<Waker> = Vec::new();
    let mut words: Vec<FutexWaitv> = Vec::with_capacity(PER_THREAD + 1);
    // The last sleep ended by its timeout: a post found now did not wake us (a lost
    // futex wake-up that the tick made good; counted for the tests).
    let mut timed_out = false;
    loop {
        let ctl = shard.control.load(Ordering::SeqCst);
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        words.clear();
        words.push(FutexWaitv {
            val: u64::from(ctl),
            uaddr: shard.control.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
            reserved: 0,
        });
        {
            let mut set = lock(&shard.slots);
            set.retain(|slot| {
                let mut st = lock(&slot.st);
                if slot.take() {
                    // A post for us: the poster took our unit off the count.
                    stats::WOKEN.fetch_add(1, Ordering::Relaxed);
                    if timed_out {
                        stats::TICK_FOUND.fetch_add(1, Ordering::Relaxed);
                    }
                    st.armed = false;
                    st.fired = true;
                    wake.extend(st.waker.clone());
                    if let Some(n) = &slot.notify {
                        n.signal();
                    }
                    return false;
                }
                let since = *st.since.get_or_insert(now);
                let due = since + st.tick;
                if now >= due {
                    // No post for a tick: the task asks whether its peer still lives.
                    st.since = Some(now);
                    wake.extend(st.waker.clone());
                    if let Some(n) = &slot.notify {
                        n.signal();
                    }
                    next = Some(next.map_or(st.tick, |n| n.min(st.tick)));
                } else {
                    let left = due - now;
                    next = Some(next.map_or(left, |n| n.min(left)));
                }
                true
            });
            if !waitv {
                // Set before the lock goes: `arm` then skips this thread while it sleeps
                // on this slot's word (it would not see a new slot until its tick).
                shard.busy.store(!set.is_empty(), Ordering::Release);
            }
            for slot in set.iter() {
                words.push(FutexWaitv {
                    val: 0,
                    uaddr: slot.word().as_ptr() as u64,
                    flags: FUTEX2_SIZE_U32,
                    reserved: 0,
                });
            }
        }
        for w in wake.drain(..) {
            w.wake();
        }
        timed_out = false;
        if words.len() > 1 && spin_for_post(&shard, ctl) {
            continue;
        }
        if waitv {
            let deadline = next.map(|d| add(now_monotonic(), d));
            // SAFETY: `words` holds `words.len()` (at most 128) initialised entries whose
            // addresses are our control word and the futex words of slots in the set; a
            // slot's Arc keeps its mapping alive while it is in the set, and one removed
            // since (its mapping gone) at worst makes the call fail with EFAULT or wait on
            // a stale address until the control word or the tick ends it. The timeout, if
            // any, is a live timespec (absolute, CLOCK_MONOTONIC).
            let r = unsafe {
                libc::syscall(
                    libc::SYS_futex_waitv,
                    words.as_ptr(),
                    words.len() as u32,
                    0u32,
                    deadline
                        .as_ref()
                        .map_or(std::ptr::null(), |t| t as *const libc::timespec),
                    libc::CLOCK_MONOTONIC,
                )
            };
            timed_out = r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT);
        } else {
            // One word at most: the slot's while there is one, else the control word.
            let (addr, val, op) = match words.get(1) {
                Some(w) => (w.uaddr, 0u32, libc::FUTEX_WAIT),
                None => (
                    words[0].uaddr,
                    ctl,
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                ),
            };
            let ts = next.map(|d| libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            });
            // SAFETY: as above: the address is our control word or a slot's futex word
            // (kept mapped by the slot's Arc while it is in the set); a relative timeout.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    addr as *const u32,
                    op,
                    val,
                    ts.as_ref()
                        .map_or(std::ptr::null(), |t| t as *const libc::timespec),
                    std::ptr::null::<u32>(),
                    0u32,
                )
            };
            timed_out = r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT);
            shard.busy.store(false, Ordering::Release);
        }
    }
}

/// Whether the helper took a post for this slot (it is no longer armed for a tick).
fn was_fired(slot: &Slot) -> bool {
    lock(&slot.st).fired
}

/// A waker that does nothing: for `try_*` calls that arm the readiness fd only.
struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// A waker that does nothing.
pub(crate) fn noop_waker() -> Waker {
    static W: OnceLock<Waker> = OnceLock::new();
    W.get_or_init(|| Waker::from(Arc::new(Noop))).clone()
}

/// One future's (or one endpoint's readiness) place in the sleeper protocol. Dropping it
/// gives back whatever it holds: its unit of the waiter count, its slot, and a post it
/// took but did not use (passed on to the next sleeper).
pub(crate) struct AsyncWait {
    slot: Option<Arc<Slot>>,
    shard: Option<Arc<Shard>>,
    /// How long to look again before registering, once per wait.
    spin: Duration,
    spun: bool,
}

impl std::fmt::Debug for AsyncWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncWait")
            .field("registered", &self.shard.is_some())
            .finish()
    }
}

/// Where a registration stood when it was taken out of its shard.
enum Left {
    /// It held a unit of the waiter count (no post taken).
    Armed,
    /// A post was taken for it.
    Fired,
    /// Nothing was registered.
    Idle,
}

impl AsyncWait {
    /// A wait that looks again for up to `spin` before it first registers (zero: never;
    /// the `try_*` calls' waits, which must not wait at all).
    pub(crate) fn new(spin: Duration) -> AsyncWait {
        AsyncWait {
            slot: None,
            shard: None,
            spin,
            spun: false,
        }
    }

    /// Takes the slot out of its shard; says what it held.
    fn leave(&mut self) -> Left {
        let Some(shard) = self.shard.take() else {
            return Left::Idle;
        };
        let slot = self.slot.as_ref().expect("a registered wait has a slot");
        let mut set = lock(&shard.slots);
        set.retain(|s| !Arc::ptr_eq(s, slot));
        let mut st = lock(&slot.st);
        let was = if st.fired {
            Left::Fired
        } else if st.armed {
            Left::Armed
        } else {
            Left::Idle
        };
        st.armed = false;
        st.fired = false;
        st.since = None;
        drop(st);
        drop(set);
        shard.poke();
        was
    }

    /// Done waiting (the caller got its result): give back our unit if we hold one.
    fn finish(&mut self) {
        if let Left::Armed = self.leave() {
            let (waiters, sem) = self.slot.as_ref().expect("slot").cell.get();
            give_back(waiters, sem);
        }
    }

    /// One poll of a wait: `check` as in `wait_until` (`Some` ends the wait), `peer_gone`
    /// asked whenever the slot ticks or a registration is made (it keeps its own rate
    /// limit). On `Pending`, the helper threads wake `waker` (and signal `notify`) when
    /// the ring's semaphore is posted for us, or a tick has passed.
    ///
    /// Fast path: `check` succeeds at once, and nothing else happens (no system call).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn poll<T>(
        &mut self,
        waker: &Waker,
        cell: impl FnOnce() -> Cell,
        notify: Option<&Arc<Notify>>,
        drain_when_gone: bool,
        mut check: impl FnMut() -> Option<Result<T>>,
        mut peer_gone: impl FnMut() -> Option<Gone>,
    ) -> Poll<Result<T>> {
        if let Some(r) = check() {
            if self.shard.is_some() && self.slot.as_ref().is_some_and(|s| !was_fired(s)) {
                stats::TICK_FOUND.fetch_add(1, Ordering::Relaxed);
            }
            self.finish();
            return Poll::Ready(r);
        }
        let gone = |how: Gone, check: &mut dyn FnMut() -> Option<Result<T>>| -> Result<T> {
            if drain_when_gone {
                check().unwrap_or(Err(how.error()))
            } else {
                Err(how.error())
            }
        };
        if let (Some(slot), Some(_)) = (&self.slot, &self.shard) {
            let mut st = lock(&slot.st);
            if st.armed {
                // Still waiting: a tick (or a spurious poll). Is the peer still there?
                if !st.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    st.waker = Some(waker.clone());
                }
                drop(st);
                if let Some(how) = peer_gone() {
                    self.finish();
                    return Poll::Ready(gone(how, &mut check));
                }
                // A liveness look may have found something (MPMC recovery): look again.
                if let Some(r) = check() {
                    if !was_fired(slot) {
                        stats::TICK_FOUND.fetch_add(1, Ordering::Relaxed);
                    }
                    self.finish();
                    return Poll::Ready(r);
                }
                return Poll::Pending;
            }
        }
        if !self.spun && self.shard.is_none() {
            // Before the first registration, look again for a little while: a peer that
            // streams or answers is usually met here, without the two thread wake-ups
            // (helper thread, then the executor) that a registered wait costs.
            self.spun = true;
            if !self.spin.is_zero() {
                let start = Instant::now();
                let mut n = 0u32;
                loop {
                    for _ in 0..16 {
                        std::hint::spin_loop();
                    }
                    if let Some(r) = check() {
                        return Poll::Ready(r);
                    }
                    n = n.wrapping_add(1);
                    if n % 8 == 0 && start.elapsed() >= self.spin {
                        break;
                    }
                }
            }
        }
        // Not registered, or our post was taken (its unit with it): register anew.
        self.leave();
        let slot = self
            .slot
            .get_or_insert_with(|| {
                Arc::new(Slot {
                    cell: cell(),
                    notify: notify.cloned(),
                    st: Mutex::new(SlotState::default()),
                })
            })
            .clone();
        let (waiters, sem) = slot.cell.get();
        let light = &slot.cell.mapped.header().light_wakers;
        // Register, then check (the sleeper's half of the protocol in the parent module).
        let tick = match super::register_then_check(waiters, sem, light, &mut check) {
            Ok(r) => return Poll::Ready(r),
            Err(true) => SHORT_TICK,
            Err(false) => TICK,
        };
        if let Some(how) = peer_gone() {
            give_back(waiters, sem);
            return Poll::Ready(gone(how, &mut check));
        }
        if let Some(r) = check() {
            give_back(waiters, sem);
            return Poll::Ready(r);
        }
        {
            let mut st = lock(&slot.st);
            st.waker = Some(waker.clone());
            st.armed = true;
            st.fired = false;
            st.since = Some(Instant::now());
            st.tick = tick;
        }
        stats::SLEEPS.fetch_add(1, Ordering::Relaxed);
        match reactor().arm(&slot) {
            Ok(shard) => {
                self.shard = Some(shard);
                Poll::Pending
            }
            Err(e) => {
                lock(&slot.st).armed = false;
                give_back(waiters, sem);
                Poll::Ready(Err(crate::Error::io("spawning the async helper thread", e)))
            }
        }
    }
}

impl Drop for AsyncWait {
    fn drop(&mut self) {
        match self.leave() {
            Left::Armed => {
                let (waiters, sem) = self.slot.as_ref().expect("slot").cell.get();
                give_back(waiters, sem);
            }
            Left::Fired => {
                // We took a post and will not use it: pass it on to the next sleeper (an
                // MPMC peer of ours may be waiting for the message it announced).
                let (waiters, sem) = self.slot.as_ref().expect("slot").cell.get();
                super::wake(waiters, sem);
            }
            Left::Idle => {}
        }
    }
}

// The slot and shard are shared with helper threads only through mutexes and atomics,
// and `Mapped` is Send + Sync: so is a wait (async endpoints are Send + Sync through it).
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<AsyncWait>();
};
