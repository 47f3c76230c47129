//! `posix-mq`: a POSIX message queue (`mq_open` / `mq_timedsend` / `mq_timedreceive`).
//!
//! **Framing.** The kernel keeps message boundaries; shmlane uses the message priority as
//! a tag (the queue delivers higher priorities first, FIFO within one priority):
//!
//! - priority 1 ([`PRIO_DATA`]): a message, sent with one `mq_timedsend` call;
//! - priority 2 ([`PRIO_HELLO`]): sent by a sender when it attaches, carrying its pid and
//!   start time (12 bytes, native-endian), so the receiver knows whose death to watch for;
//! - priority 0 ([`PRIO_EOF`]): "the sender has gone" (empty). Being the lowest priority,
//!   it is only delivered once every message sent before it has been read.
//!
//! **Names and limits.** The queue is `/shmlane-mq-<name without '/'>`, created exclusively
//! (`O_CREAT | O_EXCL`, mode 0600). Its message size is `max_message` and its length
//! `capacity / message size` messages, both kept within `fs.mqueue.msgsize_max` and
//! `fs.mqueue.msg_max` ([`PosixMq::limits`]) even for root, who could exceed them, so the
//! backend behaves the same for a normal user. A message larger than `msgsize_max` is not
//! supported ([`PosixMq::supports`]).
//!
//! **Lifecycle and peer death.** A POSIX queue has no notion of a peer, so:
//!
//! - a sender that drops sends the end marker (waiting for room while the receiver drains
//!   the queue, giving up after [`LINGER`] without progress), and a creating sender then
//!   unlinks the name; the queue itself lives on while the receiver
//!   has it open, so nothing sent is lost;
//! - a receiver that drops unlinks the name, whoever created it: that is the "receiver
//!   closed" signal. A sender waits for room in slices of 50 ms and after each slice checks
//!   that the name still exists (one `mq_open` + `mq_close`); once it is gone, `send`
//!   returns [`Error::Disconnected`];
//! - a receiver waits in slices of 50 ms (`mq_timedreceive`) and after each empty slice
//!   checks that the sender's process (from its hello) is alive, reading `/proc/<pid>/stat`
//!   (pid and start time, so a reused pid is not mistaken for it). A sender killed without
//!   dropping its end is therefore noticed within a slice: the receiver gets every message
//!   it sent and then [`Error::Disconnected`]. Before any hello arrives, the receiver
//!   instead checks that the name still exists.
//! - Not detected: a receiver *killed* (not dropped) while the sender waits on a full
//!   queue leaves the name in place, so that sender keeps waiting; and a queue whose
//!   creator was killed stays until `mq_unlink` (it is visible under `/dev/mqueue` when
//!   the mqueue file system is mounted there).

use std::ffi::CString;
use std::io;
use std::time::{Duration, Instant};

use super::pipe::OPEN_WAIT;
use super::{Config, RxEnd, Transport, TxEnd};
use shmlane::format::validate_name;
use shmlane::format::{process_alive, self_start_time};
use shmlane::{Error, Result};

/// A POSIX message queue: one `mq_timedsend` / `mq_timedreceive` per message.
#[derive(Debug)]
pub struct PosixMq;

/// The priority of a message.
pub const PRIO_DATA: u32 = 1;
/// The priority of the sender's hello (its pid and start time).
pub const PRIO_HELLO: u32 = 2;
/// The priority of the end marker a sender leaves when it goes.
pub const PRIO_EOF: u32 = 0;

/// How long a dropping sender waits for room for its end marker without the receiver
/// making progress.
pub const LINGER: Duration = Duration::from_secs(2);

/// How long one blocking wait lasts before the peer is checked.
const SLICE: Duration = Duration::from_millis(50);

/// The hello payload: pid (4 bytes) and start time (8 bytes).
const HELLO_LEN: usize = 12;

/// The smallest message size shmlane gives a queue (room for the hello).
const MIN_MSGSIZE: usize = 16;

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn read_proc(path: &str) -> Option<usize> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
}

impl PosixMq {
    /// `(msg_max, msgsize_max)`: the most messages a queue may hold and the largest
    /// message, for an unprivileged process, from `/proc/sys/fs/mqueue/` (the kernel
    /// defaults, 10 and 8192, when they cannot be read).
    pub fn limits() -> (usize, usize) {
        (
            read_proc("/proc/sys/fs/mqueue/msg_max").unwrap_or(10),
            read_proc("/proc/sys/fs/mqueue/msgsize_max").unwrap_or(8192),
        )
    }

    /// The queue name used for the channel `name`.
    pub fn queue_name(name: &str) -> Result<String> {
        validate_name(name)?;
        let q = format!("/shmlane-mq-{}", &name[1..]);
        if q.len() > 255 {
            return Err(Error::InvalidName {
                name: name.into(),
                reason: "the name is too long for a POSIX message queue (255 bytes with the \"/shmlane-mq-\" prefix)",
            });
        }
        Ok(q)
    }
}

fn cname(name: &str) -> Result<CString> {
    let q = PosixMq::queue_name(name)?;
    CString::new(q).map_err(|_| Error::InvalidName {
        name: name.into(),
        reason: "the name may not contain a NUL byte",
    })
}

/// An open queue descriptor, closed on drop.
#[derive(Debug)]
struct Mq(libc::mqd_t);

impl Drop for Mq {
    fn drop(&mut self) {
        // SAFETY: self.0 is a descriptor from mq_open, closed once here.
        unsafe { libc::mq_close(self.0) };
    }
}

fn map_open_err(name: &str, e: i32) -> Error {
    match e {
        libc::EEXIST => Error::AlreadyExists { name: name.into() },
        libc::ENOENT => Error::NotFound {
            name: name.into(),
            key: 0,
        },
        libc::EACCES | libc::EPERM => Error::PermissionDenied { name: name.into() },
        libc::ENAMETOOLONG => Error::InvalidName {
            name: name.into(),
            reason: "the name is too long for a POSIX message queue",
        },
        libc::ENOSPC | libc::ENOMEM | libc::EMFILE | libc::ENFILE => Error::NoSpace {
            name: name.into(),
            needed: 0,
            what: "POSIX message queues (fs.mqueue.queues_max, RLIMIT_MSGQUEUE or open files)"
                .into(),
        },
        libc::EINVAL => Error::InvalidOptions {
            reason: format!(
                "the kernel refused the POSIX message queue size for {name} (limits: {:?})",
                PosixMq::limits()
            ),
        },
        e => Error::io("mq_open", io::Error::from_raw_os_error(e)),
    }
}

fn mq_open(c: &CString, flags: libc::c_int, attr: Option<&libc::mq_attr>) -> Result<Mq, i32> {
    let flags = flags | libc::O_CLOEXEC;
    let fd = match attr {
        // SAFETY: c is a NUL-terminated name; with O_CREAT the variadic arguments are the
        // mode and a pointer to a valid mq_attr, live for the call.
        Some(a) => unsafe {
            libc::mq_open(
                c.as_ptr(),
                flags,
                0o600 as libc::mode_t,
                a as *const libc::mq_attr,
            )
        },
        // SAFETY: c is a NUL-terminated name; without O_CREAT no more arguments are read.
        None => unsafe { libc::mq_open(c.as_ptr(), flags) },
    };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(Mq(fd))
    }
}

/// Whether the queue name still exists (its receiver / creator has not unlinked it).
fn name_exists(c: &CString) -> bool {
    match mq_open(c, libc::O_WRONLY | libc::O_NONBLOCK, None) {
        Ok(_) => true,
        Err(e) => e != libc::ENOENT,
    }
}

fn unlink(c: &CString) {
    // SAFETY: c is a NUL-terminated name.
    unsafe { libc::mq_unlink(c.as_ptr()) };
}

fn getattr(mq: &Mq) -> Result<libc::mq_attr> {
    // SAFETY: mq_attr is plain old data; all zero is a valid value.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    // SAFETY: attr is a valid, writable mq_attr.
    if unsafe { libc::mq_getattr(mq.0, &mut attr) } < 0 {
        return Err(Error::last_os("mq_getattr"));
    }
    Ok(attr)
}

/// `CLOCK_REALTIME` now + `after`, the absolute time `mq_timed*` take.
fn deadline(after: Duration) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    let now = Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    );
    let at = now + after;
    libc::timespec {
        tv_sec: at.as_secs() as libc::time_t,
        tv_nsec: at.subsec_nanos() as _,
    }
}

/// Sends one message, waiting in slices; after each full slice, `gone` says whether to
/// give up. `Ok(false)`: gave up.
fn timed_send(
    mq: &Mq,
    msg: &[u8],
    prio: u32,
    mut gone: impl FnMut() -> bool,
) -> std::result::Result<bool, i32> {
    loop {
        let ts = deadline(SLICE);
        // SAFETY: msg is a live slice of msg.len() bytes and ts a valid timespec.
        let rc = unsafe { libc::mq_timedsend(mq.0, msg.as_ptr().cast(), msg.len(), prio, &ts) };
        if rc == 0 {
            return Ok(true);
        }
        match errno() {
            libc::EINTR => {}
            libc::ETIMEDOUT => {
                if gone() {
                    return Ok(false);
                }
            }
            e => return Err(e),
        }
    }
}

fn create_queue(name: &str, cfg: &Config, flags: libc::c_int) -> Result<(Mq, CString)> {
    let c = cname(name)?;
    let (msg_max, msgsize_max) = PosixMq::limits();
    let msgsize = cfg.max_message.min(msgsize_max).max(MIN_MSGSIZE);
    let maxmsg = (cfg.capacity / msgsize).clamp(1, msg_max.max(1));
    // SAFETY: mq_attr is plain old data; all zero is a valid value.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    attr.mq_maxmsg = maxmsg as _;
    attr.mq_msgsize = msgsize as _;
    let mq = mq_open(&c, flags | libc::O_CREAT | libc::O_EXCL, Some(&attr))
        .map_err(|e| map_open_err(name, e))?;
    Ok((mq, c))
}

fn open_queue(name: &str, flags: libc::c_int) -> Result<(Mq, CString)> {
    let c = cname(name)?;
    let start = Instant::now();
    loop {
        match mq_open(&c, flags, None) {
            Ok(mq) => return Ok((mq, c)),
            Err(libc::ENOENT) if start.elapsed() < OPEN_WAIT => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(map_open_err(name, e)),
        }
    }
}

/// The sending end of a [`PosixMq`].
#[derive(Debug)]
pub struct PosixMqTx {
    mq: Mq,
    name: CString,
    max_message: usize,
    msgsize: usize,
    creator: bool,
}

/// The receiving end of a [`PosixMq`].
#[derive(Debug)]
pub struct PosixMqRx {
    mq: Mq,
    name: CString,
    max_message: usize,
    buf: Vec<u8>,
    /// The sender's pid and start time, from its hello.
    sender: Option<(i32, u64)>,
    /// The sender was seen dead: one last non-blocking read, then `Disconnected`.
    sender_dead: bool,
    eof: bool,
}

impl PosixMqTx {
    fn new(mq: Mq, name: CString, cfg: &Config, creator: bool) -> Result<PosixMqTx> {
        let msgsize = getattr(&mq)?.mq_msgsize.max(0) as usize;
        let mut hello = [0u8; HELLO_LEN];
        hello[..4].copy_from_slice(&(std::process::id() as i32).to_ne_bytes());
        hello[4..].copy_from_slice(&self_start_time().to_ne_bytes());
        // Tell the receiver whose death to watch for. A queue that stays full for a whole
        // slice at attach time only costs that (the receiver then watches the name).
        let _ = timed_send(&mq, &hello, PRIO_HELLO, || true);
        Ok(PosixMqTx {
            mq,
            name,
            max_message: cfg.max_message,
            msgsize,
            creator,
        })
    }
}

impl PosixMqRx {
    fn new(mq: Mq, name: CString, cfg: &Config) -> Result<PosixMqRx> {
        let msgsize = getattr(&mq)?.mq_msgsize;
        if msgsize <= 0 || msgsize as u64 > (64 << 20) {
            return Err(Error::corrupt(format!(
                "POSIX message queue message size {msgsize} is out of range"
            )));
        }
        Ok(PosixMqRx {
            mq,
            name,
            max_message: cfg.max_message,
            buf: vec![0; msgsize as usize],
            sender: None,
            sender_dead: false,
            eof: false,
        })
    }

    /// Whether the sender has gone without leaving its end marker.
    fn sender_gone(&self) -> bool {
        match self.sender {
            Some((pid, start)) => !process_alive(pid, start),
            None => !name_exists(&self.name),
        }
    }
}

impl Drop for PosixMqTx {
    fn drop(&mut self) {
        // Wait for room while the receiver is there and makes progress (the queue
        // shrinks) at least once per LINGER.
        let (mq, name) = (&self.mq, &self.name);
        let mut progress = (Instant::now(), libc::c_long::MAX);
        let _ = timed_send(mq, &[], PRIO_EOF, || {
            if !name_exists(name) {
                return true;
            }
            let queued = getattr(mq).map(|a| a.mq_curmsgs).unwrap_or(0);
            if queued < progress.1 {
                progress = (Instant::now(), queued);
            }
            progress.0.elapsed() > LINGER
        });
        if self.creator {
            // The queue lives on while the receiver has it open: nothing sent is lost.
            unlink(&self.name);
        }
    }
}

impl Drop for PosixMqRx {
    fn drop(&mut self) {
        // The receiver closing is the sender's disconnect signal: remove the name.
        unlink(&self.name);
    }
}

impl TxEnd for PosixMqTx {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        if msg.len() > self.max_message {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: self.max_message,
            });
        }
        if msg.len() > self.msgsize {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: self.msgsize,
            });
        }
        let name = &self.name;
        match timed_send(&self.mq, msg, PRIO_DATA, || !name_exists(name)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Disconnected),
            Err(libc::EMSGSIZE) => Err(Error::MessageTooLarge {
                len: msg.len(),
                max: self.msgsize,
            }),
            Err(e) => Err(Error::io("mq_timedsend", io::Error::from_raw_os_error(e))),
        }
    }
}

impl RxEnd for PosixMqRx {
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, f: F) -> Result<R> {
        if self.eof {
            return Err(Error::Disconnected);
        }
        loop {
            let ts = if self.sender_dead {
                // Already past: returns at once with what is queued, if anything.
                libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                }
            } else {
                deadline(SLICE)
            };
            let mut prio: libc::c_uint = 0;
            // SAFETY: buf is a live buffer of buf.len() (= mq_msgsize) bytes; prio and ts
            // are valid for the call.
            let n = unsafe {
                libc::mq_timedreceive(
                    self.mq.0,
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    &mut prio,
                    &ts,
                )
            };
            if n < 0 {
                match errno() {
                    libc::EINTR => {}
                    libc::ETIMEDOUT if self.sender_dead => {
                        self.eof = true;
                        return Err(Error::Disconnected);
                    }
                    libc::ETIMEDOUT => self.sender_dead = self.sender_gone(),
                    e => {
                        return Err(Error::io(
                            "mq_timedreceive",
                            io::Error::from_raw_os_error(e),
                        ))
                    }
                }
                continue;
            }
            let n = n as usize;
            match prio {
                PRIO_DATA if n <= self.max_message => return Ok(f(&self.buf[..n])),
                PRIO_DATA => {
                    return Err(Error::corrupt(format!(
                        "POSIX queue message of {n} bytes is over max_message {}",
                        self.max_message
                    )))
                }
                PRIO_EOF => {
                    self.eof = true;
                    return Err(Error::Disconnected);
                }
                PRIO_HELLO if n == HELLO_LEN => {
                    let pid = i32::from_ne_bytes(self.buf[..4].try_into().expect("4 bytes"));
                    let start = u64::from_ne_bytes(self.buf[4..12].try_into().expect("8 bytes"));
                    self.sender = Some((pid, start));
                }
                p => {
                    return Err(Error::corrupt(format!(
                        "POSIX queue message with unknown priority {p} ({n} bytes)"
                    )))
                }
            }
        }
    }
}

impl Transport for PosixMq {
    type Tx = PosixMqTx;
    type Rx = PosixMqRx;
    const NAME: &'static str = "posix-mq";

    fn create_tx(name: &str, cfg: &Config) -> Result<PosixMqTx> {
        let (mq, c) = create_queue(name, cfg, libc::O_WRONLY)?;
        PosixMqTx::new(mq, c.clone(), cfg, true).inspect_err(|_| unlink(&c))
    }

    fn create_rx(name: &str, cfg: &Config) -> Result<PosixMqRx> {
        let (mq, c) = create_queue(name, cfg, libc::O_RDONLY)?;
        PosixMqRx::new(mq, c.clone(), cfg).inspect_err(|_| unlink(&c))
    }

    fn open_tx(name: &str, cfg: &Config) -> Result<PosixMqTx> {
        let (mq, c) = open_queue(name, libc::O_WRONLY)?;
        PosixMqTx::new(mq, c, cfg, false)
    }

    fn open_rx(name: &str, cfg: &Config) -> Result<PosixMqRx> {
        let (mq, c) = open_queue(name, libc::O_RDONLY)?;
        PosixMqRx::new(mq, c, cfg)
    }

    /// Up to `fs.mqueue.msgsize_max` bytes.
    fn supports(size: usize) -> std::result::Result<(), String> {
        let (_, limit) = PosixMq::limits();
        super::within_limit(size, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit comes from the kernel's own setting, read here, not from the function
    /// under test; and a message of exactly that size really goes through a queue.
    #[test]
    fn sizes_over_the_machine_limit_are_refused_clearly() {
        let limit = crate::backend::test_util::proc_value("/proc/sys/fs/mqueue/msgsize_max");
        let msg_max = crate::backend::test_util::proc_value("/proc/sys/fs/mqueue/msg_max");
        assert_eq!(PosixMq::limits(), (msg_max, limit));
        crate::backend::test_util::limit_is_exact::<PosixMq>(limit, "posixmq");
    }

    #[test]
    fn queue_names() {
        assert_eq!(PosixMq::queue_name("/abc").unwrap(), "/shmlane-mq-abc");
        assert!(PosixMq::queue_name("abc").is_err());
        let long = format!("/{}", "x".repeat(250));
        assert!(matches!(
            PosixMq::queue_name(&long),
            Err(Error::InvalidName { .. })
        ));
    }
}
