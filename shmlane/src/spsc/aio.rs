//! Async SPSC endpoints: [`AsyncConsumer`] and [`AsyncProducer`].

use std::future::poll_fn;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use super::{Consumer, Producer, ReadGuard, WriteGrant};
use crate::channel::peer_closed;
use crate::error::{Error, Result, TryRecvError, TrySendError};
use crate::ring::spsc::Record;
use crate::segment::header::{SPSC_CONSUMER, SPSC_PRODUCER};
use crate::wait::reactor::{self, noop_waker, AsyncWait, Cell, Notify};
use crate::wait::DEFAULT_ASYNC_SPIN;

impl Consumer {
    /// Turns this consumer into an [`AsyncConsumer`], whose `recv().await` waits without
    /// a thread of its own (any executor: it uses only `std`'s `Future` and `Waker`).
    ///
    /// Errors: [`Error::Io`] if the readiness eventfd cannot be made.
    ///
    /// ```no_run
    /// # async fn demo() -> shmlane::Result<()> {
    /// let mut rx = shmlane::spsc::Consumer::open("/demo")?.into_async()?;
    /// let m = rx.recv().await?;
    /// println!("{} bytes, tag {}", m.len(), m.tag());
    /// # Ok(()) }
    /// ```
    pub fn into_async(self) -> Result<AsyncConsumer> {
        Ok(AsyncConsumer {
            ready: AsyncWait::new(Duration::ZERO),
            spin: DEFAULT_ASYNC_SPIN,
            notify: Arc::new(Notify::new()?),
            inner: self,
        })
    }

    /// One poll of an async receive: the next record, or `Pending` with `w` registered.
    fn poll_record(
        &mut self,
        w: &mut AsyncWait,
        waker: &Waker,
        notify: &Arc<Notify>,
    ) -> Poll<Result<Record>> {
        // The fast path: no registration, no system call.
        if let Some(rec) = self.ring.try_peek()? {
            return Poll::Ready(Ok(rec));
        }
        let shared = &self.shared;
        let ring = &mut self.ring;
        let peer = &mut self.peer;
        w.poll(
            waker,
            || Cell::new(shared.clone(), reactor::data_cell, 0),
            Some(notify),
            true,
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
}

/// The reading end of an SPSC channel for async code, from [`Consumer::into_async`].
///
/// `recv().await` completes at once when a message is published (no system call, like
/// [`Consumer::try_recv`]); otherwise the task joins the ring's sleeper protocol and one
/// helper thread per process (not per ring) wakes it when the producer publishes. A
/// producer that closes gives [`Error::Disconnected`] after its messages, one that dies
/// [`Error::PeerDied`], within about 100 ms.
///
/// Cancel-safe: dropping a `recv()` future before it completes loses no message.
///
/// ```no_run
/// # async fn demo() -> shmlane::Result<()> {
/// use shmlane::spsc::Consumer;
/// let mut rx = Consumer::open("/demo")?.into_async()?;
/// while let Some(m) = rx.recv_or_end().await? {
///     println!("{} bytes", m.len());
/// }
/// let rx: Consumer = rx.into_inner(); // back to the blocking endpoint
/// # drop(rx); Ok(()) }
/// ```
pub struct AsyncConsumer {
    /// The wait `try_recv` arms for the readiness fd (dropped before `inner`).
    ready: AsyncWait,
    spin: Duration,
    notify: Arc<Notify>,
    inner: Consumer,
}

impl std::fmt::Debug for AsyncConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncConsumer")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncConsumer {
    /// The next message, waiting (asynchronously) until one is published. After the
    /// producer has gone, returns what it published and then [`Error::Disconnected`]
    /// (closed) or [`Error::PeerDied`] (died). Cancel-safe.
    ///
    /// ```no_run
    /// # async fn demo(rx: &mut shmlane::spsc::AsyncConsumer) -> shmlane::Result<()> {
    /// let max = rx.get_ref().max_message();
    /// let m = rx.recv().await?;
    /// assert!(m.len() <= max);
    /// # Ok(()) }
    /// ```
    pub async fn recv(&mut self) -> Result<ReadGuard<'_>> {
        let rec = {
            let mut w = AsyncWait::new(self.spin);
            let notify = &self.notify;
            let inner = &mut self.inner;
            poll_fn(|cx| inner.poll_record(&mut w, cx.waker(), notify)).await?
        };
        Ok(ReadGuard {
            consumer: &mut self.inner,
            rec,
        })
    }

    /// The next message, or `Ok(None)` once the producer has closed its end and every
    /// message is read (see [`Consumer::recv_or_end`]). Cancel-safe.
    pub async fn recv_or_end(&mut self) -> Result<Option<ReadGuard<'_>>> {
        match self.recv().await {
            Ok(m) => Ok(Some(m)),
            Err(Error::Disconnected) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Copies the next message into `buf` (see [`Consumer::recv_into`]); returns its
    /// `(tag, length)`. A message longer than `buf` is [`Error::MessageTooLarge`] and
    /// stays in the ring. Cancel-safe.
    pub async fn recv_into(&mut self, buf: &mut [u8]) -> Result<(u32, usize)> {
        let m = self.recv().await?;
        if m.len() > buf.len() {
            let len = m.len();
            // Not consumed: put it back by not releasing it (the guard would).
            std::mem::forget(m);
            return Err(Error::MessageTooLarge {
                len,
                max: buf.len(),
            });
        }
        crate::ring::copy::copy_bytes(&mut buf[..m.len()], &m);
        Ok((m.tag(), m.len()))
    }

    /// The next message if one is published now; never waits. When there is none
    /// ([`TryRecvError::Empty`]), the [`readiness_fd`](Self::readiness_fd) is armed: it
    /// becomes readable when the producer publishes (or, while the wait lasts, every
    /// ~100 ms so a dead producer is noticed).
    pub fn try_recv(&mut self) -> Result<ReadGuard<'_>, TryRecvError> {
        let waker = noop_waker();
        match self
            .inner
            .poll_record(&mut self.ready, &waker, &self.notify)
        {
            Poll::Ready(Ok(rec)) => Ok(ReadGuard {
                consumer: &mut self.inner,
                rec,
            }),
            Poll::Ready(Err(Error::Disconnected | Error::PeerDied)) => {
                Err(TryRecvError::Disconnected)
            }
            Poll::Ready(Err(Error::Corrupt { what })) => Err(TryRecvError::Corrupt { what }),
            Poll::Ready(Err(e)) => Err(TryRecvError::Corrupt {
                what: e.to_string(),
            }),
            Poll::Pending => Err(TryRecvError::Empty),
        }
    }

    /// An fd for epoll users (mio, a C event loop): an eventfd that becomes readable when
    /// this consumer may make progress. Semantics: a counter that stays readable (level)
    /// until [`clear_readiness`](Self::clear_readiness) (or an 8-byte `read`) empties it;
    /// it is armed by a [`try_recv`](Self::try_recv) that found nothing (and by every
    /// pending `recv()` future), and signalled once when the producer publishes, or every
    /// ~100 ms while armed, so the loop can notice a dead peer. The loop: `try_recv` until
    /// `Empty`, `clear_readiness`, then `try_recv` once more (closing the window between
    /// the two) before waiting on the fd.
    pub fn readiness_fd(&self) -> BorrowedFd<'_> {
        self.notify.fd()
    }

    /// Empties the readiness fd's counter (it is not readable until signalled again).
    pub fn clear_readiness(&self) {
        self.notify.drain();
    }

    /// How long `recv()` looks again (holding the executor thread) before it registers
    /// with the helper thread: [`DEFAULT_ASYNC_SPIN`](crate::wait::DEFAULT_ASYNC_SPIN)
    /// unless changed. Zero never spins (every wait that finds nothing registers at once).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// The spin set with [`set_spin`](Self::set_spin).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// The blocking consumer back (any wait armed by `try_recv` is given back).
    pub fn into_inner(self) -> Consumer {
        let AsyncConsumer { ready, inner, .. } = self;
        drop(ready);
        inner
    }

    /// The blocking consumer inside (name, capacity, peer state, ...).
    pub fn get_ref(&self) -> &Consumer {
        &self.inner
    }

    /// The blocking consumer inside, mutably (a blocking call there blocks the task).
    pub fn get_mut(&mut self) -> &mut Consumer {
        &mut self.inner
    }
}

impl Producer {
    /// Turns this producer into an [`AsyncProducer`], whose `send(..).await` waits for
    /// room without a thread of its own.
    ///
    /// Errors: [`Error::Io`] if the readiness eventfd cannot be made.
    ///
    /// ```no_run
    /// # async fn demo() -> shmlane::Result<()> {
    /// let mut tx = shmlane::spsc::Producer::open("/demo")?.into_async()?;
    /// tx.send(b"x").await?;
    /// tx.send_tagged(7, b"x").await?;
    /// let mut g = tx.reserve(4096).await?;
    /// g.fill(0);
    /// g.commit();
    /// # Ok(()) }
    /// ```
    pub fn into_async(self) -> Result<AsyncProducer> {
        Ok(AsyncProducer {
            ready: AsyncWait::new(Duration::ZERO),
            spin: DEFAULT_ASYNC_SPIN,
            notify: Arc::new(Notify::new()?),
            inner: self,
        })
    }

    /// One poll of an async reserve: the offset of room for `len` bytes (checked by the
    /// caller against `max_message`), or `Pending` with `w` registered.
    fn poll_room(
        &mut self,
        len: usize,
        w: &mut AsyncWait,
        waker: &Waker,
        notify: &Arc<Notify>,
    ) -> Poll<Result<usize>> {
        let shared = &self.shared;
        if peer_closed(shared, SPSC_CONSUMER) {
            return Poll::Ready(Err(Error::Disconnected));
        }
        if let Some(off) = self.ring.try_reserve(len)? {
            return Poll::Ready(Ok(off));
        }
        let ring = &mut self.ring;
        let peer = &mut self.peer;
        w.poll(
            waker,
            || Cell::new(shared.clone(), reactor::space_cell, 0),
            Some(notify),
            false,
            || {
                if peer_closed(shared, SPSC_CONSUMER) {
                    return Some(Err(Error::Disconnected));
                }
                ring.try_reserve(len).map_err(Error::from).transpose()
            },
            || peer.gone_rate_limited(shared),
        )
    }
}

/// The writing end of an SPSC channel for async code, from [`Producer::into_async`].
///
/// `send(..).await` completes at once when there is room (no system call); otherwise the
/// task joins the ring's sleeper protocol and one helper thread per process wakes it when
/// the consumer frees room. A consumer that has gone is [`Error::Disconnected`] (closed)
/// or [`Error::PeerDied`].
///
/// Cancel-safe: a `send()` future dropped before it completes has sent nothing; one that
/// completed has sent its message once.
///
/// ```no_run
/// # async fn demo() -> shmlane::Result<()> {
/// use shmlane::{Options, spsc::Producer};
/// let mut tx = Producer::create("/demo", &Options::new())?.into_async()?;
/// for i in 0u32..10 {
///     tx.send_tagged(i, b"tick").await?;
/// }
/// # Ok(()) }
/// ```
pub struct AsyncProducer {
    ready: AsyncWait,
    spin: Duration,
    notify: Arc<Notify>,
    inner: Producer,
}

impl std::fmt::Debug for AsyncProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncProducer")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncProducer {
    /// Sends `msg` with tag 0, waiting (asynchronously) while the ring is full.
    ///
    /// Errors: [`Error::MessageTooLarge`], [`Error::Disconnected`] / [`Error::PeerDied`]
    /// once the consumer is gone, [`Error::Corrupt`].
    pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_tagged(0, msg).await
    }

    /// Sends `msg` with a `u32` tag, waiting while the ring is full.
    pub async fn send_tagged(&mut self, tag: u32, msg: &[u8]) -> Result<()> {
        let mut g = self.reserve(msg.len()).await?;
        g.copy_from(msg);
        g.set_tag(tag);
        g.commit();
        Ok(())
    }

    /// Reserves `len` bytes inside the ring, waiting while it is full; write the message
    /// into the grant and commit it (see [`Producer::reserve`]). Cancel-safe: nothing is
    /// reserved until the future completes.
    pub async fn reserve(&mut self, len: usize) -> Result<WriteGrant<'_>> {
        let max = self.inner.ring.max_message();
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        let off = {
            let mut w = AsyncWait::new(self.spin);
            let notify = &self.notify;
            let inner = &mut self.inner;
            poll_fn(|cx| inner.poll_room(len, &mut w, cx.waker(), notify)).await?
        };
        Ok(WriteGrant::new(&mut self.inner, off, len))
    }

    /// Sends `msg` with tag 0 if there is room now; never waits. When the ring is full
    /// ([`TrySendError::Full`]) the [`readiness_fd`](Self::readiness_fd) is armed.
    pub fn try_send(&mut self, msg: &[u8]) -> Result<(), TrySendError> {
        self.try_send_tagged(0, msg)
    }

    /// Sends a tagged message if there is room now; never waits (arms the readiness fd
    /// when full).
    pub fn try_send_tagged(&mut self, tag: u32, msg: &[u8]) -> Result<(), TrySendError> {
        let max = self.inner.ring.max_message();
        if msg.len() > max {
            return Err(TrySendError::TooLarge {
                len: msg.len(),
                max,
            });
        }
        let waker = noop_waker();
        match self
            .inner
            .poll_room(msg.len(), &mut self.ready, &waker, &self.notify)
        {
            Poll::Ready(Ok(off)) => {
                let mut g = WriteGrant::new(&mut self.inner, off, msg.len());
                g.copy_from(msg);
                g.set_tag(tag);
                g.commit();
                Ok(())
            }
            Poll::Ready(Err(Error::Disconnected | Error::PeerDied)) => {
                Err(TrySendError::Disconnected)
            }
            Poll::Ready(Err(Error::Corrupt { what })) => Err(TrySendError::Corrupt { what }),
            Poll::Ready(Err(e)) => Err(TrySendError::Corrupt {
                what: e.to_string(),
            }),
            Poll::Pending => Err(TrySendError::Full),
        }
    }

    /// An eventfd that becomes readable when this producer may make progress (room freed,
    /// or a ~100 ms liveness tick while armed); armed by a `try_send` that found the ring
    /// full and by every pending `send()` future. Level-triggered until
    /// [`clear_readiness`](Self::clear_readiness); see
    /// [`AsyncConsumer::readiness_fd`] for the loop.
    pub fn readiness_fd(&self) -> BorrowedFd<'_> {
        self.notify.fd()
    }

    /// Empties the readiness fd's counter.
    pub fn clear_readiness(&self) {
        self.notify.drain();
    }

    /// How long `send()` looks again (holding the executor thread) before it registers
    /// with the helper thread: [`DEFAULT_ASYNC_SPIN`](crate::wait::DEFAULT_ASYNC_SPIN)
    /// unless changed. Zero never spins (every wait that finds nothing registers at once).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// The spin set with [`set_spin`](Self::set_spin).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// The blocking producer back.
    pub fn into_inner(self) -> Producer {
        let AsyncProducer { ready, inner, .. } = self;
        drop(ready);
        inner
    }

    /// The blocking producer inside.
    pub fn get_ref(&self) -> &Producer {
        &self.inner
    }

    /// The blocking producer inside, mutably (a blocking call there blocks the task).
    pub fn get_mut(&mut self) -> &mut Producer {
        &mut self.inner
    }
}
