//! Many producers, many consumers: a bounded ring of fixed-size slots in shared memory.
//!
//! ```no_run
//! use std::time::Duration;
//! use shmlane::{Options, Error};
//! use shmlane::mpmc::{Sender, Receiver};
//! # fn main() -> Result<(), Error> {
//! let opts = Options::new().slots(4096).max_message(256); // slot count rounded up to 2^k
//! let tx = Sender::create("/jobs", &opts)?;   // also Receiver::create(name, &opts)
//! let rx = Receiver::open("/jobs")?;          // also Sender::open(name); any number of each
//! tx.send(b"job")?;
//! tx.send_tagged(2, b"job")?;
//! let mut g = tx.reserve(100)?;               // zero-copy
//! g.copy_from_slice(&[1u8; 100]);
//! g.commit();
//! let m = rx.recv()?;                         // Deref<Target = [u8]>, m.tag()
//! assert_eq!(&m[..], b"job");
//! let tx2 = tx.clone();                       // Clone + Send + Sync
//! # drop((m, tx2)); Ok(()) }
//! ```
//!
//! Every slot is `max_message` bytes plus a 32-byte header (rounded to 64), so choose
//! `max_message` for the largest message you send; an SPSC ring suits large, variable
//! messages better.
//!
//! ## Crash semantics
//!
//! Every registration holds an entry of the segment's registry, and the kernel says whether
//! its process lives (a lock on the segment's file, or a `SEM_UNDO` semaphore: see the
//! crate README, "Roles, disconnects and crashes"). When every sender has gone, receivers
//! drain what was published and then get [`Error::Disconnected`] if they all closed, or
//! [`Error::PeerDied`] if one died without closing; the same the other way round. A
//! claimer owns its slot (one CAS on the slot's claim word) before it writes a byte, so a
//! slot is never taken from a live claimer, however long it stalls. A sender that dies
//! after claiming a slot and before publishing it loses that one message: a receiver
//! waiting behind it notices (within about 100 ms) that the claimer is gone, takes the slot
//! over and counts it in the segment's `lost` counter ([`Receiver::lost`]). A receiver
//! that dies while holding a message (a [`ReadGuard`]) loses that message the same way,
//! and senders take its slot back when the ring is full. Nobody else stalls.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
#[allow(clippy::disallowed_types)]
// process-local: a handle's wait strategy and slow-path clock
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc as StdArc;
use std::time::{Duration, Instant};

use crate::channel::{self, Me};
use crate::error::{Error, Result, TryRecvError, TrySendError};
use crate::ring::mpmc::{claim_id, MpmcRing, RecvClaim, SendClaim, CANCELLED};
use crate::segment::header::{split_word, word_role, PeerState, EP_CLOSED, EP_FREE};
use crate::segment::header::{
    Fingerprint, Geometry, Kind, Mapped, MAX_ENDPOINTS, ROLE_RECEIVER, ROLE_SENDER,
};
use crate::sync::Arc;
use crate::wait::{self, Gone, Wait, Waiting};
use crate::Options;

#[cfg(not(loom))]
mod aio;
#[cfg(not(loom))]
pub use aio::{AsyncReceiver, AsyncSender};

fn mpmc_geometry(opts: &Options) -> Result<Geometry> {
    let (slots, slot_size, max_message) = opts.mpmc_geometry()?;
    Ok(Geometry {
        kind: Kind::Mpmc,
        segment_len: 0,
        capacity: slots * slot_size,
        max_message,
        slot_size,
        slot_count: slots,
        wait: opts.get_wait().to_raw(),
    })
}

/// One registered endpoint, shared by all clones of a `Sender` or `Receiver`.
#[allow(clippy::disallowed_types)] // `wait`, `last_slow`: process-local
struct Endpoint {
    ring: MpmcRing,
    shared: StdArc<Mapped>,
    wait: AtomicU32,
    /// What this registration writes into the slots it claims: its registry entry and
    /// that entry's generation (see `ring::mpmc::claim_id`).
    claim: u64,
    index: usize,
    /// 0 for senders, 1 for receivers (index into `mpmc_live`).
    side: usize,
    /// When the slow path last ran for a `try_*` call (ms since `epoch`).
    last_slow: AtomicU64,
    epoch: Instant,
}

impl Endpoint {
    /// A receiver's look inside a wait (blocking or async): a message `found` by the slow
    /// path first, then a claim; once the senders have closed, a last look, then
    /// `Disconnected`.
    fn recv_look(&self, found: &RefCell<Option<Result<RecvClaim>>>) -> Option<Result<RecvClaim>> {
        if let Some(r) = found.borrow_mut().take() {
            return Some(r);
        }
        match self.ring.try_claim_recv(self.claim) {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) if self.other_side_closed() => Some(match self.last_look() {
                Ok(Some(c)) => Ok(c),
                Ok(None) => Err(Error::Disconnected),
                Err(c) => Err(c.into()),
            }),
            Ok(None) => None,
            Err(c) => Some(Err(c.into())),
        }
    }

    /// A receiver's slow path inside a wait, when due: recovers a slot a dead sender left
    /// claimed (a message it finds goes to `found`, for [`recv_look`](Self::recv_look));
    /// says how the senders went once none is left and nothing more can be read.
    fn recv_slow_look(&self, found: &RefCell<Option<Result<RecvClaim>>>) -> Option<Gone> {
        if !self.slow_path_due() {
            return None;
        }
        match self.ring.recover_recv(self.claim) {
            Ok(Some(c)) => {
                *found.borrow_mut() = Some(Ok(c));
                None
            }
            Ok(None) => match self.other_side_gone() {
                // Drain past any other slot a gone sender left claimed.
                Some(how) => match self.last_look() {
                    Ok(None) => Some(how),
                    r => {
                        *found.borrow_mut() = Some(r.map(Option::unwrap).map_err(Error::from));
                        None
                    }
                },
                None => None,
            },
            Err(c) => {
                *found.borrow_mut() = Some(Err(c.into()));
                None
            }
        }
    }
}
impl Endpoint {
    #[allow(clippy::disallowed_types)] // process-local `wait`, `last_slow`
    fn attach(mapped: StdArc<Mapped>, role: u32) -> Result<Arc<Endpoint>> {
        let me = Me::get();
        // Entries never used or closed cleanly first, so that a dead holder's entry stays
        // visible (`inspect` shows who died) for as long as free entries remain.
        let free_first = (0..MAX_ENDPOINTS)
            .filter(|&i| matches!(split_word(mapped.entry_word(i)).1, EP_FREE | EP_CLOSED))
            .chain(0..MAX_ENDPOINTS);
        let mut taken = None;
        for i in free_first {
            if let Some(generation) = mapped.take_entry(i, role, me.pid, me.start_time)? {
                taken = Some((i, generation));
                break;
            }
        }
        let (index, generation) = taken.ok_or(Error::TooManyEndpoints { max: MAX_ENDPOINTS })?;
        let side = if role == ROLE_SENDER { 0 } else { 1 };
        let h = mapped.header();
        h.mpmc_live[side].fetch_add(1, Ordering::SeqCst);
        h.mpmc_ever.fetch_or(1 << side, Ordering::SeqCst);
        wait::announce_light_waker(&h.light_wakers);
        let wait = AtomicU32::new(mapped.geometry().wait);
        let shared = mapped;
        Ok(Arc::new(Endpoint {
            ring: MpmcRing::new(shared.clone()),
            shared,
            wait,
            claim: claim_id(index, generation),
            index,
            side,
            last_slow: AtomicU64::new(0),
            epoch: Instant::now(),
        }))
    }

    fn wait(&self) -> Wait {
        Wait::from_raw(self.wait.load(Ordering::Relaxed))
    }

    /// Cheap: every endpoint of the other side has closed cleanly (one had attached).
    #[inline]
    fn other_side_closed(&self) -> bool {
        let h = self.shared.header();
        let other = 1 - self.side;
        h.mpmc_ever.load(Ordering::Acquire) & (1 << other) != 0
            && h.mpmc_live[other].load(Ordering::Acquire) == 0
    }

    fn other_role(&self) -> u32 {
        if self.side == 0 {
            ROLE_RECEIVER
        } else {
            ROLE_SENDER
        }
    }

    /// Live endpoints of the other side (asks the kernel once per registered entry).
    fn other_side_live(&self) -> usize {
        let role = self.other_role();
        (0..MAX_ENDPOINTS)
            .filter(|&i| self.shared.entry_live_with_role(i, role))
            .count()
    }

    /// No endpoint of the other side is alive (one had attached), and how they went: all
    /// closed cleanly, or at least one died (its registration was never closed, so it
    /// still counts in `mpmc_live`). Asks the kernel.
    fn other_side_gone(&self) -> Option<Gone> {
        let h = self.shared.header();
        let other = 1 - self.side;
        if h.mpmc_ever.load(Ordering::Acquire) & (1 << other) == 0 {
            return None;
        }
        let role = self.other_role();
        if (0..MAX_ENDPOINTS).any(|i| self.shared.entry_live_with_role(i, role)) {
            return None;
        }
        Some(if h.mpmc_live[other].load(Ordering::Acquire) == 0 {
            Gone::Closed
        } else {
            Gone::Died
        })
    }

    /// The senders have gone: the next message, past any slots gone senders left claimed
    /// in front of it (each is recovered as cancelled), or `None` when none is left.
    fn last_look(&self) -> std::result::Result<Option<RecvClaim>, crate::ring::spsc::Corrupt> {
        for _ in 0..=self.shared.geometry().slot_count {
            if let Some(c) = self.ring.try_claim_recv(self.claim)? {
                return Ok(Some(c));
            }
            if let Some(c) = self.ring.recover_recv(self.claim)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Whether the rate-limited slow path (liveness, recovery) is due: at most once per
    /// `channel::LIVENESS_INTERVAL` for this registration, whichever clone, thread or call
    /// asks (so callers that wait in short slices are covered like long ones).
    fn slow_path_due(&self) -> bool {
        if cfg!(loom) {
            return true; // Models have no clock; every look may recover.
        }
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_slow.load(Ordering::Relaxed);
        // Another thread may have stored a later `now` than ours: saturate, never panic.
        if last != 0 && now.saturating_sub(last) < channel::LIVENESS_INTERVAL.as_millis() as u64 {
            return false;
        }
        self.last_slow
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let h = self.shared.header();
        // The name's lifecycle: a creating sender leaving unread messages with no live
        // receiver hands the name over; whoever leaves a handed-over ring empty with
        // nobody alive on the other side removes it (see `channel::hand_over_if_unread`).
        let other_alive = self.other_side_live() > 0;
        let empty = channel::ring_empty(&self.shared);
        if self.side == 0 {
            // Receivers that never attached or all closed (none alive, none crashed).
            let absent = !(0..MAX_ENDPOINTS).any(|i| {
                word_role(self.shared.entry_word(i)) == ROLE_RECEIVER
                    && matches!(
                        self.shared.entry_state(i),
                        PeerState::Alive(_) | PeerState::Dead(_)
                    )
            });
            channel::hand_over_if_unread(&self.shared, !empty, absent);
        }
        if empty && !other_alive {
            channel::finish_hand_over(&self.shared);
        }
        // Not counted as open before the entry is given back: a peer that finds no live
        // entry then sees the count down too, and takes this for a clean close
        // (`Disconnected`), never a death (`PeerDied`). loom found the other order.
        h.mpmc_live[self.side].fetch_sub(1, Ordering::SeqCst);
        self.shared.close_entry(self.index);
        // Wake every sleeper of the other side, so they see the disconnect now.
        let (waiters, sem) = if self.side == 0 {
            (&h.data_waiters, &h.data_sem)
        } else {
            (&h.space_waiters, &h.space_sem)
        };
        wait::wake_all(waiters, sem);
    }
}

/// Under loom: a sender and a receiver on one heap-backed ring, for the models in
/// `tests/loom.rs`; clone them for more of each.
#[cfg(loom)]
pub fn model_pair(slots: usize, max_message: usize, wait: Wait) -> (Sender, Receiver) {
    let opts = Options::new()
        .slots(slots)
        .max_message(max_message)
        .wait(wait);
    let shared = channel::model("/loom", mpmc_geometry(&opts).expect("geometry"));
    let tx = Sender {
        ep: Endpoint::attach(shared.clone(), ROLE_SENDER).expect("sender"),
    };
    let rx = Receiver {
        ep: Endpoint::attach(shared, ROLE_RECEIVER).expect("receiver"),
    };
    (tx, rx)
}

#[cfg(loom)]
impl Sender {
    /// Under loom: claims the next slot in the name of a registration that has gone (an
    /// entry nobody ever held), as a sender killed between claim and publish leaves it.
    /// Returns whether a slot was claimed.
    pub fn model_dead_claim(&self) -> bool {
        let gone = claim_id(MAX_ENDPOINTS - 1, 0);
        matches!(self.ep.ring.try_claim_send(gone), Ok(Some(_)))
    }
}

/// A sending handle of an MPMC channel. Clone it freely: clones share one registration.
#[derive(Clone)]
pub struct Sender {
    ep: Arc<Endpoint>,
}

/// A receiving handle of an MPMC channel. Clone it freely: clones share one registration.
#[derive(Clone)]
pub struct Receiver {
    ep: Arc<Endpoint>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("name", &self.name())
            .finish()
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("name", &self.name())
            .finish()
    }
}

macro_rules! common_methods {
    () => {
        /// The segment name.
        pub fn name(&self) -> &str {
            self.ep.shared.segment().name()
        }

        /// The number of slots.
        pub fn slots(&self) -> usize {
            self.ep.shared.geometry().slot_count
        }

        /// The largest message.
        pub fn max_message(&self) -> usize {
            self.ep.ring.max_message()
        }

        /// The wait strategy of this handle and its clones.
        pub fn wait(&self) -> Wait {
            self.ep.wait()
        }

        /// Changes the wait strategy of this handle and its clones.
        pub fn set_wait(&self, wait: Wait) {
            self.ep.wait.store(wait.to_raw(), Ordering::Relaxed);
        }

        /// Messages published and not yet taken (approximate under contention).
        pub fn len(&self) -> usize {
            self.ep.ring.len() as usize
        }

        /// Whether no message is waiting (approximate under contention).
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// Messages lost so far because a process died holding their slot.
        pub fn lost(&self) -> u64 {
            self.ep.shared.header().lost.load(Ordering::Relaxed)
        }
    };
}

impl Sender {
    /// Creates the channel `name` and returns a sender. The name is removed when the last
    /// clone of this sender drops, unless `opts.persist(true)`.
    pub fn create(name: &str, opts: &Options) -> Result<Sender> {
        Sender::create_as(name, opts, &Fingerprint::untyped())
    }

    pub(crate) fn create_as(name: &str, opts: &Options, fp: &Fingerprint) -> Result<Sender> {
        let mapped = channel::create(name, opts, mpmc_geometry(opts)?, fp)?;
        Ok(Sender {
            ep: Endpoint::attach(StdArc::new(mapped), ROLE_SENDER)?,
        })
    }

    /// Opens the existing channel `name` as a new sender.
    pub fn open(name: &str) -> Result<Sender> {
        Sender::open_as(name, &Fingerprint::untyped())
    }

    pub(crate) fn open_as(name: &str, fp: &Fingerprint) -> Result<Sender> {
        let mapped = channel::open(name, Kind::Mpmc, fp)?;
        Ok(Sender {
            ep: Endpoint::attach(StdArc::new(mapped), ROLE_SENDER)?,
        })
    }

    /// Opens the channel `name` as a new sender, waiting up to `timeout` for it to
    /// appear and for its creator to finish setting it up. [`Error::Timeout`] after that;
    /// any other error at once.
    pub fn open_timeout(name: &str, timeout: Duration) -> Result<Sender> {
        Sender::open_timeout_as(name, timeout, &Fingerprint::untyped())
    }

    pub(crate) fn open_timeout_as(
        name: &str,
        timeout: Duration,
        fp: &Fingerprint,
    ) -> Result<Sender> {
        let mapped = channel::open_timeout(name, Kind::Mpmc, fp, timeout)?;
        Ok(Sender {
            ep: Endpoint::attach(StdArc::new(mapped), ROLE_SENDER)?,
        })
    }

    common_methods!();

    /// Sends `msg` with tag 0, waiting while the ring is full.
    pub fn send(&self, msg: &[u8]) -> Result<()> {
        self.send_tagged(0, msg)
    }

    /// Sends a tagged message, waiting while the ring is full.
    pub fn send_tagged(&self, tag: u32, msg: &[u8]) -> Result<()> {
        let mut g = self.reserve_inner(msg.len(), None)?;
        g.copy_from(msg);
        g.set_tag(tag);
        g.commit();
        Ok(())
    }

    /// Sends with tag 0, waiting at most `timeout` for a free slot.
    pub fn send_timeout(&self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.send_tagged_timeout(0, msg, timeout)
    }

    /// Sends a tagged message, waiting at most `timeout` for a free slot.
    pub fn send_tagged_timeout(&self, tag: u32, msg: &[u8], timeout: Duration) -> Result<()> {
        let mut g = self.reserve_inner(msg.len(), Some(Instant::now() + timeout))?;
        g.copy_from(msg);
        g.set_tag(tag);
        g.commit();
        Ok(())
    }

    /// Sends with tag 0 if a slot is free now; never waits.
    pub fn try_send(&self, msg: &[u8]) -> Result<(), TrySendError> {
        self.try_send_tagged(0, msg)
    }

    /// Sends a tagged message if a slot is free now; never waits.
    pub fn try_send_tagged(&self, tag: u32, msg: &[u8]) -> Result<(), TrySendError> {
        let mut g = self.try_reserve(msg.len())?;
        g.copy_from(msg);
        g.set_tag(tag);
        g.commit();
        Ok(())
    }

    /// Claims a slot for a `len`-byte message, waiting while the ring is full. Write the
    /// message into the grant and commit it; dropping the grant sends nothing.
    pub fn reserve(&self, len: usize) -> Result<WriteGrant<'_>> {
        self.reserve_inner(len, None)
    }

    /// Like [`reserve`](Self::reserve), waiting at most `timeout`.
    pub fn reserve_timeout(&self, len: usize, timeout: Duration) -> Result<WriteGrant<'_>> {
        self.reserve_inner(len, Some(Instant::now() + timeout))
    }

    /// Claims a slot if one is free now; never waits.
    pub fn try_reserve(&self, len: usize) -> Result<WriteGrant<'_>, TrySendError> {
        let ep = &*self.ep;
        let max = ep.ring.max_message();
        if len > max {
            return Err(TrySendError::TooLarge { len, max });
        }
        if ep.other_side_closed() {
            return Err(TrySendError::Disconnected);
        }
        match ep.ring.try_claim_send(ep.claim) {
            Ok(Some(claim)) => Ok(WriteGrant::new(ep, claim, len)),
            Ok(None) => {
                if ep.slow_path_due() {
                    if ep.other_side_gone().is_some() {
                        return Err(TrySendError::Disconnected);
                    }
                    if ep.ring.recover_send(ep.claim) {
                        if let Ok(Some(claim)) = ep.ring.try_claim_send(ep.claim) {
                            return Ok(WriteGrant::new(ep, claim, len));
                        }
                    }
                }
                Err(TrySendError::Full)
            }
            Err(c) => Err(TrySendError::Corrupt { what: c.0 }),
        }
    }

    fn reserve_inner(&self, len: usize, deadline: Option<Instant>) -> Result<WriteGrant<'_>> {
        let ep = &*self.ep;
        let max = ep.ring.max_message();
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        if ep.other_side_closed() {
            return Err(Error::Disconnected);
        }
        let claim = match ep.ring.try_claim_send(ep.claim)? {
            Some(c) => c,
            None => {
                let h = ep.shared.header();
                wait::wait_until(
                    Waiting {
                        strategy: ep.wait(),
                        deadline,
                        waiters: &h.space_waiters,
                        sem: &h.space_sem,
                        light_wakers: &h.light_wakers,
                        drain_when_gone: false,
                    },
                    || {
                        if ep.other_side_closed() {
                            return Some(Err(Error::Disconnected));
                        }
                        ep.ring
                            .try_claim_send(ep.claim)
                            .map_err(Error::from)
                            .transpose()
                    },
                    || {
                        if ep.slow_path_due() && !ep.ring.recover_send(ep.claim) {
                            ep.other_side_gone()
                        } else {
                            None
                        }
                    },
                )?
            }
        };
        Ok(WriteGrant::new(ep, claim, len))
    }

    /// Whether every receiver has gone (closed, or died). Asks the kernel.
    pub fn is_disconnected(&self) -> bool {
        self.ep.other_side_gone().is_some()
    }

    /// How many receivers (registrations, each shared by its clones) are attached and
    /// alive. Asks the kernel.
    pub fn receivers(&self) -> usize {
        self.ep.other_side_live()
    }
}

impl Receiver {
    /// Creates the channel `name` and returns a receiver. The name is removed when the last
    /// clone of this receiver drops, unless `opts.persist(true)`.
    pub fn create(name: &str, opts: &Options) -> Result<Receiver> {
        Receiver::create_as(name, opts, &Fingerprint::untyped())
    }

    pub(crate) fn create_as(name: &str, opts: &Options, fp: &Fingerprint) -> Result<Receiver> {
        let mapped = channel::create(name, opts, mpmc_geometry(opts)?, fp)?;
        Ok(Receiver {
            ep: Endpoint::attach(StdArc::new(mapped), ROLE_RECEIVER)?,
        })
    }

    /// Opens the existing channel `name` as a new receiver.
    pub fn open(name: &str) -> Result<Receiver> {
        Receiver::open_as(name, &Fingerprint::untyped())
    }

    pub(crate) fn open_as(name: &str, fp: &Fingerprint) -> Result<Receiver> {
        let mapped = channel::open(name, Kind::Mpmc, fp)?;
        Ok(Receiver {
            ep: Endpoint::attach(StdArc::new(mapped), ROLE_RECEIVER)?,
        })
    }

    /// Opens the channel `name` as a new receiver, waiting up to `timeout` for it to
    /// appear and for its creator to finish setting it up. [`Error::Timeout`] after that;
    /// any other error at once.
    pub fn open_timeout(name: &str, timeout: Duration) -> Result<Receiver> {
        Receiver::open_timeout_as(name, timeout, &Fingerprint::untyped())
    }

    pub(crate) fn open_timeout_as(
        name: &str,
        timeout: Duration,
        fp: &Fingerprint,
    ) -> Result<Receiver> {
        let mapped = channel::open_timeout(name, Kind::Mpmc, fp, timeout)?;
        Ok(Receiver {
            ep: Endpoint::attach(StdArc::new(mapped), ROLE_RECEIVER)?,
        })
    }

    common_methods!();

    /// The next message, waiting until one is published. When every sender has gone,
    /// returns what they published and then [`Error::Disconnected`].
    pub fn recv(&self) -> Result<ReadGuard<'_>> {
        self.recv_inner(None)
    }

    /// Like [`recv`](Self::recv), waiting at most `timeout` ([`Error::Timeout`]).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ReadGuard<'_>> {
        self.recv_inner(Some(Instant::now() + timeout))
    }

    /// Copies the next message into `buf` and frees its slot, waiting until one is
    /// published; returns its `(tag, length)`. For receivers that do not trust their
    /// peers: a [`ReadGuard`]'s bytes are the slot's, which a buggy or hostile process
    /// could still write; a copy cannot change afterwards. `buf` must hold `max_message()`
    /// bytes (a slot, once taken, cannot be put back): a shorter one is
    /// [`Error::MessageTooLarge`] before anything is taken.
    pub fn recv_into(&self, buf: &mut [u8]) -> Result<(u32, usize)> {
        let max = self.max_message();
        if buf.len() < max {
            return Err(Error::MessageTooLarge {
                len: max,
                max: buf.len(),
            });
        }
        let m = self.recv()?;
        crate::ring::copy::copy_bytes(&mut buf[..m.len()], &m);
        Ok((m.tag(), m.len()))
    }

    /// The next message, or `Ok(None)` once every sender has closed its end and every
    /// message is taken: `while let Some(m) = rx.recv_or_end()? { .. }`. When the
    /// senders are gone and at least one died without closing, [`Error::PeerDied`] (after
    /// the published messages are taken).
    pub fn recv_or_end(&self) -> Result<Option<ReadGuard<'_>>> {
        match self.recv_inner(None) {
            Ok(m) => Ok(Some(m)),
            Err(Error::Disconnected) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next message if one is published now; never waits.
    pub fn try_recv(&self) -> Result<ReadGuard<'_>, TryRecvError> {
        let ep = &*self.ep;
        let corrupt = |c: crate::ring::spsc::Corrupt| TryRecvError::Corrupt { what: c.0 };
        if let Some(claim) = ep.ring.try_claim_recv(ep.claim).map_err(corrupt)? {
            return Ok(ReadGuard::new(ep, claim));
        }
        let mut look_again = ep.other_side_closed();
        if !look_again && ep.slow_path_due() {
            // A slot a dead sender left claimed is skipped; one published just as we went
            // to skip it is ours to hand out.
            if let Some(claim) = ep.ring.recover_recv(ep.claim).map_err(corrupt)? {
                return Ok(ReadGuard::new(ep, claim));
            }
            look_again = ep.other_side_gone().is_some();
        }
        if look_again {
            // The senders published before they left: look once more.
            return match ep.last_look().map_err(corrupt)? {
                Some(claim) => Ok(ReadGuard::new(ep, claim)),
                None if ep.other_side_closed() || ep.other_side_gone().is_some() => {
                    Err(TryRecvError::Disconnected)
                }
                None => Err(TryRecvError::Empty),
            };
        }
        Err(TryRecvError::Empty)
    }

    fn recv_inner(&self, deadline: Option<Instant>) -> Result<ReadGuard<'_>> {
        let ep = &*self.ep;
        if let Some(claim) = ep.ring.try_claim_recv(ep.claim)? {
            return Ok(ReadGuard::new(ep, claim));
        }
        let h = ep.shared.header();
        // A message found by the slow path (a slot published as we went to skip it).
        let found: RefCell<Option<Result<RecvClaim>>> = RefCell::new(None);
        let claim = wait::wait_until(
            Waiting {
                strategy: ep.wait(),
                deadline,
                waiters: &h.data_waiters,
                sem: &h.data_sem,
                light_wakers: &h.light_wakers,
                drain_when_gone: true,
            },
            || ep.recv_look(&found),
            || ep.recv_slow_look(&found),
        )?;
        Ok(ReadGuard::new(ep, claim))
    }

    /// Whether every sender has gone (closed, or died). Asks the kernel.
    pub fn is_disconnected(&self) -> bool {
        self.ep.other_side_gone().is_some()
    }

    /// How many senders (registrations, each shared by its clones) are attached and
    /// alive. Asks the kernel.
    pub fn senders(&self) -> usize {
        self.ep.other_side_live()
    }
}

/// A claimed slot, from [`Sender::reserve`]: derefs to the payload bytes;
/// [`commit`](Self::commit) publishes it, dropping it sends nothing.
pub struct WriteGrant<'a> {
    ep: &'a Endpoint,
    claim: Option<SendClaim>,
    len: usize,
    tag: u32,
}

impl<'a> WriteGrant<'a> {
    fn new(ep: &'a Endpoint, claim: SendClaim, len: usize) -> WriteGrant<'a> {
        WriteGrant {
            ep,
            claim: Some(claim),
            len,
            tag: 0,
        }
    }

    /// Sets the message's tag (default 0).
    pub fn set_tag(&mut self, tag: u32) {
        self.tag = tag;
    }

    /// Shrinks the message to `len` bytes (at most the reserved length).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Copies `src` (exactly the reserved length) into the message, fast at any alignment.
    ///
    /// # Panics
    /// If `src.len()` differs from the message length.
    pub fn copy_from(&mut self, src: &[u8]) {
        crate::ring::copy::copy_bytes(self, src);
    }

    /// Publishes the message and wakes a sleeping receiver, if any.
    pub fn commit(mut self) {
        let claim = self
            .claim
            .take()
            .expect("a grant holds its claim until commit or drop");
        // A failed publish means a receiver took this slot back, believing us dead; the
        // message is counted in `lost` by that receiver. The ring wakes receivers.
        let _ = self.ep.ring.publish(claim, self.len as u32, self.tag);
    }
}

impl Drop for WriteGrant<'_> {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            // The slot is ours for this lap: publish it as cancelled so receivers skip it.
            let _ = self.ep.ring.publish(claim, CANCELLED, 0);
        }
    }
}

impl Deref for WriteGrant<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let claim = self.claim.as_ref().expect("claim held");
        self.ep.ring.claimed_payload(claim, self.len)
    }
}

impl DerefMut for WriteGrant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let claim = self.claim.as_mut().expect("claim held");
        self.ep.ring.payload_mut(claim, self.len)
    }
}

impl std::fmt::Debug for WriteGrant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteGrant")
            .field("len", &self.len)
            .field("tag", &self.tag)
            .finish()
    }
}

/// A message in its slot, from [`Receiver::recv`]: derefs to the payload; the slot is
/// freed for senders when the guard drops.
pub struct ReadGuard<'a> {
    ep: &'a Endpoint,
    claim: Option<RecvClaim>,
}

impl<'a> ReadGuard<'a> {
    fn new(ep: &'a Endpoint, claim: RecvClaim) -> ReadGuard<'a> {
        ReadGuard {
            ep,
            claim: Some(claim),
        }
    }

    /// The message's tag.
    pub fn tag(&self) -> u32 {
        self.claim.as_ref().map_or(0, |c| c.tag)
    }
}

impl Deref for ReadGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let claim = self.claim.as_ref().expect("claim held");
        self.ep.ring.payload(claim)
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            // The ring wakes senders (as on every path that frees a slot).
            self.ep.ring.release(claim);
        }
    }
}

impl std::fmt::Debug for ReadGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadGuard")
            .field("len", &self.len())
            .field("tag", &self.tag())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// `slow_path_due` compares its `now` with one another thread stored, possibly later
    /// than its own: the difference saturates instead of underflowing (a panic with
    /// overflow checks on; this test panicked with the old plain subtraction).
    #[test]
    fn slow_path_due_survives_a_later_timestamp_from_another_thread() {
        let name = format!("/shmlane-unit-slowpath-{}", std::process::id());
        let tx = Sender::create(&name, &Options::new().slots(2).max_message(8)).unwrap();
        let ep = &tx.ep;
        let later = ep.epoch.elapsed().as_millis() as u64 + 10_000;
        ep.last_slow.store(later, Ordering::Relaxed);
        assert!(
            !ep.slow_path_due(),
            "not due: the last look is 'in the future'"
        );
        ep.last_slow.store(1, Ordering::Relaxed);
        std::thread::sleep(channel::LIVENESS_INTERVAL);
        assert!(ep.slow_path_due());
        assert!(!ep.slow_path_due(), "due once per interval");
    }
}
