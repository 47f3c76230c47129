//! Every way shmlane can carry messages between two processes, behind one interface, so
//! the benchmarks compare them side by side.
//!
//! A [`Transport`] is a kind of channel: the shared-memory rings ([`ShmSpsc`],
//! [`ShmSpscTyped`], [`ShmMpmc`]), a classic
//! lock-based shared-memory queue ([`ShmMutex`]) and the kernel's own mechanisms as
//! baselines ([`Pipe`], [`UnixSocket`], [`SysvMsgq`], [`PosixMq`]); the async ring
//! ([`ShmSpscAsync`]) beside tokio's `UnixStream` ([`TokioUnix`]) and async pipe
//! ([`TokioPipe`]). One process *creates*
//! a channel by name and becomes one end; another process *opens* it by the same name and
//! becomes the other end. Every backend delivers each message as soon as `send` returns: the
//! baselines make one send system call per message and the ring publishes each message
//! at once.

mod pipe;
mod posix_mq;
mod shm_mpmc;
mod shm_mutex;
mod shm_spsc;
mod shm_spsc_typed;
mod sysv_msgq;
mod tokio_async;
mod unix_socket;

pub use pipe::Pipe;
pub use posix_mq::{PosixMq, PosixMqRx, PosixMqTx};
pub use shm_mpmc::ShmMpmc;
pub use shm_mutex::{ShmMutex, ShmMutexRx, ShmMutexTx};
pub use shm_spsc::ShmSpsc;
pub use shm_spsc_typed::{ShmSpscTyped, ShmSpscTypedRx, ShmSpscTypedTx};
pub use sysv_msgq::{SysvMsgq, SysvMsgqRx, SysvMsgqTx};
pub use tokio_async::{
    ShmSpscAsync, ShmSpscAsyncRx, ShmSpscAsyncTx, TokioPipe, TokioPipeRx, TokioPipeTx, TokioUnix,
    TokioUnixRx, TokioUnixTx,
};
pub use unix_socket::{UnixSocket, UnixSocketRx, UnixSocketTx};

use shmlane::wait::Wait;
use shmlane::Result;

/// What a channel must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The largest message.
    pub max_message: usize,
    /// Buffer bytes the channel may hold in flight (ring capacity, pipe size, ...).
    pub capacity: usize,
    /// How shared-memory endpoints wait (ignored by kernel backends, which always block).
    pub wait: Wait,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message: 64 << 10,
            capacity: 1 << 20,
            wait: Wait::Block,
        }
    }
}

/// The sending end of a transport.
pub trait TxEnd: Send {
    /// Sends one message, waiting while the channel is full. The message is on its way
    /// to the receiver when this returns.
    fn send(&mut self, msg: &[u8]) -> Result<()>;

    /// Sends `messages` messages, message `seq` being `payload.stamp(seq)`: a loop of
    /// [`send`](Self::send). The async backends run the loop as one task (one
    /// `block_on` around an `.await` per message), as a service sending in a loop does.
    fn send_all(&mut self, payload: &mut crate::runner::Payload, messages: u64) -> Result<()> {
        for seq in 0..messages {
            self.send(payload.stamp(seq))?;
        }
        Ok(())
    }
}

/// The receiving end of a transport.
pub trait RxEnd: Send {
    /// Receives the next message and hands it to `f`, waiting while the channel is empty.
    /// The slice is only valid inside `f` (for the ring it is the message in place).
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, f: F) -> Result<R>;

    /// Receives `messages` messages, handing message `seq` to `f(seq, msg)`: a loop of
    /// [`recv_with`](Self::recv_with); the async backends run it as one task.
    fn recv_all<F: FnMut(u64, &[u8]) -> Result<()>>(
        &mut self,
        messages: u64,
        mut f: F,
    ) -> Result<()> {
        for seq in 0..messages {
            self.recv_with(|m| f(seq, m))??;
        }
        Ok(())
    }
}

/// A kind of channel between two processes.
pub trait Transport {
    /// The sending end.
    type Tx: TxEnd;
    /// The receiving end.
    type Rx: RxEnd;
    /// The short name shown in tables (`"pipe"`).
    const NAME: &'static str;

    /// Creates the channel `name` and becomes its sender. Some backends (a FIFO) only
    /// return once the receiver has opened it.
    fn create_tx(name: &str, cfg: &Config) -> Result<Self::Tx>;
    /// Creates the channel `name` and becomes its receiver.
    fn create_rx(name: &str, cfg: &Config) -> Result<Self::Rx>;
    /// Opens the channel `name` made by another process as its sender.
    fn open_tx(name: &str, cfg: &Config) -> Result<Self::Tx>;
    /// Opens the channel `name` made by another process as its receiver.
    fn open_rx(name: &str, cfg: &Config) -> Result<Self::Rx>;
    /// Whether this backend can carry messages of `size` bytes on this machine; `Err`
    /// says why not (a kernel limit).
    fn supports(size: usize) -> std::result::Result<(), String> {
        let _ = size;
        Ok(())
    }
}

/// The answer of [`Transport::supports`] for a kernel limit of `limit` bytes.
pub(crate) fn within_limit(size: usize, limit: usize) -> std::result::Result<(), String> {
    if size > limit {
        return Err(format!(
            "not supported by this backend on this machine (limit {limit})"
        ));
    }
    Ok(())
}

/// Every backend, by name: the value the CLI and the benchmarks take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// [`ShmSpsc`].
    ShmSpsc,
    /// [`ShmSpscTyped`].
    ShmSpscTyped,
    /// [`ShmMpmc`].
    ShmMpmc,
    /// [`ShmMutex`].
    ShmMutex,
    /// [`Pipe`].
    Pipe,
    /// [`UnixSocket`].
    UnixSocket,
    /// [`SysvMsgq`].
    SysvMsgq,
    /// [`PosixMq`].
    PosixMq,
    /// [`ShmSpscAsync`].
    ShmSpscAsync,
    /// [`TokioUnix`].
    TokioUnix,
    /// [`TokioPipe`].
    TokioPipe,
}

impl BackendKind {
    /// All backends, the reference (`pipe`) included.
    pub const ALL: &'static [BackendKind] = &[
        BackendKind::ShmSpsc,
        BackendKind::ShmSpscTyped,
        BackendKind::ShmMpmc,
        BackendKind::ShmMutex,
        BackendKind::Pipe,
        BackendKind::UnixSocket,
        BackendKind::SysvMsgq,
        BackendKind::PosixMq,
        BackendKind::ShmSpscAsync,
        BackendKind::TokioUnix,
        BackendKind::TokioPipe,
    ];

    /// The short name.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::ShmSpsc => ShmSpsc::NAME,
            BackendKind::ShmSpscTyped => ShmSpscTyped::NAME,
            BackendKind::ShmMpmc => ShmMpmc::NAME,
            BackendKind::ShmMutex => ShmMutex::NAME,
            BackendKind::Pipe => Pipe::NAME,
            BackendKind::UnixSocket => UnixSocket::NAME,
            BackendKind::SysvMsgq => SysvMsgq::NAME,
            BackendKind::PosixMq => PosixMq::NAME,
            BackendKind::ShmSpscAsync => ShmSpscAsync::NAME,
            BackendKind::TokioUnix => TokioUnix::NAME,
            BackendKind::TokioPipe => TokioPipe::NAME,
        }
    }

    /// Whether this backend can carry `size`-byte messages here.
    pub fn supports(self, size: usize) -> std::result::Result<(), String> {
        match self {
            BackendKind::ShmSpsc => ShmSpsc::supports(size),
            BackendKind::ShmSpscTyped => ShmSpscTyped::supports(size),
            BackendKind::ShmMpmc => ShmMpmc::supports(size),
            BackendKind::ShmMutex => ShmMutex::supports(size),
            BackendKind::Pipe => Pipe::supports(size),
            BackendKind::UnixSocket => UnixSocket::supports(size),
            BackendKind::SysvMsgq => SysvMsgq::supports(size),
            BackendKind::PosixMq => PosixMq::supports(size),
            BackendKind::ShmSpscAsync => ShmSpscAsync::supports(size),
            BackendKind::TokioUnix => TokioUnix::supports(size),
            BackendKind::TokioPipe => TokioPipe::supports(size),
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        BackendKind::ALL
            .iter()
            .copied()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = BackendKind::ALL.iter().map(|b| b.name()).collect();
                format!("unknown backend {s:?}; known: {}", names.join(", "))
            })
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Calls `$body` with the type alias `$t` bound to the [`Transport`] of `$kind`, so
/// generic code is monomorphised per backend (no dynamic dispatch per message).
#[macro_export]
macro_rules! with_backend {
    ($kind:expr, $t:ident => $body:expr) => {
        match $kind {
            $crate::backend::BackendKind::ShmSpsc => {
                type $t = $crate::backend::ShmSpsc;
                $body
            }
            $crate::backend::BackendKind::ShmSpscTyped => {
                type $t = $crate::backend::ShmSpscTyped;
                $body
            }
            $crate::backend::BackendKind::ShmMpmc => {
                type $t = $crate::backend::ShmMpmc;
                $body
            }
            $crate::backend::BackendKind::ShmMutex => {
                type $t = $crate::backend::ShmMutex;
                $body
            }
            $crate::backend::BackendKind::Pipe => {
                type $t = $crate::backend::Pipe;
                $body
            }
            $crate::backend::BackendKind::UnixSocket => {
                type $t = $crate::backend::UnixSocket;
                $body
            }
            $crate::backend::BackendKind::SysvMsgq => {
                type $t = $crate::backend::SysvMsgq;
                $body
            }
            $crate::backend::BackendKind::PosixMq => {
                type $t = $crate::backend::PosixMq;
                $body
            }
            $crate::backend::BackendKind::ShmSpscAsync => {
                type $t = $crate::backend::ShmSpscAsync;
                $body
            }
            $crate::backend::BackendKind::TokioUnix => {
                type $t = $crate::backend::TokioUnix;
                $body
            }
            $crate::backend::BackendKind::TokioPipe => {
                type $t = $crate::backend::TokioPipe;
                $body
            }
        }
    };
}

/// Test helpers shared by the backends' unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use super::{Config, RxEnd, Transport, TxEnd};

    /// A number read from a `/proc/sys` file (the kernel's own setting, not the code's).
    pub(crate) fn proc_value(path: &str) -> usize {
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// `T` accepts messages of exactly `limit` bytes, refuses one byte more with the
    /// clear message, and a message of the limit's size really travels whole.
    pub(crate) fn limit_is_exact<T: Transport>(limit: usize, tag: &str) {
        assert!(T::supports(limit).is_ok());
        let why = T::supports(limit + 1).unwrap_err();
        assert_eq!(
            why,
            format!("not supported by this backend on this machine (limit {limit})")
        );
        let name = format!("/shmlane-test-limit-{tag}-{}", std::process::id());
        let cfg = Config {
            max_message: limit,
            capacity: 4 * limit,
            wait: shmlane::Wait::Block,
        };
        let mut rx = T::create_rx(&name, &cfg).expect("create_rx");
        let mut tx = T::open_tx(&name, &cfg).expect("open_tx");
        let msg: Vec<u8> = (0..limit).map(|i| (i * 13 + 5) as u8).collect();
        tx.send(&msg).expect("send a message of the limit's size");
        assert!(rx.recv_with(|m| m == &msg[..]).expect("recv"));
    }
}
