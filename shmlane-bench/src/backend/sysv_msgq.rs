//! `sysv-msgq`: a System V message queue (`msgget` / `msgsnd` / `msgrcv`).
//!
//! **Framing.** The kernel keeps message boundaries. Every message carries a `long mtype`
//! in front of its bytes; shmlane uses it as a tag:
//!
//! - `1` ([`MTYPE_DATA`]): a message, sent with one `msgsnd` call;
//! - `2` ([`MTYPE_EOF`]): "the sender has gone" (empty), the last message of a channel;
//! - `3` ([`MTYPE_HELLO`]): sent (empty) by a sender when it attaches, so the queue's
//!   `msg_lspid` names the sender's process from the start. The receiver skips it.
//!
//! The receiver reads with `msgtyp = 0` (strict FIFO), so the end marker arrives after
//! every message sent before it.
//!
//! **Names and limits.** The queue key is [`SysvMsgq::key`] of the name: the segment key
//! ([`sysv_key`]) XOR a constant, so a queue never collides with a System V segment of
//! the same name (and is never `IPC_PRIVATE`); `ipcs -q` lists it. Create is exclusive
//! (`IPC_CREAT | IPC_EXCL`, mode 0600). A message may be at most `kernel.msgmax` bytes and
//! the queue holds at most `kernel.msgmnb` bytes ([`SysvMsgq::limits`]); shmlane stays
//! within both (it lowers the queue size to [`Config::capacity`] if that is smaller),
//! so it behaves the same for root and for a normal user.
//!
//! **Lifecycle and peer death.** A System V queue has no idea who uses it, so:
//!
//! - a sender that drops sends the end marker; a creating sender then *lingers* (up to
//!   [`LINGER`], longer while the receiver keeps making progress) until the receiver has
//!   drained the queue, and removes it (`IPC_RMID`), because removal destroys unread
//!   messages;
//! - a receiver that drops removes the queue, whoever created it: that is the
//!   "receiver closed" signal, and a sender blocked in `msgsnd` wakes with `EIDRM`
//!   ([`Error::Disconnected`]), as a pipe writer gets `EPIPE`;
//! - a queue removed under a blocked `msgrcv` / `msgsnd` (`EIDRM`, then `EINVAL`) is
//!   [`Error::Disconnected`];
//! - a process killed without dropping its end is noticed by a small watchdog thread per
//!   endpoint that looks at the queue every 50 ms (`IPC_STAT`, no message is touched):
//!   the receiver's watchdog checks the last sender (`msg_lspid`) and, once that process
//!   is dead, enqueues the end marker on its behalf, so the blocked `msgrcv` returns every
//!   message the sender managed to send and then [`Error::Disconnected`]; the sender's
//!   watchdog checks the last receiver (`msg_lrpid`) and, once that process is dead,
//!   removes the queue, which wakes a blocked `msgsnd`. A receiver killed before it
//!   received anything is not seen by the sender (`msg_lrpid` is still 0): a sender
//!   blocked on that full queue waits until someone removes the queue. A queue whose
//!   processes were all killed stays until `ipcrm -q` (like any System V object).

use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::pipe::OPEN_WAIT;
use super::{Config, RxEnd, Transport, TxEnd};
use shmlane::format::process_alive;
use shmlane::format::{sysv_key, validate_name};
use shmlane::{Error, Result};

/// A System V message queue: one `msgsnd` / `msgrcv` per message.
#[derive(Debug)]
pub struct SysvMsgq;

/// The `mtype` of a message.
pub const MTYPE_DATA: libc::c_long = 1;
/// The `mtype` of the end marker a sender leaves when it goes.
pub const MTYPE_EOF: libc::c_long = 2;
/// The `mtype` of the empty message a sender sends when it attaches.
pub const MTYPE_HELLO: libc::c_long = 3;

/// How long a dropping, creating sender waits without progress for the receiver to drain
/// the queue before it removes the queue anyway.
pub const LINGER: Duration = Duration::from_secs(2);

/// How often the watchdog thread looks at the queue.
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// XORed into the segment key so queues and segments of one name never share a key.
const KEY_SALT: i32 = 0x5a4d_5131;

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn read_proc(path: &str) -> Option<usize> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
}

fn is_gone(e: i32) -> bool {
    e == libc::EIDRM || e == libc::EINVAL
}

impl SysvMsgq {
    /// The System V IPC key of the queue for `name` (what `ipcs -q` shows).
    pub fn key(name: &str) -> i32 {
        let key = sysv_key(name) ^ KEY_SALT;
        if key == libc::IPC_PRIVATE {
            // sysv_key(name) == KEY_SALT here, so 1 still differs from the segment key.
            1
        } else {
            key
        }
    }

    /// `(msgmax, msgmnb)`: the largest message and the most bytes a queue may hold, from
    /// `/proc/sys/kernel/msgmax` and `msgmnb` (the kernel defaults, 8192 and 16384, when
    /// they cannot be read).
    pub fn limits() -> (usize, usize) {
        (
            read_proc("/proc/sys/kernel/msgmax").unwrap_or(8192),
            read_proc("/proc/sys/kernel/msgmnb").unwrap_or(16384),
        )
    }

    /// The largest message this machine lets through a queue.
    fn max_size() -> usize {
        let (msgmax, msgmnb) = Self::limits();
        msgmax.min(msgmnb)
    }
}

/// A `struct msgbuf { long mtype; char mtext[cap]; }`, aligned for the `long`.
#[derive(Debug)]
struct MsgBuf {
    words: Vec<libc::c_long>,
    cap: usize,
}

const TYPE_LEN: usize = std::mem::size_of::<libc::c_long>();

impl MsgBuf {
    fn new(cap: usize) -> MsgBuf {
        MsgBuf {
            words: vec![0; 1 + cap.div_ceil(TYPE_LEN)],
            cap,
        }
    }

    fn ptr(&mut self) -> *mut libc::c_void {
        self.words.as_mut_ptr().cast()
    }

    fn mtype(&self) -> libc::c_long {
        self.words[0]
    }

    fn text(&self) -> &[u8] {
        // SAFETY: words holds 1 + ceil(cap / TYPE_LEN) longs, so `cap` bytes follow the
        // first one inside the allocation, and u8 has no alignment or validity needs.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().add(1).cast::<u8>(), self.cap) }
    }

    fn text_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `text`, and `&mut self` makes this the only view.
        unsafe {
            std::slice::from_raw_parts_mut(self.words.as_mut_ptr().add(1).cast::<u8>(), self.cap)
        }
    }
}

fn stat(id: i32) -> std::result::Result<libc::msqid_ds, i32> {
    // SAFETY: msqid_ds is plain old data; all zero is a valid value.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: ds is a valid, writable msqid_ds.
    let rc = unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) };
    if rc < 0 {
        Err(errno())
    } else {
        Ok(ds)
    }
}

fn remove(id: i32) {
    // SAFETY: IPC_RMID takes no buffer.
    unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
}

/// Sends an empty message of type `mtype` without waiting. `Ok(false)`: queue full.
fn send_marker(id: i32, mtype: libc::c_long) -> std::result::Result<bool, i32> {
    let buf: [libc::c_long; 2] = [mtype, 0];
    loop {
        // SAFETY: buf is a valid msgbuf with 0 bytes of text.
        let rc = unsafe { libc::msgsnd(id, buf.as_ptr().cast(), 0, libc::IPC_NOWAIT) };
        if rc == 0 {
            return Ok(true);
        }
        match errno() {
            libc::EINTR => {}
            libc::EAGAIN => return Ok(false),
            e => return Err(e),
        }
    }
}

fn map_get_err(name: &str, e: i32) -> Error {
    match e {
        libc::EEXIST => Error::AlreadyExists { name: name.into() },
        libc::ENOENT => Error::NotFound {
            name: name.into(),
            key: SysvMsgq::key(name),
        },
        libc::EACCES | libc::EPERM => Error::PermissionDenied { name: name.into() },
        libc::ENOSPC | libc::ENOMEM => Error::NoSpace {
            name: name.into(),
            needed: 0,
            what: "System V message queues (kernel.msgmni)".into(),
        },
        e => Error::io("msgget", io::Error::from_raw_os_error(e)),
    }
}

fn create_queue(name: &str, cfg: &Config) -> Result<i32> {
    validate_name(name)?;
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | 0o600;
    // SAFETY: msgget takes plain integers.
    let id = unsafe { libc::msgget(SysvMsgq::key(name), flags) };
    if id < 0 {
        return Err(map_get_err(name, errno()));
    }
    // Hold at most `capacity` bytes (never less than one message); only lowering the
    // kernel's default needs no privilege.
    if let Ok(mut ds) = stat(id) {
        let want = cfg
            .capacity
            .max(cfg.max_message.min(SysvMsgq::max_size()))
            .max(1);
        if want < ds.msg_qbytes as usize {
            ds.msg_qbytes = want as _;
            // SAFETY: ds is the valid msqid_ds just read, with msg_qbytes lowered.
            unsafe { libc::msgctl(id, libc::IPC_SET, &mut ds) };
        }
    }
    Ok(id)
}

fn open_queue(name: &str) -> Result<i32> {
    validate_name(name)?;
    let start = Instant::now();
    loop {
        // SAFETY: msgget takes plain integers.
        let id = unsafe { libc::msgget(SysvMsgq::key(name), 0) };
        if id >= 0 {
            return Ok(id);
        }
        match errno() {
            libc::ENOENT if start.elapsed() < OPEN_WAIT => {
                std::thread::sleep(Duration::from_millis(1));
            }
            e => return Err(map_get_err(name, e)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Tx,
    Rx,
}

/// A thread that looks at the queue every [`WATCH_EVERY`] for a peer process that died
/// without dropping its end (see the module docs). Stopped and joined on drop.
#[derive(Debug)]
struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    fn spawn(id: i32, side: Side) -> Watchdog {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("shmlane-msgq-watch".into())
            .spawn(move || watch(id, side, stopped))
            .ok();
        Watchdog {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(id: i32, side: Side, stopped: mpsc::Receiver<()>) {
    loop {
        match stopped.recv_timeout(WATCH_EVERY) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let Ok(ds) = stat(id) else {
            return; // the queue is gone: nothing left to watch
        };
        match side {
            Side::Rx => {
                let pid = ds.msg_lspid;
                if pid > 0 && !process_alive(pid, 0) {
                    // The sender died without its end marker: leave it for it. A full
                    // queue is retried next time (the receiver is draining it).
                    match send_marker(id, MTYPE_EOF) {
                        Ok(false) => {}
                        _ => return,
                    }
                }
            }
            Side::Tx => {
                let pid = ds.msg_lrpid;
                if pid > 0 && !process_alive(pid, 0) {
                    // The receiver died: nobody will read or remove the queue; removing
                    // it wakes our blocked msgsnd with EIDRM.
                    remove(id);
                    return;
                }
            }
        }
    }
}

/// The sending end of a [`SysvMsgq`].
#[derive(Debug)]
pub struct SysvMsgqTx {
    id: i32,
    max_message: usize,
    limit: usize,
    buf: MsgBuf,
    creator: bool,
    watchdog: Option<Watchdog>,
}

/// The receiving end of a [`SysvMsgq`].
#[derive(Debug)]
pub struct SysvMsgqRx {
    id: i32,
    max_message: usize,
    buf: MsgBuf,
    eof: bool,
    watchdog: Option<Watchdog>,
}

impl SysvMsgqTx {
    fn new(id: i32, cfg: &Config, creator: bool) -> SysvMsgqTx {
        let limit = SysvMsgq::max_size();
        // Sets msg_lspid to this process at once (see the module docs). A full queue
        // at attach time only delays that until the first message.
        let _ = send_marker(id, MTYPE_HELLO);
        SysvMsgqTx {
            id,
            max_message: cfg.max_message,
            limit,
            buf: MsgBuf::new(cfg.max_message.min(limit)),
            creator,
            watchdog: Some(Watchdog::spawn(id, Side::Tx)),
        }
    }
}

impl SysvMsgqRx {
    fn new(id: i32, cfg: &Config) -> SysvMsgqRx {
        let cap = cfg.max_message.min(SysvMsgq::max_size());
        SysvMsgqRx {
            id,
            max_message: cap,
            buf: MsgBuf::new(cap),
            eof: false,
            watchdog: Some(Watchdog::spawn(id, Side::Rx)),
        }
    }
}

impl Drop for SysvMsgqTx {
    fn drop(&mut self) {
        drop(self.watchdog.take());
        // 1. The end marker. It is empty, so it only waits when the queue holds msgmnb
        //    messages; give up after LINGER or when the receiver is gone.
        let start = Instant::now();
        loop {
            match send_marker(self.id, MTYPE_EOF) {
                Ok(true) | Err(_) => break,
                Ok(false) => {
                    let receiver_dead = stat(self.id)
                        .map(|ds| ds.msg_lrpid > 0 && !process_alive(ds.msg_lrpid, 0))
                        .unwrap_or(true);
                    if receiver_dead || start.elapsed() > LINGER {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        if !self.creator {
            return;
        }
        // 2. The creator removes the queue, which destroys unread messages: first let the
        //    receiver drain it, while it makes progress and lives.
        let mut last_progress = Instant::now();
        let mut last_qnum = usize::MAX;
        while let Ok(ds) = stat(self.id) {
            let qnum = ds.msg_qnum as usize;
            if qnum == 0 || (ds.msg_lrpid > 0 && !process_alive(ds.msg_lrpid, 0)) {
                break;
            }
            if qnum < last_qnum {
                last_qnum = qnum;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > LINGER {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        remove(self.id);
    }
}

impl Drop for SysvMsgqRx {
    fn drop(&mut self) {
        drop(self.watchdog.take());
        // The receiver closing is the sender's disconnect signal: remove the queue.
        remove(self.id);
    }
}

impl TxEnd for SysvMsgqTx {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        if msg.len() > self.max_message {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: self.max_message,
            });
        }
        if msg.len() > self.limit {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: self.limit,
            });
        }
        self.buf.words[0] = MTYPE_DATA;
        self.buf.text_mut()[..msg.len()].copy_from_slice(msg);
        loop {
            // SAFETY: buf is a msgbuf with at least msg.len() bytes of text.
            let rc = unsafe { libc::msgsnd(self.id, self.buf.ptr(), msg.len(), 0) };
            if rc == 0 {
                return Ok(());
            }
            match errno() {
                libc::EINTR => {}
                e if is_gone(e) => return Err(Error::Disconnected),
                e => return Err(Error::io("msgsnd", io::Error::from_raw_os_error(e))),
            }
        }
    }
}

impl RxEnd for SysvMsgqRx {
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, f: F) -> Result<R> {
        if self.eof {
            return Err(Error::Disconnected);
        }
        loop {
            // SAFETY: buf is a msgbuf with `cap` bytes of text, the size passed.
            let n = unsafe { libc::msgrcv(self.id, self.buf.ptr(), self.buf.cap, 0, 0) };
            if n < 0 {
                match errno() {
                    libc::EINTR => continue,
                    e if is_gone(e) => {
                        self.eof = true;
                        return Err(Error::Disconnected);
                    }
                    libc::E2BIG => {
                        return Err(Error::corrupt(format!(
                            "a System V queue message is larger than max_message {}",
                            self.max_message
                        )))
                    }
                    e => return Err(Error::io("msgrcv", io::Error::from_raw_os_error(e))),
                }
            }
            let n = n as usize;
            match self.buf.mtype() {
                MTYPE_DATA if n <= self.max_message => return Ok(f(&self.buf.text()[..n])),
                MTYPE_DATA => {
                    return Err(Error::corrupt(format!(
                        "System V queue message of {n} bytes is over max_message {}",
                        self.max_message
                    )))
                }
                MTYPE_EOF => {
                    self.eof = true;
                    return Err(Error::Disconnected);
                }
                MTYPE_HELLO => {}
                t => {
                    return Err(Error::corrupt(format!(
                        "System V queue message with unknown mtype {t}"
                    )))
                }
            }
        }
    }
}

impl Transport for SysvMsgq {
    type Tx = SysvMsgqTx;
    type Rx = SysvMsgqRx;
    const NAME: &'static str = "sysv-msgq";

    fn create_tx(name: &str, cfg: &Config) -> Result<SysvMsgqTx> {
        Ok(SysvMsgqTx::new(create_queue(name, cfg)?, cfg, true))
    }

    fn create_rx(name: &str, cfg: &Config) -> Result<SysvMsgqRx> {
        Ok(SysvMsgqRx::new(create_queue(name, cfg)?, cfg))
    }

    fn open_tx(name: &str, cfg: &Config) -> Result<SysvMsgqTx> {
        Ok(SysvMsgqTx::new(open_queue(name)?, cfg, false))
    }

    fn open_rx(name: &str, cfg: &Config) -> Result<SysvMsgqRx> {
        Ok(SysvMsgqRx::new(open_queue(name)?, cfg))
    }

    /// Up to `kernel.msgmax` bytes (and `kernel.msgmnb`, the queue size).
    fn supports(size: usize) -> std::result::Result<(), String> {
        let limit = SysvMsgq::max_size();
        super::within_limit(size, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_differs_from_the_segment_key() {
        for name in ["/a", "/shmlane", "/x-y-z"] {
            assert_ne!(SysvMsgq::key(name), sysv_key(name));
            assert_ne!(SysvMsgq::key(name), libc::IPC_PRIVATE);
        }
    }

    /// The limit comes from the kernel's own settings, read here, not from the function
    /// under test; and a message of exactly that size really goes through a queue.
    #[test]
    fn sizes_over_the_machine_limit_are_refused_clearly() {
        let msgmax = crate::backend::test_util::proc_value("/proc/sys/kernel/msgmax");
        let msgmnb = crate::backend::test_util::proc_value("/proc/sys/kernel/msgmnb");
        assert_eq!(SysvMsgq::limits(), (msgmax, msgmnb));
        let limit = msgmax.min(msgmnb);
        crate::backend::test_util::limit_is_exact::<SysvMsgq>(limit, "sysvmsgq");
    }
}
