//! System V shared memory: `shmget` + `shmat` + `shmctl(IPC_STAT / IPC_RMID)`.

use std::io;
use std::ptr::NonNull;

use super::liveness::{sem, Tracker};
use super::{populate, sysv_key, Backing, Segment};
use crate::error::{Error, Result};

fn map_err(name: &str, op: &'static str, err: io::Error) -> Error {
    match err.raw_os_error() {
        Some(libc::ENOENT) => Error::NotFound {
            name: name.into(),
            key: sysv_key(name),
        },
        Some(libc::EEXIST) => Error::AlreadyExists { name: name.into() },
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied { name: name.into() },
        _ => Error::io(op, err),
    }
}

fn shmget(key: i32, len: usize, flags: i32) -> io::Result<i32> {
    // SAFETY: shmget takes plain integers.
    let id = unsafe { libc::shmget(key, len, flags) };
    if id < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(id)
    }
}

/// The size of segment `id`, from `IPC_STAT`.
pub(crate) fn stat(id: i32) -> io::Result<libc::shmid_ds> {
    // SAFETY: shmid_ds is plain old data; all zero is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: ds is a valid, writable shmid_ds.
    let rc = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ds)
    }
}

pub(super) fn exists(name: &str) -> Result<bool> {
    match shmget(sysv_key(name), 0, 0) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => Ok(true),
        Err(e) => Err(map_err(name, "shmget", e)),
    }
}

/// Attaches segment `id` (`len` bytes). `flags` is 0 or `SHM_RDONLY`; a `created`
/// segment is removed on drop.
fn attach(
    name: &str,
    id: i32,
    len: usize,
    flags: i32,
    created: bool,
    tracker: Tracker,
) -> Result<Segment> {
    let ptr = if len == 0 {
        NonNull::dangling()
    } else {
        // SAFETY: attaching a segment at an address the kernel picks; nothing is written
        // through a read-only one.
        let p = unsafe { libc::shmat(id, std::ptr::null(), flags) };
        if p as isize == -1 {
            return Err(map_err(name, "shmat", io::Error::last_os_error()));
        }
        NonNull::new(p.cast::<u8>()).ok_or_else(|| Error::io("shmat", io::ErrorKind::Other))?
    };
    Ok(Segment {
        ptr,
        len,
        name: name.into(),
        backing: Backing::SysV,
        sysv_id: id,
        remove_on_drop: created.into(),
        tracker,
        held_mask: Default::default(),
        look: None,
        #[cfg(loom)]
        heap: false,
    })
}

pub(super) fn create(name: &str, len: usize, mode: u32) -> Result<Segment> {
    let key = sysv_key(name);
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32;
    let id = shmget(key, len, flags).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::ENOMEM) | Some(libc::EINVAL) => Error::NoSpace {
            name: name.into(),
            needed: len as u64,
            what: "the System V limits (kernel.shmmax, kernel.shmall, kernel.shmmni) or memory"
                .into(),
        },
        _ => map_err(name, "shmget", e),
    })?;
    // The endpoints' liveness semaphores (see `liveness`); its id goes into the header.
    let sem_id = match sem::create(mode) {
        Ok(s) => s,
        Err(e) => {
            let _ = remove_id(name, id);
            return Err(match e.raw_os_error() {
                Some(libc::ENOSPC) => Error::NoSpace {
                    name: name.into(),
                    needed: len as u64,
                    what: "a System V semaphore set (kernel.sem: SEMMNI/SEMMNS)".into(),
                },
                _ => map_err(name, "semget", e),
            });
        }
    };
    let seg = match attach(name, id, len, 0, true, Tracker::Sem(sem_id)) {
        Ok(seg) => seg,
        Err(e) => {
            sem::remove(sem_id);
            let _ = remove_id(name, id);
            return Err(e);
        }
    };
    populate(seg.as_ptr(), len).map_err(|_| Error::NoSpace {
        name: name.into(),
        needed: len as u64,
        what: "memory for the System V segment".into(),
    })?;
    Ok(seg)
}

pub(super) fn open(name: &str) -> Result<Segment> {
    let id = shmget(sysv_key(name), 0, 0).map_err(|e| map_err(name, "shmget", e))?;
    let ds = stat(id).map_err(|e| map_err(name, "shmctl(IPC_STAT)", e))?;
    // The liveness set is adopted once the header has been validated.
    attach(name, id, ds.shm_segsz, 0, false, Tracker::None)
}

/// Whether segment `id` no longer exists (it was removed and the last process detached).
pub(super) fn gone(id: i32) -> bool {
    matches!(
        stat(id).map_err(|e| e.raw_os_error()),
        Err(Some(libc::EINVAL)) | Err(Some(libc::EIDRM))
    )
}

pub(super) fn remove_id(name: &str, id: i32) -> Result<()> {
    // SAFETY: IPC_RMID takes no buffer.
    let rc = unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        // Already removed (EINVAL / EIDRM): nothing left to do.
        if matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::EIDRM)) {
            return Ok(());
        }
        return Err(map_err(name, "shmctl(IPC_RMID)", err));
    }
    Ok(())
}

/// # Safety
/// `ptr` must be an address returned by `shmat`, not used after this call.
pub(super) unsafe fn detach(ptr: NonNull<u8>) {
    // SAFETY: guaranteed by the caller.
    let _ = unsafe { libc::shmdt(ptr.as_ptr().cast()) };
}

/// The shmid of the System V segment keyed by `name`.
pub(super) fn id_of(name: &str) -> Result<i32> {
    shmget(sysv_key(name), 0, 0).map_err(|e| map_err(name, "shmget", e))
}

/// Attaches System V segment `id` read-only (`SHM_RDONLY`), whatever its key; `name` is only
/// what the returned [`Segment`] reports.
pub(super) fn attach_readonly(name: &str, id: i32) -> Result<Segment> {
    let ds = stat(id).map_err(|e| map_err(name, "shmctl(IPC_STAT)", e))?;
    attach(
        name,
        id,
        ds.shm_segsz,
        libc::SHM_RDONLY,
        false,
        Tracker::None,
    )
}
