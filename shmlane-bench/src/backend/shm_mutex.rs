//! `shm-mutex`: the classic lock-based shared-memory queue, like Boost.Interprocess
//! `message_queue`: a ring of fixed-size slots in a shared segment, guarded by one
//! process-shared robust `pthread_mutex_t`, with two process-shared `pthread_cond_t`
//! ("not empty", "not full"). It is here as the baseline that shows what the lock-free
//! ring buys over the textbook design.
//!
//! **Layout.** The segment (`<name>-mtx`, POSIX shared memory, mode 0600) starts with a
//! `#[repr(C)]` header (magic `SHLNMTX\0`, version, init flag, geometry, the mutex and
//! both condition variables, `head` / `tail` / `count`, each side's closed flag and pid),
//! padded to one page; then `slot_count` slots of `slot_size` bytes, each
//! `{ len: u32, reserved: u32, payload: [u8; max_message] }` rounded up to 64 bytes.
//!
//! **Framing.** One message per slot. `send` locks, waits while the queue is full, copies
//! the message into the tail slot, bumps `tail` / `count`, signals "not empty" and unlocks;
//! `recv` locks, waits while it is empty, copies the head slot out into the receiver's own
//! buffer, bumps `head`, signals "not full", unlocks and only then hands the copy to the
//! caller. One lock / unlock per message, no batching.
//!
//! **Untrusted memory.** The geometry is read once, checked against the segment length,
//! and kept privately; `head`, `tail`, `count` and every slot's `len` are range-checked
//! each time they are read, and nonsense is [`Error::Corrupt`].
//!
//! **Peer death.** Each side records its pid and start time in the header. Waits are
//! `pthread_cond_timedwait` on `CLOCK_MONOTONIC` in 50 ms slices; after each empty slice
//! the waiter checks the peer's closed flag and, through `/proc`, that its process still
//! lives. A peer killed *while holding the mutex* is reported by the robust mutex
//! (`EOWNERDEAD`): the survivor calls `pthread_mutex_consistent`, repairs `tail` from
//! `head + count` (a half-written slot was never counted, so it is dropped), and marks the
//! peer closed. Either way a receiver gets every message that was completely sent and then
//! [`Error::Disconnected`]; a sender gets [`Error::Disconnected`] at once.
//!
//! Each role may attach once per channel ([`Error::RoleTaken`] otherwise): with a single
//! waiter per condition variable, a waiter that died inside glibc's condvar code cannot
//! stall a later signaller. The mutex and condition variables are never destroyed (a dead
//! waiter could make `pthread_cond_destroy` wait forever); they go with the segment.

use std::cell::UnsafeCell;
use std::io;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::pipe::OPEN_WAIT;
use super::{Config, RxEnd, Transport, TxEnd};
use shmlane::format::{process_alive, self_start_time};
use shmlane::format::{validate_name, Segment};
use shmlane::Backing;
use shmlane::{Error, Result, Role};

/// A lock-based queue in shared memory: robust process-shared mutex + two condvars.
#[derive(Debug)]
pub struct ShmMutex;

/// The first 8 bytes of a `shm-mutex` segment.
pub const MAGIC: [u8; 8] = *b"SHLNMTX\0";
/// The layout version of a `shm-mutex` segment.
pub const VERSION: u32 = 1;

const READY: u32 = 1;
/// Where the slots start: one page, so the header never shares a page with data.
const DATA_OFFSET: usize = 4096;
/// `len: u32` and a reserved `u32` in front of each slot's payload.
const SLOT_HEADER: usize = 8;
const SLOT_ALIGN: usize = 64;
/// The most slots a channel gets, whatever its capacity.
const MAX_SLOTS: usize = 1 << 20;
/// How long one wait lasts before the peer is checked.
const SLICE: Duration = Duration::from_millis(50);

/// A side's closed flag: still attached.
const OPEN: u32 = 0;
/// Closed cleanly (dropped).
const CLOSED: u32 = 1;
/// Found dead by its peer.
const DEAD: u32 = 2;

#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    /// 0 while the creator initialises, [`READY`] after (Release / Acquire).
    init: AtomicU32,
    /// `size_of::<Header>()` of the creator's build.
    header_size: AtomicU64,
    slot_size: AtomicU64,
    slot_count: AtomicU64,
    max_message: AtomicU64,
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    not_empty: UnsafeCell<libc::pthread_cond_t>,
    not_full: UnsafeCell<libc::pthread_cond_t>,
    // Everything below is only changed under `mutex`. They are atomics (used Relaxed, the
    // mutex orders them) so that a misbehaving peer cannot turn our reads into UB.
    head: AtomicU64,
    tail: AtomicU64,
    count: AtomicU64,
    tx_closed: AtomicU32,
    rx_closed: AtomicU32,
    tx_pid: AtomicI32,
    rx_pid: AtomicI32,
    tx_start: AtomicU64,
    rx_start: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= DATA_OFFSET);

fn seg_name(name: &str) -> Result<String> {
    validate_name(name)?;
    Ok(format!("{name}-mtx"))
}

fn os_err(op: &'static str, rc: libc::c_int) -> Error {
    Error::io(op, io::Error::from_raw_os_error(rc))
}

fn check(op: &'static str, rc: libc::c_int) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(os_err(op, rc))
    }
}

/// One endpoint's view of the channel: the segment and the geometry it validated.
#[derive(Debug)]
struct Chan {
    seg: Segment,
    slot_size: usize,
    slot_count: u64,
    /// The largest payload a slot holds (from the segment).
    slot_payload: usize,
    role: Role,
}

/// Proof that this endpoint holds the mutex; unlocks on drop.
struct Locked<'a> {
    chan: &'a Chan,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: we hold the mutex (a Locked only exists after a successful lock), which
        // lives in the mapped, initialised header.
        unsafe { libc::pthread_mutex_unlock(self.chan.header().mutex.get()) };
    }
}

impl Chan {
    fn header(&self) -> &Header {
        // SAFETY: a Chan only exists for a mapping of at least DATA_OFFSET bytes (checked
        // at create / open), page aligned, and Header (<= DATA_OFFSET bytes) consists of
        // atomics and UnsafeCells only, so shared references to it are sound while
        // another process changes it.
        unsafe { &*(self.seg.as_ptr() as *const Header) }
    }

    fn slot_ptr(&self, index: u64) -> *mut u8 {
        debug_assert!(index < self.slot_count);
        // SAFETY: index < slot_count and DATA_OFFSET + slot_count * slot_size <= the
        // mapping's length (checked at create / open), so this stays inside the mapping.
        unsafe {
            self.seg
                .as_ptr()
                .add(DATA_OFFSET + index as usize * self.slot_size)
        }
    }

    fn me(&self) -> (&AtomicI32, &AtomicU64, &AtomicU32) {
        let h = self.header();
        match self.role {
            Role::Producer => (&h.tx_pid, &h.tx_start, &h.tx_closed),
            Role::Consumer => (&h.rx_pid, &h.rx_start, &h.rx_closed),
        }
    }

    fn peer(&self) -> (&AtomicI32, &AtomicU64, &AtomicU32) {
        let h = self.header();
        match self.role {
            Role::Producer => (&h.rx_pid, &h.rx_start, &h.rx_closed),
            Role::Consumer => (&h.tx_pid, &h.tx_start, &h.tx_closed),
        }
    }

    /// Whether the peer attached and its process has since died (reads `/proc`).
    fn peer_dead(&self) -> bool {
        let (pid, start, _) = self.peer();
        let pid = pid.load(Ordering::Relaxed);
        pid != 0 && !process_alive(pid, start.load(Ordering::Relaxed))
    }

    fn lock(&self) -> Result<Locked<'_>> {
        let m = self.header().mutex.get();
        // SAFETY: the mutex was initialised (process-shared, robust) before READY and stays
        // mapped while self.seg lives.
        let rc = unsafe { libc::pthread_mutex_lock(m) };
        self.after_lock(rc, "pthread_mutex_lock")
    }

    /// Turns the result of a lock (or of a wait, which relocks) into a guard, recovering
    /// from an owner that died holding the mutex.
    fn after_lock(&self, rc: libc::c_int, op: &'static str) -> Result<Locked<'_>> {
        match rc {
            0 => Ok(Locked { chan: self }),
            libc::EOWNERDEAD => {
                // SAFETY: EOWNERDEAD means we now hold the mutex, in the inconsistent state
                // that pthread_mutex_consistent exists to clear.
                let rc = unsafe { libc::pthread_mutex_consistent(self.header().mutex.get()) };
                let guard = Locked { chan: self };
                check("pthread_mutex_consistent", rc)?;
                self.recover();
                Ok(guard)
            }
            // The mutex is unusable and not held: the previous owner died and nobody made
            // it consistent.
            libc::ENOTRECOVERABLE => Err(Error::Disconnected),
            rc => Err(os_err(op, rc)),
        }
    }

    /// Called with the mutex held after its previous owner died inside a critical section:
    /// make the indices consistent again and mark the peer dead if it was the peer.
    fn recover(&self) {
        let h = self.header();
        let n = self.slot_count;
        let head = h.head.load(Ordering::Relaxed);
        let count = h.count.load(Ordering::Relaxed);
        if head < n && count <= n {
            // A slot written but not yet counted is dropped; a counted one is whole.
            h.tail.store((head + count) % n, Ordering::Relaxed);
        }
        if self.peer_dead() {
            self.peer().2.store(DEAD, Ordering::Relaxed);
        }
    }

    /// Waits on `cond` for one slice. `Ok(true)`: the slice ran out. On error the guard is
    /// gone (the mutex is not held).
    fn wait<'a>(
        &'a self,
        guard: Locked<'a>,
        cond: *mut libc::pthread_cond_t,
    ) -> Result<(Locked<'a>, bool)> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid, writable timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_nsec += SLICE.as_nanos() as libc::c_long;
        if ts.tv_nsec >= 1_000_000_000 {
            ts.tv_nsec -= 1_000_000_000;
            ts.tv_sec += 1;
        }
        // The wait releases and reacquires the mutex itself: the guard must not unlock.
        std::mem::forget(guard);
        // SAFETY: cond and the mutex were initialised process-shared (cond on
        // CLOCK_MONOTONIC) before READY and stay mapped; we hold the mutex.
        let rc = unsafe { libc::pthread_cond_timedwait(cond, self.header().mutex.get(), &ts) };
        match rc {
            libc::ETIMEDOUT => Ok((Locked { chan: self }, true)),
            0 | libc::EOWNERDEAD | libc::ENOTRECOVERABLE => {
                Ok((self.after_lock(rc, "pthread_cond_timedwait")?, false))
            }
            rc => {
                // Not expected; whether we still hold the mutex is unclear, so try to
                // release it (a robust mutex refuses, harmlessly, if we do not).
                drop(Locked { chan: self });
                Err(os_err("pthread_cond_timedwait", rc))
            }
        }
    }

    /// `(head, count)`, range-checked (mutex held).
    fn indices(&self, _: &Locked<'_>) -> Result<(u64, u64)> {
        let h = self.header();
        let n = self.slot_count;
        let head = h.head.load(Ordering::Relaxed);
        let tail = h.tail.load(Ordering::Relaxed);
        let count = h.count.load(Ordering::Relaxed);
        if head >= n || tail >= n || count > n || (head + count) % n != tail {
            return Err(Error::corrupt(format!(
                "shm-mutex queue indices out of range: head {head}, tail {tail}, count {count}, slots {n}"
            )));
        }
        Ok((head, count))
    }

    /// Registers this process in its role (once per channel).
    fn attach(&self) -> Result<()> {
        let _g = self.lock()?;
        let (pid, start, closed) = self.me();
        let holder = pid.load(Ordering::Relaxed);
        if holder != 0 {
            return Err(Error::RoleTaken {
                pid: holder,
                name: self.seg.name().to_string(),
                role: self.role,
            });
        }
        pid.store(std::process::id() as i32, Ordering::Relaxed);
        start.store(self_start_time(), Ordering::Relaxed);
        closed.store(OPEN, Ordering::Relaxed);
        Ok(())
    }

    /// Marks this side closed and wakes the peer.
    fn close(&self) {
        if let Ok(_g) = self.lock() {
            self.me().2.store(CLOSED, Ordering::Relaxed);
            let h = self.header();
            // SAFETY: both condvars are initialised and mapped; we hold the mutex.
            unsafe {
                libc::pthread_cond_broadcast(h.not_empty.get());
                libc::pthread_cond_broadcast(h.not_full.get());
            }
        }
    }

    fn create(name: &str, cfg: &Config, role: Role) -> Result<Chan> {
        let seg_name = seg_name(name)?;
        let bad = |reason: &str| Error::InvalidOptions {
            reason: format!("shm-mutex: {reason}"),
        };
        let payload = cfg.max_message;
        let slot_size = (SLOT_HEADER + payload)
            .checked_next_multiple_of(SLOT_ALIGN)
            .filter(|&s| payload <= u32::MAX as usize && s <= isize::MAX as usize / 2)
            .ok_or_else(|| bad("max_message is too large"))?;
        let slot_count = (cfg.capacity / slot_size).clamp(2, MAX_SLOTS);
        let len = slot_size
            .checked_mul(slot_count)
            .and_then(|d| d.checked_add(DATA_OFFSET))
            .ok_or_else(|| bad("capacity is too large"))?;
        let seg = Segment::create(&seg_name, len, Backing::Posix, 0o600)?;
        let chan = Chan {
            seg,
            slot_size,
            slot_count: slot_count as u64,
            slot_payload: payload,
            role,
        };
        chan.init_header()?;
        chan.attach()?;
        Ok(chan)
    }

    /// Writes the header of a fresh (zeroed) segment and publishes it.
    fn init_header(&self) -> Result<()> {
        let h = self.header();
        h.magic.store(u64::from_ne_bytes(MAGIC), Ordering::Relaxed);
        h.version.store(VERSION, Ordering::Relaxed);
        h.header_size
            .store(std::mem::size_of::<Header>() as u64, Ordering::Relaxed);
        h.slot_size.store(self.slot_size as u64, Ordering::Relaxed);
        h.slot_count.store(self.slot_count, Ordering::Relaxed);
        h.max_message
            .store(self.slot_payload as u64, Ordering::Relaxed);
        // SAFETY: the attribute objects are local and initialised before use; the mutex and
        // condvars live in our fresh mapping, which no other process uses until READY.
        unsafe {
            let mut ma: libc::pthread_mutexattr_t = std::mem::zeroed();
            check(
                "pthread_mutexattr_init",
                libc::pthread_mutexattr_init(&mut ma),
            )?;
            let r = (|| {
                check(
                    "pthread_mutexattr_setpshared",
                    libc::pthread_mutexattr_setpshared(&mut ma, libc::PTHREAD_PROCESS_SHARED),
                )?;
                check(
                    "pthread_mutexattr_setrobust",
                    libc::pthread_mutexattr_setrobust(&mut ma, libc::PTHREAD_MUTEX_ROBUST),
                )?;
                check(
                    "pthread_mutex_init",
                    libc::pthread_mutex_init(h.mutex.get(), &ma),
                )
            })();
            libc::pthread_mutexattr_destroy(&mut ma);
            r?;
            let mut ca: libc::pthread_condattr_t = std::mem::zeroed();
            check(
                "pthread_condattr_init",
                libc::pthread_condattr_init(&mut ca),
            )?;
            let r = (|| {
                check(
                    "pthread_condattr_setpshared",
                    libc::pthread_condattr_setpshared(&mut ca, libc::PTHREAD_PROCESS_SHARED),
                )?;
                check(
                    "pthread_condattr_setclock",
                    libc::pthread_condattr_setclock(&mut ca, libc::CLOCK_MONOTONIC),
                )?;
                check(
                    "pthread_cond_init",
                    libc::pthread_cond_init(h.not_empty.get(), &ca),
                )?;
                check(
                    "pthread_cond_init",
                    libc::pthread_cond_init(h.not_full.get(), &ca),
                )
            })();
            libc::pthread_condattr_destroy(&mut ca);
            r?;
        }
        h.init.store(READY, Ordering::Release);
        Ok(())
    }

    fn open(name: &str, role: Role) -> Result<Chan> {
        let seg_name = seg_name(name)?;
        let start = Instant::now();
        loop {
            let waited = start.elapsed();
            let seg = match Segment::open(&seg_name) {
                Ok(seg) => seg,
                Err(Error::NotFound { .. }) if waited < OPEN_WAIT => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(Error::NotFound { key, .. }) => {
                    return Err(Error::NotFound {
                        name: name.into(),
                        key,
                    })
                }
                Err(e) => return Err(e),
            };
            // A creator may still be sizing the segment or writing the header.
            let ready = seg.len() >= DATA_OFFSET && {
                // SAFETY: the mapping holds at least DATA_OFFSET >= size_of::<Header>()
                // bytes and `init` is an AtomicU32 at offset 12 of the page-aligned start.
                let h = unsafe { &*(seg.as_ptr() as *const Header) };
                h.init.load(Ordering::Acquire) == READY
            };
            if !ready {
                if waited >= OPEN_WAIT {
                    return Err(Error::NotReady {
                        name: name.into(),
                        waited_ms: waited.as_millis() as u64,
                    });
                }
                drop(seg);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let chan = Chan::validate(seg, name, role)?;
            chan.attach()?;
            return Ok(chan);
        }
    }

    /// Checks a ready segment's header against its length and keeps the geometry.
    fn validate(seg: Segment, name: &str, role: Role) -> Result<Chan> {
        // SAFETY: the caller checked that the mapping holds at least DATA_OFFSET bytes.
        let h = unsafe { &*(seg.as_ptr() as *const Header) };
        if h.magic.load(Ordering::Relaxed) != u64::from_ne_bytes(MAGIC) {
            return Err(Error::NotShmlane { name: name.into() });
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != VERSION {
            return Err(Error::VersionMismatch {
                name: name.into(),
                found: version,
                expected: VERSION,
            });
        }
        let header_size = h.header_size.load(Ordering::Relaxed);
        if header_size != std::mem::size_of::<Header>() as u64 {
            return Err(Error::LayoutMismatch {
                name: name.into(),
                found: header_size,
                expected: std::mem::size_of::<Header>() as u64,
            });
        }
        let slot_size = h.slot_size.load(Ordering::Relaxed);
        let slot_count = h.slot_count.load(Ordering::Relaxed);
        let max_message = h.max_message.load(Ordering::Relaxed);
        let geometry_ok = slot_size >= SLOT_HEADER as u64
            && slot_size % 8 == 0
            && (2..=MAX_SLOTS as u64).contains(&slot_count)
            && max_message <= slot_size - SLOT_HEADER as u64
            && max_message <= u32::MAX as u64;
        if !geometry_ok {
            return Err(Error::corrupt(format!(
                "shm-mutex geometry: slot size {slot_size}, {slot_count} slots, max message {max_message}"
            )));
        }
        let needed = slot_size
            .checked_mul(slot_count)
            .and_then(|d| d.checked_add(DATA_OFFSET as u64));
        match needed {
            Some(needed) if needed <= seg.len() as u64 => {}
            needed => {
                return Err(Error::Truncated {
                    name: name.into(),
                    len: seg.len() as u64,
                    expected: needed.unwrap_or(u64::MAX),
                })
            }
        }
        Ok(Chan {
            seg,
            slot_size: slot_size as usize,
            slot_count,
            slot_payload: max_message as usize,
            role,
        })
    }
}

/// The sending end of a [`ShmMutex`].
#[derive(Debug)]
pub struct ShmMutexTx {
    chan: Chan,
    max_message: usize,
}

/// The receiving end of a [`ShmMutex`].
#[derive(Debug)]
pub struct ShmMutexRx {
    chan: Chan,
    buf: Vec<u8>,
    /// The sender has gone and the queue was seen empty.
    eof: bool,
}

impl Drop for ShmMutexTx {
    fn drop(&mut self) {
        self.chan.close();
    }
}

impl Drop for ShmMutexRx {
    fn drop(&mut self) {
        self.chan.close();
    }
}

impl TxEnd for ShmMutexTx {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        if msg.len() > self.max_message {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: self.max_message,
            });
        }
        let chan = &self.chan;
        let h = chan.header();
        let mut guard = chan.lock()?;
        let (head, count) = loop {
            let (head, count) = chan.indices(&guard)?;
            if h.rx_closed.load(Ordering::Relaxed) != OPEN {
                return Err(Error::Disconnected);
            }
            if count < chan.slot_count {
                break (head, count);
            }
            let (g, timed_out) = chan.wait(guard, h.not_full.get())?;
            guard = g;
            if timed_out && chan.peer_dead() {
                h.rx_closed.store(DEAD, Ordering::Relaxed);
            }
        };
        let tail = (head + count) % chan.slot_count;
        let slot = chan.slot_ptr(tail);
        // SAFETY: slot is the start of slot `tail`, which has SLOT_HEADER + slot_payload
        // bytes and msg.len() <= max_message <= slot_payload; the slot is not counted yet,
        // so the receiver does not read it, and we hold the mutex.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), slot.add(SLOT_HEADER), msg.len());
            slot.cast::<u32>().write(msg.len() as u32);
        }
        h.tail
            .store((tail + 1) % chan.slot_count, Ordering::Relaxed);
        h.count.store(count + 1, Ordering::Relaxed);
        // SAFETY: the condvar is initialised and mapped; we hold the mutex.
        unsafe { libc::pthread_cond_signal(h.not_empty.get()) };
        drop(guard);
        Ok(())
    }
}

impl RxEnd for ShmMutexRx {
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, f: F) -> Result<R> {
        if self.eof {
            return Err(Error::Disconnected);
        }
        let chan = &self.chan;
        let h = chan.header();
        let mut guard = chan.lock()?;
        let head = loop {
            let (head, count) = chan.indices(&guard)?;
            if count > 0 {
                break head;
            }
            if h.tx_closed.load(Ordering::Relaxed) != OPEN {
                self.eof = true;
                return Err(Error::Disconnected);
            }
            let (g, timed_out) = chan.wait(guard, h.not_empty.get())?;
            guard = g;
            if timed_out && chan.peer_dead() {
                h.tx_closed.store(DEAD, Ordering::Relaxed);
            }
        };
        let slot = chan.slot_ptr(head);
        // SAFETY: slot starts slot `head` (< slot_count), whose first 4 bytes are its len;
        // slots are 64-byte aligned in a page-aligned mapping, so the u32 read is aligned.
        let len = unsafe { slot.cast::<u32>().read() } as usize;
        if len > chan.slot_payload {
            return Err(Error::corrupt(format!(
                "shm-mutex slot {head} holds {len} bytes, over max_message {}",
                chan.slot_payload
            )));
        }
        // SAFETY: len <= slot_payload, so the payload lies inside slot `head`; buf has
        // slot_payload bytes; we hold the mutex, so the sender is not writing this slot.
        unsafe {
            std::ptr::copy_nonoverlapping(slot.add(SLOT_HEADER), self.buf.as_mut_ptr(), len);
        }
        let count = h.count.load(Ordering::Relaxed);
        h.head
            .store((head + 1) % chan.slot_count, Ordering::Relaxed);
        h.count.store(count - 1, Ordering::Relaxed);
        // SAFETY: the condvar is initialised and mapped; we hold the mutex.
        unsafe { libc::pthread_cond_signal(h.not_full.get()) };
        drop(guard);
        Ok(f(&self.buf[..len]))
    }
}

impl ShmMutexTx {
    fn new(chan: Chan, cfg: &Config) -> ShmMutexTx {
        let max_message = cfg.max_message.min(chan.slot_payload);
        ShmMutexTx { chan, max_message }
    }
}

impl ShmMutexRx {
    fn new(chan: Chan) -> ShmMutexRx {
        let buf = vec![0; chan.slot_payload];
        ShmMutexRx {
            chan,
            buf,
            eof: false,
        }
    }
}

impl Transport for ShmMutex {
    type Tx = ShmMutexTx;
    type Rx = ShmMutexRx;
    const NAME: &'static str = "shm-mutex";

    fn create_tx(name: &str, cfg: &Config) -> Result<ShmMutexTx> {
        Ok(ShmMutexTx::new(
            Chan::create(name, cfg, Role::Producer)?,
            cfg,
        ))
    }

    fn create_rx(name: &str, cfg: &Config) -> Result<ShmMutexRx> {
        Ok(ShmMutexRx::new(Chan::create(name, cfg, Role::Consumer)?))
    }

    fn open_tx(name: &str, cfg: &Config) -> Result<ShmMutexTx> {
        Ok(ShmMutexTx::new(Chan::open(name, Role::Producer)?, cfg))
    }

    fn open_rx(name: &str, _cfg: &Config) -> Result<ShmMutexRx> {
        Ok(ShmMutexRx::new(Chan::open(name, Role::Consumer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmlane::wait::Wait;

    fn name(tag: &str) -> String {
        format!("/shmlane-unit-mtx-{}-{tag}", std::process::id())
    }

    fn cfg() -> Config {
        Config {
            max_message: 256,
            capacity: 4096,
            wait: Wait::Block,
        }
    }

    fn recv(rx: &mut ShmMutexRx) -> Result<Vec<u8>> {
        rx.recv_with(|m| m.to_vec())
    }

    #[test]
    fn recovers_from_an_owner_that_died_holding_the_lock() {
        let n = name("owner");
        let mut tx = ShmMutex::create_tx(&n, &cfg()).unwrap();
        let mut rx = ShmMutex::open_rx(&n, &cfg()).unwrap();
        tx.send(b"one").unwrap();
        // A thread takes the lock and ends without unlocking, like a process killed in
        // the middle of a send: the robust mutex reports EOWNERDEAD to the next locker.
        std::thread::scope(|s| {
            s.spawn(|| std::mem::forget(tx.chan.lock().unwrap()));
        });
        // The owner's process (this one) still lives, so the channel is repaired and goes on.
        assert_eq!(recv(&mut rx).unwrap(), b"one");
        tx.send(b"two").unwrap();
        assert_eq!(recv(&mut rx).unwrap(), b"two");
        drop(tx);
        assert!(matches!(recv(&mut rx), Err(Error::Disconnected)));
    }

    #[test]
    fn each_role_attaches_once() {
        let n = name("role");
        let _tx = ShmMutex::create_tx(&n, &cfg()).unwrap();
        let _rx = ShmMutex::open_rx(&n, &cfg()).unwrap();
        assert!(matches!(
            ShmMutex::open_rx(&n, &cfg()),
            Err(Error::RoleTaken { .. })
        ));
        assert!(matches!(
            ShmMutex::open_tx(&n, &cfg()),
            Err(Error::RoleTaken { .. })
        ));
    }

    #[test]
    fn nonsense_in_shared_memory_is_corrupt() {
        let n = name("corrupt");
        let mut tx = ShmMutex::create_tx(&n, &cfg()).unwrap();
        let mut rx = ShmMutex::open_rx(&n, &cfg()).unwrap();
        tx.send(b"x").unwrap();
        tx.chan.header().head.store(u64::MAX, Ordering::Relaxed);
        assert!(matches!(recv(&mut rx), Err(Error::Corrupt { .. })));
        assert!(matches!(tx.send(b"y"), Err(Error::Corrupt { .. })));
        tx.chan.header().head.store(0, Ordering::Relaxed);
        tx.chan.header().count.store(u64::MAX, Ordering::Relaxed);
        assert!(matches!(recv(&mut rx), Err(Error::Corrupt { .. })));
        tx.chan.header().count.store(1, Ordering::Relaxed);
        // SAFETY: slot 0 is inside the mapping; the other endpoints are not using it now.
        unsafe { tx.chan.slot_ptr(0).cast::<u32>().write(100_000) };
        assert!(matches!(recv(&mut rx), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn messages_over_max_are_refused() {
        let n = name("big");
        let mut tx = ShmMutex::create_tx(&n, &cfg()).unwrap();
        assert!(matches!(
            tx.send(&[0; 257]),
            Err(Error::MessageTooLarge { len: 257, max: 256 })
        ));
    }
}
