//! POSIX shared memory: `shm_open` + `ftruncate` + `fallocate` + `mmap`.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, OFlag};
use nix::sys::mman::{self, MapFlags, ProtFlags};
use nix::sys::stat::{fchmod, fstat, Mode};

use super::liveness::Tracker;
use super::{populate, Backing, Segment};
use crate::error::{Error, Result};

fn map_errno(name: &str, op: &'static str, e: Errno) -> Error {
    match e {
        Errno::ENOENT => Error::NotFound {
            name: name.into(),
            key: super::sysv_key(name),
        },
        Errno::EEXIST => Error::AlreadyExists { name: name.into() },
        Errno::EACCES | Errno::EPERM => Error::PermissionDenied { name: name.into() },
        Errno::ENAMETOOLONG | Errno::EINVAL => Error::InvalidName {
            name: name.into(),
            reason: "the system refused it as a shared-memory name",
        },
        e => Error::io(op, std::io::Error::from(e)),
    }
}

pub(super) fn exists(name: &str) -> Result<bool> {
    match mman::shm_open(name, OFlag::O_RDONLY, Mode::empty()) {
        Ok(_) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        // It exists, we just may not read it.
        Err(Errno::EACCES) => Ok(true),
        Err(e) => Err(map_errno(name, "shm_open", e)),
    }
}

pub(super) fn create(name: &str, len: usize, mode: u32) -> Result<Segment> {
    let fd = mman::shm_open(
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|e| map_errno(name, "shm_open", e))?;
    match size_and_map(name, fd, len, mode) {
        Ok(seg) => Ok(seg),
        Err(e) => {
            let _ = mman::shm_unlink(name);
            Err(e)
        }
    }
}

fn no_space(name: &str, len: usize) -> Error {
    Error::NoSpace {
        name: name.into(),
        needed: len as u64,
        what: format!("/dev/shm has {} bytes free", dev_shm_free().unwrap_or(0)),
    }
}

/// Free bytes in `/dev/shm`, if it can be asked.
pub(crate) fn dev_shm_free() -> Option<u64> {
    nix::sys::statvfs::statvfs("/dev/shm")
        .ok()
        .map(|s| s.blocks_available() * s.fragment_size())
}

fn size_and_map(name: &str, fd: OwnedFd, len: usize, mode: u32) -> Result<Segment> {
    // shm_open's mode is filtered by the umask; the caller asked for exactly `mode`.
    fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode))
        .map_err(|e| map_errno(name, "fchmod", e))?;
    let off = libc::off_t::try_from(len).map_err(|_| no_space(name, len))?;
    nix::unistd::ftruncate(fd.as_fd(), off).map_err(|e| match e {
        Errno::EFBIG | Errno::ENOSPC | Errno::EINVAL => no_space(name, len),
        e => map_errno(name, "ftruncate", e),
    })?;
    // Reserve the tmpfs pages now, so a full /dev/shm fails here and not with SIGBUS later.
    match nix::fcntl::fallocate(fd.as_raw_fd(), FallocateFlags::empty(), 0, off) {
        Ok(()) | Err(Errno::EOPNOTSUPP) => {}
        Err(Errno::ENOSPC) | Err(Errno::EFBIG) => return Err(no_space(name, len)),
        Err(e) => return Err(map_errno(name, "fallocate", e)),
    }
    let seg = map(name, fd, len, true)?;
    populate(seg.as_ptr(), len).map_err(|_| no_space(name, len))?;
    Ok(seg)
}

/// Maps `fd` and keeps it open in the returned segment: its open file description carries
/// the endpoints' liveness locks (see `liveness`). Read and write; a `created` segment is
/// removed by name on drop.
fn map(name: &str, fd: OwnedFd, len: usize, created: bool) -> Result<Segment> {
    let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    let ptr = match NonZeroUsize::new(len) {
        None => NonNull::dangling(),
        Some(nz) => {
            // SAFETY: a fresh shared mapping of a file we hold open; nothing else in this
            // process refers to that address range yet.
            let p = unsafe { mman::mmap(None, nz, prot, MapFlags::MAP_SHARED, &fd, 0) }.map_err(
                |e| match e {
                    Errno::ENOMEM => no_space(name, len),
                    e => map_errno(name, "mmap", e),
                },
            )?;
            p.cast()
        }
    };
    Ok(Segment {
        ptr,
        len,
        name: name.into(),
        backing: Backing::Posix,
        sysv_id: -1,
        remove_on_drop: created.into(),
        tracker: Tracker::Ofd(fd),
        held_mask: Default::default(),
        look: None,
        #[cfg(loom)]
        heap: false,
    })
}

pub(super) fn open(name: &str) -> Result<Segment> {
    let fd = mman::shm_open(name, OFlag::O_RDWR, Mode::empty())
        .map_err(|e| map_errno(name, "shm_open", e))?;
    let st = fstat(fd.as_raw_fd()).map_err(|e| map_errno(name, "fstat", e))?;
    let len = usize::try_from(st.st_size).map_err(|_| Error::corrupt("negative file size"))?;
    map(name, fd, len, false)
}

pub(super) fn remove(name: &str) -> Result<()> {
    mman::shm_unlink(name).map_err(|e| map_errno(name, "shm_unlink", e))
}

/// Removes `name` only if it still names the file `fd` is open on: after an operator's
/// `shmlane rm` and a new segment made under the same name, a creator that leaves must not
/// remove the newcomer. (Between the check and the unlink another `rm` + create could
/// still slip in; nothing in POSIX shared memory closes that window.)
pub(super) fn remove_if_same(name: &str, fd: &OwnedFd) -> Result<()> {
    let ours = fstat(fd.as_raw_fd()).map_err(|e| map_errno(name, "fstat", e))?;
    let now = match mman::shm_open(name, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty()) {
        Ok(other) => fstat(other.as_raw_fd()).map_err(|e| map_errno(name, "fstat", e))?,
        Err(Errno::EACCES) => return Ok(()), // Not ours to remove: we could open ours.
        Err(e) => return Err(map_errno(name, "shm_open", e)),
    };
    if (now.st_dev, now.st_ino) != (ours.st_dev, ours.st_ino) {
        return Ok(());
    }
    remove(name)
}

/// # Safety
/// `ptr`/`len` must be a live mapping made by [`map`], not used after this call.
pub(super) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: guaranteed by the caller.
    let _ = unsafe { mman::munmap(ptr.cast(), len) };
}

/// Opens an existing POSIX segment read-only (`O_RDONLY | O_NONBLOCK`, `PROT_READ`), for
/// looking at it without changing it. Anything but a regular file is refused.
pub(super) fn open_readonly(name: &str) -> Result<Segment> {
    let fd = mman::shm_open(name, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty())
        .map_err(|e| map_errno(name, "shm_open", e))?;
    let st = fstat(fd.as_raw_fd()).map_err(|e| map_errno(name, "fstat", e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Error::NotShmlane { name: name.into() });
    }
    let len = usize::try_from(st.st_size).map_err(|_| Error::corrupt("negative file size"))?;
    // Not mapped: a look reads a copy of the header, and the file past it, so a file its
    // owner shrinks meanwhile cannot make this process fault (see `Segment::look`).
    let mut copy = vec![0u8; len.min(super::header::HEADER_SIZE)];
    let mut got = 0;
    while got < copy.len() {
        match nix::sys::uio::pread(&fd, &mut copy[got..], got as i64) {
            Ok(0) => break, // shrunk since fstat: the copy is what is left
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(map_errno(name, "pread", e)),
        }
    }
    copy.truncate(got);
    Ok(Segment {
        ptr: NonNull::dangling(),
        len,
        name: name.into(),
        backing: Backing::Posix,
        sysv_id: -1,
        remove_on_drop: false.into(),
        tracker: Tracker::Ofd(fd),
        held_mask: Default::default(),
        look: Some(copy.into_boxed_slice()),
        #[cfg(loom)]
        heap: false,
    })
}
