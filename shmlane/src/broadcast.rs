//! One publisher, many subscribers: every subscriber reads every message.
//!
//! ```no_run
//! use std::time::Duration;
//! use shmlane::{Options, Error};
//! use shmlane::broadcast::{Publisher, Subscriber, StartAt, Overflow};
//! # fn main() -> Result<(), Error> {
//! let opts = Options::new()
//!     .capacity(4 << 20).max_message(4096)
//!     .max_subscribers(16)                      // more at once: Error::TooManyEndpoints
//!     .overflow(Overflow::Block)                // or Overflow::Lap
//!     .evict_after(Duration::from_millis(500));
//! let mut p = Publisher::create("/md", &opts)?;
//! let mut s = Subscriber::open("/md", StartAt::Oldest)?;          // usually other processes
//! let mut risk = Subscriber::open_named("/md", "risk", StartAt::Oldest)?;
//! p.send_tagged(7, b"tick")?;
//! let m = s.recv()?;
//! assert_eq!((&m[..], m.tag(), m.position()), (&b"tick"[..], 7, 0));
//! assert_eq!(&risk.recv()?[..], b"tick");
//! # Ok(()) }
//! ```
//!
//! **Block or Lap.** With [`Overflow::Block`] (the default) nothing is lost: the publisher
//! waits for the slowest subscriber that is alive. A subscriber whose process died stops
//! holding it back at once; one that is alive but does not move for
//! [`Options::evict_after`] while the ring is full is *evicted* (its next `recv` is
//! [`Error::Evicted`]), so the publisher never waits longer than that. With
//! [`Overflow::Lap`] the publisher never waits; a subscriber that falls a whole ring
//! behind gets [`Error::Lapped`] with the exact number of messages it missed, and goes on
//! from the oldest message still in the ring.
//!
//! **Copies, not views.** A subscriber copies each message out of the ring into its own
//! buffer and only then checks that the publisher did not overwrite it meanwhile (a
//! seqlock, like Agrona's broadcast receiver); the [`ReadGuard`] is a view of that copy.
//! So a guard's bytes never change, whatever the publisher does, in both modes.
//!
//! **Named cursors** ([`Subscriber::open_named`]) live in the segment: a subscriber that
//! opens the same name again goes on exactly where the last one left off (`StartAt` counts
//! only the first time a name is used). While detached, a named cursor holds a Block
//! publisher back for at most `evict_after`.
//!
//! The publisher leaving (or dying) is [`Error::Disconnected`] for every subscriber once
//! it has read everything published. The ring's protocol and its memory-ordering argument
//! are in `ring::broadcast`.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::channel::{self, Me, PeerWatch};
use crate::error::{Error, Result, Role, TrySendError};
use crate::ring::broadcast::{
    self as ring, areas, Got, PubRing, ReadErr, Spot, Start, SubRing, CURSOR_NAME_CAP, CURSOR_SLOT,
    C_ACTIVE, C_DETACHED, C_EVICTED, C_FREE, OVERFLOW_BLOCK, OVERFLOW_LAP,
};
use crate::segment::header::{
    split_word, Fingerprint, Geometry, Kind, Mapped, ROLE_RECEIVER, ROLE_SENDER,
};
use crate::wait::{self, Gone, Wait, Waiting};
use crate::Options;

#[cfg(not(loom))]
mod aio;
#[cfg(not(loom))]
pub use aio::AsyncSubscriber;

/// Registry entry of the publisher (subscriber slot `k` uses entry `k + 1`).
const PUBLISHER: usize = 0;

/// What a Block/Lap publisher does when the ring is full (see the [module docs](self)).
///
/// ```
/// use shmlane::broadcast::Overflow;
/// assert_eq!(Overflow::default(), Overflow::Block);
/// let opts = shmlane::Options::new().overflow(Overflow::Lap);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Overflow {
    /// Reliable: the publisher waits for the slowest live subscriber (at most
    /// `evict_after` for any one of them).
    #[default]
    Block,
    /// Lossy: the publisher never waits; slow subscribers are lapped and told how many
    /// messages they missed.
    Lap,
}

impl Overflow {
    fn to_raw(self) -> u32 {
        match self {
            Overflow::Block => OVERFLOW_BLOCK,
            Overflow::Lap => OVERFLOW_LAP,
        }
    }
}

/// Where a new subscriber (or a named cursor used for the first time) starts.
///
/// ```no_run
/// use shmlane::broadcast::{Subscriber, StartAt};
/// # fn main() -> shmlane::Result<()> {
/// let late = Subscriber::open("/md", StartAt::Latest)?; // only what is published from now on
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StartAt {
    /// The oldest message still in the ring.
    Oldest,
    /// The next message published.
    Latest,
}

fn geometry(opts: &Options) -> Result<Geometry> {
    let (capacity, max_message, subs) = opts.broadcast_geometry()?;
    Ok(Geometry {
        kind: Kind::Broadcast,
        segment_len: 0,
        capacity,
        max_message,
        slot_size: CURSOR_SLOT,
        slot_count: subs,
        wait: opts.get_wait().to_raw(),
    })
}

fn wait_of(m: &Mapped) -> Wait {
    Wait::from_raw(m.geometry().wait)
}

/// Under loom: a publisher and two subscribers on one heap segment.
#[cfg(loom)]
#[doc(hidden)]
pub fn model_trio(
    capacity: usize,
    max_message: usize,
    overflow: Overflow,
    evict_after: Duration,
    wait: Wait,
) -> (Publisher, Subscriber, Subscriber) {
    let (p, ring) = model_publisher(capacity, max_message, 2, overflow, evict_after, wait);
    let a = ring.subscribe(StartAt::Oldest).expect("subscriber");
    let b = ring.subscribe(StartAt::Oldest).expect("subscriber");
    (p, a, b)
}

/// Under loom: a publisher alone on a heap segment of `max_subscribers` cursor slots, and
/// the [`ModelRing`] that subscribers join through while it publishes (the join models).
#[cfg(loom)]
#[doc(hidden)]
pub fn model_publisher(
    capacity: usize,
    max_message: usize,
    max_subscribers: usize,
    overflow: Overflow,
    evict_after: Duration,
    wait: Wait,
) -> (Publisher, ModelRing) {
    let opts = Options::new()
        .capacity(capacity)
        .max_message(max_message)
        .max_subscribers(max_subscribers)
        .overflow(overflow)
        .evict_after(evict_after)
        .wait(wait);
    let shared = channel::model_with("/loom", geometry(&opts).expect("geometry"), |m| {
        ring::init(m, overflow.to_raw(), evict_after)
    });
    let p = Publisher::attach(shared.clone()).expect("publisher");
    (p, ModelRing(shared))
}

/// Under loom: the model segment of [`model_publisher`], to subscribe to (from any thread).
#[cfg(loom)]
#[doc(hidden)]
#[derive(Clone)]
pub struct ModelRing(Arc<Mapped>);

#[cfg(loom)]
impl std::fmt::Debug for ModelRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRing").finish_non_exhaustive()
    }
}

#[cfg(loom)]
impl ModelRing {
    /// [`Subscriber::open`] on the model segment.
    pub fn subscribe(&self, start: StartAt) -> Result<Subscriber> {
        Subscriber::attach(self.0.clone(), None, start)
    }

    /// [`Subscriber::open_named`] on the model segment.
    pub fn subscribe_named(&self, cursor_name: &str, start: StartAt) -> Result<Subscriber> {
        Subscriber::attach(self.0.clone(), Some(cursor_name), start)
    }
}

/// The one publisher of a broadcast ring. `Send`.
pub struct Publisher {
    ring: PubRing,
    shared: Arc<Mapped>,
    wait: Wait,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("name", &self.name())
            .field("capacity", &self.capacity())
            .field("max_message", &self.max_message())
            .field("overflow", &self.overflow())
            .field("published", &self.published())
            .finish()
    }
}

impl Publisher {
    /// Creates the broadcast ring `name` and becomes its publisher. Dropping the creating
    /// publisher removes the name (unless [`Options::persist`]); attached subscribers read
    /// what is left, then get [`Error::Disconnected`].
    ///
    /// ```no_run
    /// use shmlane::{Options, broadcast::Publisher};
    /// # fn main() -> shmlane::Result<()> {
    /// let mut p = Publisher::create("/md", &Options::new().max_subscribers(4))?;
    /// p.send(b"tick")?;
    /// # Ok(()) }
    /// ```
    pub fn create(name: &str, opts: &Options) -> Result<Publisher> {
        let overflow = opts.get_overflow().to_raw();
        let evict = opts.get_evict_after();
        let mapped =
            channel::create_with(name, opts, geometry(opts)?, &Fingerprint::untyped(), |m| {
                ring::init(m, overflow, evict)
            })?;
        Publisher::attach(Arc::new(mapped))
    }

    /// Becomes the publisher of an existing broadcast ring (after the last one closed or
    /// died: one publisher at a time, else [`Error::RoleTaken`]). It goes on from the last
    /// published message.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// let mut p = shmlane::broadcast::Publisher::open("/md")?;
    /// # Ok(()) }
    /// ```
    pub fn open(name: &str) -> Result<Publisher> {
        let mapped = channel::open(name, Kind::Broadcast, &Fingerprint::untyped())?;
        Publisher::attach(Arc::new(mapped))
    }

    /// [`create`](Self::create), or [`open`](Self::open) if the name exists.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// let p = shmlane::broadcast::Publisher::create_or_open("/md", &shmlane::Options::new())?;
    /// # Ok(()) }
    /// ```
    pub fn create_or_open(name: &str, opts: &Options) -> Result<Publisher> {
        channel::create_or_open(
            name,
            || Publisher::create(name, opts),
            || Publisher::open(name),
        )
    }

    fn attach(mapped: Arc<Mapped>) -> Result<Publisher> {
        let me = Me::get();
        if mapped
            .take_entry(PUBLISHER, ROLE_SENDER, me.pid, me.start_time)?
            .is_none()
        {
            let (pid, _) = split_word(mapped.entry_word(PUBLISHER));
            return Err(Error::RoleTaken {
                pid,
                name: mapped.segment().name().to_string(),
                role: Role::Producer,
            });
        }
        wait::announce_light_waker(&mapped.header().light_wakers);
        match PubRing::new(mapped.clone()) {
            Ok(ring) => Ok(Publisher {
                ring,
                wait: wait_of(&mapped),
                shared: mapped,
            }),
            Err(c) => {
                mapped.close_entry(PUBLISHER);
                Err(c.into())
            }
        }
    }

    /// Publishes `msg` (tag 0) to every subscriber. Block mode: waits while the slowest
    /// live subscriber has not read what it would overwrite (at most `evict_after` per
    /// subscriber). Lap mode: never waits.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut p = shmlane::broadcast::Publisher::open("/md")?;
    /// p.send(b"tick")?;
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_tagged(0, msg)
    }

    /// [`send`](Self::send) with a tag, which every subscriber reads with
    /// [`ReadGuard::tag`].
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut p = shmlane::broadcast::Publisher::open("/md")?;
    /// p.send_tagged(7, b"tick")?;
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn send_tagged(&mut self, tag: u32, msg: &[u8]) -> Result<()> {
        let mut g = self.reserve_inner(msg.len(), None)?;
        crate::ring::copy::copy_bytes(&mut g, msg);
        g.tag = tag;
        g.commit();
        Ok(())
    }

    /// [`send_tagged`](Self::send_tagged), waiting at most `timeout` for room
    /// ([`Error::Timeout`]).
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut p = shmlane::broadcast::Publisher::open("/md")?;
    /// p.send_tagged_timeout(7, b"tick", std::time::Duration::from_millis(10))?;
    /// # Ok(()) }
    /// ```
    pub fn send_tagged_timeout(&mut self, tag: u32, msg: &[u8], timeout: Duration) -> Result<()> {
        let mut g = self.reserve_inner(msg.len(), Some(Instant::now() + timeout))?;
        crate::ring::copy::copy_bytes(&mut g, msg);
        g.tag = tag;
        g.commit();
        Ok(())
    }

    /// Publishes `msg` if there is room now: [`TrySendError::Full`] in Block mode while a
    /// live subscriber holds the ring (Lap mode is never full).
    ///
    /// ```no_run
    /// use shmlane::TrySendError;
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut p = shmlane::broadcast::Publisher::open("/md")?;
    /// match p.try_send(b"tick") {
    ///     Ok(()) | Err(TrySendError::Full) => {}
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn try_send(&mut self, msg: &[u8]) -> Result<(), TrySendError> {
        self.try_send_tagged(0, msg)
    }

    /// [`try_send`](Self::try_send) with a tag.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut p = shmlane::broadcast::Publisher::open("/md")?;
    /// let _ = p.try_send_tagged(3, b"tick");
    /// # Ok(()) }
    /// ```
    pub fn try_send_tagged(&mut self, tag: u32, msg: &[u8]) -> Result<(), TrySendError> {
        let mut g = self.try_reserve(msg.len())?;
        crate::ring::copy::copy_bytes(&mut g, msg);
        g.tag = tag;
        g.commit();
        Ok(())
    }

    /// Reserves `len` bytes in the ring for a message written in place; nothing is
    /// published until [`WriteGrant::commit`] (a dropped grant publishes nothing). Waits
    /// for room like [`send`](Self::send).
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut p = shmlane::broadcast::Publisher::open("/md")?;
    /// let mut g = p.reserve(64)?;
    /// g.copy_from_slice(&[0; 64]);
    /// g.set_tag(1);
    /// g.commit();
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn reserve(&mut self, len: usize) -> Result<WriteGrant<'_>> {
        self.reserve_inner(len, None)
    }

    /// [`reserve`](Self::reserve) if there is room now.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut p = shmlane::broadcast::Publisher::open("/md")?;
    /// if let Ok(mut g) = p.try_reserve(8) {
    ///     g.copy_from_slice(&42u64.to_ne_bytes());
    ///     g.commit();
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_reserve(&mut self, len: usize) -> Result<WriteGrant<'_>, TrySendError> {
        let max = self.ring.max_message();
        if len > max {
            return Err(TrySendError::TooLarge { len, max });
        }
        match self.ring.try_reserve(len) {
            Ok(Some(spot)) => Ok(WriteGrant::new(self, spot, len)),
            Ok(None) => Err(TrySendError::Full),
            Err(c) => Err(TrySendError::Corrupt { what: c.0 }),
        }
    }

    #[inline]
    fn reserve_inner(&mut self, len: usize, deadline: Option<Instant>) -> Result<WriteGrant<'_>> {
        // The common case inline, so the grant stays in registers.
        if let Some(spot) = self.ring.try_reserve_fast(len) {
            return Ok(WriteGrant::new(self, spot, len));
        }
        self.reserve_slow(len, deadline)
    }

    #[cold]
    #[inline(never)]
    fn reserve_slow(&mut self, len: usize, deadline: Option<Instant>) -> Result<WriteGrant<'_>> {
        let max = self.ring.max_message();
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        let spot = match self.ring.try_reserve(len)? {
            Some(spot) => spot,
            None => {
                let ring = &mut self.ring;
                let h = self.shared.header();
                wait::wait_until(
                    Waiting {
                        strategy: self.wait,
                        deadline,
                        waiters: &h.space_waiters,
                        sem: &h.space_sem,
                        light_wakers: &h.light_wakers,
                        drain_when_gone: false,
                    },
                    // Each look rescans the cursors: a dead subscriber is dropped, and one
                    // standing still for evict_after is evicted (the 50 ms sleep slices
                    // bound how late that is noticed).
                    || ring.try_reserve(len).map_err(Error::from).transpose(),
                    || None,
                )?
            }
        };
        Ok(WriteGrant::new(self, spot, len))
    }

    /// Subscribers attached now whose process lives (asks the kernel about each).
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let p = shmlane::broadcast::Publisher::open("/md")?;
    /// println!("{} subscribers", p.subscribers());
    /// # Ok(()) }
    /// ```
    pub fn subscribers(&self) -> usize {
        self.ring.live_subscribers()
    }

    /// Messages published on this ring so far (by every publisher it has had).
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut p = shmlane::broadcast::Publisher::open("/md")?;
    /// let before = p.published();
    /// p.send(b"x")?;
    /// assert_eq!(p.published(), before + 1);
    /// # Ok(()) }
    /// ```
    pub fn published(&self) -> u64 {
        self.ring.published()
    }

    /// The overflow mode stored in the segment.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let p = shmlane::broadcast::Publisher::open("/md")?;
    /// println!("{:?}", p.overflow());
    /// # Ok(()) }
    /// ```
    pub fn overflow(&self) -> Overflow {
        if self.ring.is_block() {
            Overflow::Block
        } else {
            Overflow::Lap
        }
    }

    /// Block mode's eviction time, as stored in the segment.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let p = shmlane::broadcast::Publisher::open("/md")?;
    /// println!("{:?}", p.evict_after());
    /// # Ok(()) }
    /// ```
    pub fn evict_after(&self) -> Duration {
        self.ring.evict_after()
    }

    /// The wait strategy used when the ring is full.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut p = shmlane::broadcast::Publisher::open("/md")?;
    /// p.set_wait(shmlane::Wait::Spin);
    /// assert_eq!(p.wait(), shmlane::Wait::Spin);
    /// # Ok(()) }
    /// ```
    pub fn wait(&self) -> Wait {
        self.wait
    }

    /// Overrides the wait strategy for this endpoint.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut p = shmlane::broadcast::Publisher::open("/md")?;
    /// p.set_wait(shmlane::Wait::Yield);
    /// # Ok(()) }
    /// ```
    pub fn set_wait(&mut self, wait: Wait) {
        self.wait = wait;
    }

    /// The segment name.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let p = shmlane::broadcast::Publisher::open("/md")?;
    /// assert_eq!(p.name(), "/md");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        self.shared.segment().name()
    }

    /// Bytes of the record ring (a power of two).
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let p = shmlane::broadcast::Publisher::open("/md")?;
    /// assert!(p.capacity().is_power_of_two());
    /// # Ok(()) }
    /// ```
    pub fn capacity(&self) -> usize {
        self.shared.geometry().capacity
    }

    /// The largest message.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let p = shmlane::broadcast::Publisher::open("/md")?;
    /// println!("{}", p.max_message());
    /// # Ok(()) }
    /// ```
    pub fn max_message(&self) -> usize {
        self.ring.max_message()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.shared.close_entry(PUBLISHER);
        let h = self.shared.header();
        wait::wake_all(&h.data_waiters, &h.data_sem);
    }
}

/// Room for one message inside the ring, from [`Publisher::reserve`]: write it through
/// `DerefMut`, then [`commit`](Self::commit). Dropped uncommitted, nothing is published.
///
/// ```no_run
/// # fn main() -> shmlane::Result<()> {
/// # let mut p = shmlane::broadcast::Publisher::open("/md")?;
/// let mut g = p.reserve(4)?;
/// g.copy_from_slice(b"tick");
/// g.set_tag(9);
/// g.commit();
/// # Ok(()) }
/// ```
pub struct WriteGrant<'a> {
    publisher: &'a mut Publisher,
    spot: Spot,
    len: usize,
    tag: u32,
}

impl std::fmt::Debug for WriteGrant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteGrant")
            .field("len", &self.len)
            .field("tag", &self.tag)
            .finish()
    }
}

impl<'a> WriteGrant<'a> {
    fn new(publisher: &'a mut Publisher, spot: Spot, len: usize) -> WriteGrant<'a> {
        WriteGrant {
            publisher,
            spot,
            len,
            tag: 0,
        }
    }

    /// Sets the message's tag (default 0).
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut p = shmlane::broadcast::Publisher::open("/md")?;
    /// let mut g = p.reserve(0)?;
    /// g.set_tag(5);
    /// g.commit();
    /// # Ok(()) }
    /// ```
    pub fn set_tag(&mut self, tag: u32) {
        self.tag = tag;
    }

    /// Shrinks the message to `len` bytes (no-op if larger).
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut p = shmlane::broadcast::Publisher::open("/md")?;
    /// let mut g = p.reserve(100)?;
    /// g[..2].copy_from_slice(b"hi");
    /// g.truncate(2);
    /// g.commit();
    /// # Ok(()) }
    /// ```
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Publishes the message to every subscriber.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut p = shmlane::broadcast::Publisher::open("/md")?;
    /// p.reserve(1)?.commit();
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn commit(self) {
        self.publisher.ring.commit(&self.spot, self.len, self.tag);
    }
}

impl Deref for WriteGrant<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.publisher.ring.payload(&self.spot, self.len)
    }
}

impl DerefMut for WriteGrant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.publisher.ring.payload_mut(&self.spot, self.len)
    }
}

/// One subscriber of a broadcast ring: reads every message published after its start.
/// `Send`.
pub struct Subscriber {
    ring: SubRing,
    shared: Arc<Mapped>,
    wait: Wait,
    peer: PeerWatch,
    buf: Vec<u8>,
    cursor_name: Option<String>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("name", &self.name())
            .field("cursor", &self.cursor_name)
            .field("slot", &self.ring.slot())
            .field("next", &self.ring.next_seq())
            .finish()
    }
}

/// Why a slot is a candidate for a new cursor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Free,
    /// Unnamed, not free: its holder died (the kernel hold decides).
    StaleUnnamed,
    /// Named and evicted: a cursor nobody needs any more.
    EvictedNamed,
}

fn class_of(state: u32, named: bool) -> Option<Class> {
    match (state, named) {
        (C_FREE, false) => Some(Class::Free),
        (C_FREE, true) => Some(Class::Free),
        (_, false) => Some(Class::StaleUnnamed),
        (C_EVICTED, true) => Some(Class::EvictedNamed),
        _ => None,
    }
}

impl Subscriber {
    /// Subscribes to the broadcast ring `name`, starting at `start`. More subscribers
    /// than `max_subscribers` at once is [`Error::TooManyEndpoints`].
    ///
    /// ```no_run
    /// use shmlane::broadcast::{Subscriber, StartAt};
    /// # fn main() -> shmlane::Result<()> {
    /// let mut s = Subscriber::open("/md", StartAt::Oldest)?;
    /// let m = s.recv()?;
    /// println!("#{} tag {}: {:?}", m.position(), m.tag(), &m[..]);
    /// # Ok(()) }
    /// ```
    pub fn open(name: &str, start: StartAt) -> Result<Subscriber> {
        let mapped = channel::open(name, Kind::Broadcast, &Fingerprint::untyped())?;
        Subscriber::attach(Arc::new(mapped), None, start)
    }

    /// Subscribes through the durable cursor `cursor_name` (1 to 96 bytes): if it exists,
    /// reading goes on exactly where its last subscriber left off and `start` is ignored;
    /// otherwise it is made, starting at `start`. One subscriber per cursor at a time
    /// ([`Error::RoleTaken`]).
    ///
    /// ```no_run
    /// use shmlane::broadcast::{Subscriber, StartAt};
    /// # fn main() -> shmlane::Result<()> {
    /// let mut risk = Subscriber::open_named("/md", "risk", StartAt::Oldest)?;
    /// # Ok(()) }
    /// ```
    pub fn open_named(name: &str, cursor_name: &str, start: StartAt) -> Result<Subscriber> {
        if cursor_name.is_empty() || cursor_name.len() > CURSOR_NAME_CAP {
            return Err(Error::InvalidName {
                name: cursor_name.to_string(),
                reason: "a cursor name is 1 to 96 bytes",
            });
        }
        let mapped = channel::open(name, Kind::Broadcast, &Fingerprint::untyped())?;
        Subscriber::attach(Arc::new(mapped), Some(cursor_name), start)
    }

    fn attach(mapped: Arc<Mapped>, cursor: Option<&str>, start: StartAt) -> Result<Subscriber> {
        let me = Me::get();
        let n = mapped.geometry().slot_count;
        let start = match start {
            StartAt::Oldest => Start::Oldest,
            StartAt::Latest => Start::Latest,
        };
        for _ in 0..16 {
            let a = areas(&mapped);
            if let Some(want) = cursor {
                // An existing cursor of that name?
                let found = (0..n).find(|&k| {
                    a.cursors[k].state.load(crate::sync::Ordering::Acquire) != C_FREE
                        && ring::slot_name(&a.cursors[k]) == want.as_bytes()
                });
                if let Some(k) = found {
                    if mapped
                        .take_entry(k + 1, ROLE_RECEIVER, me.pid, me.start_time)?
                        .is_none()
                    {
                        let (pid, _) = split_word(mapped.entry_word(k + 1));
                        return Err(Error::RoleTaken {
                            pid,
                            name: mapped.segment().name().to_string(),
                            role: Role::Consumer,
                        });
                    }
                    let slot = &a.cursors[k];
                    // Ours now: is it still that cursor?
                    if slot.state.load(crate::sync::Ordering::Acquire) == C_FREE
                        || ring::slot_name(slot) != want.as_bytes()
                    {
                        mapped.close_entry(k + 1);
                        continue;
                    }
                    let resume = Start::Resume(
                        slot.pos.load(crate::sync::Ordering::Acquire),
                        slot.seq.load(crate::sync::Ordering::Acquire),
                    );
                    return Subscriber::finish(mapped.clone(), k, Some(want), resume);
                }
            }
            // A new cursor: a free slot, else an unnamed one whose holder died, else an
            // evicted named one.
            for class in [Class::Free, Class::StaleUnnamed, Class::EvictedNamed] {
                for k in 0..n {
                    let slot = &a.cursors[k];
                    let named = slot.name_len.load(crate::sync::Ordering::Acquire) != 0;
                    if class_of(slot.state.load(crate::sync::Ordering::Acquire), named)
                        != Some(class)
                    {
                        continue;
                    }
                    if mapped
                        .take_entry(k + 1, ROLE_RECEIVER, me.pid, me.start_time)?
                        .is_none()
                    {
                        continue;
                    }
                    // Ours: look again (it may have changed before we held it).
                    let named = slot.name_len.load(crate::sync::Ordering::Acquire) != 0;
                    let state = slot.state.load(crate::sync::Ordering::Acquire);
                    if class_of(state, named).is_none()
                        || (named && state == C_DETACHED)
                        || (named && state == C_ACTIVE)
                    {
                        mapped.close_entry(k + 1);
                        continue;
                    }
                    slot.state.store(C_FREE, crate::sync::Ordering::Release);
                    ring::set_slot_name(slot, cursor.unwrap_or("").as_bytes());
                    let s = Subscriber::finish(mapped.clone(), k, cursor, start)?;
                    if let Some(want) = cursor {
                        // Two openers may make the same name at once: the lower slot wins.
                        let twin = (0..k).any(|j| {
                            a.cursors[j].state.load(crate::sync::Ordering::Acquire) != C_FREE
                                && ring::slot_name(&a.cursors[j]) == want.as_bytes()
                        });
                        if twin {
                            let mut s = s;
                            s.cursor_name = None;
                            s.ring.forget_name();
                            drop(s);
                            break;
                        }
                    }
                    return Ok(s);
                }
            }
            if cursor.is_none() {
                break;
            }
        }
        Err(Error::TooManyEndpoints { max: n })
    }

    fn finish(
        mapped: Arc<Mapped>,
        slot: usize,
        cursor: Option<&str>,
        start: Start,
    ) -> Result<Subscriber> {
        wait::announce_light_waker(&mapped.header().light_wakers);
        match SubRing::new(mapped.clone(), slot, cursor.is_some(), start) {
            Ok(ring) => Ok(Subscriber {
                buf: vec![0; ring.max_message()],
                ring,
                wait: wait_of(&mapped),
                peer: PeerWatch::new(PUBLISHER),
                shared: mapped,
                cursor_name: cursor.map(str::to_string),
            }),
            Err(c) => {
                mapped.close_entry(slot + 1);
                Err(c.into())
            }
        }
    }

    /// Waits for the next message and returns a guard over this subscriber's copy of it.
    /// Errors: [`Error::Lapped`] (Lap mode; the next call goes on from the oldest message
    /// in the ring), [`Error::Evicted`] (Block mode), [`Error::Disconnected`] (the
    /// publisher closed or died, and everything it published has been read).
    ///
    /// ```no_run
    /// use shmlane::{Error, broadcast::{Subscriber, StartAt}};
    /// # fn main() -> shmlane::Result<()> {
    /// let mut s = Subscriber::open("/md", StartAt::Latest)?;
    /// loop {
    ///     match s.recv() {
    ///         Ok(m) => println!("{:?}", &m[..]),
    ///         Err(Error::Lapped { missed }) => eprintln!("missed {missed}"),
    ///         Err(Error::Disconnected) => break,
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn recv(&mut self) -> Result<ReadGuard<'_>> {
        let got = match self.ring.read_fast(&mut self.buf) {
            Some(got) => got,
            None => self.next_own(Some(None))?,
        };
        Ok(self.guard(got))
    }

    /// [`recv`](Self::recv), waiting at most `timeout` ([`Error::Timeout`]).
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut s = shmlane::broadcast::Subscriber::open("/md", shmlane::broadcast::StartAt::Oldest)?;
    /// let m = s.recv_timeout(std::time::Duration::from_millis(5))?;
    /// # Ok(()) }
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<ReadGuard<'_>> {
        let got = self.next_own(Some(Some(Instant::now() + timeout)))?;
        Ok(self.guard(got))
    }

    /// The next message if one is published: [`Error::Empty`] if not (or
    /// [`Error::Disconnected`] once the publisher has gone and everything was read).
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut s = shmlane::broadcast::Subscriber::open("/md", shmlane::broadcast::StartAt::Oldest)?;
    /// match s.try_recv() {
    ///     Ok(m) => println!("{:?}", &m[..]),
    ///     Err(shmlane::Error::Empty) => {}
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn try_recv(&mut self) -> Result<ReadGuard<'_>> {
        let got = match self.ring.read_fast(&mut self.buf) {
            Some(got) => got,
            None => self.next_own(None)?,
        };
        Ok(self.guard(got))
    }

    /// Copies the next message into `buf`, waiting until one is published; returns its
    /// `(tag, length)`. A message longer than `buf` is [`Error::MessageTooLarge`] and
    /// stays unread (call again with room for `max_message()` bytes).
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut s = shmlane::broadcast::Subscriber::open("/md", shmlane::broadcast::StartAt::Oldest)?;
    /// let mut buf = vec![0u8; s.max_message()];
    /// let (tag, len) = s.recv_into(&mut buf)?;
    /// println!("tag {tag}: {:?}", &buf[..len]);
    /// # Ok(()) }
    /// ```
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Result<(u32, usize)> {
        let got = self.next(buf, Some(None))?;
        Ok((got.tag, got.len))
    }

    #[inline]
    fn guard(&self, got: Got) -> ReadGuard<'_> {
        ReadGuard {
            data: &self.buf[..got.len],
            tag: got.tag,
            seq: got.seq,
        }
    }

    #[inline(never)]
    fn next_own(&mut self, wait: Option<Option<Instant>>) -> Result<Got> {
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.next(&mut buf, wait);
        self.buf = buf;
        r
    }

    /// The next message into `buf`: `wait` None: try once; Some(deadline): wait.
    #[inline]
    fn next(&mut self, buf: &mut [u8], wait: Option<Option<Instant>>) -> Result<Got> {
        let cap = buf.len();
        let map = move |r| read_result(cap, r);
        if let Some(r) = map(self.ring.try_read(buf)) {
            return r;
        }
        let shared = &self.shared;
        let peer = &mut self.peer;
        let gone = |peer: &mut PeerWatch| {
            // The publisher dying is a disconnect too: everything it published was read.
            peer.gone_rate_limited(shared).map(|_| Gone::Closed)
        };
        let Some(deadline) = wait else {
            if let Some(how) = gone(peer) {
                // Published just before it left?
                return map(self.ring.try_read(buf)).unwrap_or(Err(how.error()));
            }
            return Err(Error::Empty);
        };
        let h = shared.header();
        let ring = &mut self.ring;
        wait::wait_until(
            Waiting {
                strategy: self.wait,
                deadline,
                waiters: &h.data_waiters,
                sem: &h.data_sem,
                light_wakers: &h.light_wakers,
                drain_when_gone: true,
            },
            // The publisher's closed flag is part of the condition (one load), so a close
            // between our look and our sleep is seen before sleeping (the wake_all of its
            // drop may come before we count as a waiter).
            || match map(ring.try_read(buf)) {
                Some(r) => Some(r),
                None if channel::peer_closed(shared, PUBLISHER) => {
                    Some(map(ring.try_read(buf)).unwrap_or(Err(Error::Disconnected)))
                }
                None => None,
            },
            || gone(peer),
        )
    }

    /// Bytes published that this subscriber has not read yet.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let s = shmlane::broadcast::Subscriber::open("/md", shmlane::broadcast::StartAt::Oldest)?;
    /// println!("{} bytes behind", s.lag());
    /// # Ok(()) }
    /// ```
    pub fn lag(&self) -> u64 {
        self.ring.lag()
    }

    /// The number of the next message this subscriber reads (messages are numbered from
    /// 0 in publishing order; [`ReadGuard::position`] gives a message's).
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let s = shmlane::broadcast::Subscriber::open("/md", shmlane::broadcast::StartAt::Oldest)?;
    /// println!("next is #{}", s.next_position());
    /// # Ok(()) }
    /// ```
    pub fn next_position(&self) -> u64 {
        self.ring.next_seq()
    }

    /// The durable cursor's name, for a named subscriber.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let s = shmlane::broadcast::Subscriber::open_named("/md", "risk", shmlane::broadcast::StartAt::Oldest)?;
    /// assert_eq!(s.cursor_name(), Some("risk"));
    /// # Ok(()) }
    /// ```
    pub fn cursor_name(&self) -> Option<&str> {
        self.cursor_name.as_deref()
    }

    /// The wait strategy used when nothing is published.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut s = shmlane::broadcast::Subscriber::open("/md", shmlane::broadcast::StartAt::Oldest)?;
    /// s.set_wait(shmlane::Wait::Spin);
    /// assert_eq!(s.wait(), shmlane::Wait::Spin);
    /// # Ok(()) }
    /// ```
    pub fn wait(&self) -> Wait {
        self.wait
    }

    /// Overrides the wait strategy for this endpoint.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut s = shmlane::broadcast::Subscriber::open("/md", shmlane::broadcast::StartAt::Oldest)?;
    /// s.set_wait(shmlane::Wait::Yield);
    /// # Ok(()) }
    /// ```
    pub fn set_wait(&mut self, wait: Wait) {
        self.wait = wait;
    }

    /// The segment name.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let s = shmlane::broadcast::Subscriber::open("/md", shmlane::broadcast::StartAt::Oldest)?;
    /// assert_eq!(s.name(), "/md");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        self.shared.segment().name()
    }

    /// The largest message.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let s = shmlane::broadcast::Subscriber::open("/md", shmlane::broadcast::StartAt::Oldest)?;
    /// let buf = vec![0u8; s.max_message()];
    /// # Ok(()) }
    /// ```
    pub fn max_message(&self) -> usize {
        self.ring.max_message()
    }

    /// Whether the publisher has closed or died (asks the kernel now). Messages it
    /// published may still be waiting.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut s = shmlane::broadcast::Subscriber::open("/md", shmlane::broadcast::StartAt::Oldest)?;
    /// if s.is_disconnected() { println!("publisher gone"); }
    /// # Ok(()) }
    /// ```
    pub fn is_disconnected(&mut self) -> bool {
        self.peer.gone(&self.shared).is_some()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.ring.detach();
        self.shared.close_entry(self.ring.slot() + 1);
    }
}

/// What one read of the ring means for a caller whose buffer holds `cap` bytes: nothing
/// yet (`None`), a message, or the error to return.
fn read_result(
    cap: usize,
    r: std::result::Result<Option<std::result::Result<Got, usize>>, ReadErr>,
) -> Option<Result<Got>> {
    match r {
        Ok(None) => None,
        Ok(Some(Ok(got))) => Some(Ok(got)),
        Ok(Some(Err(len))) => Some(Err(Error::MessageTooLarge { len, max: cap })),
        Err(ReadErr::Lapped(missed)) => Some(Err(Error::Lapped { missed })),
        Err(ReadErr::Evicted) => Some(Err(Error::Evicted)),
        Err(ReadErr::Corrupt(c)) => Some(Err(c.into())),
    }
}

/// A message read by a [`Subscriber`]: a view of the subscriber's own copy (validated
/// against the publisher's overwrites before it was handed out, so its bytes never
/// change).
///
/// ```no_run
/// # fn main() -> shmlane::Result<()> {
/// # let mut s = shmlane::broadcast::Subscriber::open("/md", shmlane::broadcast::StartAt::Oldest)?;
/// let m = s.recv()?;
/// let (bytes, tag, n): (&[u8], u32, u64) = (&m, m.tag(), m.position());
/// # Ok(()) }
/// ```
pub struct ReadGuard<'a> {
    data: &'a [u8],
    tag: u32,
    seq: u64,
}

impl std::fmt::Debug for ReadGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadGuard")
            .field("len", &self.data.len())
            .field("tag", &self.tag)
            .field("position", &self.seq)
            .finish()
    }
}

impl ReadGuard<'_> {
    /// The message's tag.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut s = shmlane::broadcast::Subscriber::open("/md", shmlane::broadcast::StartAt::Oldest)?;
    /// let tag = s.recv()?.tag();
    /// # Ok(()) }
    /// ```
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// The message's number in the stream: 0 for the first message ever published on
    /// this ring, then 1, 2, ... (across publishers). Consecutive messages a subscriber
    /// reads have consecutive positions, except across an [`Error::Lapped`].
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// # let mut s = shmlane::broadcast::Subscriber::open("/md", shmlane::broadcast::StartAt::Oldest)?;
    /// let n = s.recv()?.position();
    /// # Ok(()) }
    /// ```
    pub fn position(&self) -> u64 {
        self.seq
    }
}

impl Deref for ReadGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.data
    }
}
