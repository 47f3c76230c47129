//! Async MPMC endpoints: [`AsyncSender`] and [`AsyncReceiver`].

// `spin_ns`: a handle's own setting, not shared state.
#![allow(clippy::disallowed_types)]

use std::cell::RefCell;
use std::future::poll_fn;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use super::{Endpoint, ReadGuard, Receiver, Sender, WriteGrant};
use crate::error::{Error, Result, TryRecvError, TrySendError};
use crate::ring::mpmc::{RecvClaim, SendClaim};
use crate::wait::reactor::{self, noop_waker, AsyncWait, Cell, Notify};
use crate::wait::DEFAULT_ASYNC_SPIN;

impl Endpoint {
    /// One poll of an async receive: a claimed slot, or `Pending` with `w` registered.
    /// The same looks, in the same order, as `Receiver::recv_inner`'s blocking loop.
    fn poll_recv(
        &self,
        w: &mut AsyncWait,
        waker: &Waker,
        notify: &Arc<Notify>,
    ) -> Poll<Result<RecvClaim>> {
        if let Some(claim) = self.ring.try_claim_recv(self.claim)? {
            return Poll::Ready(Ok(claim));
        }
        // A message found by the liveness look (a slot published as we went to skip it).
        let found: RefCell<Option<Result<RecvClaim>>> = RefCell::new(None);
        w.poll(
            waker,
            || Cell::new(self.shared.clone(), reactor::data_cell, 0),
            Some(notify),
            true,
            || self.recv_look(&found),
            || self.recv_slow_look(&found),
        )
        // `poll` always runs `check` after `peer_gone`, so `found` is empty here.
    }

    /// One poll of an async reserve: a claimed slot, or `Pending` with `w` registered.
    fn poll_send(
        &self,
        w: &mut AsyncWait,
        waker: &Waker,
        notify: &Arc<Notify>,
    ) -> Poll<Result<SendClaim>> {
        if self.other_side_closed() {
            return Poll::Ready(Err(Error::Disconnected));
        }
        if let Some(c) = self.ring.try_claim_send(self.claim)? {
            return Poll::Ready(Ok(c));
        }
        w.poll(
            waker,
            || Cell::new(self.shared.clone(), reactor::space_cell, 0),
            Some(notify),
            false,
            || {
                if self.other_side_closed() {
                    return Some(Err(Error::Disconnected));
                }
                self.ring
                    .try_claim_send(self.claim)
                    .map_err(Error::from)
                    .transpose()
            },
            || {
                if self.slow_path_due() && !self.ring.recover_send(self.claim) {
                    self.other_side_gone()
                } else {
                    None
                }
            },
        )
    }
}

impl Receiver {
    /// Turns this receiver into an [`AsyncReceiver`], whose `recv().await` waits without
    /// a thread of its own.
    ///
    /// Errors: [`Error::Io`] if the readiness eventfd cannot be made.
    ///
    /// ```no_run
    /// # async fn demo() -> shmlane::Result<()> {
    /// let rx = shmlane::mpmc::Receiver::open("/jobs")?.into_async()?;
    /// let m = rx.recv().await?;
    /// println!("{} bytes", m.len());
    /// # Ok(()) }
    /// ```
    pub fn into_async(self) -> Result<AsyncReceiver> {
        Ok(AsyncReceiver {
            ready: Mutex::new(AsyncWait::new(Duration::ZERO)),
            spin_ns: AtomicU64::new(DEFAULT_ASYNC_SPIN.as_nanos() as u64),
            notify: Arc::new(Notify::new()?),
            inner: self,
        })
    }
}

/// A receiving handle of an MPMC channel for async code, from [`Receiver::into_async`].
///
/// `recv(&self)`: any number of tasks may await the same receiver at once (share it with
/// an `Arc`), as threads may share a [`Receiver`]; each message goes to one of them.
/// Completes at once when a message is published (no system call); otherwise the task
/// joins the ring's sleeper protocol and one helper thread per process wakes it.
/// Cancel-safe: a dropped `recv()` future has taken no message.
///
/// ```no_run
/// # async fn demo() -> shmlane::Result<()> {
/// use std::sync::Arc;
/// let rx = Arc::new(shmlane::mpmc::Receiver::open("/jobs")?.into_async()?);
/// let rx2 = rx.clone();
/// let m = rx2.recv().await?;
/// # drop(m); Ok(()) }
/// ```
pub struct AsyncReceiver {
    ready: Mutex<AsyncWait>,
    spin_ns: AtomicU64,
    notify: Arc<Notify>,
    inner: Receiver,
}

impl std::fmt::Debug for AsyncReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncReceiver")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncReceiver {
    /// The next message, waiting (asynchronously) until one is published. When every
    /// sender has gone, returns what they published and then [`Error::Disconnected`]
    /// (all closed) or [`Error::PeerDied`]. Cancel-safe.
    pub async fn recv(&self) -> Result<ReadGuard<'_>> {
        let ep = &*self.inner.ep;
        let mut w = AsyncWait::new(self.spin());
        let claim = poll_fn(|cx| ep.poll_recv(&mut w, cx.waker(), &self.notify)).await?;
        drop(w);
        Ok(ReadGuard::new(ep, claim))
    }

    /// The next message, or `Ok(None)` once every sender has closed and every message is
    /// taken. Cancel-safe.
    pub async fn recv_or_end(&self) -> Result<Option<ReadGuard<'_>>> {
        match self.recv().await {
            Ok(m) => Ok(Some(m)),
            Err(Error::Disconnected) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next message if one is published now; never waits. On
    /// [`TryRecvError::Empty`] the [`readiness_fd`](Self::readiness_fd) is armed.
    pub fn try_recv(&self) -> Result<ReadGuard<'_>, TryRecvError> {
        let ep = &*self.inner.ep;
        let waker = noop_waker();
        let mut w = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        match ep.poll_recv(&mut w, &waker, &self.notify) {
            Poll::Ready(Ok(claim)) => Ok(ReadGuard::new(ep, claim)),
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

    /// An eventfd that becomes readable when this receiver may make progress: a sender
    /// published, or a ~100 ms liveness tick while armed. Armed by a `try_recv` that found
    /// nothing and by every pending `recv()` future; level-triggered until
    /// [`clear_readiness`](Self::clear_readiness). See
    /// [`AsyncConsumer::readiness_fd`](crate::spsc::AsyncConsumer::readiness_fd).
    pub fn readiness_fd(&self) -> BorrowedFd<'_> {
        self.notify.fd()
    }

    /// Empties the readiness fd's counter.
    pub fn clear_readiness(&self) {
        self.notify.drain();
    }

    /// How long `recv()` looks again (holding the executor thread) before it registers
    /// with the helper thread: [`DEFAULT_ASYNC_SPIN`](crate::wait::DEFAULT_ASYNC_SPIN)
    /// unless changed. Zero never spins.
    pub fn set_spin(&self, spin: Duration) {
        self.spin_ns.store(
            spin.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// The spin set with [`set_spin`](Self::set_spin).
    pub fn spin(&self) -> Duration {
        Duration::from_nanos(self.spin_ns.load(Ordering::Relaxed))
    }

    /// The blocking receiver back.
    pub fn into_inner(self) -> Receiver {
        let AsyncReceiver { ready, inner, .. } = self;
        drop(ready);
        inner
    }

    /// The blocking receiver inside.
    pub fn get_ref(&self) -> &Receiver {
        &self.inner
    }
}

impl Sender {
    /// Turns this sender into an [`AsyncSender`], whose `send(..).await` waits for a free
    /// slot without a thread of its own.
    ///
    /// Errors: [`Error::Io`] if the readiness eventfd cannot be made.
    ///
    /// ```no_run
    /// # async fn demo() -> shmlane::Result<()> {
    /// let tx = shmlane::mpmc::Sender::open("/jobs")?.into_async()?;
    /// tx.send(b"job").await?;
    /// # Ok(()) }
    /// ```
    pub fn into_async(self) -> Result<AsyncSender> {
        Ok(AsyncSender {
            ready: Mutex::new(AsyncWait::new(Duration::ZERO)),
            spin_ns: AtomicU64::new(DEFAULT_ASYNC_SPIN.as_nanos() as u64),
            notify: Arc::new(Notify::new()?),
            inner: self,
        })
    }
}

/// A sending handle of an MPMC channel for async code, from [`Sender::into_async`].
/// `send(&self, ..)`: tasks may share it. Cancel-safe: a dropped `send()` future has
/// sent nothing.
///
/// ```no_run
/// # async fn demo() -> shmlane::Result<()> {
/// let tx = shmlane::mpmc::Sender::open("/jobs")?.into_async()?;
/// tx.send_tagged(2, b"job").await?;
/// let mut g = tx.reserve(3).await?;
/// g.copy_from(b"abc");
/// g.commit();
/// # Ok(()) }
/// ```
pub struct AsyncSender {
    ready: Mutex<AsyncWait>,
    spin_ns: AtomicU64,
    notify: Arc<Notify>,
    inner: Sender,
}

impl std::fmt::Debug for AsyncSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSender")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncSender {
    /// Sends `msg` with tag 0, waiting (asynchronously) while the ring is full.
    pub async fn send(&self, msg: &[u8]) -> Result<()> {
        self.send_tagged(0, msg).await
    }

    /// Sends a tagged message, waiting while the ring is full.
    pub async fn send_tagged(&self, tag: u32, msg: &[u8]) -> Result<()> {
        let mut g = self.reserve(msg.len()).await?;
        g.copy_from(msg);
        g.set_tag(tag);
        g.commit();
        Ok(())
    }

    /// Claims a slot for a `len`-byte message, waiting while the ring is full.
    /// Cancel-safe: nothing is claimed until the future completes.
    pub async fn reserve(&self, len: usize) -> Result<WriteGrant<'_>> {
        let ep = &*self.inner.ep;
        let max = ep.ring.max_message();
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        let mut w = AsyncWait::new(self.spin());
        let claim = poll_fn(|cx| ep.poll_send(&mut w, cx.waker(), &self.notify)).await?;
        drop(w);
        Ok(WriteGrant::new(ep, claim, len))
    }

    /// Sends `msg` with tag 0 if a slot is free now; never waits. On
    /// [`TrySendError::Full`] the [`readiness_fd`](Self::readiness_fd) is armed.
    pub fn try_send(&self, msg: &[u8]) -> Result<(), TrySendError> {
        self.try_send_tagged(0, msg)
    }

    /// Sends a tagged message if a slot is free now (arms the readiness fd when full).
    pub fn try_send_tagged(&self, tag: u32, msg: &[u8]) -> Result<(), TrySendError> {
        let ep = &*self.inner.ep;
        let max = ep.ring.max_message();
        if msg.len() > max {
            return Err(TrySendError::TooLarge {
                len: msg.len(),
                max,
            });
        }
        let waker = noop_waker();
        let mut w = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        match ep.poll_send(&mut w, &waker, &self.notify) {
            Poll::Ready(Ok(claim)) => {
                drop(w);
                let mut g = WriteGrant::new(ep, claim, msg.len());
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

    /// An eventfd that becomes readable when this sender may make progress (a slot freed,
    /// or a liveness tick while armed); see [`AsyncReceiver::readiness_fd`].
    pub fn readiness_fd(&self) -> BorrowedFd<'_> {
        self.notify.fd()
    }

    /// Empties the readiness fd's counter.
    pub fn clear_readiness(&self) {
        self.notify.drain();
    }

    /// How long `send()` looks again (holding the executor thread) before it registers
    /// with the helper thread: [`DEFAULT_ASYNC_SPIN`](crate::wait::DEFAULT_ASYNC_SPIN)
    /// unless changed. Zero never spins.
    pub fn set_spin(&self, spin: Duration) {
        self.spin_ns.store(
            spin.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// The spin set with [`set_spin`](Self::set_spin).
    pub fn spin(&self) -> Duration {
        Duration::from_nanos(self.spin_ns.load(Ordering::Relaxed))
    }

    /// The blocking sender back.
    pub fn into_inner(self) -> Sender {
        let AsyncSender { ready, inner, .. } = self;
        drop(ready);
        inner
    }

    /// The blocking sender inside.
    pub fn get_ref(&self) -> &Sender {
        &self.inner
    }
}
