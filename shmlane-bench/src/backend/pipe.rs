//! `pipe`: a kernel pipe (a named FIFO, so the peer finds it by name), with each message
//! framed as a 4-byte length and written with one `writev` call.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Read};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::stat::Mode;

use super::{Config, RxEnd, Transport, TxEnd};
use shmlane::format::validate_name;
use shmlane::{Error, Result};

/// A kernel pipe: the reference every benchmark ratio is taken against.
#[derive(Debug)]
pub struct Pipe;

/// How long `open_*` waits for the creator to make the channel.
pub(crate) const OPEN_WAIT: Duration = Duration::from_secs(10);

fn fifo_path(name: &str) -> Result<PathBuf> {
    validate_name(name)?;
    Ok(std::env::temp_dir().join(format!("shmlane-fifo-{}", &name[1..])))
}

fn make_fifo(name: &str) -> Result<PathBuf> {
    let path = fifo_path(name)?;
    nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).map_err(|e| match e {
        Errno::EEXIST => Error::AlreadyExists { name: name.into() },
        Errno::EACCES => Error::PermissionDenied { name: name.into() },
        e => Error::io("mkfifo", std::io::Error::from(e)),
    })?;
    Ok(path)
}

/// Waits until the FIFO exists, then opens it (which itself waits for the other end).
fn open_fifo(name: &str, write: bool) -> Result<File> {
    let path = fifo_path(name)?;
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
    open_path(name, &path, write)
}

/// Opens a FIFO end. The write end is opened non-blocking and retried until a reader
/// is there (or [`OPEN_WAIT`] has passed), so a peer that died early cannot hang us.
fn open_path(name: &str, path: &PathBuf, write: bool) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let start = Instant::now();
    loop {
        let r = OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(if write { libc::O_NONBLOCK } else { 0 })
            .open(path);
        match r {
            Err(e)
                if write
                    && e.raw_os_error() == Some(libc::ENXIO)
                    && start.elapsed() < OPEN_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(f) if write => {
                let flags = fcntl(f.as_raw_fd(), FcntlArg::F_GETFL)
                    .map_err(|e| Error::io("fcntl", std::io::Error::from(e)))?;
                let flags =
                    nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
                fcntl(f.as_raw_fd(), FcntlArg::F_SETFL(flags))
                    .map_err(|e| Error::io("fcntl", std::io::Error::from(e)))?;
                return Ok(f);
            }
            other => return other.map_err(|e| map_open_err(name, e)),
        }
    }
}

fn map_open_err(name: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            name: name.into(),
            key: 0,
        },
        std::io::ErrorKind::PermissionDenied => Error::PermissionDenied { name: name.into() },
        _ if e.raw_os_error() == Some(libc::ENXIO) => Error::Timeout,
        _ => Error::io("open fifo", e),
    }
}

/// Grows the pipe buffer to the channel's capacity, within `/proc/sys/fs/pipe-max-size`.
fn size_pipe(file: &File, capacity: usize) {
    let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(1 << 20);
    let want = capacity.min(max).min(i32::MAX as usize) as i32;
    let _ = fcntl(file.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(want));
}

/// The writing end of a [`Pipe`].
#[derive(Debug)]
pub struct PipeTx {
    file: File,
    max_message: usize,
    remove: Option<PathBuf>,
}

/// The reading end of a [`Pipe`].
#[derive(Debug)]
pub struct PipeRx {
    file: File,
    max_message: usize,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    remove: Option<PathBuf>,
}

impl Drop for PipeTx {
    fn drop(&mut self) {
        if let Some(p) = &self.remove {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for PipeRx {
    fn drop(&mut self) {
        if let Some(p) = &self.remove {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl TxEnd for PipeTx {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        if msg.len() > self.max_message {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: self.max_message,
            });
        }
        let len = (msg.len() as u32).to_ne_bytes();
        let mut parts = [IoSlice::new(&len), IoSlice::new(msg)];
        let mut slices: &mut [IoSlice<'_>] = &mut parts;
        let mut left = 4 + msg.len();
        while left > 0 {
            match nix::sys::uio::writev(&self.file, slices) {
                Ok(n) => {
                    left -= n;
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EPIPE) => return Err(Error::Disconnected),
                Err(e) => return Err(Error::io("writev", std::io::Error::from(e))),
            }
        }
        Ok(())
    }
}

impl PipeRx {
    fn new(file: File, cfg: &Config, remove: Option<PathBuf>) -> PipeRx {
        PipeRx {
            file,
            max_message: cfg.max_message,
            buf: vec![0; (cfg.max_message + 4).max(256 << 10)],
            start: 0,
            end: 0,
            remove,
        }
    }

    /// Makes sure `n` bytes are buffered; `Disconnected` at end of file.
    fn fill(&mut self, n: usize) -> Result<()> {
        if self.end - self.start >= n {
            return Ok(());
        }
        if self.buf.len() - self.start < n {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < n {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(Error::Disconnected),
                Ok(k) => self.end += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read", e)),
            }
        }
        Ok(())
    }
}

impl RxEnd for PipeRx {
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, f: F) -> Result<R> {
        self.fill(4)?;
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.buf[self.start..self.start + 4]);
        let len = u32::from_ne_bytes(len) as usize;
        if len > self.max_message {
            return Err(Error::corrupt(format!(
                "pipe frame of {len} bytes is over max_message {}",
                self.max_message
            )));
        }
        self.fill(4 + len)?;
        let msg = &self.buf[self.start + 4..self.start + 4 + len];
        let r = f(msg);
        self.start += 4 + len;
        Ok(r)
    }
}

impl Transport for Pipe {
    type Tx = PipeTx;
    type Rx = PipeRx;
    const NAME: &'static str = "pipe";

    fn create_tx(name: &str, cfg: &Config) -> Result<PipeTx> {
        let path = make_fifo(name)?;
        let file = match open_path(name, &path, true) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        size_pipe(&file, cfg.capacity);
        Ok(PipeTx {
            file,
            max_message: cfg.max_message,
            remove: Some(path),
        })
    }

    fn create_rx(name: &str, cfg: &Config) -> Result<PipeRx> {
        let path = make_fifo(name)?;
        let file = match open_path(name, &path, false) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        size_pipe(&file, cfg.capacity);
        Ok(PipeRx::new(file, cfg, Some(path)))
    }

    fn open_tx(name: &str, cfg: &Config) -> Result<PipeTx> {
        let file = open_fifo(name, true)?;
        size_pipe(&file, cfg.capacity);
        Ok(PipeTx {
            file,
            max_message: cfg.max_message,
            remove: None,
        })
    }

    fn open_rx(name: &str, cfg: &Config) -> Result<PipeRx> {
        let file = open_fifo(name, false)?;
        size_pipe(&file, cfg.capacity);
        Ok(PipeRx::new(file, cfg, None))
    }
}
