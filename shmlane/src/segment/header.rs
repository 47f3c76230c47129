//! The segment header (format version 2): its `#[repr(C)]` layout, the layout hash, the
//! endpoint registry, and the validation an opener runs before trusting anything.
//!
//! Every field is an atomic (or a semaphore made of one): the header is shared with other
//! processes that may write it at any time, so no field is ever read as plain memory.

use crate::sync::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::mem::{align_of, size_of};

use crossbeam_utils::CachePadded;
use memoffset::offset_of;

pub use super::validate::{validate, Geometry, Invalid, NameCheck, Snapshot};
use super::{Held, Segment};
use crate::error::{Error, Result};
pub use crate::sync::futex::SemCell;

/// The first eight bytes of every shmlane segment.
pub const MAGIC: [u8; 8] = *b"SHMLANE\0";
/// The segment format version this build reads and writes. It goes up with every change
/// of the protocol, not only of the layout (the layout hash covers sizes and offsets, not
/// what the fields mean): 2 made liveness the kernel's (registry locks) and claim words
/// name a registry entry and generation; 3 made MPMC claimers own a slot by a CAS on its
/// claim word before writing it (a version-2 peer writes before owning); 4 added the
/// broadcast kind (cursor table and record ring in the data area, `Kind::Broadcast`); 5
/// moved the broadcast `frontier` off the `write_pos` cache line and lets it run up to a
/// step ahead of the overwritten bytes.
pub const VERSION: u32 = 5;
/// Bytes reserved for the header; the data area starts here (one page).
/// (64 KiB under loom, whose atomics are larger: see `sync::sizes`.)
pub const HEADER_SIZE: usize = crate::sync::sizes::HEADER_SIZE;
/// Endpoint slots in the registry.
/// (4 under loom.)
pub const MAX_ENDPOINTS: usize = crate::sync::sizes::MAX_ENDPOINTS;
/// Longest name stored in the header.
/// (32 under loom.)
pub const NAME_CAP: usize = crate::sync::sizes::NAME_CAP;
/// Bytes of a typed channel's type name kept in the header, for display (`inspect`);
/// longer names are cut. The comparison uses the hash of the whole name.
/// (8 under loom.)
pub const TYPE_NAME_CAP: usize = crate::sync::sizes::TYPE_NAME_CAP;
/// `state` while the creator initialises the segment: the zero of fresh memory, never
/// written (so an opener that sees anything but [`STATE_READY`] waits).
#[allow(dead_code)] // named for the format's docs; fresh memory is already zero
pub const STATE_INIT: u32 = 0;
/// `state` once the segment is ready.
pub const STATE_READY: u32 = 1;

/// `flags`: the creator asked for the name to outlive it (`Options::persist(true)`).
pub const FLAG_PERSIST: u32 = 1;
/// `flags`: the creator left with messages nobody has read, and left the name for the
/// reader: whoever leaves the ring empty with nobody on the other side removes it.
pub const FLAG_HANDED_OVER: u32 = 2;

/// Endpoint slot index of the SPSC producer.
pub const SPSC_PRODUCER: usize = 0;
/// Endpoint slot index of the SPSC consumer.
pub const SPSC_CONSUMER: usize = 1;

/// What kind of ring a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Kind {
    /// Variable-length records, one producer, one consumer.
    Spsc = 1,
    /// Fixed-size stamped slots, many producers, many consumers.
    Mpmc = 2,
    /// Variable-length records, one publisher, many subscribers each reading every one.
    Broadcast = 3,
}

impl Kind {
    /// The kind stored as `raw`, if it is one.
    pub fn from_raw(raw: u32) -> Option<Kind> {
        match raw {
            1 => Some(Kind::Spsc),
            2 => Some(Kind::Mpmc),
            3 => Some(Kind::Broadcast),
            _ => None,
        }
    }

    /// A short lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Spsc => "spsc",
            Kind::Mpmc => "mpmc",
            Kind::Broadcast => "broadcast",
        }
    }
}

/// One entry of the endpoint registry: who holds a role.
///
/// Whether the holder lives is not written here: the kernel keeps it (a lock or a
/// semaphore per entry, see `segment::liveness`). `word` packs
/// `pid << 32 | generation << 16 | role << 8 | state`; the pid (as the holder's own PID
/// namespace sees it) and the start time are for people (`shmlane ls`, `inspect`) only.
#[repr(C)]
pub struct Endpoint {
    /// `pid << 32 | generation << 16 | role << 8 | EP_*` state.
    pub word: AtomicU64,
    /// The holder's start time (field 22 of `/proc/<pid>/stat`), for display.
    pub start_time: AtomicU64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = self.word.load(Ordering::Relaxed);
        let (pid, state) = split_word(word);
        f.debug_struct("Endpoint")
            .field("pid", &pid)
            .field("state", &state)
            .field("role", &word_role(word))
            .field("generation", &word_generation(word))
            .finish()
    }
}

/// Nobody has ever held this endpoint.
pub const EP_FREE: u32 = 0;
/// A process holds this endpoint (alive while the kernel says its entry is held).
pub const EP_ATTACHED: u32 = 2;
/// The last holder left cleanly.
pub const EP_CLOSED: u32 = 3;

/// Splits an endpoint word into `(pid, state)`.
pub fn split_word(word: u64) -> (i32, u32) {
    ((word >> 32) as u32 as i32, word as u32 & 0xff)
}

/// The generation of an endpoint word: it goes up each time the entry is taken, so a
/// claim made by one holder is never taken for a later holder's.
pub fn word_generation(word: u64) -> u16 {
    (word >> 16) as u16
}

/// The role bits of an endpoint word (0 for SPSC, whose slots imply the role;
/// [`ROLE_SENDER`] or [`ROLE_RECEIVER`] for MPMC).
pub fn word_role(word: u64) -> u32 {
    (word as u32 >> 8) & 0xff
}

/// Packs `(pid, generation, role, state)` into an endpoint word.
pub fn make_word(pid: i32, generation: u16, role: u32, state: u32) -> u64 {
    (u64::from(pid as u32) << 32)
        | (u64::from(generation) << 16)
        | u64::from((role & 0xff) << 8)
        | u64::from(state & 0xff)
}

/// MPMC registry role: a sender.
pub const ROLE_SENDER: u32 = 1;
/// MPMC registry role: a receiver.
pub const ROLE_RECEIVER: u32 = 2;

/// The segment header, at offset 0 of every shmlane segment.
#[repr(C)]
pub struct Header {
    /// [`MAGIC`] as a native-endian u64.
    pub magic: AtomicU64,
    /// [`VERSION`].
    pub version: AtomicU32,
    /// [`Kind`] as u32.
    pub kind: AtomicU32,
    /// [`layout_hash`] of the build that created the segment.
    pub layout_hash: AtomicU64,
    /// Total bytes of the segment.
    pub segment_len: AtomicU64,
    /// Offset of the data area (== [`HEADER_SIZE`]).
    pub data_offset: AtomicU64,
    /// Bytes of the data area (SPSC: a power of two; MPMC: `slot_count * slot_size`).
    pub capacity: AtomicU64,
    /// Largest payload.
    pub max_message: AtomicU32,
    /// Default wait strategy ([`crate::Wait`] as u32).
    pub wait: AtomicU32,
    /// MPMC slot size in bytes (0 for SPSC).
    pub slot_size: AtomicU32,
    /// System V segments: the id of the endpoints' liveness semaphore set, plus one (0:
    /// none; POSIX segments use locks on their file instead).
    pub sem_id: AtomicU32,
    /// MPMC slot count (0 for SPSC).
    pub slot_count: AtomicU64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_ns: AtomicU64,
    /// Pid of the creator.
    pub creator_pid: AtomicU32,
    /// Bytes of `name` in use.
    pub name_len: AtomicU32,
    /// The segment name, so a System V key collision is caught.
    pub name: [AtomicU8; NAME_CAP],
    /// `STATE_INIT` then [`STATE_READY`] (stored with Release).
    pub state: AtomicU32,
    /// `FLAG_*` bits: how the segment's name is owned.
    pub flags: AtomicU32,
    /// Who holds which role.
    pub endpoints: [Endpoint; MAX_ENDPOINTS],
    /// Producer position. SPSC: bytes ever published. MPMC: the enqueue index, positions
    /// ever claimed by producers (a claimed slot is published later, by its stamp).
    pub write_pos: CachePadded<AtomicU64>,
    /// Consumer position. SPSC: bytes ever released. MPMC: the dequeue index, positions
    /// ever claimed by consumers (a claimed slot is released later, by its stamp).
    pub read_pos: CachePadded<AtomicU64>,
    /// Consumers asleep waiting for data.
    pub data_waiters: CachePadded<AtomicU32>,
    /// Producers asleep waiting for space.
    pub space_waiters: CachePadded<AtomicU32>,
    /// Posted to wake a consumer.
    pub data_sem: CachePadded<SemCell>,
    /// Posted to wake a producer.
    pub space_sem: CachePadded<SemCell>,
    /// Non-zero once any endpoint wakes with light barriers (see `sync::barrier`):
    /// sleepers must then issue the heavy barrier before they sleep.
    pub light_wakers: AtomicU32,
    /// MPMC: endpoints attached and not cleanly closed, `[senders, receivers]` (a dead
    /// process's endpoints stay counted; the registry tells those apart).
    pub mpmc_live: [AtomicU32; 2],
    /// MPMC: bit 0 once a sender has attached, bit 1 once a receiver has.
    pub mpmc_ever: AtomicU32,
    /// Statistics: MPMC slots skipped because their claimer died.
    pub lost: CachePadded<AtomicU64>,
    /// Typed channels (`shmlane::typed`): 64-bit FNV-1a of the message type's name
    /// (`std::any::type_name`). The whole fingerprint (`type_*`) is zero for an untyped
    /// channel.
    pub type_hash: AtomicU64,
    /// Typed channels: `size_of` the message type (0: untyped).
    pub type_size: AtomicU64,
    /// Typed channels: `align_of` the message type (0: untyped).
    pub type_align: AtomicU32,
    /// Typed channels: the schema version given with `Options::schema` (0 by default).
    pub type_schema: AtomicU32,
    /// Bytes of `type_name` in use.
    pub type_name_len: AtomicU32,
    /// The type name's first `TYPE_NAME_CAP` bytes, for people (`inspect`).
    pub type_name: [AtomicU8; TYPE_NAME_CAP],
}

const _: () = assert!(size_of::<Header>() <= HEADER_SIZE);

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Header")
            .field("version", &self.version.load(Ordering::Relaxed))
            .field("kind", &self.kind.load(Ordering::Relaxed))
            .field("capacity", &self.capacity.load(Ordering::Relaxed))
            .field("write_pos", &self.write_pos.load(Ordering::Relaxed))
            .field("read_pos", &self.read_pos.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(loom)]
impl Header {
    /// A zero header made of loom atomics (loom's atomics cannot be zeroed in place).
    fn new_model() -> Header {
        let u32z = || AtomicU32::new(0);
        let u64z = || AtomicU64::new(0);
        Header {
            magic: u64z(),
            version: u32z(),
            kind: u32z(),
            layout_hash: u64z(),
            segment_len: u64z(),
            data_offset: u64z(),
            capacity: u64z(),
            max_message: u32z(),
            wait: u32z(),
            slot_size: u32z(),
            sem_id: u32z(),
            slot_count: u64z(),
            created_unix_ns: u64z(),
            creator_pid: u32z(),
            name_len: u32z(),
            name: std::array::from_fn(|_| AtomicU8::new(0)),
            state: u32z(),
            flags: u32z(),
            endpoints: std::array::from_fn(|_| Endpoint {
                word: u64z(),
                start_time: u64z(),
            }),
            write_pos: CachePadded::new(u64z()),
            read_pos: CachePadded::new(u64z()),
            data_waiters: CachePadded::new(u32z()),
            space_waiters: CachePadded::new(u32z()),
            data_sem: CachePadded::new(SemCell::new()),
            space_sem: CachePadded::new(SemCell::new()),
            light_wakers: u32z(),
            mpmc_live: [u32z(), u32z()],
            mpmc_ever: u32z(),
            lost: CachePadded::new(u64z()),
            type_hash: u64z(),
            type_size: u64z(),
            type_align: u32z(),
            type_schema: u32z(),
            type_name_len: u32z(),
            type_name: std::array::from_fn(|_| AtomicU8::new(0)),
        }
    }
}

#[cfg(loom)]
impl Mapped {
    /// Under loom: a channel on heap memory, initialised as `create` would.
    pub(crate) fn model(
        name: &str,
        mut geometry: Geometry,
        init_data: impl FnOnce(&Mapped),
    ) -> Mapped {
        geometry.segment_len = HEADER_SIZE + geometry.data_len();
        let seg = Segment::heap_for_model(name, geometry.segment_len);
        // SAFETY: the heap segment is HEADER_SIZE-aligned, zeroed and at least
        // HEADER_SIZE >= size_of::<Header>() bytes; nothing refers to it yet.
        unsafe { std::ptr::write(seg.as_ptr() as *mut Header, Header::new_model()) };
        Mapped::init(seg, geometry, &Fingerprint::untyped(), init_data).expect("model init")
    }
}
const _: () = assert!(HEADER_SIZE % align_of::<Header>() == 0);

/// A hash of the size and offset of every header field and of the record header: a peer
/// built with another layout is refused instead of reading garbage.
pub fn layout_hash() -> u64 {
    let parts: [u64; 46] = [
        size_of::<Header>() as u64,
        align_of::<Header>() as u64,
        offset_of!(Header, magic) as u64,
        offset_of!(Header, version) as u64,
        offset_of!(Header, kind) as u64,
        offset_of!(Header, layout_hash) as u64,
        offset_of!(Header, segment_len) as u64,
        offset_of!(Header, data_offset) as u64,
        offset_of!(Header, capacity) as u64,
        offset_of!(Header, max_message) as u64,
        offset_of!(Header, wait) as u64,
        offset_of!(Header, slot_size) as u64,
        offset_of!(Header, sem_id) as u64,
        offset_of!(Header, slot_count) as u64,
        offset_of!(Header, created_unix_ns) as u64,
        offset_of!(Header, creator_pid) as u64,
        offset_of!(Header, name_len) as u64,
        offset_of!(Header, name) as u64,
        offset_of!(Header, state) as u64,
        offset_of!(Header, flags) as u64,
        offset_of!(Header, endpoints) as u64,
        size_of::<Endpoint>() as u64,
        MAX_ENDPOINTS as u64,
        offset_of!(Header, write_pos) as u64,
        offset_of!(Header, read_pos) as u64,
        offset_of!(Header, data_waiters) as u64,
        offset_of!(Header, space_waiters) as u64,
        offset_of!(Header, data_sem) as u64,
        offset_of!(Header, space_sem) as u64,
        size_of::<SemCell>() as u64,
        offset_of!(Header, light_wakers) as u64,
        offset_of!(Header, mpmc_live) as u64,
        offset_of!(Header, mpmc_ever) as u64,
        offset_of!(Header, lost) as u64,
        offset_of!(Header, type_hash) as u64,
        offset_of!(Header, type_size) as u64,
        offset_of!(Header, type_align) as u64,
        offset_of!(Header, type_schema) as u64,
        offset_of!(Header, type_name_len) as u64,
        offset_of!(Header, type_name) as u64,
        TYPE_NAME_CAP as u64,
        HEADER_SIZE as u64,
        super::layout::RECORD_HEADER as u64,
        super::layout::RECORD_ALIGN as u64,
        super::layout::SLOT_HEADER as u64,
        u64::from(VERSION),
    ];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// What a typed channel carries (`shmlane::typed`), as stored in the header's `type_*`
/// fields: a hash of the message type's name, its size and alignment, and the schema
/// version given with `Options::schema`. An untyped channel stores zeros.
///
/// Two fingerprints match when hash, size, alignment and schema are equal; `name` (at
/// most [`TYPE_NAME_CAP`] bytes of `std::any::type_name`) is for people only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint {
    /// 64-bit FNV-1a of the whole type name (0: untyped).
    pub hash: u64,
    /// `size_of` the type (0: untyped).
    pub size: u64,
    /// `align_of` the type (0: untyped).
    pub align: u32,
    /// The schema version.
    pub schema: u32,
    /// The type name, cut to [`TYPE_NAME_CAP`] bytes (lossy UTF-8 when read back).
    pub name: String,
}

impl Fingerprint {
    /// The fingerprint of an untyped (byte) channel: all zero.
    pub fn untyped() -> Fingerprint {
        Fingerprint::default()
    }

    /// The fingerprint of a channel of `T` with schema version `schema`.
    pub fn of<T>(schema: u32) -> Fingerprint {
        let name = std::any::type_name::<T>();
        let mut cut = name.len().min(TYPE_NAME_CAP);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        Fingerprint {
            hash: fnv1a(name.as_bytes()),
            size: size_of::<T>() as u64,
            align: align_of::<T>() as u32,
            schema,
            name: name[..cut].to_string(),
        }
    }

    /// Whether this is a typed channel's fingerprint (any field non-zero).
    pub fn is_typed(&self) -> bool {
        self.hash != 0 || self.size != 0 || self.align != 0 || self.schema != 0
    }

    /// Whether an endpoint asking for `asked` may use a channel storing `self`.
    pub fn matches(&self, asked: &Fingerprint) -> bool {
        (self.hash, self.size, self.align, self.schema)
            == (asked.hash, asked.size, asked.align, asked.schema)
    }

    /// In words: `untyped bytes`, or `my::Tick (24 B, align 8, schema 1)`.
    pub fn describe(&self) -> String {
        if !self.is_typed() {
            return "untyped bytes".to_string();
        }
        format!(
            "{} ({} B, align {}, schema {})",
            self.name, self.size, self.align, self.schema
        )
    }

    /// The [`Error::TypeMismatch`] of an endpoint asking for `asked` on a channel storing
    /// `self`. When the two read alike (a name cut short, or another crate's type of the
    /// same name and shape), the name hashes are added.
    pub(crate) fn mismatch(&self, asked: &Fingerprint) -> Error {
        let (mut stored, mut want) = (self.describe(), asked.describe());
        if stored == want {
            stored = format!("{stored}, name hash {:#018x}", self.hash);
            want = format!("{want}, name hash {:#018x}", asked.hash);
        }
        Error::TypeMismatch {
            stored,
            asked: want,
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A segment that holds a valid, initialised shmlane header.
#[derive(Debug)]
pub struct Mapped {
    seg: Segment,
    geometry: Geometry,
    /// Under loom: one tracker per 8 bytes of the data area, standing for the raw record
    /// headers and payloads loom cannot see (see [`Mapped::track_write`]).
    words: crate::sync::Tracked,
    #[cfg(loom)]
    bcast: Option<Box<BroadcastModel>>,
}

#[cfg(loom)]
pub(crate) type BroadcastModel = (
    crate::ring::broadcast::Control,
    crate::ring::broadcast::Config,
    Vec<crate::ring::broadcast::CursorSlot>,
    Vec<crate::sync::AtomicU64>,
);

#[cfg(loom)]
impl Mapped {
    /// Under loom: the broadcast control areas of a model segment.
    pub(crate) fn broadcast_model(&self) -> &BroadcastModel {
        self.bcast.as_deref().expect("a broadcast model segment")
    }
}

impl Mapped {
    /// Initialises a freshly created (zeroed) segment and marks it ready.
    /// `init_data` prepares the data area (MPMC stamps) before the segment is marked ready.
    pub(crate) fn init(
        seg: Segment,
        geometry: Geometry,
        fingerprint: &Fingerprint,
        init_data: impl FnOnce(&Mapped),
    ) -> Result<Mapped> {
        assert!(seg.len() >= HEADER_SIZE + geometry.data_len());
        let mapped = Mapped {
            seg,
            geometry,
            words: crate::sync::Tracked::new(geometry.capacity),
            #[cfg(loom)]
            bcast: (geometry.kind == Kind::Broadcast).then(|| {
                Box::new(crate::ring::broadcast::model_areas(
                    geometry.slot_count,
                    geometry.capacity,
                ))
            }),
        };
        let h = mapped.header();
        let g = &mapped.geometry;
        h.version.store(VERSION, Ordering::Relaxed);
        h.kind.store(g.kind as u32, Ordering::Relaxed);
        h.layout_hash.store(layout_hash(), Ordering::Relaxed);
        h.segment_len.store(g.segment_len as u64, Ordering::Relaxed);
        h.data_offset.store(HEADER_SIZE as u64, Ordering::Relaxed);
        h.capacity.store(g.capacity as u64, Ordering::Relaxed);
        h.max_message.store(g.max_message as u32, Ordering::Relaxed);
        h.wait.store(g.wait, Ordering::Relaxed);
        h.slot_size.store(g.slot_size as u32, Ordering::Relaxed);
        h.slot_count.store(g.slot_count as u64, Ordering::Relaxed);
        let sem = mapped.seg.sem_id().map_or(0, |id| id as u32 + 1);
        if !mapped.seg.removes_on_drop() {
            h.flags.store(FLAG_PERSIST, Ordering::Relaxed);
        }
        h.sem_id.store(sem, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        h.created_unix_ns.store(now, Ordering::Relaxed);
        h.creator_pid.store(std::process::id(), Ordering::Relaxed);
        let name = mapped.seg.name().as_bytes();
        h.name_len.store(name.len() as u32, Ordering::Relaxed);
        for (cell, b) in h.name.iter().zip(name) {
            cell.store(*b, Ordering::Relaxed);
        }
        h.type_hash.store(fingerprint.hash, Ordering::Relaxed);
        h.type_size.store(fingerprint.size, Ordering::Relaxed);
        h.type_align.store(fingerprint.align, Ordering::Relaxed);
        h.type_schema.store(fingerprint.schema, Ordering::Relaxed);
        let type_name = &fingerprint.name.as_bytes()[..fingerprint.name.len().min(TYPE_NAME_CAP)];
        h.type_name_len
            .store(type_name.len() as u32, Ordering::Relaxed);
        for (cell, b) in h.type_name.iter().zip(type_name) {
            cell.store(*b, Ordering::Relaxed);
        }
        init_data(&mapped);
        let h = mapped.header();
        h.magic.store(u64::from_ne_bytes(MAGIC), Ordering::Relaxed);
        h.state.store(STATE_READY, Ordering::Release);
        Ok(mapped)
    }

    /// Validates an opened segment: magic, readiness, version, layout, kind, name, sizes
    /// and geometry.
    pub(crate) fn validate(
        mut seg: Segment,
        want: Option<Kind>,
    ) -> std::result::Result<Mapped, Invalid> {
        let name = seg.name().to_string();
        let snapshot = Snapshot::read(&seg);
        let geometry = validate(&snapshot, &name, want, NameCheck::Is(seg.backing()))?;
        if seg.backing() == super::Backing::SysV {
            // Every endpoint needs the liveness semaphore set the header names.
            let raw = seg
                .load_u32(offset_of!(Header, sem_id))
                .expect("validated: the header is mapped");
            let bad = || {
                Error::corrupt(format!(
                    "System V segment {name} names no liveness semaphore set (sem_id field {raw})"
                ))
            };
            let id = raw.checked_sub(1).ok_or_else(bad)? as i32;
            match seg.adopt_sem(id) {
                Ok(true) => {}
                Ok(false) => return Err(bad().into()),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EIDRM)) => {
                    // Removed, and its last user gone: the segment is on its way out too.
                    return Err(Error::NotFound {
                        name: name.clone(),
                        key: super::sysv_key(&name),
                    }
                    .into());
                }
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                    return Err(Error::PermissionDenied { name }.into())
                }
                Err(e) => return Err(Error::io("semctl(IPC_STAT)", e).into()),
            }
        }
        Ok(Mapped {
            seg,
            geometry,
            words: crate::sync::Tracked::none(),
            #[cfg(loom)]
            bcast: None,
        })
    }

    /// Under loom, records that bytes `off .. off + len` of the data area are about to be
    /// written, so that a read of them that does not happen after the write (a weakened
    /// ordering, a record read before it is published) fails the model. Normally nothing.
    #[inline(always)]
    pub(crate) fn track_write(&self, off: usize, len: usize) {
        self.words.write(off, len);
    }

    /// Under loom, records that bytes `off .. off + len` of the data area are about to be
    /// read (see [`track_write`](Self::track_write)). Normally nothing.
    #[inline(always)]
    pub(crate) fn track_read(&self, off: usize, len: usize) {
        self.words.read(off, len);
    }

    /// The header.
    pub fn header(&self) -> &Header {
        // SAFETY: a Mapped always holds at least HEADER_SIZE mapped, page-aligned bytes
        // (checked by validate, asserted by init) and Header is all atomics and cells.
        unsafe { &*(self.seg.as_ptr() as *const Header) }
    }

    /// The start of the data area (`capacity` bytes, checked to be inside the mapping).
    pub fn data_ptr(&self) -> *mut u8 {
        // SAFETY: HEADER_SIZE + capacity <= len was checked, so this stays in the mapping.
        unsafe { self.seg.as_ptr().add(HEADER_SIZE) }
    }

    /// The type fingerprint stored in the header (all zero for an untyped channel). It
    /// is written before the segment is marked ready and never changed by this library;
    /// a peer that scribbles on it after the open has no effect on this endpoint.
    pub fn fingerprint(&self) -> Fingerprint {
        let h = self.header();
        let len = (h.type_name_len.load(Ordering::Relaxed) as usize).min(TYPE_NAME_CAP);
        let name: Vec<u8> = h.type_name[..len]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        Fingerprint {
            hash: h.type_hash.load(Ordering::Relaxed),
            size: h.type_size.load(Ordering::Relaxed),
            align: h.type_align.load(Ordering::Relaxed),
            schema: h.type_schema.load(Ordering::Relaxed),
            name: String::from_utf8_lossy(&name).into_owned(),
        }
    }

    /// The validated geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The endpoint registry entry `i` (`i < MAX_ENDPOINTS`).
    pub fn endpoint(&self, i: usize) -> &Endpoint {
        &self.header().endpoints[i]
    }
}

/// What the registry says of an endpoint. Whether it lives is the kernel's answer (see
/// the crate docs, "Roles, disconnects and crashes"); the pid is the one the holder had
/// in its own PID namespace when it attached, for messages and people only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Never attached.
    Never,
    /// Held by a live process (its pid in its own PID namespace).
    Alive(i32),
    /// Left cleanly.
    Closed,
    /// Its process died without closing (its pid, as above).
    Dead(i32),
}

/// The registry: who holds which entry, and whether the kernel says the holder lives.
impl Mapped {
    /// The recorded word of entry `i`.
    pub fn entry_word(&self, i: usize) -> u64 {
        self.endpoint(i).word.load(Ordering::Acquire)
    }

    /// Takes registry entry `i` for this process as an endpoint of `role` (0 for SPSC),
    /// unless a live endpoint holds it. Returns the entry's new generation, or `None` when
    /// a live endpoint holds it (this process's own other endpoints included: two
    /// endpoints of one SPSC role would hand out overlapping slices of the ring).
    ///
    /// The kernel-held lock (see `segment::liveness`) is what makes the entry ours: once
    /// it is taken, its previous holder has closed or died, so the word is ours to write.
    pub(crate) fn take_entry(
        &self,
        i: usize,
        role: u32,
        pid: i32,
        start_time: u64,
    ) -> Result<Option<u16>> {
        if !self.seg.hold(i)? {
            return Ok(None);
        }
        let e = self.endpoint(i);
        let generation = word_generation(e.word.load(Ordering::Acquire)).wrapping_add(1);
        e.start_time.store(start_time, Ordering::Relaxed);
        e.word.store(
            make_word(pid, generation, role, EP_ATTACHED),
            Ordering::Release,
        );
        Ok(Some(generation))
    }

    /// Marks entry `i`, taken by this handle, closed (a clean exit) and gives it back. The
    /// word is written before the kernel's hold is dropped, so a peer that sees the entry
    /// free reads `EP_CLOSED` when it looks at the word again.
    pub(crate) fn close_entry(&self, i: usize) {
        let e = self.endpoint(i);
        let cur = e.word.load(Ordering::Acquire);
        let (pid, _) = split_word(cur);
        e.word.store(
            make_word(pid, word_generation(cur), word_role(cur), EP_CLOSED),
            Ordering::Release,
        );
        self.seg.release(i);
    }

    /// What the registry and the kernel say of entry `i` (one system call at most).
    pub fn entry_state(&self, i: usize) -> PeerState {
        let word = self.entry_word(i);
        let (pid, state) = split_word(word);
        match state {
            EP_FREE => PeerState::Never,
            EP_CLOSED => PeerState::Closed,
            // Attached (or a state no build writes): the kernel decides.
            _ => match self.seg.held(i) {
                Held::Yes | Held::Unknown => PeerState::Alive(pid),
                Held::No => {
                    // Not held: its holder died, or closed between our two looks (a clean
                    // close writes EP_CLOSED before it lets go), or a new holder has not
                    // taken it yet.
                    let again = self.entry_word(i);
                    if split_word(again).1 == EP_CLOSED {
                        PeerState::Closed
                    } else {
                        PeerState::Dead(pid)
                    }
                }
            },
        }
    }

    /// Whether entry `i` holds a live endpoint of `role`.
    pub fn entry_live_with_role(&self, i: usize, role: u32) -> bool {
        word_role(self.entry_word(i)) == role && matches!(self.entry_state(i), PeerState::Alive(_))
    }
}

/// `(state char, start time)` of a process from `/proc/<pid>/stat`, for display only (the
/// pid means something only in the PID namespace that wrote it). Read as bytes: the
/// command name may be any bytes, not UTF-8 (the kernel cuts it to 15 bytes, even inside
/// a character).
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 is the state; starttime is field 22, so 18 more after it.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// This process's start time.
pub fn self_start_time() -> u64 {
    proc_stat(std::process::id() as i32)
        .map(|(_, s)| s)
        .unwrap_or(0)
}

/// Whether `pid` is a running process that started at `start_time` (0: any start time),
/// by `/proc` (zombies count as dead). Only the kernel-IPC baselines of the benchmark use
/// this; shmlane's own endpoints ask the kernel through their registry entries, which
/// works across PID namespaces and users and whatever `/proc` shows.
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    match proc_stat(pid) {
        None => false,
        Some((state, start)) => {
            !matches!(state, 'Z' | 'X' | 'x') && (start_time == 0 || start == start_time)
        }
    }
}
