//! A named, mapped region of shared memory: POSIX (`shm_open`) or System V (`shmget`).
//!
//! A [`Segment`] knows nothing of what is inside it; `layout` checks the header. The same
//! name works with both backings: a System V segment is keyed by [`sysv_key`] of the name,
//! and shmlane stores the name in its header so that a key collision is caught on open.

pub mod header;
pub mod layout;
pub(crate) mod liveness;
mod posix;
mod sysv;
pub mod validate;

use std::ptr::NonNull;
#[allow(clippy::disallowed_types)] // a handle's own flags, not shared state
use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};

pub use liveness::Held;
use liveness::Tracker;

use crate::error::{Error, Result};

/// Where a segment lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backing {
    /// `shm_open` + `mmap`: a file under `/dev/shm` (the default).
    #[default]
    Posix,
    /// `shmget` + `shmat`: a System V segment keyed by a hash of the name (see `ipcs -m`).
    SysV,
}

impl std::fmt::Display for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backing::Posix => "posix",
            Backing::SysV => "sysv",
        })
    }
}

/// The longest segment name, including the leading `/`.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a segment name: `/name`, no further `/`, no NUL, at most `MAX_NAME_LEN` (255) bytes.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("the name is empty; names look like \"/mychannel\"")
    } else if !name.starts_with('/') {
        Some("the name must start with '/', like \"/mychannel\"")
    } else if name.len() == 1 {
        Some("the name needs at least one character after '/'")
    } else if name[1..].contains('/') {
        Some("the name may not contain '/' after the first character")
    } else if name.contains('\0') {
        Some("the name may not contain a NUL byte")
    } else if name.len() > MAX_NAME_LEN {
        Some("the name is longer than 255 bytes")
    } else if name == "/." || name == "/.." {
        Some("\".\" and \"..\" are not names")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The System V IPC key shmlane derives from a name (FNV-1a, never `IPC_PRIVATE`).
pub fn sysv_key(name: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let key = h as i32;
    if key == libc::IPC_PRIVATE {
        1
    } else {
        key
    }
}

/// A mapped shared-memory segment. Unmapped on drop, and removed by name if it was
/// created here and not told to persist.
#[allow(clippy::disallowed_types)] // `remove_on_drop`, `held_mask`: this handle's own
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
    name: String,
    backing: Backing,
    sysv_id: i32,
    remove_on_drop: std::sync::atomic::AtomicBool,
    /// How this handle asks the kernel whether registry entries are held (see
    /// [`liveness`]).
    tracker: Tracker,
    /// Registry entries this handle holds (bit `i`), given back on drop.
    held_mask: StdAtomicU64,
    /// A read-only look at a POSIX segment ([`Segment::open_posix_readonly`]): a copy of
    /// its first bytes (up to the header's size), read with `pread` when it was opened.
    /// Such a segment is never mapped (`as_ptr` is dangling): the `load_*` calls read the
    /// copy, and the file itself (`pread`) past it, so a file shrunk by its owner while
    /// it is being looked at gives short reads (`None`), never a `SIGBUS`.
    look: Option<Box<[u8]>>,
    /// Under loom: heap memory holding a loom `Header`, freed on drop.
    #[cfg(loom)]
    heap: bool,
}

// SAFETY: a Segment is a pointer to a process-wide mapping plus plain data; the mapping
// stays valid until drop, whichever thread drops it.
unsafe impl Send for Segment {}
// SAFETY: the Segment itself only hands out the raw pointer; synchronising access to the
// memory is the job of the code that uses it (atomics in the ring).
unsafe impl Sync for Segment {}

impl Segment {
    /// Under loom: zeroed heap memory standing in for a segment.
    #[cfg(loom)]
    #[allow(clippy::disallowed_types)] // `held_mask`: this handle's own
    pub(crate) fn heap_for_model(name: &str, len: usize) -> Segment {
        let layout = std::alloc::Layout::from_size_align(len, header::HEADER_SIZE).expect("layout");
        // SAFETY: len > 0 (at least a header).
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        Segment {
            ptr: NonNull::new(p).expect("allocation"),
            len,
            name: name.into(),
            backing: Backing::Posix,
            sysv_id: -1,
            remove_on_drop: Default::default(),
            tracker: Tracker::model(),
            held_mask: StdAtomicU64::new(0),
            look: None,
            heap: true,
        }
    }

    /// Creates a new segment of `len` bytes, exclusively: an existing name (under either
    /// backing) is [`Error::AlreadyExists`]. Pages are reserved, so a full `/dev/shm` is
    /// [`Error::NoSpace`] here rather than a SIGBUS later. The new memory is zeroed.
    pub fn create(name: &str, len: usize, backing: Backing, mode: u32) -> Result<Segment> {
        validate_name(name)?;
        if len == 0 {
            return Err(Error::InvalidOptions {
                reason: "a segment cannot be empty".into(),
            });
        }
        // Refuse a name that exists under the other backing too: `open` would find the
        // POSIX one first and silently shadow the other.
        match backing {
            Backing::Posix => {
                if sysv::exists(name)? {
                    return Err(Error::AlreadyExists { name: name.into() });
                }
                posix::create(name, len, mode)
            }
            Backing::SysV => {
                if posix::exists(name)? {
                    return Err(Error::AlreadyExists { name: name.into() });
                }
                sysv::create(name, len, mode)
            }
        }
    }

    /// Opens an existing segment by name: POSIX first, then the System V key derived from
    /// the name. The whole segment is mapped, whatever its size (possibly 0 bytes while its
    /// creator is still sizing it).
    pub fn open(name: &str) -> Result<Segment> {
        validate_name(name)?;
        match posix::open(name) {
            Err(Error::NotFound { .. }) => sysv::open(name),
            other => other,
        }
    }

    /// Removes a segment by name, whichever backing holds it. Processes that have it mapped
    /// keep their mapping.
    pub fn remove(name: &str) -> Result<()> {
        validate_name(name)?;
        match posix::remove(name) {
            Err(Error::NotFound { .. }) => {
                let id = sysv::id_of(name)?;
                remove_sysv(name, id)
            }
            other => other,
        }
    }

    /// Fills in this process's page tables for the first `len` bytes of an opened segment
    /// (all of it if it is shorter), so that the first
    /// message through each page does not take a page fault: the opener of a 4 MiB ring
    /// would otherwise fault once every 4 KiB, which showed as a ~1 µs one-way latency on
    /// one message in 57 (64-byte messages). Call it only once the segment is known to be
    /// ours (validated), and with the length its header says it has: on a sparse file
    /// (or the sparse tail of a file grown after creation) it would allocate the holes,
    /// filling `/dev/shm` and charging the pages to this process. Best effort: a
    /// kernel without `MADV_POPULATE_WRITE`, or a failure, leaves the faults to happen on
    /// first use (and so does a read-only mapping). Creating a segment populates it already.
    pub fn prefault(&self, len: usize) {
        let len = len.min(self.len());
        if len > 0 {
            let _ = populate(self.as_ptr(), len);
        }
    }

    /// Removes this segment's name now (the mapping stays valid).
    pub fn remove_name(&mut self) -> Result<()> {
        self.unlink()
    }

    /// Removes this segment's name now, like [`remove_name`](Self::remove_name), from a
    /// shared handle.
    pub(crate) fn unlink(&self) -> Result<()> {
        self.remove_on_drop.store(false, StdOrdering::Relaxed);
        match (self.backing, &self.tracker) {
            // Only the file we have open: the name may have been removed and reused.
            (Backing::Posix, Tracker::Ofd(fd)) => posix::remove_if_same(&self.name, fd),
            (Backing::Posix, _) => posix::remove(&self.name),
            // A System V id never names another segment while we are attached to it.
            (Backing::SysV, _) => sysv::remove_id(&self.name, self.sysv_id),
        }
    }

    /// Takes registry entry `i` (`i < MAX_ENDPOINTS`) for an endpoint of this handle, so
    /// that the kernel can tell peers whether it lives (see [`liveness`]). `Ok(false)`: a
    /// live endpoint holds it.
    pub(crate) fn hold(&self, i: usize) -> Result<bool> {
        let took = self
            .tracker
            .hold(i)
            .map_err(|e| Error::io("taking a registry entry", e))?;
        if took {
            self.held_mask.fetch_or(1 << i, StdOrdering::AcqRel);
        }
        Ok(took)
    }

    /// Gives back registry entry `i`, taken with [`hold`](Self::hold).
    pub(crate) fn release(&self, i: usize) {
        if self.held_mask.fetch_and(!(1 << i), StdOrdering::AcqRel) & (1 << i) != 0 {
            self.tracker.release(i);
        }
    }

    /// Whether a live endpoint holds registry entry `i` (one system call). An entry held
    /// through this very handle is not seen on a POSIX segment; callers ask about peers.
    pub fn held(&self, i: usize) -> Held {
        self.tracker.held(i)
    }

    /// The id of a System V segment's liveness semaphore set, if this handle has one.
    pub(crate) fn sem_id(&self) -> Option<i32> {
        match self.tracker {
            Tracker::Sem(id) => Some(id),
            _ => None,
        }
    }

    /// Adopts the liveness semaphore set `id` named by a System V segment's header, after
    /// checking that it is one. `Ok(false)`: `id` names no liveness set (a foreign or
    /// corrupt header); `Err` with `EINVAL`/`EIDRM`: the set is gone (the segment was
    /// removed and its last user left).
    pub(crate) fn adopt_sem(&mut self, id: i32) -> std::io::Result<bool> {
        if self.backing != Backing::SysV {
            return Ok(false);
        }
        if !liveness::sem::check(id)? {
            return Ok(false);
        }
        self.tracker = Tracker::Sem(id);
        Ok(true)
    }

    /// Whether the name is removed when this handle drops.
    pub fn set_remove_on_drop(&mut self, remove: bool) {
        self.remove_on_drop.store(remove, StdOrdering::Relaxed);
    }

    /// Whether the name is removed when this handle drops.
    pub fn removes_on_drop(&self) -> bool {
        self.remove_on_drop.load(StdOrdering::Relaxed)
    }

    /// Keeps the name when this handle drops (a creator handing the name over).
    pub(crate) fn keep_name(&self) {
        self.remove_on_drop.store(false, StdOrdering::Relaxed);
    }

    /// The mapped length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (a segment whose creator has not sized it yet).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start of the mapping (page aligned). Dangling when the mapping is empty, and
    /// for a read-only look at a POSIX segment, which is not mapped (read it with the
    /// `load_*` calls).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backing.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// The System V shmid, or -1 for a POSIX segment.
    pub fn sysv_id(&self) -> i32 {
        self.sysv_id
    }
}

/// Looking at segments without changing them: what `shmlane ls`, `inspect`, `rm` and
/// `clean` use. A read-only segment is never removed on drop, and nothing may be written
/// through its [`as_ptr`](Segment::as_ptr) (the pages are mapped read-only: a write faults).
impl Segment {
    /// Opens the POSIX segment `name` read-only (`O_RDONLY`, `PROT_READ`). Anything but a
    /// regular file (a FIFO, a directory) is [`Error::NotShmlane`].
    pub fn open_posix_readonly(name: &str) -> Result<Segment> {
        validate_name(name)?;
        posix::open_readonly(name)
    }

    /// Attaches the System V segment keyed by [`sysv_key`]`(name)` read-only (`SHM_RDONLY`).
    pub fn open_sysv_readonly(name: &str) -> Result<Segment> {
        validate_name(name)?;
        let id = sysv::id_of(name)?;
        sysv::attach_readonly(name, id)
    }

    /// Attaches System V segment `id` (a shmid, as in `ipcs -m` or `/proc/sysvipc/shm`)
    /// read-only, whatever its key. The returned segment's name is `shmid:<id>`.
    pub fn open_sysv_id_readonly(id: i32) -> Result<Segment> {
        sysv::attach_readonly(&format!("shmid:{id}"), id)
    }

    /// The shmid of the System V segment keyed by [`sysv_key`]`(name)`.
    pub fn sysv_id_of(name: &str) -> Result<i32> {
        validate_name(name)?;
        sysv::id_of(name)
    }

    /// Removes the POSIX segment `name` only (never a System V segment of that name).
    pub fn remove_posix(name: &str) -> Result<()> {
        validate_name(name)?;
        posix::remove(name)
    }

    /// Removes System V segment `id` (`IPC_RMID`); one already removed is not an error.
    pub fn remove_sysv_id(id: i32) -> Result<()> {
        remove_sysv(&format!("shmid:{id}"), id)
    }

    /// A relaxed atomic load of the `u64` at byte `offset`, or `None` if it does not lie
    /// wholly inside the mapping or is not 8-aligned.
    #[allow(clippy::disallowed_types)] // a look at possibly read-only memory, never a model
    pub fn load_u64(&self, offset: usize) -> Option<u64> {
        if offset % 8 != 0 || offset.checked_add(8)? > self.len {
            return None;
        }
        if self.look.is_some() {
            return self.look_at(offset).map(u64::from_ne_bytes);
        }
        // SAFETY: the 8 bytes lie inside the live mapping and are 8-aligned (the mapping is
        // page aligned); an AtomicU64 is valid for any bytes. A relaxed load of at most 8
        // bytes is allowed on read-only memory on 64-bit targets (std::sync::atomic docs).
        let a = unsafe { &*(self.ptr.as_ptr().add(offset) as *const std::sync::atomic::AtomicU64) };
        Some(a.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// A relaxed atomic load of the `u32` at byte `offset`, or `None` if it does not lie
    /// wholly inside the mapping or is not 4-aligned.
    #[allow(clippy::disallowed_types)] // as load_u64
    pub fn load_u32(&self, offset: usize) -> Option<u32> {
        if offset % 4 != 0 || offset.checked_add(4)? > self.len {
            return None;
        }
        if self.look.is_some() {
            return self.look_at(offset).map(u32::from_ne_bytes);
        }
        // SAFETY: as in load_u64, for 4 bytes, 4-aligned.
        let a = unsafe { &*(self.ptr.as_ptr().add(offset) as *const std::sync::atomic::AtomicU32) };
        Some(a.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// A relaxed atomic load of the byte at `offset`, or `None` outside the mapping.
    #[allow(clippy::disallowed_types)] // as load_u64
    pub fn load_u8(&self, offset: usize) -> Option<u8> {
        if offset >= self.len {
            return None;
        }
        if self.look.is_some() {
            return self.look_at(offset).map(u8::from_ne_bytes);
        }
        // SAFETY: as in load_u64, for one byte.
        let a = unsafe { &*(self.ptr.as_ptr().add(offset) as *const std::sync::atomic::AtomicU8) };
        Some(a.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Segment {
    /// `N` bytes at `offset` of a read-only look: from the copy if it holds them, else
    /// from the file as it is now (`None` if the file no longer has them).
    fn look_at<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let copy = self.look.as_deref()?;
        if let Some(b) = copy.get(offset..offset.checked_add(N)?) {
            return b.try_into().ok();
        }
        let Tracker::Ofd(fd) = &self.tracker else {
            return None;
        };
        let mut buf = [0u8; N];
        let n = nix::sys::uio::pread(fd, &mut buf, i64::try_from(offset).ok()?).ok()?;
        (n == N).then_some(buf)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        #[cfg(loom)]
        if self.heap {
            let layout =
                std::alloc::Layout::from_size_align(self.len, header::HEADER_SIZE).expect("layout");
            // SAFETY: a heap segment starts with a Header written by Mapped::model and was
            // allocated with this layout in heap_for_model; both are dropped once, here.
            unsafe {
                std::ptr::drop_in_place(self.ptr.as_ptr() as *mut header::Header);
                std::alloc::dealloc(self.ptr.as_ptr(), layout);
            }
            return;
        }
        // Entries an endpoint did not give back (a clean close always does): the kernel
        // would drop OFD locks with the descriptor anyway, but not a semaphore's undo.
        let mut held = self.held_mask.swap(0, StdOrdering::AcqRel);
        while held != 0 {
            let i = held.trailing_zeros() as usize;
            self.tracker.release(i);
            held &= held - 1;
        }
        if self.removes_on_drop() {
            let _ = self.unlink();
        }
        if self.len > 0 && self.look.is_none() {
            match self.backing {
                // SAFETY: ptr/len are the mapping made in posix::map, unmapped once here.
                Backing::Posix => unsafe { posix::unmap(self.ptr, self.len) },
                // SAFETY: ptr is the address returned by shmat, detached once here.
                Backing::SysV => unsafe { sysv::detach(self.ptr) },
            }
        }
        // The last process to leave a removed System V segment removes its liveness set
        // (earlier, the endpoints still attached would lose their liveness answers).
        if let (Backing::SysV, Tracker::Sem(sem)) = (self.backing, &self.tracker) {
            if sysv::gone(self.sysv_id) {
                liveness::sem::remove(*sem);
            }
        }
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("backing", &self.backing)
            .field("len", &self.len)
            .finish()
    }
}

/// Removes System V segment `id` and, if nobody is attached to it any more, its liveness
/// semaphore set (otherwise the last process to detach removes it).
fn remove_sysv(name: &str, id: i32) -> Result<()> {
    // The set's id is in the header: read it before the segment can vanish.
    let sem = sysv::attach_readonly(name, id).ok().and_then(|seg| {
        let raw = seg.load_u32(memoffset::offset_of!(header::Header, sem_id))?;
        // Stored as id + 1 (0: none). A foreign segment's bytes are checked below.
        raw.checked_sub(1).map(|v| v as i32)
    });
    sysv::remove_id(name, id)?;
    if let Some(sem) = sem {
        if sysv::gone(id) && matches!(liveness::sem::check(sem), Ok(true)) {
            liveness::sem::remove(sem);
        }
    }
    Ok(())
}

/// Asks the kernel to fault in (and so reserve) every page of a fresh mapping; `ENOMEM`
/// means the memory is not there. Kernels without `MADV_POPULATE_WRITE` skip this.
fn populate(ptr: *mut u8, len: usize) -> std::io::Result<()> {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    // SAFETY: ptr/len describe a mapping we just created; MADV_POPULATE_WRITE only faults
    // pages in (they are already zero), it does not change their contents.
    let rc = unsafe { libc::madvise(ptr.cast(), len, MADV_POPULATE_WRITE) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::EPERM) => Ok(()),
        _ => Err(err),
    }
}
