//! One producer, one consumer: a variable-length, zero-copy byte ring in shared memory.
//!
//! ```no_run
//! use shmlane::{Options, Error};
//! use shmlane::spsc::{Producer, Consumer};
//! # fn main() -> Result<(), Error> {
//! let mut tx = Producer::create("/demo", &Options::new())?;
//! let mut rx = Consumer::open("/demo")?; // usually in another process
//! tx.send_tagged(7, b"hello")?;
//! let m = rx.recv()?;
//! assert_eq!((&m[..], m.tag()), (&b"hello"[..], 7));
//! # Ok(()) }
//! ```
//!
//! Both ends are `Send`. Each role is held by one endpoint at a time: a second producer
//! (or consumer) gets [`Error::RoleTaken`] while the first one's process lives; once it
//! has closed or died, a new one may take its place and the stream goes on from the last
//! published message.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::channel::{self, peer_closed, Me, PeerWatch};
use crate::error::{Error, Result, Role, TryRecvError, TrySendError};
use crate::ring::spsc::{ConsumerRing, Corrupt, ProducerRing, Record};
use crate::segment::header::{
    Fingerprint, Geometry, Kind, Mapped, PeerState, SPSC_CONSUMER, SPSC_PRODUCER,
};
use crate::wait::{self, Wait, Waiting};
use crate::Options;

#[cfg(not(loom))]
mod aio;
#[cfg(not(loom))]
pub use aio::{AsyncConsumer, AsyncProducer};

fn spsc_geometry(opts: &Options) -> Result<Geometry> {
    let (capacity, max_message) = opts.spsc_geometry()?;
    Ok(Geometry {
        kind: Kind::Spsc,
        segment_len: 0,
        capacity,
        max_message,
        slot_size: 0,
        slot_count: 0,
        wait: opts.get_wait().to_raw(),
    })
}

/// Registers this process in endpoint slot `index` of a freshly opened or created segment
/// and builds that side's ring, giving the slot back if the ring's positions are corrupt.
/// Returns the ring, the segment and the segment's default wait strategy.
fn attach_side<R>(
    mapped: Arc<Mapped>,
    index: usize,
    make_ring: impl FnOnce(Arc<Mapped>) -> std::result::Result<R, Corrupt>,
) -> Result<(R, Arc<Mapped>, Wait)> {
    let wait = Wait::from_raw(mapped.geometry().wait);
    let me = Me::get();
    if mapped
        .take_entry(index, 0, me.pid, me.start_time)?
        .is_none()
    {
        let (pid, _) = crate::segment::header::split_word(mapped.entry_word(index));
        return Err(Error::RoleTaken {
            pid,
            name: mapped.segment().name().to_string(),
            role: if index == SPSC_PRODUCER {
                Role::Producer
            } else {
                Role::Consumer
            },
        });
    }
    wait::announce_light_waker(&mapped.header().light_wakers);
    match make_ring(mapped.clone()) {
        Ok(ring) => Ok((ring, mapped, wait)),
        Err(c) => {
            mapped.close_entry(index);
            Err(c.into())
        }
    }
}

/// Under loom: a producer and a consumer on one heap-backed ring, for the models in
/// `tests/loom.rs`. The two ends register under the same pid, which the model allows by
/// giving them different slots.
#[cfg(loom)]
pub fn model_pair(capacity: usize, max_message: usize, wait: Wait) -> (Producer, Consumer) {
    let opts = Options::new()
        .capacity(capacity)
        .max_message(max_message)
        .wait(wait);
    let shared = channel::model("/loom", spsc_geometry(&opts).expect("geometry"));
    let p = Producer::attach(shared.clone()).expect("producer");
    let c = Consumer::attach(shared).expect("consumer");
    (p, c)
}

#[cfg(loom)]
impl Consumer {
    /// Under loom: an async receive as `AsyncConsumer::recv` makes it, with the helper
    /// thread folded in: look; register, then look again (the real
    /// `wait::register_then_check`); when registered, wait until the semaphore's count is
    /// non-zero and take one (what the helper's `futex_waitv` and take do: loom reports a
    /// deadlock if no post comes), then look again. With `cancel_first`, the first
    /// registration is given back instead, as a dropped future does. Returns the tag of
    /// the message taken.
    pub fn model_async_recv(&mut self, cancel_first: bool) -> Result<u32> {
        let mut cancel = cancel_first;
        let shared = &self.shared;
        let ring = &mut self.ring;
        let h = shared.header();
        loop {
            let found = match ring.try_peek()? {
                Some(rec) => Some(rec),
                None => match wait::register_then_check(
                    &h.data_waiters,
                    &h.data_sem,
                    &h.light_wakers,
                    || ring.try_peek().transpose(),
                ) {
                    Ok(r) => Some(r?),
                    Err(_) if cancel => {
                        cancel = false;
                        wait::give_back(&h.data_waiters, &h.data_sem);
                        None
                    }
                    Err(_) => {
                        h.data_sem.wait_for(wait::SLICE);
                        None
                    }
                },
            };
            if let Some(rec) = found {
                ring.consume_deferred(&rec);
                ring.release_now();
                return Ok(rec.tag);
            }
        }
    }

    /// Under loom: the ring's count of sleeping consumers (0 once every wait is over).
    pub fn model_data_waiters(&self) -> u32 {
        self.shared
            .header()
            .data_waiters
            .load(crate::sync::Ordering::SeqCst)
    }
}

/// The writing end of an SPSC channel.
pub struct Producer {
    ring: ProducerRing,
    shared: Arc<Mapped>,
    wait: Wait,
    peer: PeerWatch,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("name", &self.name())
            .field("capacity", &self.capacity())
            .field("max_message", &self.max_message())
            .field("wait", &self.wait)
            .finish()
    }
}

impl Producer {
    /// Creates the channel `name` and becomes its producer. The name is removed when this
    /// producer drops, unless `opts.persist(true)`.
    ///
    /// Errors: [`Error::AlreadyExists`], [`Error::InvalidName`], [`Error::InvalidOptions`],
    /// [`Error::NoSpace`], [`Error::PermissionDenied`].
    pub fn create(name: &str, opts: &Options) -> Result<Producer> {
        Producer::create_as(name, opts, &Fingerprint::untyped())
    }

    pub(crate) fn create_as(name: &str, opts: &Options, fp: &Fingerprint) -> Result<Producer> {
        let mapped = channel::create(name, opts, spsc_geometry(opts)?, fp)?;
        Producer::attach(Arc::new(mapped))
    }

    /// Opens the existing channel `name` as its producer (usually in another process than
    /// the creator).
    ///
    /// Errors: [`Error::NotFound`], [`Error::RoleTaken`] while another producer lives,
    /// and every validation error ([`Error::NotShmlane`], [`Error::KindMismatch`], ...).
    pub fn open(name: &str) -> Result<Producer> {
        Producer::open_as(name, &Fingerprint::untyped())
    }

    pub(crate) fn open_as(name: &str, fp: &Fingerprint) -> Result<Producer> {
        Producer::attach(Arc::new(channel::open(name, Kind::Spsc, fp)?))
    }

    /// Creates the channel, or opens it if it exists already.
    pub fn create_or_open(name: &str, opts: &Options) -> Result<Producer> {
        Producer::create_or_open_as(name, opts, &Fingerprint::untyped())
    }

    pub(crate) fn create_or_open_as(
        name: &str,
        opts: &Options,
        fp: &Fingerprint,
    ) -> Result<Producer> {
        channel::create_or_open(
            name,
            || Producer::create_as(name, opts, fp),
            || Producer::open_as(name, fp),
        )
    }

    /// Opens the channel `name`, waiting up to `timeout` for it to appear and for its
    /// creator to finish setting it up (a peer that starts first need not loop on
    /// [`Error::NotFound`]). [`Error::Timeout`] after that; any other error at once.
    pub fn open_timeout(name: &str, timeout: Duration) -> Result<Producer> {
        Producer::open_timeout_as(name, timeout, &Fingerprint::untyped())
    }

    pub(crate) fn open_timeout_as(
        name: &str,
        timeout: Duration,
        fp: &Fingerprint,
    ) -> Result<Producer> {
        let mapped = channel::open_timeout(name, Kind::Spsc, fp, timeout)?;
        Producer::attach(Arc::new(mapped))
    }

    fn attach(mapped: Arc<Mapped>) -> Result<Producer> {
        let (ring, shared, wait) = attach_side(mapped, SPSC_PRODUCER, ProducerRing::new)?;
        Ok(Producer {
            ring,
            shared,
            wait,
            peer: PeerWatch::new(SPSC_CONSUMER),
        })
    }

    /// Sends `msg` with tag 0, waiting while the ring is full.
    ///
    /// Errors: [`Error::MessageTooLarge`], [`Error::Disconnected`] once the consumer is gone,
    /// [`Error::Corrupt`].
    #[inline]
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_tagged(0, msg)
    }

    /// Sends `msg` with a `u32` tag (like a System V message type), waiting while full.
    #[inline]
    pub fn send_tagged(&mut self, tag: u32, msg: &[u8]) -> Result<()> {
        let mut g = self.reserve_inner(msg.len(), None)?;
        g.copy_from(msg);
        g.tag = tag;
        g.commit();
        Ok(())
    }

    /// Sends `msg` with tag 0, waiting at most `timeout` for room ([`Error::Timeout`]).
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.send_tagged_timeout(0, msg, timeout)
    }

    /// Sends a tagged message, waiting at most `timeout` for room.
    pub fn send_tagged_timeout(&mut self, tag: u32, msg: &[u8], timeout: Duration) -> Result<()> {
        let mut g = self.reserve_inner(msg.len(), Some(Instant::now() + timeout))?;
        g.copy_from(msg);
        g.tag = tag;
        g.commit();
        Ok(())
    }

    /// Sends `msg` with tag 0 if there is room now; never waits.
    #[inline]
    pub fn try_send(&mut self, msg: &[u8]) -> Result<(), TrySendError> {
        self.try_send_tagged(0, msg)
    }

    /// Sends a tagged message if there is room now; never waits.
    #[inline]
    pub fn try_send_tagged(&mut self, tag: u32, msg: &[u8]) -> Result<(), TrySendError> {
        let mut g = self.try_reserve(msg.len())?;
        g.copy_from(msg);
        g.tag = tag;
        g.commit();
        Ok(())
    }

    /// Reserves `len` bytes inside the ring, waiting while it is full. Write the message
    /// into the returned grant and [`commit`](WriteGrant::commit) it; dropping the grant
    /// without committing sends nothing.
    #[inline]
    pub fn reserve(&mut self, len: usize) -> Result<WriteGrant<'_>> {
        self.reserve_inner(len, None)
    }

    /// Like [`reserve`](Self::reserve), waiting at most `timeout`.
    pub fn reserve_timeout(&mut self, len: usize, timeout: Duration) -> Result<WriteGrant<'_>> {
        self.reserve_inner(len, Some(Instant::now() + timeout))
    }

    /// Reserves `len` bytes if there is room now; never waits.
    #[inline]
    pub fn try_reserve(&mut self, len: usize) -> Result<WriteGrant<'_>, TrySendError> {
        let max = self.ring.max_message();
        if len > max {
            return Err(TrySendError::TooLarge { len, max });
        }
        if peer_closed(&self.shared, SPSC_CONSUMER) {
            return Err(TrySendError::Disconnected);
        }
        match self.ring.try_reserve(len) {
            Ok(Some(off)) => Ok(WriteGrant::new(self, off, len)),
            Ok(None) => {
                if self.peer.gone_rate_limited(&self.shared).is_some() {
                    Err(TrySendError::Disconnected)
                } else {
                    Err(TrySendError::Full)
                }
            }
            Err(c) => Err(TrySendError::Corrupt { what: c.0 }),
        }
    }

    #[inline]
    fn reserve_inner(&mut self, len: usize, deadline: Option<Instant>) -> Result<WriteGrant<'_>> {
        let max = self.ring.max_message();
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        let shared = &self.shared;
        if peer_closed(shared, SPSC_CONSUMER) {
            return Err(Error::Disconnected);
        }
        let off = match self.ring.try_reserve(len)? {
            Some(off) => off,
            None => {
                let ring = &mut self.ring;
                let peer = &mut self.peer;
                let h = shared.header();
                wait::wait_until(
                    Waiting {
                        strategy: self.wait,
                        deadline,
                        waiters: &h.space_waiters,
                        sem: &h.space_sem,
                        light_wakers: &h.light_wakers,
                        drain_when_gone: false,
                    },
                    || {
                        if peer_closed(shared, SPSC_CONSUMER) {
                            return Some(Err(Error::Disconnected));
                        }
                        ring.try_reserve(len).map_err(Error::from).transpose()
                    },
                    || peer.gone_rate_limited(shared),
                )?
            }
        };
        Ok(WriteGrant::new(self, off, len))
    }

    /// Sends every message of `msgs` (tag 0) and publishes them with as few stores as the
    /// ring allows: once at the end, or whenever it must wait for room. Returns how many
    /// were sent.
    pub fn send_batch<'m, I>(&mut self, msgs: I) -> Result<usize>
    where
        I: IntoIterator<Item = &'m [u8]>,
    {
        let mut n = 0;
        for msg in msgs {
            let max = self.ring.max_message();
            if msg.len() > max {
                self.ring.publish();
                return Err(Error::MessageTooLarge {
                    len: msg.len(),
                    max,
                });
            }
            let off = match self.ring.try_reserve(msg.len())? {
                Some(off) => off,
                None => {
                    // Let the consumer see what we have so far before we wait for it.
                    self.ring.publish();
                    self.reserve_inner(msg.len(), None)?.off
                }
            };
            crate::ring::copy::copy_bytes(self.ring.payload_mut(off, msg.len()), msg);
            self.ring.commit_deferred(off, msg.len(), 0);
            n += 1;
        }
        self.ring.publish();
        Ok(n)
    }

    /// The wait strategy this producer uses.
    pub fn wait(&self) -> Wait {
        self.wait
    }

    /// Changes the wait strategy of this producer only.
    pub fn set_wait(&mut self, wait: Wait) {
        self.wait = wait;
    }

    /// The segment name.
    pub fn name(&self) -> &str {
        self.shared.segment().name()
    }

    /// Data bytes of the ring.
    pub fn capacity(&self) -> usize {
        self.shared.geometry().capacity
    }

    /// The largest message this channel carries.
    pub fn max_message(&self) -> usize {
        self.ring.max_message()
    }

    /// Whether the consumer has gone (closed, or its process died). Asks the kernel.
    pub fn is_disconnected(&mut self) -> bool {
        self.peer.gone(&self.shared).is_some()
    }

    /// What the segment says of the consumer: never attached, alive (with its pid),
    /// closed, or dead. Asks the kernel (one system call).
    pub fn peer(&self) -> PeerState {
        self.shared.entry_state(SPSC_CONSUMER)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.ring.publish();
        let reader = self.shared.entry_state(SPSC_CONSUMER);
        let empty = channel::ring_empty(&self.shared);
        let reader_absent = matches!(reader, PeerState::Never | PeerState::Closed);
        channel::hand_over_if_unread(&self.shared, !empty, reader_absent);
        if empty && !matches!(reader, PeerState::Alive(_)) {
            // A handed-over ring we (not its creator) leave empty: nobody needs the name.
            channel::finish_hand_over(&self.shared);
        }
        self.shared.close_entry(SPSC_PRODUCER);
        let h = self.shared.header();
        wait::wake(&h.data_waiters, &h.data_sem);
    }
}

/// Room for one message inside the ring, from [`Producer::reserve`]. Derefs to the
/// payload bytes; [`commit`](Self::commit) sends it, dropping it sends nothing.
pub struct WriteGrant<'a> {
    producer: &'a mut Producer,
    off: usize,
    len: usize,
    tag: u32,
}

impl<'a> WriteGrant<'a> {
    #[inline]
    fn new(producer: &'a mut Producer, off: usize, len: usize) -> WriteGrant<'a> {
        WriteGrant {
            producer,
            off,
            len,
            tag: 0,
        }
    }

    /// Sets the message's tag (default 0).
    pub fn set_tag(&mut self, tag: u32) {
        self.tag = tag;
    }

    /// Shrinks the message to `len` bytes (at most the reserved length), for when the
    /// final size is known only after writing.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Copies `src` (exactly the reserved length) into the message. Unlike
    /// `copy_from_slice`, it stays fast whatever the relative alignment of `src` and the
    /// ring (`ring::copy`: vector moves for large payloads).
    ///
    /// # Panics
    /// If `src.len()` differs from the message length.
    #[inline]
    pub fn copy_from(&mut self, src: &[u8]) {
        crate::ring::copy::copy_bytes(self, src);
    }

    /// Publishes the message: the consumer can read it from now on.
    #[inline]
    pub fn commit(self) {
        let ring = &mut self.producer.ring;
        ring.commit_deferred(self.off, self.len, self.tag);
        ring.publish();
    }
}

impl Deref for WriteGrant<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.producer.ring.payload(self.off, self.len)
    }
}

impl DerefMut for WriteGrant<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        self.producer.ring.payload_mut(self.off, self.len)
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

/// The reading end of an SPSC channel.
pub struct Consumer {
    ring: ConsumerRing,
    shared: Arc<Mapped>,
    wait: Wait,
    peer: PeerWatch,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name())
            .field("capacity", &self.capacity())
            .field("max_message", &self.max_message())
            .field("wait", &self.wait)
            .finish()
    }
}

impl Consumer {
    /// Creates the channel `name` and becomes its consumer (the producer opens it). The name
    /// is removed when this consumer drops, unless `opts.persist(true)`.
    pub fn create(name: &str, opts: &Options) -> Result<Consumer> {
        Consumer::create_as(name, opts, &Fingerprint::untyped())
    }

    pub(crate) fn create_as(name: &str, opts: &Options, fp: &Fingerprint) -> Result<Consumer> {
        let mapped = channel::create(name, opts, spsc_geometry(opts)?, fp)?;
        Consumer::attach(Arc::new(mapped))
    }

    /// Opens the existing channel `name` as its consumer.
    pub fn open(name: &str) -> Result<Consumer> {
        Consumer::open_as(name, &Fingerprint::untyped())
    }

    pub(crate) fn open_as(name: &str, fp: &Fingerprint) -> Result<Consumer> {
        Consumer::attach(Arc::new(channel::open(name, Kind::Spsc, fp)?))
    }

    /// Creates the channel, or opens it if it exists already.
    pub fn create_or_open(name: &str, opts: &Options) -> Result<Consumer> {
        Consumer::create_or_open_as(name, opts, &Fingerprint::untyped())
    }

    pub(crate) fn create_or_open_as(
        name: &str,
        opts: &Options,
        fp: &Fingerprint,
    ) -> Result<Consumer> {
        channel::create_or_open(
            name,
            || Consumer::create_as(name, opts, fp),
            || Consumer::open_as(name, fp),
        )
    }

    /// Opens the channel `name`, waiting up to `timeout` for it to appear and for its
    /// creator to finish setting it up (a peer that starts first need not loop on
    /// [`Error::NotFound`]). [`Error::Timeout`] after that; any other error at once.
    pub fn open_timeout(name: &str, timeout: Duration) -> Result<Consumer> {
        Consumer::open_timeout_as(name, timeout, &Fingerprint::untyped())
    }

    pub(crate) fn open_timeout_as(
        name: &str,
        timeout: Duration,
        fp: &Fingerprint,
    ) -> Result<Consumer> {
        let mapped = channel::open_timeout(name, Kind::Spsc, fp, timeout)?;
        Consumer::attach(Arc::new(mapped))
    }

    fn attach(mapped: Arc<Mapped>) -> Result<Consumer> {
        let (ring, shared, wait) = attach_side(mapped, SPSC_CONSUMER, ConsumerRing::new)?;
        Ok(Consumer {
            ring,
            shared,
            wait,
            peer: PeerWatch::new(SPSC_PRODUCER),
        })
    }

    /// The next message, waiting until one is published. After the producer has gone,
    /// returns what it published and then [`Error::Disconnected`].
    #[inline]
    pub fn recv(&mut self) -> Result<ReadGuard<'_>> {
        self.recv_inner(None)
    }

    /// Like [`recv`](Self::recv), waiting at most `timeout` ([`Error::Timeout`]).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<ReadGuard<'_>> {
        self.recv_inner(Some(Instant::now() + timeout))
    }

    /// The next message, or `Ok(None)` once the producer has closed its end and every
    /// message is read: a loop that ends on a clean close in one line,
    /// `while let Some(m) = rx.recv_or_end()? { .. }`. A producer that died without
    /// closing is [`Error::PeerDied`] (after its messages are read), not an end.
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// let mut rx = shmlane::spsc::Consumer::open("/demo")?;
    /// while let Some(m) = rx.recv_or_end()? {
    ///     println!("{} bytes, tag {}", m.len(), m.tag());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn recv_or_end(&mut self) -> Result<Option<ReadGuard<'_>>> {
        match self.recv_inner(None) {
            Ok(m) => Ok(Some(m)),
            Err(Error::Disconnected) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next message if one is published now; never waits.
    #[inline]
    pub fn try_recv(&mut self) -> Result<ReadGuard<'_>, TryRecvError> {
        match self.ring.try_peek() {
            Ok(Some(rec)) => Ok(ReadGuard {
                consumer: self,
                rec,
            }),
            Ok(None) => {
                if self.peer.gone_rate_limited(&self.shared).is_some() {
                    // The producer published before it left: look once more.
                    match self.ring.try_peek() {
                        Ok(Some(rec)) => Ok(ReadGuard {
                            consumer: self,
                            rec,
                        }),
                        Ok(None) => Err(TryRecvError::Disconnected),
                        Err(c) => Err(TryRecvError::Corrupt { what: c.0 }),
                    }
                } else {
                    Err(TryRecvError::Empty)
                }
            }
            Err(c) => Err(TryRecvError::Corrupt { what: c.0 }),
        }
    }

    #[inline]
    fn next_record(&mut self, deadline: Option<Instant>) -> Result<Record> {
        if let Some(rec) = self.ring.try_peek()? {
            return Ok(rec);
        }
        let shared = &self.shared;
        let ring = &mut self.ring;
        let peer = &mut self.peer;
        let h = shared.header();
        wait::wait_until(
            Waiting {
                strategy: self.wait,
                deadline,
                waiters: &h.data_waiters,
                sem: &h.data_sem,
                light_wakers: &h.light_wakers,
                drain_when_gone: true,
            },
            || match ring.try_peek() {
                Ok(Some(rec)) => Some(Ok(rec)),
                Ok(None) if peer_closed(shared, SPSC_PRODUCER) => Some(match ring.try_peek() {
                    Ok(Some(rec)) => Ok(rec),
                    Ok(None) => Err(Error::Disconnected),
                    Err(c) => Err(c.into()),
                }),
                Ok(None) => None,
                Err(c) => Some(Err(c.into())),
            },
            || peer.gone_rate_limited(shared),
        )
    }

    #[inline]
    /// Copies the next message into `buf` and releases its space, waiting until one is
    /// published; returns its `(tag, length)`. For readers who do not trust their peer: a
    /// [`ReadGuard`]'s bytes are the ring's, which a buggy or hostile producer could
    /// still write while they are read; a copy cannot change afterwards. A message longer
    /// than `buf` is [`Error::MessageTooLarge`] and stays in the ring (nothing is lost:
    /// call again with room for `max_message()` bytes).
    ///
    /// ```no_run
    /// # fn main() -> shmlane::Result<()> {
    /// let mut rx = shmlane::spsc::Consumer::open("/demo")?;
    /// let mut buf = vec![0u8; rx.max_message()];
    /// let (tag, len) = rx.recv_into(&mut buf)?;
    /// println!("tag {tag}: {:?}", &buf[..len]);
    /// # Ok(()) }
    /// ```
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Result<(u32, usize)> {
        let rec = self.next_record(None)?;
        if rec.len > buf.len() {
            return Err(Error::MessageTooLarge {
                len: rec.len,
                max: buf.len(),
            });
        }
        let g = ReadGuard {
            consumer: self,
            rec,
        };
        crate::ring::copy::copy_bytes(&mut buf[..g.len()], &g);
        Ok((g.tag(), g.len()))
    }

    #[inline]
    fn recv_inner(&mut self, deadline: Option<Instant>) -> Result<ReadGuard<'_>> {
        let rec = self.next_record(deadline)?;
        Ok(ReadGuard {
            consumer: self,
            rec,
        })
    }

    /// Waits for at least one message, then hands every published message (up to `max`)
    /// to `f(tag, payload)` in order and releases them all with one store. Returns how
    /// many were handled.
    pub fn recv_batch<F>(&mut self, max: usize, mut f: F) -> Result<usize>
    where
        F: FnMut(u32, &[u8]),
    {
        if max == 0 {
            return Ok(0);
        }
        let first = self.next_record(None)?;
        f(first.tag, self.ring.payload(&first));
        self.ring.consume_deferred(&first);
        let mut n = 1;
        while n < max {
            match self.ring.try_peek() {
                Ok(Some(rec)) => {
                    f(rec.tag, self.ring.payload(&rec));
                    self.ring.consume_deferred(&rec);
                    n += 1;
                }
                Ok(None) => break,
                Err(c) => {
                    self.ring.release_now();
                    return Err(c.into());
                }
            }
        }
        self.ring.release_now();
        Ok(n)
    }

    /// The wait strategy this consumer uses.
    pub fn wait(&self) -> Wait {
        self.wait
    }

    /// Changes the wait strategy of this consumer only.
    pub fn set_wait(&mut self, wait: Wait) {
        self.wait = wait;
    }

    /// The segment name.
    pub fn name(&self) -> &str {
        self.shared.segment().name()
    }

    /// Data bytes of the ring.
    pub fn capacity(&self) -> usize {
        self.shared.geometry().capacity
    }

    /// The largest message this channel carries.
    pub fn max_message(&self) -> usize {
        self.shared.geometry().max_message
    }

    /// Bytes published and not yet read (as last seen; headers and padding included).
    pub fn pending_bytes(&self) -> u64 {
        self.ring.pending_bytes()
    }

    /// Whether the producer has gone (closed, or its process died). Asks the kernel.
    pub fn is_disconnected(&mut self) -> bool {
        self.peer.gone(&self.shared).is_some()
    }

    /// What the segment says of the producer: never attached, alive (with its pid),
    /// closed, or dead. Asks the kernel (one system call).
    pub fn peer(&self) -> PeerState {
        self.shared.entry_state(SPSC_PRODUCER)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.ring.release_now();
        if channel::ring_empty(&self.shared)
            && !matches!(
                self.shared.entry_state(SPSC_PRODUCER),
                PeerState::Alive(_) | PeerState::Never
            )
        {
            // Drained a ring its creator handed over: the name is ours to remove.
            channel::finish_hand_over(&self.shared);
        }
        self.shared.close_entry(SPSC_CONSUMER);
        let h = self.shared.header();
        wait::wake(&h.space_waiters, &h.space_sem);
    }
}

/// A message inside the ring, from [`Consumer::recv`]. Derefs to the payload; the space
/// is released to the producer when the guard drops.
pub struct ReadGuard<'a> {
    consumer: &'a mut Consumer,
    rec: Record,
}

impl ReadGuard<'_> {
    /// The message's tag.
    #[inline]
    pub fn tag(&self) -> u32 {
        self.rec.tag
    }
}

impl Deref for ReadGuard<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.consumer.ring.payload(&self.rec)
    }
}

impl Drop for ReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.consumer.ring.consume_deferred(&self.rec);
        self.consumer.ring.release_now();
    }
}

impl std::fmt::Debug for ReadGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadGuard")
            .field("len", &self.rec.len)
            .field("tag", &self.rec.tag)
            .finish()
    }
}
