//! The async backends: `shm-spsc-async` (shmlane's async SPSC endpoints) and its natural
//! baselines, tokio's `UnixStream` (`tokio-unix`) and tokio's async pipe
//! (`tokio::net::unix::pipe`, `tokio-pipe`).
//!
//! **How they are driven.** Each end owns a current-thread tokio runtime and runs its
//! futures with `runtime.block_on(..)`: when the future is pending, the
//! thread parks in the runtime (epoll for the tokio sockets and pipes; the runtime's park
//! for the ring, woken by shmlane's helper thread), exactly as a task awaiting it would.
//! The throughput loops run as one task each (`send_all` / `recv_all`: one `block_on`
//! around an `.await` per message, as a service looping over a channel does); the
//! latency ping-pong uses one `block_on` per message. The same harness for all three, so
//! their ratio is the channel's.
//!
//! **Framing** (the two tokio baselines): a 4-byte length, then the payload, written with
//! one `write_all` of both (one `write` system call per message, as a tokio user framing
//! with a length prefix does); the receiver reads through a 256 KiB buffer.
//!
//! **Names.** The socket is `temp_dir()/shmlane-tsock-<name>`, the FIFO
//! `temp_dir()/shmlane-tfifo-<name>`; the creator removes it when its end drops.
//!
//! **Peer death.** The ring reports `PeerDied`; a dead socket or pipe peer reads as end of
//! file (`Disconnected`) or fails a write with `EPIPE` (`Disconnected`).

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::runtime::Runtime;

use super::pipe::OPEN_WAIT;
use super::{Config, RxEnd, Transport, TxEnd};
use crate::runner::Payload;
use shmlane::format::validate_name;
use shmlane::spsc::{AsyncConsumer, AsyncProducer, Consumer, Producer};
use shmlane::{Error, Result};

fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))
}

/// shmlane's async SPSC endpoints ([`AsyncProducer`], [`AsyncConsumer`]) on a tokio
/// runtime.
#[derive(Debug)]
pub struct ShmSpscAsync;

/// The sending end of [`ShmSpscAsync`].
#[derive(Debug)]
pub struct ShmSpscAsyncTx {
    tx: AsyncProducer,
    rt: Runtime,
}

/// The receiving end of [`ShmSpscAsync`].
#[derive(Debug)]
pub struct ShmSpscAsyncRx {
    rx: AsyncConsumer,
    rt: Runtime,
}

impl TxEnd for ShmSpscAsyncTx {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.rt.block_on(self.tx.send(msg))
    }

    fn send_all(&mut self, payload: &mut Payload, messages: u64) -> Result<()> {
        let tx = &mut self.tx;
        self.rt.block_on(async move {
            for seq in 0..messages {
                tx.send(payload.stamp(seq)).await?;
            }
            Ok(())
        })
    }
}

impl RxEnd for ShmSpscAsyncRx {
    #[inline]
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, f: F) -> Result<R> {
        // `f` runs outside the runtime: the echo peer sends from inside it.
        let m = self.rt.block_on(self.rx.recv())?;
        Ok(f(&m))
    }

    fn recv_all<F: FnMut(u64, &[u8]) -> Result<()>>(
        &mut self,
        messages: u64,
        mut f: F,
    ) -> Result<()> {
        let rx = &mut self.rx;
        self.rt.block_on(async move {
            for seq in 0..messages {
                let m = rx.recv().await?;
                f(seq, &m)?;
            }
            Ok(())
        })
    }
}

impl Transport for ShmSpscAsync {
    type Tx = ShmSpscAsyncTx;
    type Rx = ShmSpscAsyncRx;
    const NAME: &'static str = "shm-spsc-async";

    fn create_tx(name: &str, cfg: &Config) -> Result<ShmSpscAsyncTx> {
        Ok(ShmSpscAsyncTx {
            tx: Producer::create(name, &super::shm_spsc::options(cfg))?.into_async()?,
            rt: runtime()?,
        })
    }

    fn create_rx(name: &str, cfg: &Config) -> Result<ShmSpscAsyncRx> {
        Ok(ShmSpscAsyncRx {
            rx: Consumer::create(name, &super::shm_spsc::options(cfg))?.into_async()?,
            rt: runtime()?,
        })
    }

    fn open_tx(name: &str, _cfg: &Config) -> Result<ShmSpscAsyncTx> {
        Ok(ShmSpscAsyncTx {
            tx: Producer::open(name)?.into_async()?,
            rt: runtime()?,
        })
    }

    fn open_rx(name: &str, _cfg: &Config) -> Result<ShmSpscAsyncRx> {
        Ok(ShmSpscAsyncRx {
            rx: Consumer::open(name)?.into_async()?,
            rt: runtime()?,
        })
    }
}

/// A length-prefixed message reader over any tokio byte stream.
#[derive(Debug)]
struct Framed<S> {
    s: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_message: usize,
    /// Until the first byte arrives, an end of file may only mean that the writer has not
    /// opened its end yet (a FIFO): wait for it, up to [`OPEN_WAIT`].
    opened: Instant,
    seen_data: bool,
}

impl<S: AsyncRead + Unpin> Framed<S> {
    fn new(s: S, max_message: usize) -> Framed<S> {
        Framed {
            s,
            buf: vec![0; (max_message + 4).max(256 << 10)],
            start: 0,
            end: 0,
            max_message,
            opened: Instant::now(),
            seen_data: false,
        }
    }

    async fn fill(&mut self, n: usize) -> Result<()> {
        if self.end - self.start >= n {
            return Ok(());
        }
        if self.buf.len() - self.start < n {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < n {
            match self.s.read(&mut self.buf[self.end..]).await {
                Ok(0) if !self.seen_data && self.opened.elapsed() < OPEN_WAIT => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(0) => return Err(Error::Disconnected),
                Ok(k) => {
                    self.seen_data = true;
                    self.end += k;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Error::Disconnected)
                }
                Err(e) => return Err(Error::io("read", e)),
            }
        }
        Ok(())
    }

    async fn recv_all<F: FnMut(u64, &[u8]) -> Result<()>>(
        &mut self,
        messages: u64,
        mut f: F,
    ) -> Result<()> {
        for seq in 0..messages {
            let m = self.next().await?;
            f(seq, m)?;
        }
        Ok(())
    }

    async fn next(&mut self) -> Result<&[u8]> {
        self.fill(4).await?;
        let len =
            u32::from_ne_bytes(self.buf[self.start..self.start + 4].try_into().unwrap()) as usize;
        if len > self.max_message {
            return Err(Error::corrupt(format!(
                "frame of {len} bytes, max_message is {}",
                self.max_message
            )));
        }
        self.fill(4 + len).await?;
        let at = self.start + 4;
        self.start = at + len;
        Ok(&self.buf[at..at + len])
    }
}

/// A length-prefixed message writer over any tokio byte stream.
#[derive(Debug)]
struct FramedTx<S> {
    s: S,
    buf: Vec<u8>,
    max_message: usize,
}

impl<S: AsyncWrite + Unpin> FramedTx<S> {
    async fn send_all(&mut self, payload: &mut Payload, messages: u64) -> Result<()> {
        for seq in 0..messages {
            self.send(payload.stamp(seq)).await?;
        }
        Ok(())
    }

    async fn send(&mut self, msg: &[u8]) -> Result<()> {
        if msg.len() > self.max_message {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: self.max_message,
            });
        }
        self.buf.clear();
        self.buf
            .extend_from_slice(&(msg.len() as u32).to_ne_bytes());
        self.buf.extend_from_slice(msg);
        self.s
            .write_all(&self.buf)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Error::Disconnected,
                _ => Error::io("write", e),
            })
    }
}

/// Removes a path when dropped (the creator's socket or FIFO).
#[derive(Debug)]
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn path_for(name: &str, kind: &str) -> Result<PathBuf> {
    validate_name(name)?;
    let path = std::env::temp_dir().join(format!("shmlane-{kind}-{}", &name[1..]));
    if path.as_os_str().len() >= 108 {
        return Err(Error::InvalidName {
            name: name.into(),
            reason: "the name is too long for a Unix socket path",
        });
    }
    Ok(path)
}

/// tokio's `UnixStream` (a stream socket, length-prefixed frames).
#[derive(Debug)]
pub struct TokioUnix;

/// The sending end of [`TokioUnix`].
#[derive(Debug)]
pub struct TokioUnixTx {
    tx: FramedTx<tokio::net::UnixStream>,
    rt: Runtime,
    _path: RemoveOnDrop,
}

/// The receiving end of [`TokioUnix`].
#[derive(Debug)]
pub struct TokioUnixRx {
    rx: Framed<tokio::net::UnixStream>,
    rt: Runtime,
    _path: RemoveOnDrop,
}

impl TxEnd for TokioUnixTx {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.rt.block_on(self.tx.send(msg))
    }

    fn send_all(&mut self, payload: &mut Payload, messages: u64) -> Result<()> {
        self.rt.block_on(self.tx.send_all(payload, messages))
    }
}

impl RxEnd for TokioUnixRx {
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, f: F) -> Result<R> {
        let m = self.rt.block_on(self.rx.next())?;
        Ok(f(m))
    }

    fn recv_all<F: FnMut(u64, &[u8]) -> Result<()>>(&mut self, messages: u64, f: F) -> Result<()> {
        self.rt.block_on(self.rx.recv_all(messages, f))
    }
}

/// Binds the socket and accepts one connection (at most [`OPEN_WAIT`]).
fn accept_one(name: &str, rt: &Runtime) -> Result<(tokio::net::UnixStream, RemoveOnDrop)> {
    let path = path_for(name, "tsock")?;
    let listener = std::os::unix::net::UnixListener::bind(&path).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => Error::AlreadyExists { name: name.into() },
        _ => Error::io("bind", e),
    })?;
    let remove = RemoveOnDrop(Some(path));
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("set_nonblocking", e))?;
    let start = Instant::now();
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && start.elapsed() < OPEN_WAIT => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(Error::Timeout),
            Err(e) => return Err(Error::io("accept", e)),
        }
    };
    Ok((to_tokio(stream, rt)?, remove))
}

fn to_tokio(s: std::os::unix::net::UnixStream, rt: &Runtime) -> Result<tokio::net::UnixStream> {
    s.set_nonblocking(true)
        .map_err(|e| Error::io("set_nonblocking", e))?;
    let _g = rt.enter();
    tokio::net::UnixStream::from_std(s).map_err(|e| Error::io("tokio UnixStream", e))
}

/// Connects to the creator's socket, waiting for it to appear (at most [`OPEN_WAIT`]).
fn connect(name: &str, rt: &Runtime) -> Result<tokio::net::UnixStream> {
    let path = path_for(name, "tsock")?;
    let start = Instant::now();
    loop {
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(s) => return to_tokio(s, rt),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && start.elapsed() < OPEN_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    name: name.into(),
                    key: 0,
                })
            }
            Err(e) => return Err(Error::io("connect", e)),
        }
    }
}

impl Transport for TokioUnix {
    type Tx = TokioUnixTx;
    type Rx = TokioUnixRx;
    const NAME: &'static str = "tokio-unix";

    fn create_tx(name: &str, cfg: &Config) -> Result<TokioUnixTx> {
        let rt = runtime()?;
        let (s, path) = accept_one(name, &rt)?;
        Ok(TokioUnixTx {
            tx: FramedTx {
                s,
                buf: Vec::new(),
                max_message: cfg.max_message,
            },
            rt,
            _path: path,
        })
    }

    fn create_rx(name: &str, cfg: &Config) -> Result<TokioUnixRx> {
        let rt = runtime()?;
        let (s, path) = accept_one(name, &rt)?;
        Ok(TokioUnixRx {
            rx: Framed::new(s, cfg.max_message),
            rt,
            _path: path,
        })
    }

    fn open_tx(name: &str, cfg: &Config) -> Result<TokioUnixTx> {
        let rt = runtime()?;
        let s = connect(name, &rt)?;
        Ok(TokioUnixTx {
            tx: FramedTx {
                s,
                buf: Vec::new(),
                max_message: cfg.max_message,
            },
            rt,
            _path: RemoveOnDrop(None),
        })
    }

    fn open_rx(name: &str, cfg: &Config) -> Result<TokioUnixRx> {
        let rt = runtime()?;
        let s = connect(name, &rt)?;
        Ok(TokioUnixRx {
            rx: Framed::new(s, cfg.max_message),
            rt,
            _path: RemoveOnDrop(None),
        })
    }
}

/// tokio's async pipe (`tokio::net::unix::pipe`) on a named FIFO, length-prefixed frames.
#[derive(Debug)]
pub struct TokioPipe;

/// The sending end of [`TokioPipe`].
#[derive(Debug)]
pub struct TokioPipeTx {
    tx: FramedTx<tokio::net::unix::pipe::Sender>,
    rt: Runtime,
    _path: RemoveOnDrop,
}

/// The receiving end of [`TokioPipe`].
#[derive(Debug)]
pub struct TokioPipeRx {
    rx: Framed<tokio::net::unix::pipe::Receiver>,
    rt: Runtime,
    _path: RemoveOnDrop,
}

impl TxEnd for TokioPipeTx {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.rt.block_on(self.tx.send(msg))
    }

    fn send_all(&mut self, payload: &mut Payload, messages: u64) -> Result<()> {
        self.rt.block_on(self.tx.send_all(payload, messages))
    }
}

impl RxEnd for TokioPipeRx {
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, f: F) -> Result<R> {
        let m = self.rt.block_on(self.rx.next())?;
        Ok(f(m))
    }

    fn recv_all<F: FnMut(u64, &[u8]) -> Result<()>>(&mut self, messages: u64, f: F) -> Result<()> {
        self.rt.block_on(self.rx.recv_all(messages, f))
    }
}

fn make_fifo(name: &str) -> Result<RemoveOnDrop> {
    let path = path_for(name, "tfifo")?;
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(
        |e| match e {
            nix::errno::Errno::EEXIST => Error::AlreadyExists { name: name.into() },
            e => Error::io("mkfifo", io::Error::from(e)),
        },
    )?;
    Ok(RemoveOnDrop(Some(path)))
}

fn wait_fifo(name: &str) -> Result<PathBuf> {
    let path = path_for(name, "tfifo")?;
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > OPEN_WAIT {
            return Err(Error::NotFound {
                name: name.into(),
                key: 0,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(path)
}

/// Grows the pipe buffer to the channel's capacity, within the kernel's limit (as the
/// `pipe` backend does).
fn size_pipe(fd: std::os::fd::BorrowedFd<'_>, capacity: usize) {
    use std::os::fd::AsRawFd;
    let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(1 << 20);
    let want = capacity.min(max).min(i32::MAX as usize) as i32;
    let _ = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(want));
}

/// Opens the write end, retrying while no reader has the FIFO open (`ENXIO`).
fn open_sender(
    path: &PathBuf,
    rt: &Runtime,
    cfg: &Config,
) -> Result<tokio::net::unix::pipe::Sender> {
    use std::os::fd::AsFd;
    let _g = rt.enter();
    let start = Instant::now();
    loop {
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(path) {
            Ok(s) => {
                size_pipe(s.as_fd(), cfg.capacity);
                return Ok(s);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && start.elapsed() < OPEN_WAIT => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Err(Error::Timeout),
            Err(e) => return Err(Error::io("open fifo", e)),
        }
    }
}

fn open_receiver(path: &PathBuf, rt: &Runtime) -> Result<tokio::net::unix::pipe::Receiver> {
    let _g = rt.enter();
    tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(|e| Error::io("open fifo", e))
}

impl Transport for TokioPipe {
    type Tx = TokioPipeTx;
    type Rx = TokioPipeRx;
    const NAME: &'static str = "tokio-pipe";

    fn create_tx(name: &str, cfg: &Config) -> Result<TokioPipeTx> {
        let rt = runtime()?;
        let path = make_fifo(name)?;
        let s = open_sender(path.0.as_ref().expect("path"), &rt, cfg)?;
        Ok(TokioPipeTx {
            tx: FramedTx {
                s,
                buf: Vec::new(),
                max_message: cfg.max_message,
            },
            rt,
            _path: path,
        })
    }

    fn create_rx(name: &str, cfg: &Config) -> Result<TokioPipeRx> {
        let rt = runtime()?;
        let path = make_fifo(name)?;
        let r = open_receiver(path.0.as_ref().expect("path"), &rt)?;
        Ok(TokioPipeRx {
            rx: Framed::new(r, cfg.max_message),
            rt,
            _path: path,
        })
    }

    fn open_tx(name: &str, cfg: &Config) -> Result<TokioPipeTx> {
        let rt = runtime()?;
        let path = wait_fifo(name)?;
        let s = open_sender(&path, &rt, cfg)?;
        Ok(TokioPipeTx {
            tx: FramedTx {
                s,
                buf: Vec::new(),
                max_message: cfg.max_message,
            },
            rt,
            _path: RemoveOnDrop(None),
        })
    }

    fn open_rx(name: &str, cfg: &Config) -> Result<TokioPipeRx> {
        let rt = runtime()?;
        let path = wait_fifo(name)?;
        let r = open_receiver(&path, &rt)?;
        Ok(TokioPipeRx {
            rx: Framed::new(r, cfg.max_message),
            rt,
            _path: RemoveOnDrop(None),
        })
    }
}
