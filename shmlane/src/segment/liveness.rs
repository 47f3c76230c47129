//! Endpoint liveness that the kernel keeps: "does the process holding registry entry `i`
//! still exist?" answered without pids, `/proc` or start times.
//!
//! - **POSIX segments**: every endpoint keeps the segment's file open (its own open file
//!   description, `O_CLOEXEC`) and holds an OFD write lock (`fcntl(F_OFD_SETLK)`) on byte
//!   [`LOCK_BASE`]` + i` of it for its whole life. The kernel drops the lock when the last
//!   descriptor of that open file description is closed, which happens when the process
//!   dies, however it dies (zombies included: files are closed before the exit status is
//!   kept), in whatever PID namespace or user it runs. A peer asks with `F_OFD_GETLK`: one
//!   system call. Taking the lock is also what makes a role exclusive: a second endpoint
//!   cannot take an entry whose lock a live one holds.
//! - **System V segments** have no file. The creator makes a private System V semaphore
//!   set with one semaphore per registry entry (plus a marker) and stores its id in the
//!   header; an endpoint takes entry `i` by one atomic `semop` ("wait for zero, then add
//!   one", both `IPC_NOWAIT`, the add with `SEM_UNDO`), so the kernel takes the one away
//!   again when the process exits. A peer reads the value (`GETVAL`).
//! - **Heap segments** (the loom models) keep a flag per entry in the process.
//!
//! Ordering: the kernel serialises lock (or semaphore) operations on one file (set) under
//! its own lock, so an endpoint's stores before it lets go of its entry happen before
//! whatever a peer reads after it saw the entry free. `Mapped::close_entry` relies on it:
//! it writes `EP_CLOSED` first, so a peer that finds the entry free and reads the word
//! again can tell a clean close from a death. The loom model's flags are atomics with
//! Release/Acquire for the same reason (loom found the race when they were not).
//!
//! Caveats that follow from the kernel's rules, documented for users: a child made by
//! `fork` without `exec` shares its parent's open file descriptions, so on a POSIX segment
//! it keeps its parent's endpoints alive while it lives (System V undo entries are not
//! inherited: there the child holds nothing). A query about an entry made through the
//! same open file description that holds its lock cannot see that lock; the library never
//! asks about its own entries.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::header::MAX_ENDPOINTS;

/// The byte offset of entry 0's lock (OFD locks are advisory and may lie anywhere, even
/// past the end of the file; they never affect reads or writes).
pub const LOCK_BASE: i64 = 0;

/// Semaphores in a System V liveness set: one per registry entry, then the marker.
pub const SEM_COUNT: usize = MAX_ENDPOINTS + 1;
/// The marker semaphore's index.
pub const SEM_MARK_INDEX: usize = MAX_ENDPOINTS;
/// The marker semaphore's value ("SH"; semaphore values stop at 32767).
pub const SEM_MARK: i32 = 0x5348;

/// Whether another endpoint holds an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// A live process holds it.
    Yes,
    /// Nobody holds it: its last holder closed or died.
    No,
    /// The kernel could not be asked (no tracker, or the question failed). Callers treat
    /// this as alive: a live peer must never be taken for dead.
    Unknown,
}

/// How a segment asks the kernel about its endpoints.
pub(crate) enum Tracker {
    /// A POSIX segment's own open file description.
    Ofd(OwnedFd),
    /// A System V segment's liveness semaphore set.
    Sem(i32),
    /// Under loom: flags in the process, loom atomics, so that a release (Release store)
    /// synchronises with a later question (Acquire load) as the kernel's own lock does.
    #[cfg(loom)]
    Model(Box<[crate::sync::AtomicU32]>),
    /// Nothing to ask (a read-only look whose semaphore set could not be found).
    None,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tracker::Ofd(fd) => write!(f, "Ofd({})", fd.as_raw_fd()),
            Tracker::Sem(id) => write!(f, "Sem({id})"),
            #[cfg(loom)]
            Tracker::Model(_) => f.write_str("Model"),
            Tracker::None => f.write_str("None"),
        }
    }
}

fn ofd_lock(
    fd: &OwnedFd,
    cmd: libc::c_int,
    kind: libc::c_int,
    i: usize,
) -> io::Result<libc::flock> {
    // SAFETY: flock is plain old data; all zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = LOCK_BASE + i as i64;
    fl.l_len = 1;
    fl.l_pid = 0; // required by OFD locks
    loop {
        // SAFETY: fd is an open descriptor we own; fl is a valid, writable flock.
        let rc = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &mut fl) };
        if rc == 0 {
            return Ok(fl);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

fn semop(id: i32, ops: &mut [libc::sembuf]) -> io::Result<()> {
    loop {
        // SAFETY: ops is a valid array of sembuf of the given length.
        let rc = unsafe { libc::semop(id, ops.as_mut_ptr(), ops.len()) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// `semctl(id, num, cmd)` for the commands that take no argument (`GETVAL`, `IPC_RMID`).
fn semctl0(id: i32, num: usize, cmd: libc::c_int) -> io::Result<i32> {
    // SAFETY: GETVAL and IPC_RMID take no fourth argument.
    let rc = unsafe { libc::semctl(id, num as libc::c_int, cmd) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

const SEM_UNDO: libc::c_short = 0x1000;

impl Tracker {
    /// Under loom: a tracker of process-local flags.
    #[cfg(loom)]
    pub(crate) fn model() -> Tracker {
        Tracker::Model(
            (0..MAX_ENDPOINTS)
                .map(|_| crate::sync::AtomicU32::new(0))
                .collect(),
        )
    }

    /// Takes entry `i` for this endpoint. `Ok(false)`: a live endpoint holds it.
    pub(crate) fn hold(&self, i: usize) -> io::Result<bool> {
        debug_assert!(i < MAX_ENDPOINTS);
        match self {
            Tracker::Ofd(fd) => match ofd_lock(fd, libc::F_OFD_SETLK, libc::F_WRLCK, i) {
                Ok(_) => Ok(true),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => {
                    Ok(false)
                }
                Err(e) => Err(e),
            },
            Tracker::Sem(id) => {
                let mut ops = [
                    libc::sembuf {
                        sem_num: i as libc::c_ushort,
                        sem_op: 0,
                        sem_flg: libc::IPC_NOWAIT as libc::c_short,
                    },
                    libc::sembuf {
                        sem_num: i as libc::c_ushort,
                        sem_op: 1,
                        sem_flg: libc::IPC_NOWAIT as libc::c_short | SEM_UNDO,
                    },
                ];
                match semop(*id, &mut ops) {
                    Ok(()) => Ok(true),
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            #[cfg(loom)]
            Tracker::Model(flags) => Ok(flags[i].swap(1, crate::sync::Ordering::AcqRel) == 0),
            Tracker::None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this segment handle cannot take registry entries",
            )),
        }
    }

    /// Gives entry `i` back (a clean close). Only call it for an entry this tracker holds.
    pub(crate) fn release(&self, i: usize) {
        match self {
            Tracker::Ofd(fd) => {
                let _ = ofd_lock(fd, libc::F_OFD_SETLK, libc::F_UNLCK, i);
            }
            Tracker::Sem(id) => {
                let mut ops = [libc::sembuf {
                    sem_num: i as libc::c_ushort,
                    sem_op: -1,
                    sem_flg: libc::IPC_NOWAIT as libc::c_short | SEM_UNDO,
                }];
                let _ = semop(*id, &mut ops);
            }
            #[cfg(loom)]
            Tracker::Model(flags) => flags[i].store(0, crate::sync::Ordering::Release),
            Tracker::None => {}
        }
    }

    /// Whether a live endpoint (other than one holding it through this very tracker, for
    /// POSIX segments) holds entry `i`.
    pub(crate) fn held(&self, i: usize) -> Held {
        if i >= MAX_ENDPOINTS {
            return Held::Unknown;
        }
        match self {
            Tracker::Ofd(fd) => match ofd_lock(fd, libc::F_OFD_GETLK, libc::F_WRLCK, i) {
                Ok(fl) if fl.l_type == libc::F_UNLCK as libc::c_short => Held::No,
                Ok(_) => Held::Yes,
                Err(_) => Held::Unknown,
            },
            Tracker::Sem(id) => match semctl0(*id, i, libc::GETVAL) {
                Ok(0) => Held::No,
                Ok(_) => Held::Yes,
                Err(_) => Held::Unknown,
            },
            #[cfg(loom)]
            Tracker::Model(flags) => {
                if flags[i].load(crate::sync::Ordering::Acquire) != 0 {
                    Held::Yes
                } else {
                    Held::No
                }
            }
            Tracker::None => Held::Unknown,
        }
    }
}

/// System V liveness sets: made with the segment, found through the id in its header.
pub(crate) mod sem {
    use super::*;

    /// Makes a private semaphore set for a new System V segment (`mode` as the segment's)
    /// and sets its marker. Returns its id.
    pub(crate) fn create(mode: u32) -> io::Result<i32> {
        // SAFETY: semget takes plain integers.
        let id = unsafe {
            libc::semget(
                libc::IPC_PRIVATE,
                SEM_COUNT as libc::c_int,
                libc::IPC_CREAT | (mode & 0o777) as libc::c_int,
            )
        };
        if id < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: SETVAL takes an int as its fourth argument.
        let rc = unsafe { libc::semctl(id, SEM_MARK_INDEX as libc::c_int, libc::SETVAL, SEM_MARK) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            remove(id);
            return Err(err);
        }
        Ok(id)
    }

    /// Checks that `id` (read from an untrusted header) is a liveness set: the right
    /// number of semaphores and the marker. `Err` with `EINVAL`/`EIDRM` when it is gone.
    pub(crate) fn check(id: i32) -> io::Result<bool> {
        if id < 0 {
            return Ok(false);
        }
        // SAFETY: semid_ds is plain old data; all zero is valid.
        let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT writes a semid_ds through the pointer we pass.
        let rc = unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if ds.sem_nsems as usize != SEM_COUNT {
            return Ok(false);
        }
        Ok(semctl0(id, SEM_MARK_INDEX, libc::GETVAL)? == SEM_MARK)
    }

    /// Removes a set (one already gone is fine).
    pub(crate) fn remove(id: i32) {
        let _ = semctl0(id, 0, libc::IPC_RMID);
    }
}
