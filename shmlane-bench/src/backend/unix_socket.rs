//! `unix-socket`: a connected `SOCK_SEQPACKET` Unix domain socket.
//!
//! **Framing.** None is needed: a sequenced-packet socket keeps message boundaries, so
//! each message is one packet, sent with one `send` call and read with one `recvmsg`.
//! Both ends turn on `SO_PASSCRED` so that every packet, even an empty one, carries a
//! credentials control message; a read that returns 0 bytes *without* one is the end of
//! the stream. That is how an empty message is told apart from the peer having closed.
//!
//! **Names.** The socket lives at `temp_dir()/shmlane-sock-<name without '/'>`. The
//! creator binds and listens there and accepts exactly one connection, waiting at most
//! [`OPEN_WAIT`]; the opener connects, retrying until the path exists and is listened on
//! (again at most [`OPEN_WAIT`], then [`Error::NotFound`]). The creator removes the path
//! when its end drops.
//!
//! **Limits.** `SO_SNDBUF` / `SO_RCVBUF` are set from [`Config::capacity`] (at least
//! enough for `max_message`); the kernel clamps the value to `net.core.wmem_max` and
//! doubles it, and a packet may be at most that buffer minus 32 bytes, so the largest
//! message is `2 * wmem_max - 32` ([`UnixSocket::supports`]).
//!
//! **Peer death.** The kernel closes a dead process's socket, exactly as a clean drop
//! does: the receiver reads everything already queued and then gets
//! [`Error::Disconnected`]; a sender whose receiver has gone gets `EPIPE` /
//! `ECONNRESET`, reported as [`Error::Disconnected`] (`MSG_NOSIGNAL`: no `SIGPIPE`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::pipe::OPEN_WAIT;
use super::{Config, RxEnd, Transport, TxEnd};
use shmlane::format::validate_name;
use shmlane::{Error, Result};

/// A `SOCK_SEQPACKET` Unix domain socket: one packet per message.
#[derive(Debug)]
pub struct UnixSocket;

/// Bytes the kernel keeps out of `SO_SNDBUF` for every packet (`sk_sndbuf - 32`).
const PACKET_OVERHEAD: usize = 32;

fn socket_path(name: &str) -> Result<PathBuf> {
    validate_name(name)?;
    let path = std::env::temp_dir().join(format!("shmlane-sock-{}", &name[1..]));
    // sun_path holds 108 bytes including the terminating NUL.
    if path.as_os_str().len() >= 108 {
        return Err(Error::InvalidName {
            name: name.into(),
            reason: "the name is too long for a Unix socket path (108 bytes with the temp directory and the \"shmlane-sock-\" prefix)",
        });
    }
    Ok(path)
}

fn sockaddr(path: &Path) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain old data; all zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    (addr, len as libc::socklen_t)
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `net.core.wmem_max`: the largest `SO_SNDBUF` an unprivileged process may ask for.
fn wmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/wmem_max")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(212_992)
}

fn new_socket(nonblocking: bool) -> Result<OwnedFd> {
    let mut ty = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    // SAFETY: socket takes plain integers and returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, ty, 0) };
    if fd < 0 {
        return Err(Error::last_os("socket(AF_UNIX, SOCK_SEQPACKET)"));
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Every packet then carries credentials, so an empty message is not mistaken for EOF.
    set_opt(&fd, libc::SO_PASSCRED, 1, "setsockopt(SO_PASSCRED)")?;
    Ok(fd)
}

fn set_opt(fd: &OwnedFd, opt: libc::c_int, value: libc::c_int, op: &'static str) -> Result<()> {
    // SAFETY: value is a live c_int and the length given is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(Error::last_os(op));
    }
    Ok(())
}

fn get_opt(fd: &OwnedFd, opt: libc::c_int) -> Option<usize> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are live and len holds value's size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0 && value > 0).then_some(value as usize)
}

/// Sizes the socket buffers from the capacity (at least enough for one `max_message`
/// packet) and returns the largest packet the send buffer now allows.
fn size_buffers(fd: &OwnedFd, cfg: &Config) -> Result<usize> {
    let want = (cfg.capacity / 2)
        .max(cfg.max_message + 4096)
        .min(i32::MAX as usize) as libc::c_int;
    set_opt(fd, libc::SO_SNDBUF, want, "setsockopt(SO_SNDBUF)")?;
    set_opt(fd, libc::SO_RCVBUF, want, "setsockopt(SO_RCVBUF)")?;
    let sndbuf = get_opt(fd, libc::SO_SNDBUF).unwrap_or(2 * want as usize);
    Ok(sndbuf.saturating_sub(PACKET_OVERHEAD))
}

fn map_path_err(name: &str, op: &'static str, e: i32) -> Error {
    match e {
        libc::EADDRINUSE | libc::EEXIST => Error::AlreadyExists { name: name.into() },
        libc::EACCES | libc::EPERM => Error::PermissionDenied { name: name.into() },
        libc::ENOENT | libc::ECONNREFUSED => Error::NotFound {
            name: name.into(),
            key: 0,
        },
        e => Error::io(op, io::Error::from_raw_os_error(e)),
    }
}

/// Binds and listens at the channel's path, then accepts one connection (waiting at most
/// [`OPEN_WAIT`]). The path is removed again on any failure.
fn listen_accept(name: &str) -> Result<(OwnedFd, PathBuf)> {
    let path = socket_path(name)?;
    let listener = new_socket(true)?;
    let (addr, len) = sockaddr(&path);
    // SAFETY: addr is a valid sockaddr_un of `len` bytes.
    let rc = unsafe {
        libc::bind(
            listener.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    if rc < 0 {
        return Err(map_path_err(name, "bind", errno()));
    }
    let accepted = (|| {
        // SAFETY: listen on a socket we own.
        if unsafe { libc::listen(listener.as_raw_fd(), 1) } < 0 {
            return Err(Error::last_os("listen"));
        }
        let start = Instant::now();
        loop {
            // SAFETY: accept4 on our listening socket; no address is asked for.
            let fd = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: fd is a fresh descriptor that nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                set_opt(&fd, libc::SO_PASSCRED, 1, "setsockopt(SO_PASSCRED)")?;
                return Ok(fd);
            }
            match errno() {
                libc::EAGAIN | libc::EINTR | libc::ECONNABORTED => {}
                e => return Err(Error::io("accept", io::Error::from_raw_os_error(e))),
            }
            let left = OPEN_WAIT.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            let mut pfd = libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, 100) as libc::c_int;
            // SAFETY: pfd is one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, ms) };
        }
    })();
    match accepted {
        Ok(fd) => Ok((fd, path)),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Connects to the channel's path, retrying until it is there and listened on (at most
/// [`OPEN_WAIT`], then [`Error::NotFound`]).
fn connect(name: &str) -> Result<OwnedFd> {
    let path = socket_path(name)?;
    let (addr, len) = sockaddr(&path);
    let start = Instant::now();
    loop {
        let fd = new_socket(false)?;
        // SAFETY: addr is a valid sockaddr_un of `len` bytes.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if rc == 0 {
            return Ok(fd);
        }
        match errno() {
            libc::EINTR => {}
            e @ (libc::ENOENT | libc::ECONNREFUSED | libc::EAGAIN) => {
                if start.elapsed() >= OPEN_WAIT {
                    return Err(map_path_err(name, "connect", e));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            e => return Err(map_path_err(name, "connect", e)),
        }
    }
}

/// The sending end of a [`UnixSocket`].
#[derive(Debug)]
pub struct UnixSocketTx {
    fd: OwnedFd,
    max_message: usize,
    max_packet: usize,
    remove: Option<PathBuf>,
}

/// The receiving end of a [`UnixSocket`].
#[derive(Debug)]
pub struct UnixSocketRx {
    fd: OwnedFd,
    buf: Vec<u8>,
    eof: bool,
    remove: Option<PathBuf>,
}

impl Drop for UnixSocketTx {
    fn drop(&mut self) {
        if let Some(p) = &self.remove {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for UnixSocketRx {
    fn drop(&mut self) {
        if let Some(p) = &self.remove {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl UnixSocketTx {
    fn new(fd: OwnedFd, cfg: &Config, remove: Option<PathBuf>) -> Result<UnixSocketTx> {
        let max_packet = size_buffers(&fd, cfg)?;
        Ok(UnixSocketTx {
            fd,
            max_message: cfg.max_message,
            max_packet,
            remove,
        })
    }
}

impl UnixSocketRx {
    fn new(fd: OwnedFd, cfg: &Config, remove: Option<PathBuf>) -> Result<UnixSocketRx> {
        size_buffers(&fd, cfg)?;
        Ok(UnixSocketRx {
            fd,
            buf: vec![0; cfg.max_message.max(1)],
            eof: false,
            remove,
        })
    }
}

impl TxEnd for UnixSocketTx {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        if msg.len() > self.max_message {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: self.max_message,
            });
        }
        loop {
            // SAFETY: msg is a live slice of msg.len() bytes.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            match errno() {
                libc::EINTR => {}
                libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN => return Err(Error::Disconnected),
                libc::EMSGSIZE => {
                    return Err(Error::MessageTooLarge {
                        len: msg.len(),
                        max: self.max_packet.min(self.max_message),
                    })
                }
                e => return Err(Error::io("send", io::Error::from_raw_os_error(e))),
            }
        }
    }
}

impl RxEnd for UnixSocketRx {
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, f: F) -> Result<R> {
        if self.eof {
            return Err(Error::Disconnected);
        }
        // Room for one SCM_CREDENTIALS message (CMSG_SPACE(sizeof(struct ucred)) = 32).
        let mut control = [0u64; 8];
        loop {
            let mut iov = libc::iovec {
                iov_base: self.buf.as_mut_ptr().cast(),
                iov_len: self.buf.len(),
            };
            // SAFETY: msghdr is plain old data; all zero is a valid value.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_controllen = std::mem::size_of_val(&control) as _;
            // SAFETY: hdr points at one iovec over our buffer and at our control buffer,
            // all live for the call.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut hdr, 0) };
            if n < 0 {
                match errno() {
                    libc::EINTR => continue,
                    libc::ECONNRESET | libc::ENOTCONN => {
                        self.eof = true;
                        return Err(Error::Disconnected);
                    }
                    e => return Err(Error::io("recvmsg", io::Error::from_raw_os_error(e))),
                }
            }
            let n = n as usize;
            if n == 0 && hdr.msg_controllen == 0 {
                // No packet, no credentials: the peer has closed and everything was read.
                self.eof = true;
                return Err(Error::Disconnected);
            }
            if hdr.msg_flags & libc::MSG_TRUNC != 0 || n > self.buf.len() {
                return Err(Error::corrupt(format!(
                    "unix-socket packet is larger than max_message {}",
                    self.buf.len()
                )));
            }
            return Ok(f(&self.buf[..n]));
        }
    }
}

impl Transport for UnixSocket {
    type Tx = UnixSocketTx;
    type Rx = UnixSocketRx;
    const NAME: &'static str = "unix-socket";

    fn create_tx(name: &str, cfg: &Config) -> Result<UnixSocketTx> {
        let (fd, path) = listen_accept(name)?;
        UnixSocketTx::new(fd, cfg, Some(path))
    }

    fn create_rx(name: &str, cfg: &Config) -> Result<UnixSocketRx> {
        let (fd, path) = listen_accept(name)?;
        UnixSocketRx::new(fd, cfg, Some(path))
    }

    fn open_tx(name: &str, cfg: &Config) -> Result<UnixSocketTx> {
        UnixSocketTx::new(connect(name)?, cfg, None)
    }

    fn open_rx(name: &str, cfg: &Config) -> Result<UnixSocketRx> {
        UnixSocketRx::new(connect(name)?, cfg, None)
    }

    /// A packet must fit in the send buffer: at most `2 * net.core.wmem_max - 32` bytes.
    fn supports(size: usize) -> std::result::Result<(), String> {
        let limit = (2 * wmem_max()).saturating_sub(PACKET_OVERHEAD);
        super::within_limit(size, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_refused() {
        let long = format!("/{}", "x".repeat(200));
        assert!(matches!(socket_path(&long), Err(Error::InvalidName { .. })));
    }
}
