//! Looking at segments from outside, the way `ipcs` / `ipcrm` do: what `shmlane ls`,
//! `shmlane inspect`, `shmlane rm` and `shmlane clean` are made of.
//!
//! Everything here opens segments read-only (`O_RDONLY` + `PROT_READ` for POSIX,
//! `SHM_RDONLY` for System V) and reads the header with relaxed atomic loads, each one
//! checked to lie inside the mapping, so a foreign, truncated or corrupt segment is
//! described rather than trusted. Nothing here writes to a segment; [`remove`] and
//! [`clean`] only remove names (processes still attached keep their mapping).
//!
//! ```no_run
//! # fn main() -> Result<(), shmlane::Error> {
//! for r in shmlane::inspect::list()? {
//!     if r.class == shmlane::inspect::Class::Shmlane {
//!         println!("{} {} {}", r.name, r.backing, r.validation);
//!     }
//! }
//! let r = shmlane::inspect::inspect("/demo")?;
//! println!("{} {:?} {}", r.name, r.kind(), r.status());
//! # Ok(()) }
//! ```

use std::mem::size_of;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memoffset::offset_of;

use crate::error::{Error, Result};
use crate::segment::header::{
    self, layout_hash, word_role, Endpoint, Fingerprint, Header, Kind, EP_ATTACHED, EP_CLOSED,
    EP_FREE, FLAG_HANDED_OVER, FLAG_PERSIST, HEADER_SIZE, MAGIC, MAX_ENDPOINTS, NAME_CAP,
    ROLE_RECEIVER, ROLE_SENDER, SPSC_CONSUMER, SPSC_PRODUCER, STATE_READY, TYPE_NAME_CAP, VERSION,
};
use crate::segment::validate::{validate, Invalid, NameCheck, Snapshot};
use crate::segment::{sysv_key, validate_name, Backing, Held, Segment};
use crate::Wait;

/// Where POSIX segments live.
pub const DEV_SHM: &str = "/dev/shm";
/// Where the kernel lists System V segments.
pub const PROC_SYSVIPC_SHM: &str = "/proc/sysvipc/shm";
/// How old a segment with no registered endpoint must be before [`clean`] removes it.
pub const CLEAN_MIN_AGE: Duration = Duration::from_secs(60);

/// What a segment is, as far as shmlane can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Made by this format and layout of shmlane (valid, or damaged: see
    /// [`Report::validation`]).
    Shmlane,
    /// Has the shmlane magic, but another format version or header layout.
    Incompatible,
    /// Empty, or no magic yet: a creator still initialising it, one that crashed while
    /// creating it, or another program's empty segment.
    Uninitialised,
    /// Not a shmlane segment (its first bytes are not the shmlane magic).
    Foreign,
    /// Could not be opened (permissions, or it vanished while looked at).
    Unreadable,
}

impl Class {
    /// A short lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Shmlane => "shmlane",
            Class::Incompatible => "incompatible",
            Class::Uninitialised => "uninitialised",
            Class::Foreign => "foreign",
            Class::Unreadable => "unreadable",
        }
    }
}

/// The outcome of the checks an opener makes, as a code (the words are in
/// [`Report::validation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// Passes every check.
    Valid,
    /// Empty, no magic yet, or not marked ready: its creator has not finished (an opener
    /// waits, then reports [`Error::NotReady`]).
    NotReady,
    /// [`Error::NotShmlane`].
    NotShmlane,
    /// [`Error::Truncated`].
    Truncated,
    /// [`Error::VersionMismatch`].
    VersionMismatch,
    /// [`Error::LayoutMismatch`].
    LayoutMismatch,
    /// [`Error::KeyCollision`], or a System V segment whose stored name does not give its key.
    KeyCollision,
    /// [`Error::Corrupt`].
    Corrupt,
    /// It could not be opened.
    Unreadable,
}

impl Check {
    /// A short lowercase name: `valid`, `not-ready`, `not-shmlane`, `truncated`,
    /// `version-mismatch`, `layout-mismatch`, `key-clash`, `corrupt`, `unreadable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Valid => "valid",
            Check::NotReady => "not-ready",
            Check::NotShmlane => "not-shmlane",
            Check::Truncated => "truncated",
            Check::VersionMismatch => "version-mismatch",
            Check::LayoutMismatch => "layout-mismatch",
            Check::KeyCollision => "key-clash",
            Check::Corrupt => "corrupt",
            Check::Unreadable => "unreadable",
        }
    }

    fn of(e: &Error) -> Check {
        match e {
            Error::NotShmlane { .. } => Check::NotShmlane,
            Error::Truncated { .. } => Check::Truncated,
            Error::VersionMismatch { .. } => Check::VersionMismatch,
            Error::LayoutMismatch { .. } => Check::LayoutMismatch,
            Error::KeyCollision { .. } => Check::KeyCollision,
            _ => Check::Corrupt,
        }
    }
}

/// Whether the process behind a registry entry is there, as the kernel says (the entry's
/// lock or semaphore is held: see the crate docs, not the pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// A live process holds the entry.
    Alive,
    /// Its process is gone without closing.
    Dead,
    /// The endpoint was closed cleanly.
    Closed,
    /// The kernel could not be asked (a System V segment whose liveness semaphores this
    /// user may not read, say). `clean` treats it as alive.
    Unknown,
}

impl Liveness {
    /// `alive`, `dead`, `closed` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Dead => "dead",
            Liveness::Closed => "closed",
            Liveness::Unknown => "unknown",
        }
    }
}

/// One non-free entry of a segment's endpoint registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Index in the registry.
    pub index: usize,
    /// `producer` / `consumer` (SPSC), `sender` / `receiver` (MPMC), or `slot N` /
    /// `role N` when the entry makes no sense for the ring kind.
    pub role: String,
    /// The pid recorded (in the holder's own PID namespace: for people, not decisions).
    pub pid: i32,
    /// The recorded state: `attached`, `closed`, or `unknown(N)`.
    pub state: String,
    /// The recorded start time of the process (clock ticks since boot, for display).
    pub start_time: u64,
    /// Whether a live process holds the entry, as the kernel says.
    pub liveness: Liveness,
}

/// The header fields as read, each `None` when it lies outside the mapping or the segment
/// does not have the shmlane magic. Read with this build's layout: for a segment of
/// another version or layout they may be meaningless.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// `version`: the format version.
    pub version: Option<u32>,
    /// `kind`: the ring kind, raw ([`Kind::from_raw`]).
    pub kind: Option<u32>,
    /// `layout_hash`: the layout hash of the build that created it.
    pub layout_hash: Option<u64>,
    /// `segment_len`: total bytes, as the creator meant them.
    pub segment_len: Option<u64>,
    /// `data_offset`: where the data area starts.
    pub data_offset: Option<u64>,
    /// `capacity`: bytes of the data area.
    pub capacity: Option<u64>,
    /// `max_message`: the largest payload.
    pub max_message: Option<u32>,
    /// `wait`: the default wait strategy, raw.
    pub wait: Option<u32>,
    /// `slot_size`: MPMC slot bytes (0 for SPSC).
    pub slot_size: Option<u32>,
    /// `slot_count`: MPMC slots (0 for SPSC).
    pub slot_count: Option<u64>,
    /// `created_unix_ns`: creation time, nanoseconds since the Unix epoch.
    pub created_unix_ns: Option<u64>,
    /// `creator_pid`: the pid of the creator.
    pub creator_pid: Option<u32>,
    /// `name_len`: bytes of the stored name.
    pub name_len: Option<u32>,
    /// The stored name (lossy UTF-8, at most `NAME_CAP` bytes).
    pub stored_name: Option<String>,
    /// `state`: 0 while the creator initialises, 1 once ready.
    pub state: Option<u32>,
    /// `write_pos`: producer position (bytes for SPSC, slots for MPMC).
    pub write_pos: Option<u64>,
    /// `read_pos`: consumer position (bytes for SPSC, slots for MPMC).
    pub read_pos: Option<u64>,
    /// `data_waiters`: consumers asleep waiting for data.
    pub data_waiters: Option<u32>,
    /// `space_waiters`: producers asleep waiting for space.
    pub space_waiters: Option<u32>,
    /// `light_wakers`: non-zero once an endpoint wakes with light barriers.
    pub light_wakers: Option<u32>,
    /// MPMC `[senders, receivers]` registered and not cleanly closed: a counter that a
    /// process killed without closing never decrements. Who is alive is in
    /// [`Report::endpoints`] ([`Report::alive`]).
    pub mpmc_live: [Option<u32>; 2],
    /// `mpmc_ever`: MPMC, bit 0 once a sender attached, bit 1 once a receiver did.
    pub mpmc_ever: Option<u32>,
    /// `lost`: MPMC messages lost to processes that died holding their slot.
    pub lost: Option<u64>,
    /// `flags`: `FLAG_PERSIST` (1) made with `persist(true)`; `FLAG_HANDED_OVER` (2) its
    /// creator left unread messages and the name for the reader.
    pub flags: Option<u32>,
    /// `type_hash`: typed channels, FNV-1a of the message type's name (0: untyped).
    pub type_hash: Option<u64>,
    /// `type_size`: typed channels, `size_of` the message type (0: untyped).
    pub type_size: Option<u64>,
    /// `type_align`: typed channels, `align_of` the message type (0: untyped).
    pub type_align: Option<u32>,
    /// `type_schema`: typed channels, the schema version.
    pub type_schema: Option<u32>,
    /// The stored type name (lossy UTF-8, at most `TYPE_NAME_CAP` bytes).
    pub type_name: Option<String>,
}

/// How full a ring is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Published and not yet released: bytes (SPSC, record headers and padding included)
    /// or slots (MPMC, claimed ones included).
    pub used: u64,
    /// Capacity in the same unit.
    pub total: u64,
    /// Whether `used` counts slots (MPMC) rather than bytes (SPSC).
    pub slots: bool,
}

impl Fill {
    /// `used` as a percentage of `total`.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.used as f64 / self.total as f64
        }
    }
}

/// Everything shmlane can tell about one segment, from a read-only look.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The segment name (`/name`). A System V segment found by id whose header names no
    /// matching name is called `shmid:<id>`.
    pub name: String,
    /// Where it lives.
    pub backing: Backing,
    /// The System V key (System V only).
    pub sysv_key: Option<i32>,
    /// The System V shmid (System V only).
    pub sysv_id: Option<i32>,
    /// Processes attached, per the kernel (System V only, from `/proc/sysvipc/shm`; this
    /// look itself not counted).
    pub sysv_nattch: Option<u64>,
    /// A System V segment already removed (`IPC_RMID`) that attached processes keep alive:
    /// it has no key, and so no name, any more.
    pub sysv_removed: bool,
    /// Bytes of the segment (file size or `shm_segsz`).
    pub len: u64,
    /// What it is.
    pub class: Class,
    /// What the checks an opener makes (magic, readiness, version, layout, kind, name,
    /// sizes) found.
    pub check: Check,
    /// `valid`, or what the checks found, in words (the [`Error`] message an opener gets).
    pub validation: String,
    /// The first eight bytes, if the segment has them.
    pub magic: Option<[u8; 8]>,
    /// The header fields (read only when the magic is shmlane's).
    pub fields: Fields,
    /// The non-free registry entries (read only for this format and layout).
    pub endpoints: Vec<EndpointInfo>,
    /// Messages published and not yet read, counted record by record (SPSC) or slot by
    /// slot (MPMC) for a valid segment of this format; `None` when they cannot be
    /// counted (a damaged ring).
    pub unread: Option<u64>,
    /// The owner's uid (file owner, or System V `shm_perm.uid`), when it could be read.
    pub uid: Option<u32>,
}

/// Byte offsets of the header fields in this build.
mod off {
    use super::*;
    pub fn endpoint_word(i: usize) -> usize {
        offset_of!(Header, endpoints) + i * size_of::<Endpoint>() + offset_of!(Endpoint, word)
    }
    pub fn endpoint_start(i: usize) -> usize {
        offset_of!(Header, endpoints) + i * size_of::<Endpoint>() + offset_of!(Endpoint, start_time)
    }
}

impl Report {
    /// How many registry entries of `role` (`producer`, `consumer`, `sender`,
    /// `receiver`) a live process holds, as the kernel says.
    pub fn alive(&self, role: &str) -> usize {
        self.endpoints
            .iter()
            .filter(|e| e.role == role && e.liveness == Liveness::Alive)
            .count()
    }

    /// Reads a report from an opened (usually read-only) segment. `expected` is the name
    /// it was looked up by (`None` for a System V segment found by id).
    fn from_segment(seg: &Segment, expected: Option<&str>, key_check: Option<i32>) -> Report {
        let len = seg.len();
        let magic = (len >= 8).then(|| {
            let mut m = [0u8; 8];
            for (i, b) in m.iter_mut().enumerate() {
                *b = seg.load_u8(i).unwrap_or(0);
            }
            m
        });
        let magic_ok = magic == Some(MAGIC);
        let mut fields = Fields::default();
        if magic_ok {
            fields = read_fields(seg);
        }
        let incompatible = fields.version.is_some_and(|v| v != VERSION)
            || fields.layout_hash.is_some_and(|h| h != layout_hash());
        let compatible = magic_ok
            && fields.version == Some(VERSION)
            && fields.layout_hash == Some(layout_hash());
        let endpoints = if compatible {
            read_endpoints(seg, fields.kind.and_then(Kind::from_raw))
        } else {
            Vec::new()
        };
        let class = match magic {
            None if len == 0 => Class::Uninitialised,
            None => Class::Foreign,
            Some(m) if m == [0u8; 8] => Class::Uninitialised,
            Some(_) if !magic_ok => Class::Foreign,
            Some(_) if incompatible => Class::Incompatible,
            Some(_) => Class::Shmlane,
        };
        let name = match expected {
            Some(n) => n.to_string(),
            None => fields
                .stored_name
                .clone()
                .filter(|n| {
                    validate_name(n).is_ok() && key_check.map_or(true, |k| k == sysv_key(n))
                })
                .unwrap_or_else(|| seg.name().to_string()),
        };
        // The opener's own validator, on the same fields: the two cannot disagree.
        let names = match (expected.is_some(), key_check) {
            (true, _) => NameCheck::Is(seg.backing()),
            (false, Some(key)) => NameCheck::HashesTo(key),
            (false, None) => NameCheck::Any,
        };
        let (check, validation) = match validate(&Snapshot::read(seg), &name, None, names) {
            Ok(_) => (Check::Valid, "valid".to_string()),
            Err(Invalid::NotYet(why)) => (Check::NotReady, why.to_string()),
            Err(Invalid::Err(e)) => (Check::of(&e), e.to_string()),
        };
        Report {
            name,
            backing: seg.backing(),
            sysv_key: key_check,
            sysv_id: (seg.backing() == Backing::SysV).then(|| seg.sysv_id()),
            sysv_nattch: None,
            sysv_removed: false,
            len: len as u64,
            class,
            check,
            validation,
            magic,
            unread: (check == Check::Valid)
                .then(|| count_unread(seg, &fields))
                .flatten(),
            fields,
            endpoints,
            uid: None,
        }
    }

    fn unreadable(name: &str, backing: Backing, err: &Error) -> Report {
        Report {
            name: name.to_string(),
            backing,
            sysv_key: None,
            sysv_id: None,
            sysv_nattch: None,
            sysv_removed: false,
            len: 0,
            class: Class::Unreadable,
            check: Check::Unreadable,
            validation: err.to_string(),
            magic: None,
            fields: Fields::default(),
            endpoints: Vec::new(),
            unread: None,
            uid: None,
        }
    }

    /// Whether the creator asked for the name to outlive it (`Options::persist(true)`).
    pub fn persistent(&self) -> bool {
        self.fields.flags.is_some_and(|f| f & FLAG_PERSIST != 0)
    }

    /// Messages its creator left for a reader that has not drained them yet: the name
    /// was handed over (see the README, "Roles, disconnects and crashes") and nobody
    /// reads now. `clean` leaves such a segment alone.
    pub fn pending(&self) -> Option<u64> {
        let handed = self.fields.flags.is_some_and(|f| f & FLAG_HANDED_OVER != 0);
        let reading = self.endpoints.iter().any(|e| {
            matches!(e.role.as_str(), "consumer" | "receiver") && e.liveness == Liveness::Alive
        });
        match self.unread {
            Some(n) if handed && n > 0 && !reading => Some(n),
            _ => None,
        }
    }

    /// Whether one side is alive while an endpoint of the other side died (its peer
    /// waits in vain, or is about to be told `PeerDied`).
    pub fn peer_dead(&self) -> bool {
        let side = |roles: [&str; 2], l: Liveness| {
            self.endpoints
                .iter()
                .any(|e| roles.contains(&e.role.as_str()) && e.liveness == l)
        };
        let writers = ["producer", "sender"];
        let readers = ["consumer", "receiver"];
        (side(writers, Liveness::Alive)
            && side(readers, Liveness::Dead)
            && !side(readers, Liveness::Alive))
            || (side(readers, Liveness::Alive)
                && side(writers, Liveness::Dead)
                && !side(writers, Liveness::Alive))
    }

    /// Whether it passes every check an opener makes.
    pub fn valid(&self) -> bool {
        self.check == Check::Valid
    }

    /// The ring kind, if the header names a known one.
    pub fn kind(&self) -> Option<Kind> {
        self.fields.kind.and_then(Kind::from_raw)
    }

    /// The default wait strategy stored in the header.
    pub fn wait(&self) -> Option<Wait> {
        self.fields.wait.map(Wait::from_raw)
    }

    /// Whether the layout hash matches this build's.
    pub fn layout_matches(&self) -> Option<bool> {
        self.fields.layout_hash.map(|h| h == layout_hash())
    }

    /// How full the ring is, if the kind is known and the positions make sense.
    pub fn fill(&self) -> Option<Fill> {
        let w = self.fields.write_pos?;
        let r = self.fields.read_pos?;
        let used = w.wrapping_sub(r);
        let (total, slots) = match self.kind()? {
            Kind::Spsc => (self.fields.capacity?, false),
            Kind::Mpmc => (self.fields.slot_count?, true),
        };
        (used <= total).then_some(Fill { used, total, slots })
    }

    /// The message type of a typed channel ([`crate::typed`]) in words, with its name
    /// hash: `my::Tick (24 B, align 8, schema 1; name hash 0x…)`; `untyped bytes` for a
    /// byte channel; `None` when the fields could not be read.
    pub fn message_type(&self) -> Option<String> {
        let f = &self.fields;
        let fp = Fingerprint {
            hash: f.type_hash?,
            size: f.type_size?,
            align: f.type_align?,
            schema: f.type_schema?,
            name: f.type_name.clone().unwrap_or_default(),
        };
        Some(if fp.is_typed() {
            format!(
                "{} ({} B, align {}, schema {}; name hash {:#018x})",
                fp.name, fp.size, fp.align, fp.schema, fp.hash
            )
        } else {
            fp.describe()
        })
    }

    /// Creation time, if recorded.
    pub fn created(&self) -> Option<SystemTime> {
        match self.fields.created_unix_ns? {
            0 => None,
            ns => Some(UNIX_EPOCH + Duration::from_nanos(ns)),
        }
    }

    /// A one-word status for tables: `ok`, `stale` (valid, and what [`clean`] would
    /// remove), `removed` (a System V segment already removed, still attached), a [`Check`]
    /// name for a damaged shmlane segment (which [`clean`] removes too once its endpoints
    /// are gone), or `uninit` / `incompatible` / `foreign` / `unreadable`.
    pub fn status(&self) -> &'static str {
        match self.class {
            Class::Shmlane => {}
            Class::Uninitialised => return "uninit",
            other => return other.as_str(),
        }
        if self.sysv_removed {
            return "removed";
        }
        if self.check != Check::Valid {
            return self.check.as_str();
        }
        if self.pending().is_some() {
            "pending"
        } else if stale_reason(self, SystemTime::now()).is_some() {
            "stale"
        } else if self.peer_dead() {
            "peer dead"
        } else {
            "ok"
        }
    }
}

fn read_fields(seg: &Segment) -> Fields {
    macro_rules! u64_at {
        ($f:ident) => {
            seg.load_u64(offset_of!(Header, $f))
        };
    }
    macro_rules! u32_at {
        ($f:ident) => {
            seg.load_u32(offset_of!(Header, $f))
        };
    }
    let name_len = u32_at!(name_len);
    let stored_name = name_len.and_then(|n| {
        let base = offset_of!(Header, name);
        let bytes: Option<Vec<u8>> = (0..(n as usize).min(NAME_CAP))
            .map(|i| seg.load_u8(base + i))
            .collect();
        bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
    });
    let type_name = u32_at!(type_name_len).and_then(|n| {
        let base = offset_of!(Header, type_name);
        let bytes: Option<Vec<u8>> = (0..(n as usize).min(TYPE_NAME_CAP))
            .map(|i| seg.load_u8(base + i))
            .collect();
        bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
    });
    let live = offset_of!(Header, mpmc_live);
    Fields {
        version: u32_at!(version),
        kind: u32_at!(kind),
        layout_hash: u64_at!(layout_hash),
        segment_len: u64_at!(segment_len),
        data_offset: u64_at!(data_offset),
        capacity: u64_at!(capacity),
        max_message: u32_at!(max_message),
        wait: u32_at!(wait),
        slot_size: u32_at!(slot_size),
        slot_count: u64_at!(slot_count),
        created_unix_ns: u64_at!(created_unix_ns),
        creator_pid: u32_at!(creator_pid),
        name_len,
        stored_name,
        state: u32_at!(state),
        // The CachePadded wrappers hold their value at offset 0 (checked by a test).
        write_pos: u64_at!(write_pos),
        read_pos: u64_at!(read_pos),
        data_waiters: u32_at!(data_waiters),
        space_waiters: u32_at!(space_waiters),
        light_wakers: u32_at!(light_wakers),
        mpmc_live: [seg.load_u32(live), seg.load_u32(live + 4)],
        mpmc_ever: u32_at!(mpmc_ever),
        lost: u64_at!(lost),
        flags: u32_at!(flags),
        type_hash: u64_at!(type_hash),
        type_size: u64_at!(type_size),
        type_align: u32_at!(type_align),
        type_schema: u32_at!(type_schema),
        type_name,
    }
}

/// Counts the messages between the read and write positions of a valid segment without
/// trusting them: every record header is bounds-checked, and a bad one gives `None`.
fn count_unread(seg: &Segment, f: &Fields) -> Option<u64> {
    let (w, r) = (f.write_pos?, f.read_pos?);
    match Kind::from_raw(f.kind?)? {
        Kind::Mpmc => {
            let used = w.wrapping_sub(r);
            (used <= f.slot_count?).then_some(used)
        }
        Kind::Spsc => {
            let cap = f.capacity?;
            let max = u64::from(f.max_message?);
            if w.wrapping_sub(r) > cap || !cap.is_power_of_two() {
                return None;
            }
            let (mut pos, mut n) = (r, 0u64);
            while pos != w {
                let off = pos & (cap - 1);
                let len = u64::from(seg.load_u32(HEADER_SIZE + off as usize)?);
                let step = if len == u64::from(crate::ring::spsc::PAD_FLAG) {
                    cap - off
                } else if len <= max {
                    n += 1;
                    crate::ring::record_size(len as usize) as u64
                } else {
                    return None;
                };
                if step == 0 || step > w.wrapping_sub(pos) {
                    return None;
                }
                pos = pos.wrapping_add(step);
            }
            Some(n)
        }
    }
}

fn read_endpoints(seg: &Segment, kind: Option<Kind>) -> Vec<EndpointInfo> {
    let mut out = Vec::new();
    for i in 0..MAX_ENDPOINTS {
        let Some(word) = seg.load_u64(off::endpoint_word(i)) else {
            break;
        };
        let (pid, state) = header::split_word(word);
        if state == EP_FREE {
            continue;
        }
        let start_time = seg.load_u64(off::endpoint_start(i)).unwrap_or(0);
        let role = match (kind, word_role(word)) {
            (Some(Kind::Spsc), _) if i == SPSC_PRODUCER => "producer".to_string(),
            (Some(Kind::Spsc), _) if i == SPSC_CONSUMER => "consumer".to_string(),
            (Some(Kind::Mpmc), ROLE_SENDER) => "sender".to_string(),
            (Some(Kind::Mpmc), ROLE_RECEIVER) => "receiver".to_string(),
            (Some(Kind::Mpmc), r) => format!("role {r}"),
            _ => format!("slot {i}"),
        };
        let state_name = match state {
            EP_ATTACHED => "attached".to_string(),
            EP_CLOSED => "closed".to_string(),
            other => format!("unknown({other})"),
        };
        // The same test the library makes (`Mapped::entry_state`): the kernel's word.
        let liveness = if state == EP_CLOSED {
            Liveness::Closed
        } else {
            match seg.held(i) {
                Held::Yes => Liveness::Alive,
                Held::Unknown => Liveness::Unknown,
                Held::No => {
                    // Closed between the two looks (a close writes the word first).
                    let again = seg.load_u64(off::endpoint_word(i)).unwrap_or(word);
                    if header::split_word(again).1 == EP_CLOSED {
                        Liveness::Closed
                    } else {
                        Liveness::Dead
                    }
                }
            }
        };
        out.push(EndpointInfo {
            index: i,
            role,
            pid,
            state: state_name,
            start_time,
            liveness,
        });
    }
    out
}

/// One row of `/proc/sysvipc/shm`.
#[derive(Debug, Clone, Copy)]
struct SysvRow {
    key: i32,
    id: i32,
    mode: u32,
    nattch: u64,
    uid: Option<u32>,
}

/// `SHM_DEST` in the mode of `/proc/sysvipc/shm`: removed, still attached.
const SHM_DEST: u32 = 0o1000;

fn sysv_rows() -> Vec<SysvRow> {
    let Ok(text) = std::fs::read_to_string(PROC_SYSVIPC_SHM) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    let Some(head) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = head.split_whitespace().collect();
    let col = |n: &str| cols.iter().position(|c| *c == n);
    let (Some(ck), Some(ci), Some(cp), Some(cn)) =
        (col("key"), col("shmid"), col("perms"), col("nattch"))
    else {
        return Vec::new();
    };
    let cu = col("uid");
    lines
        .filter_map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            Some(SysvRow {
                key: v.get(ck)?.parse::<i64>().ok()? as i32,
                id: v.get(ci)?.parse().ok()?,
                mode: u32::from_str_radix(v.get(cp)?, 8).ok()?,
                nattch: v.get(cn)?.parse().ok()?,
                uid: cu.and_then(|c| v.get(c)?.parse().ok()),
            })
        })
        .collect()
}

fn sysv_row(id: i32) -> Option<SysvRow> {
    sysv_rows().into_iter().find(|r| r.id == id)
}

/// Looks at System V segment `id`: by name (`expected`, the name it was looked up by) or
/// found by id (its name then comes from its header). `row` is its line in `/proc`.
fn report_sysv(id: i32, expected: Option<&str>, row: Option<SysvRow>) -> Result<Report> {
    let mut seg = Segment::open_sysv_id_readonly(id)?;
    // Liveness of its endpoints: the semaphore set its header names, if it is one.
    if seg.load_u64(0) == Some(u64::from_ne_bytes(MAGIC)) {
        if let Some(raw) = seg.load_u32(offset_of!(Header, sem_id)) {
            if let Some(sem) = raw.checked_sub(1) {
                let _ = seg.adopt_sem(sem as i32);
            }
        }
    }
    let removed = row.is_some_and(|r| r.mode & SHM_DEST != 0 || r.key == libc::IPC_PRIVATE);
    let key = match expected {
        Some(name) => Some(sysv_key(name)),
        None => row.map(|r| r.key),
    };
    // A removed segment has lost its key: its stored name cannot be checked against it.
    let mut r = Report::from_segment(&seg, expected, if removed { None } else { key });
    r.sysv_id = Some(id);
    r.sysv_key = key;
    r.sysv_removed = removed;
    // Our own read-only attachment is not in a count read before it was made.
    r.sysv_nattch = row.map(|r| r.nattch);
    r.uid = row.and_then(|r| r.uid);
    Ok(r)
}

fn report_posix(name: &str) -> Result<Report> {
    let seg = Segment::open_posix_readonly(name)?;
    let mut r = Report::from_segment(&seg, Some(name), None);
    r.uid = std::fs::metadata(format!("{DEV_SHM}{name}"))
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    Ok(r)
}

/// Every segment on the machine, POSIX (`/dev/shm`) and System V (`/proc/sysvipc/shm`),
/// shmlane's and others' (see [`Report::class`]), sorted by backing and name. Segments
/// that cannot be opened are listed as [`Class::Unreadable`]; non-regular files in
/// `/dev/shm` (directories, FIFOs) and names that are not UTF-8 are skipped.
pub fn list() -> Result<Vec<Report>> {
    let mut out = Vec::new();
    match std::fs::read_dir(DEV_SHM) {
        Ok(dir) => {
            for entry in dir.flatten() {
                let Ok(ft) = entry.file_type() else { continue };
                if !ft.is_file() {
                    continue;
                }
                let Ok(file) = entry.file_name().into_string() else {
                    continue;
                };
                let name = format!("/{file}");
                match report_posix(&name) {
                    Ok(r) => out.push(r),
                    // Gone since the directory was read.
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => out.push(Report::unreadable(&name, Backing::Posix, &e)),
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("reading /dev/shm", e)),
    }
    for row in sysv_rows() {
        match report_sysv(row.id, None, Some(row)) {
            Ok(r) => out.push(r),
            // Removed since /proc was read.
            Err(_) if sysv_row(row.id).is_none() => {}
            Err(e) => {
                let mut r = Report::unreadable(&format!("shmid:{}", row.id), Backing::SysV, &e);
                r.sysv_id = Some(row.id);
                r.sysv_key = Some(row.key);
                r.sysv_nattch = Some(row.nattch);
                out.push(r);
            }
        }
    }
    out.sort_by(|a, b| {
        (a.backing == Backing::SysV, &a.name, a.sysv_id).cmp(&(
            b.backing == Backing::SysV,
            &b.name,
            b.sysv_id,
        ))
    });
    Ok(out)
}

fn shmid_report(name: &str, id: i32) -> Result<Report> {
    let row = sysv_row(id);
    report_sysv(id, None, row).map_err(|e| match row {
        None => Error::NotFound {
            name: name.into(),
            key: 0,
        },
        Some(_) => e,
    })
}

/// Parses `shmid:<id>`.
fn parse_shmid(name: &str) -> Option<i32> {
    name.strip_prefix("shmid:")?.parse().ok()
}

/// Looks at one segment: `/name` (a POSIX segment first, then the System V segment keyed
/// by the name, like `open`), or `shmid:<id>` for a System V segment by id. Works on any
/// segment, shmlane's or not, valid or not: the verdict is in [`Report::validation`].
///
/// Errors: [`Error::NotFound`], [`Error::InvalidName`], [`Error::PermissionDenied`].
pub fn inspect(name: &str) -> Result<Report> {
    if let Some(id) = parse_shmid(name) {
        return shmid_report(name, id);
    }
    validate_name(name)?;
    match report_posix(name) {
        Err(Error::NotFound { .. }) => {}
        other => return other,
    }
    let id = Segment::sysv_id_of(name)?;
    report_sysv(id, Some(name), sysv_row(id))
}

/// A segment [`remove`] removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Removed {
    /// What it looked like just before.
    pub report: Report,
}

fn refuse_unless_forced(r: &Report, force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    match r.class {
        Class::Foreign => Err(Error::NotShmlane {
            name: r.name.clone(),
        }),
        Class::Unreadable => Err(Error::PermissionDenied {
            name: r.name.clone(),
        }),
        _ if r.check == Check::KeyCollision => Err(Error::KeyCollision {
            name: r.name.clone(),
            key: r.sysv_key.unwrap_or(0),
            other: r.fields.stored_name.clone().unwrap_or_default(),
        }),
        _ => Ok(()),
    }
}

/// Removes the segment(s) called `name`, like `ipcrm`: the POSIX segment and the System V
/// segment keyed by the name, whichever exist (or `shmid:<id>`). Each must be a shmlane
/// segment (any version, even damaged or uninitialised) unless `force`: a foreign one is
/// [`Error::NotShmlane`], a System V one holding another shmlane name
/// [`Error::KeyCollision`], one that cannot be read [`Error::PermissionDenied`]. Processes
/// still attached keep their mapping; only the name goes.
///
/// Errors: also [`Error::NotFound`] when neither exists, [`Error::InvalidName`].
pub fn remove(name: &str, force: bool) -> Result<Vec<Removed>> {
    if let Some(id) = parse_shmid(name) {
        let r = match shmid_report(name, id) {
            Ok(r) => r,
            Err(e @ Error::NotFound { .. }) => return Err(e),
            Err(e) if force => Report::unreadable(name, Backing::SysV, &e),
            Err(e) => return Err(e),
        };
        refuse_unless_forced(&r, force)?;
        Segment::remove_sysv_id(id)?;
        return Ok(vec![Removed { report: r }]);
    }
    validate_name(name)?;
    let mut removed = Vec::new();
    let posix = match report_posix(name) {
        Ok(r) => Some(r),
        Err(Error::NotFound { .. }) => None,
        Err(e @ Error::PermissionDenied { .. }) => {
            if !force {
                return Err(e);
            }
            Some(Report::unreadable(name, Backing::Posix, &e))
        }
        Err(e) => return Err(e),
    };
    if let Some(r) = posix {
        refuse_unless_forced(&r, force)?;
        Segment::remove_posix(name)?;
        removed.push(Removed { report: r });
    }
    match Segment::sysv_id_of(name) {
        Ok(id) => {
            let r = match report_sysv(id, Some(name), sysv_row(id)) {
                Ok(r) => r,
                Err(e) if force => Report::unreadable(name, Backing::SysV, &e),
                Err(e) => return Err(e),
            };
            refuse_unless_forced(&r, force)?;
            Segment::remove_sysv_id(id)?;
            removed.push(Removed { report: r });
        }
        Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    if removed.is_empty() {
        return Err(Error::NotFound {
            name: name.into(),
            key: sysv_key(name),
        });
    }
    Ok(removed)
}

/// Why [`clean`] would remove a segment, or `None` if it would leave it: a shmlane segment
/// of this format and layout (valid or not; not an already removed System V one) whose
/// every registered endpoint is dead or closed, and which has at least one registered
/// endpoint or was created more than [`CLEAN_MIN_AGE`] before `now` with none.
pub fn stale_reason(r: &Report, now: SystemTime) -> Option<String> {
    if r.class != Class::Shmlane
        || r.sysv_removed
        || r.len < HEADER_SIZE as u64
        || r.fields.version != Some(VERSION)
        || r.fields.layout_hash != Some(layout_hash())
    {
        return None;
    }
    if r.fields.state != Some(STATE_READY) {
        return None;
    }
    if r.pending().is_some() {
        // Messages left for a reader to come: data, not debris.
        return None;
    }
    if r.endpoints
        .iter()
        .any(|e| matches!(e.liveness, Liveness::Alive | Liveness::Unknown))
    {
        return None;
    }
    if r.endpoints.is_empty() {
        let age = now.duration_since(r.created()?).ok()?;
        return (age >= CLEAN_MIN_AGE).then(|| {
            format!(
                "no endpoint ever registered, created {} ago",
                human_duration(age)
            )
        });
    }
    let who: Vec<String> = r
        .endpoints
        .iter()
        .map(|e| format!("{} {} {}", e.role, e.pid, e.liveness.as_str()))
        .collect();
    Some(format!("every endpoint is gone: {}", who.join(", ")))
}

/// What [`clean`] did with one stale segment.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Dry run: it would be removed.
    WouldRemove,
    /// Removed.
    Removed,
    /// Left alone: looked again just before removing, it was no longer stale.
    NoLongerStale,
    /// Removing it failed.
    Failed(String),
}

/// One segment [`clean`] found stale.
#[derive(Debug, Clone, PartialEq)]
pub struct Stale {
    /// What it looked like.
    pub report: Report,
    /// Why it is stale, in words.
    pub reason: String,
    /// What was done.
    pub outcome: Outcome,
}

/// Removes every stale shmlane segment (see [`stale_reason`]); with `dry_run`, only lists
/// them. Each one is looked at again just before it is removed. A process that attaches
/// between that look and the removal keeps its mapping, but the name is gone.
pub fn clean(dry_run: bool) -> Result<Vec<Stale>> {
    clean_matching(dry_run, |_| true)
}

/// [`clean`], for the segments `only` accepts (by name, say).
pub fn clean_matching(dry_run: bool, only: impl Fn(&Report) -> bool) -> Result<Vec<Stale>> {
    let now = SystemTime::now();
    let mut out = Vec::new();
    for r in list()?.into_iter().filter(|r| only(r)) {
        let Some(reason) = stale_reason(&r, now) else {
            continue;
        };
        if dry_run {
            out.push(Stale {
                report: r,
                reason,
                outcome: Outcome::WouldRemove,
            });
            continue;
        }
        let again = match (r.backing, r.sysv_id) {
            (Backing::SysV, Some(id)) => report_sysv(id, None, sysv_row(id)).ok(),
            _ => report_posix(&r.name).ok(),
        };
        let still = again
            .as_ref()
            .and_then(|a| stale_reason(a, SystemTime::now()));
        let outcome = if still.is_none() {
            Outcome::NoLongerStale
        } else {
            let res = match (r.backing, r.sysv_id) {
                (Backing::SysV, Some(id)) => Segment::remove_sysv_id(id),
                _ => Segment::remove_posix(&r.name),
            };
            match res {
                Ok(()) => Outcome::Removed,
                Err(e) => Outcome::Failed(e.to_string()),
            }
        };
        out.push(Stale {
            report: r,
            reason,
            outcome,
        });
    }
    Ok(out)
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_text(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `42 s`, `5 min`, `3 h`, `2 d`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else if s < 2 * 86_400 {
        format!("{} h", s / 3600)
    } else {
        format!("{} d", s / 86_400)
    }
}

/// `512 B`, `64 KiB`, `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    let mut div = 1u64;
    while unit + 1 < UNITS.len() && n / div >= 1024 {
        div *= 1024;
        unit += 1;
    }
    if n % div == 0 {
        format!("{} {}", n / div, UNITS[unit])
    } else {
        format!("{:.1} {}", n as f64 / div as f64, UNITS[unit])
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_types)] // test-local counters
mod tests {
    use super::*;
    use crate::channel;
    use crate::segment::header::{Invalid, Mapped};
    use crate::Options;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn cache_padded_value_is_at_offset_zero() {
        let cp = crossbeam_utils::CachePadded::new(AtomicU64::new(0));
        assert_eq!(
            std::ptr::addr_of!(*cp) as usize,
            std::ptr::addr_of!(cp) as usize
        );
    }

    #[test]
    fn utc_text_and_sizes() {
        assert_eq!(utc_text(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661); // 2000-02-29
        assert_eq!(utc_text(t), "2000-02-29 01:01:01 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599);
        assert_eq!(utc_text(t), "2024-12-31 23:59:59 UTC");
        assert_eq!(human_bytes(100), "100 B");
        assert_eq!(human_bytes(1 << 20), "1 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_duration(Duration::from_secs(61)), "61 s");
    }

    fn unique(tag: &str) -> String {
        use std::sync::atomic::AtomicU32;
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "/shmlane-test-inspect-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Segment::remove(&self.0);
            let _ = Segment::remove(&self.0);
        }
    }

    /// What `Mapped::validate` says of the segment `name`, in words.
    fn opener_says(name: &str) -> String {
        match Mapped::validate(Segment::open(name).unwrap(), None) {
            Ok(_) => "valid".into(),
            Err(Invalid::NotYet(_)) => "not yet".into(),
            Err(Invalid::Err(e)) => e.to_string(),
        }
    }

    /// The read-only checks agree with the opener's on a series of damaged headers.
    #[test]
    fn checks_agree_with_validate() {
        type Damage = fn(&Header);
        let damages: [(&str, Damage); 12] = [
            ("none", |_| {}),
            ("version", |h| h.version.store(7, Ordering::Relaxed)),
            ("layout", |h| h.layout_hash.store(1, Ordering::Relaxed)),
            ("kind", |h| h.kind.store(9, Ordering::Relaxed)),
            ("name_len", |h| h.name_len.store(999, Ordering::Relaxed)),
            ("name", |h| h.name[3].store(b'X', Ordering::Relaxed)),
            ("segment_len", |h| {
                h.segment_len.store(1 << 40, Ordering::Relaxed)
            }),
            ("data_offset", |h| h.data_offset.store(8, Ordering::Relaxed)),
            ("capacity", |h| h.capacity.store(1 << 30, Ordering::Relaxed)),
            ("pow2", |h| h.capacity.store(100, Ordering::Relaxed)),
            ("max_message", |h| {
                h.max_message.store(1 << 20, Ordering::Relaxed)
            }),
            ("magic", |h| h.magic.store(42, Ordering::Relaxed)),
        ];
        for backing in [Backing::Posix, Backing::SysV] {
            for (what, damage) in damages {
                let name = unique(what);
                let _c = Cleanup(name.clone());
                let opts = Options::new().capacity(4096).backing(backing).persist(true);
                let geometry = crate::segment::header::Geometry {
                    kind: Kind::Spsc,
                    segment_len: 0,
                    capacity: 4096,
                    max_message: 1024,
                    slot_size: 0,
                    slot_count: 0,
                    wait: 3,
                };
                let m = channel::create(&name, &opts, geometry, &Default::default()).unwrap();
                damage(m.header());
                let r = inspect(&name).unwrap();
                assert_eq!(r.validation, opener_says(&name), "{backing} {what}");
                assert_eq!(r.valid(), what == "none");
                assert_eq!(r.backing, backing);
                drop(m);
            }
        }
    }

    #[test]
    fn mpmc_geometry_and_fill() {
        let name = unique("mpmc");
        let _c = Cleanup(name.clone());
        let tx =
            crate::mpmc::Sender::create(&name, &Options::new().slots(16).max_message(100)).unwrap();
        tx.send(b"a").unwrap();
        tx.send(b"b").unwrap();
        let r = inspect(&name).unwrap();
        assert!(r.valid(), "{}", r.validation);
        assert_eq!(r.kind(), Some(Kind::Mpmc));
        assert_eq!(r.fields.slot_count, Some(16));
        assert_eq!(r.fields.slot_size, Some(192));
        let fill = r.fill().unwrap();
        assert_eq!((fill.used, fill.total, fill.slots), (2, 16, true));
        assert_eq!(r.endpoints.len(), 1);
        assert_eq!(r.endpoints[0].role, "sender");
        assert_eq!(r.endpoints[0].liveness, Liveness::Alive);
        assert_eq!(r.fields.mpmc_live, [Some(1), Some(0)]);
    }

    /// An MPMC segment with one slot (or a slot too small, or sizes that do not multiply
    /// out) is refused by the opener, and `inspect` says the same.
    #[test]
    fn mpmc_geometry_checks_agree_with_validate() {
        type Damage = fn(&Header);
        let damages: [(&str, Damage); 4] = [
            ("none", |_| {}),
            ("one-slot", |h| {
                h.slot_count.store(1, Ordering::Relaxed);
                h.capacity.store(192, Ordering::Relaxed);
            }),
            ("slot-small", |h| h.slot_size.store(64, Ordering::Relaxed)),
            ("product", |h| h.capacity.store(192 * 8, Ordering::Relaxed)),
        ];
        for (what, damage) in damages {
            let name = unique(what);
            let _c = Cleanup(name.clone());
            let opts = Options::new().slots(16).max_message(100).persist(true);
            let tx = crate::mpmc::Sender::create(&name, &opts).unwrap();
            drop(tx);
            let m = Mapped::validate(Segment::open(&name).unwrap(), None)
                .expect("a fresh MPMC segment validates");
            damage(m.header());
            drop(m);
            let r = inspect(&name).unwrap();
            assert_eq!(r.validation, opener_says(&name), "{what}");
            assert_eq!(r.valid(), what == "none", "{what}: {}", r.validation);
        }
    }
}
