//! The async subscriber: [`AsyncSubscriber`], from [`Subscriber::into_async`].

use std::future::poll_fn;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use super::{read_result, ReadGuard, Subscriber, PUBLISHER};
use crate::channel::peer_closed;
use crate::error::{Error, Result};
use crate::ring::broadcast::Got;
use crate::wait::reactor::{self, noop_waker, AsyncWait, Cell, Notify};
use crate::wait::{Gone, DEFAULT_ASYNC_SPIN};

impl Subscriber {
    /// Turns this subscriber into an [`AsyncSubscriber`], whose `recv().await` waits
    /// without a thread of its own (any executor: it uses only `std`'s `Future` and
    /// `Waker`), on the same sleeper protocol and helper thread as the SPSC and MPMC
    /// async endpoints.
    ///
    /// Errors: [`Error::Io`] if the readiness eventfd cannot be made.
    ///
    /// ```no_run
    /// # async fn demo() -> shmlane::Result<()> {
    /// use shmlane::broadcast::{StartAt, Subscriber};
    /// let mut s = Subscriber::open("/md", StartAt::Latest)?.into_async()?;
    /// let m = s.recv().await?;
    /// println!("#{}: {} bytes", m.position(), m.len());
    /// # Ok(()) }
    /// ```
    pub fn into_async(self) -> Result<AsyncSubscriber> {
        Ok(AsyncSubscriber {
            ready: AsyncWait::new(Duration::ZERO),
            spin: DEFAULT_ASYNC_SPIN,
            notify: Arc::new(Notify::new()?),
            inner: self,
        })
    }

    /// One poll of an async read into `buf`: the next message (copied, the cursor moved
    /// on), an error (`Lapped`, `Evicted`, `Disconnected`, ...), or `Pending` with `w`
    /// registered. A message is only taken in the poll that returns it, so a dropped
    /// future loses nothing.
    fn poll_next(
        &mut self,
        buf: &mut [u8],
        w: &mut AsyncWait,
        waker: &Waker,
        notify: &Arc<Notify>,
    ) -> Poll<Result<Got>> {
        let cap = buf.len();
        // The fast path: no registration, no system call.
        if let Some(r) = read_result(cap, self.ring.try_read(buf)) {
            return Poll::Ready(r);
        }
        let shared = &self.shared;
        let ring = &mut self.ring;
        let peer = &mut self.peer;
        w.poll(
            waker,
            || Cell::new(shared.clone(), reactor::data_cell, 0),
            Some(notify),
            true,
            || match read_result(cap, ring.try_read(buf)) {
                Some(r) => Some(r),
                None if peer_closed(shared, PUBLISHER) => {
                    Some(read_result(cap, ring.try_read(buf)).unwrap_or(Err(Error::Disconnected)))
                }
                None => None,
            },
            // The publisher dying is a disconnect too, as for the blocking subscriber.
            || peer.gone_rate_limited(shared).map(|_| Gone::Closed),
        )
    }

    /// [`poll_next`](Self::poll_next) into this subscriber's own buffer.
    fn poll_own(
        &mut self,
        w: &mut AsyncWait,
        waker: &Waker,
        notify: &Arc<Notify>,
    ) -> Poll<Result<Got>> {
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.poll_next(&mut buf, w, waker, notify);
        self.buf = buf;
        r
    }
}

/// A broadcast subscriber for async code, from [`Subscriber::into_async`].
///
/// `recv().await` completes at once when a message is there (no system call, like
/// [`Subscriber::try_recv`]); otherwise the task joins the ring's sleeper protocol and
/// the process's helper thread wakes it when the publisher publishes. The errors are the
/// blocking subscriber's: [`Error::Lapped`] (Lap mode), [`Error::Evicted`] (Block mode),
/// [`Error::Disconnected`] once the publisher has gone and everything was read.
///
/// Cancel-safe: dropping a `recv()` future before it completes loses no message.
///
/// ```no_run
/// # async fn demo() -> shmlane::Result<()> {
/// use shmlane::broadcast::{StartAt, Subscriber};
/// use shmlane::Error;
/// let mut s = Subscriber::open("/md", StartAt::Oldest)?.into_async()?;
/// loop {
///     match s.recv().await {
///         Ok(m) => println!("{:?}", &m[..]),
///         Err(Error::Lapped { missed }) => eprintln!("missed {missed}"),
///         Err(Error::Disconnected) => break,
///         Err(e) => return Err(e),
///     }
/// }
/// let s: Subscriber = s.into_inner(); // back to the blocking endpoint
/// # drop(s); Ok(()) }
/// ```
pub struct AsyncSubscriber {
    /// The wait `try_recv` arms for the readiness fd (dropped before `inner`).
    ready: AsyncWait,
    spin: Duration,
    notify: Arc<Notify>,
    inner: Subscriber,
}

impl std::fmt::Debug for AsyncSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSubscriber")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncSubscriber {
    /// The next message, waiting (asynchronously) until one is published: a guard over
    /// this subscriber's copy of it. Cancel-safe.
    ///
    /// ```no_run
    /// # async fn demo(s: &mut shmlane::broadcast::AsyncSubscriber) -> shmlane::Result<()> {
    /// let m = s.recv().await?;
    /// println!("tag {}: {} bytes", m.tag(), m.len());
    /// # Ok(()) }
    /// ```
    pub async fn recv(&mut self) -> Result<ReadGuard<'_>> {
        let got = {
            let mut w = AsyncWait::new(self.spin);
            let notify = &self.notify;
            let inner = &mut self.inner;
            poll_fn(|cx| inner.poll_own(&mut w, cx.waker(), notify)).await?
        };
        Ok(self.inner.guard(got))
    }

    /// The next message, or `Ok(None)` once the publisher has gone and every message is
    /// read. Cancel-safe.
    pub async fn recv_or_end(&mut self) -> Result<Option<ReadGuard<'_>>> {
        match self.recv().await {
            Ok(m) => Ok(Some(m)),
            Err(Error::Disconnected) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Copies the next message into `buf` (see [`Subscriber::recv_into`]); returns its
    /// `(tag, length)`. Cancel-safe.
    pub async fn recv_into(&mut self, buf: &mut [u8]) -> Result<(u32, usize)> {
        let mut w = AsyncWait::new(self.spin);
        let notify = &self.notify;
        let inner = &mut self.inner;
        let got = poll_fn(|cx| inner.poll_next(buf, &mut w, cx.waker(), notify)).await?;
        Ok((got.tag, got.len))
    }

    /// The next message if one is published now; never waits: [`Error::Empty`] if there
    /// is none, and then the [`readiness_fd`](Self::readiness_fd) is armed (it becomes
    /// readable when the publisher publishes, or every ~100 ms while armed).
    pub fn try_recv(&mut self) -> Result<ReadGuard<'_>> {
        let waker = noop_waker();
        match self.inner.poll_own(&mut self.ready, &waker, &self.notify) {
            Poll::Ready(Ok(got)) => Ok(self.inner.guard(got)),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(Error::Empty),
        }
    }

    /// An fd for epoll users: an eventfd that becomes readable when this subscriber may
    /// make progress (level: readable until [`clear_readiness`](Self::clear_readiness)).
    /// Armed by a [`try_recv`](Self::try_recv) that found nothing and by every pending
    /// `recv()`; signalled when the publisher publishes, or every ~100 ms while armed.
    pub fn readiness_fd(&self) -> BorrowedFd<'_> {
        self.notify.fd()
    }

    /// Empties the readiness fd's counter.
    pub fn clear_readiness(&self) {
        self.notify.drain();
    }

    /// How long `recv()` looks again before it registers with the helper thread
    /// ([`DEFAULT_ASYNC_SPIN`](crate::wait::DEFAULT_ASYNC_SPIN) unless changed).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// The spin set with [`set_spin`](Self::set_spin).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// Bytes published that this subscriber has not read yet.
    pub fn lag(&self) -> u64 {
        self.inner.lag()
    }

    /// The blocking subscriber back (any wait armed by `try_recv` is given back).
    pub fn into_inner(self) -> Subscriber {
        let AsyncSubscriber { ready, inner, .. } = self;
        drop(ready);
        inner
    }

    /// The blocking subscriber inside.
    pub fn get_ref(&self) -> &Subscriber {
        &self.inner
    }

    /// The blocking subscriber inside, mutably (a blocking call there blocks the task).
    pub fn get_mut(&mut self) -> &mut Subscriber {
        &mut self.inner
    }
}
