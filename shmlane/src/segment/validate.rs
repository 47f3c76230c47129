//! The one validator of a segment header: [`validate`] is a pure function of a plain
//! [`Snapshot`] of the header's fields, used by every opener (`Mapped::validate`, on the
//! live header) and by `inspect` (on a read-only copy), so the two can never disagree.
//! It reads no memory, so it is unit-tested and fuzzed (`shmlane-fuzz`'s
//! `validate_header`) without `/dev/shm`.
//!
//! The checks, in order (the first failure is the answer): the length holds a magic
//! (`NotShmlane`; an empty file is [`NotYet::Empty`]), the magic is set ([`NotYet::NoMagic`])
//! and ours (`NotShmlane`), the length holds the header (`Truncated`), the creator
//! finished ([`NotYet::NotReady`]), version (`VersionMismatch`), layout hash
//! (`LayoutMismatch`), a known kind (`Corrupt`), the kind asked for (`KindMismatch`), the
//! stored name ([`NameCheck`]: `KeyCollision` on System V, `Corrupt` on POSIX), the
//! segment's length (`Truncated`), then the geometry (`Corrupt`).

use memoffset::offset_of;

use super::header::{
    layout_hash, Header, Kind, HEADER_SIZE, MAGIC, NAME_CAP, STATE_READY, VERSION,
};
use super::{sysv_key, validate_name, Backing, Segment};
use crate::error::{Error, Result};

/// The header fields validation looks at, as plain values: copied from a live header
/// ([`Snapshot::read`]) or built by hand (tests, the fuzzer). A field the segment is too
/// short to hold reads as 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Bytes of the segment as mapped (or as long as the file is).
    pub len: u64,
    /// The first 8 bytes, native endian.
    pub magic: u64,
    /// `state`.
    pub state: u32,
    /// `version`.
    pub version: u32,
    /// `layout_hash`.
    pub layout_hash: u64,
    /// `kind`, raw.
    pub kind: u32,
    /// `name_len`, raw (may exceed `NAME_CAP` in a corrupt header).
    pub name_len: u32,
    /// The stored name's first `min(name_len, NAME_CAP)` bytes.
    pub name: Vec<u8>,
    /// `segment_len`.
    pub segment_len: u64,
    /// `data_offset`.
    pub data_offset: u64,
    /// `capacity`.
    pub capacity: u64,
    /// `max_message`.
    pub max_message: u32,
    /// `slot_size`.
    pub slot_size: u32,
    /// `slot_count`.
    pub slot_count: u64,
    /// `wait`, raw.
    pub wait: u32,
}

impl Snapshot {
    /// Copies the fields out of `seg`'s header with bounds-checked loads: nothing outside
    /// the mapping is read, whatever its length. `magic` and `state` are read first and
    /// then an acquire fence orders the other loads after them: a `state` of
    /// [`STATE_READY`] (stored with Release after every other field) means the rest was
    /// written before.
    pub fn read(seg: &Segment) -> Snapshot {
        Snapshot::gather(
            seg.len() as u64,
            |off| seg.load_u64(off),
            |off| seg.load_u32(off),
            |off| seg.load_u8(off),
        )
    }

    /// The fields of a header image: `bytes` are the segment's first bytes (a copy, read
    /// with `pread` or from the fuzzer), `len` the segment's length. A field that `bytes`
    /// does not wholly hold reads as 0, like one outside a short mapping.
    pub fn from_bytes(bytes: &[u8], len: u64) -> Snapshot {
        fn at<const N: usize>(bytes: &[u8], off: usize) -> Option<[u8; N]> {
            bytes.get(off..off.checked_add(N)?)?.try_into().ok()
        }
        Snapshot::gather(
            len,
            |off| at(bytes, off).map(u64::from_ne_bytes),
            |off| at(bytes, off).map(u32::from_ne_bytes),
            |off| bytes.get(off).copied(),
        )
    }

    /// The fields, each read by the loader of its width (`None`, outside what can be
    /// read, counts as 0): `magic` and `state` first, then an acquire fence, then the
    /// rest.
    fn gather(
        len: u64,
        u64_at: impl Fn(usize) -> Option<u64>,
        u32_at: impl Fn(usize) -> Option<u32>,
        u8_at: impl Fn(usize) -> Option<u8>,
    ) -> Snapshot {
        let q = |off| u64_at(off).unwrap_or(0);
        let d = |off| u32_at(off).unwrap_or(0);
        let magic = q(0);
        let state = d(offset_of!(Header, state));
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let name_len = d(offset_of!(Header, name_len));
        let base = offset_of!(Header, name);
        let name = (0..(name_len as usize).min(NAME_CAP))
            .map_while(|i| u8_at(base + i))
            .collect();
        Snapshot {
            len,
            magic,
            state,
            version: d(offset_of!(Header, version)),
            layout_hash: q(offset_of!(Header, layout_hash)),
            kind: d(offset_of!(Header, kind)),
            name_len,
            name,
            segment_len: q(offset_of!(Header, segment_len)),
            data_offset: q(offset_of!(Header, data_offset)),
            capacity: q(offset_of!(Header, capacity)),
            max_message: d(offset_of!(Header, max_message)),
            slot_size: d(offset_of!(Header, slot_size)),
            slot_count: q(offset_of!(Header, slot_count)),
            wait: d(offset_of!(Header, wait)),
        }
    }
}

/// Which stored name a segment must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameCheck {
    /// Looked up by name on this backing: the stored name must be that name (else
    /// `KeyCollision` on System V, `Corrupt` on POSIX).
    Is(Backing),
    /// Found by System V id with this key: the stored name must be a valid name that
    /// hashes to it.
    HashesTo(i32),
    /// Not checked.
    Any,
}

/// Why a segment is not ready yet: its creator has not finished (or died before it did).
/// An opener waits and tries again; `inspect` says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotYet {
    /// A 0-byte file: not sized yet.
    Empty,
    /// The magic is still 0.
    NoMagic,
    /// `state` is not [`STATE_READY`].
    NotReady {
        /// The state found.
        state: u32,
    },
}

impl std::fmt::Display for NotYet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotYet::Empty => f.write_str(
                "empty: its creator has not sized it yet (or crashed doing so)",
            ),
            NotYet::NoMagic => f.write_str(
                "no magic yet: its creator has not finished initialising it (or crashed doing so)",
            ),
            NotYet::NotReady { state } => write!(
                f,
                "not ready: state {state}, its creator has not finished initialising it (or crashed doing so)"
            ),
        }
    }
}

/// Why a segment did not validate.
#[derive(Debug)]
pub enum Invalid {
    /// The creator is not finished: try again.
    NotYet(NotYet),
    /// A final answer.
    Err(Error),
}

impl From<Error> for Invalid {
    fn from(e: Error) -> Invalid {
        Invalid::Err(e)
    }
}

/// Validates the header `s` of the segment `name`: see the module docs for the checks and
/// their order. `want`: the ring kind the caller needs (`None`: any).
pub fn validate(
    s: &Snapshot,
    name: &str,
    want: Option<Kind>,
    names: NameCheck,
) -> std::result::Result<Geometry, Invalid> {
    let owned = || name.to_string();
    if s.len < 8 {
        return Err(if s.len == 0 {
            Invalid::NotYet(NotYet::Empty)
        } else {
            Error::NotShmlane { name: owned() }.into()
        });
    }
    if s.magic == 0 {
        return Err(Invalid::NotYet(NotYet::NoMagic));
    }
    if s.magic != u64::from_ne_bytes(MAGIC) {
        return Err(Error::NotShmlane { name: owned() }.into());
    }
    if s.len < HEADER_SIZE as u64 {
        return Err(Error::Truncated {
            name: owned(),
            len: s.len,
            expected: HEADER_SIZE as u64,
        }
        .into());
    }
    if s.state != STATE_READY {
        return Err(Invalid::NotYet(NotYet::NotReady { state: s.state }));
    }
    if s.version != VERSION {
        return Err(Error::VersionMismatch {
            name: owned(),
            found: s.version,
            expected: VERSION,
        }
        .into());
    }
    if s.layout_hash != layout_hash() {
        return Err(Error::LayoutMismatch {
            name: owned(),
            found: s.layout_hash,
            expected: layout_hash(),
        }
        .into());
    }
    let kind = Kind::from_raw(s.kind)
        .ok_or_else(|| Error::corrupt(format!("unknown ring kind {}", s.kind)))?;
    if let Some(want) = want {
        if kind != want {
            return Err(Error::KindMismatch {
                name: owned(),
                found: kind.as_str(),
                expected: want.as_str(),
            }
            .into());
        }
    }
    let name_len = s.name_len as usize;
    if name_len > NAME_CAP {
        return Err(Error::corrupt(format!("stored name length {name_len} > {NAME_CAP}")).into());
    }
    let stored = &s.name[..name_len.min(s.name.len())];
    let other = || String::from_utf8_lossy(stored).into_owned();
    match names {
        NameCheck::Is(backing) if stored != name.as_bytes() => {
            return Err(match backing {
                Backing::SysV => Error::KeyCollision {
                    key: sysv_key(name),
                    name: owned(),
                    other: other(),
                },
                Backing::Posix => {
                    Error::corrupt(format!("segment {name} says its name is {:?}", other()))
                }
            }
            .into());
        }
        NameCheck::HashesTo(key) => {
            let ok = std::str::from_utf8(stored)
                .is_ok_and(|n| validate_name(n).is_ok() && sysv_key(n) == key);
            if !ok {
                return Err(Error::corrupt(format!(
                    "System V segment with key {key:#010x} says its name is {:?}, which does not give that key",
                    other()
                ))
                .into());
            }
        }
        _ => {}
    }
    if s.len < s.segment_len {
        return Err(Error::Truncated {
            name: owned(),
            len: s.len,
            expected: s.segment_len,
        }
        .into());
    }
    let (capacity, segment_len) = (s.capacity, s.segment_len);
    if s.data_offset != HEADER_SIZE as u64 {
        return Err(
            Error::corrupt(format!("data offset {} != {HEADER_SIZE}", s.data_offset)).into(),
        );
    }
    let fits = (HEADER_SIZE as u64)
        .checked_add(capacity)
        .is_some_and(|end| end <= segment_len);
    if !fits {
        return Err(Error::corrupt(format!(
            "data area of {capacity} bytes does not fit a segment of {segment_len} bytes"
        ))
        .into());
    }
    let max_message = u64::from(s.max_message);
    let slot_size = u64::from(s.slot_size);
    match kind {
        Kind::Spsc => check_spsc_geometry(capacity, max_message)?,
        Kind::Mpmc => check_mpmc_geometry(s.slot_count, slot_size, max_message, capacity)?,
        Kind::Broadcast => crate::ring::broadcast::check_geometry(
            capacity,
            max_message,
            s.slot_count,
            slot_size,
            segment_len,
        )
        .map_err(Error::from)?,
    }
    // Every value below was checked to fit the segment's length, a usize.
    Ok(Geometry {
        kind,
        segment_len: segment_len as usize,
        capacity: capacity as usize,
        max_message: max_message as usize,
        slot_size: slot_size as usize,
        slot_count: s.slot_count as usize,
        wait: s.wait,
    })
}

/// The validated shape of a segment, copied out of the header once: after validation
/// nothing here is read from shared memory again (a peer could change it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// The ring kind.
    pub kind: Kind,
    /// Total segment bytes.
    pub segment_len: usize,
    /// Data area bytes.
    pub capacity: usize,
    /// Largest payload.
    pub max_message: usize,
    /// MPMC slot size (0 for SPSC).
    pub slot_size: usize,
    /// MPMC slot count (0 for SPSC).
    pub slot_count: usize,
    /// Default wait strategy, raw.
    pub wait: u32,
}

impl Geometry {
    /// Bytes of the data area: the ring, plus (broadcast) the control block and cursor
    /// table before it.
    pub fn data_len(&self) -> usize {
        match self.kind {
            Kind::Broadcast => self.capacity + crate::ring::broadcast::ring_offset(self.slot_count),
            Kind::Spsc | Kind::Mpmc => self.capacity,
        }
    }
}

/// Checks the geometry stored in an SPSC segment: a power-of-two capacity of at least
/// [`MIN_CAPACITY`](crate::MIN_CAPACITY), and a `max_message` whose record is at most
/// half of it, as `Options` makes them. The ring relies on the latter: a record that does
/// not fit before the end of the ring is preceded by padding shorter than itself, so with
/// `2 * record_size(max_message) <= capacity` padding plus a record always fit in an
/// empty ring. (Builds before that rule accepted `max_message` up to `capacity / 2`,
/// whose record is up to 8 bytes more than half the ring; their segments are refused.)
/// Part of [`validate`].
pub fn check_spsc_geometry(capacity: u64, max_message: u64) -> Result<()> {
    if !capacity.is_power_of_two() || capacity < super::layout::MIN_CAPACITY as u64 {
        return Err(Error::corrupt(format!(
            "capacity {capacity} is not a power of two >= 64"
        )));
    }
    if max_message > capacity / 2 {
        return Err(Error::corrupt(format!(
            "max_message {max_message} > capacity / 2"
        )));
    }
    if max_message > super::layout::MAX_MESSAGE_LIMIT as u64 {
        return Err(Error::corrupt(format!(
            "max_message {max_message} is over the limit {}",
            super::layout::MAX_MESSAGE_LIMIT
        )));
    }
    // No overflow: max_message <= MAX_MESSAGE_LIMIT < 2^31.
    let record = super::layout::record_size(max_message as usize) as u64;
    if 2 * record > capacity {
        return Err(Error::corrupt(format!(
            "max_message {max_message} takes a record of {record} bytes, more than half of capacity {capacity} (padding plus a record might not fit the empty ring; this build makes such a ring twice as large: recreate the segment)"
        )));
    }
    Ok(())
}

/// Checks the geometry stored in an MPMC segment: a power-of-two slot count of at least 2
/// (with one slot, "published for position p" and "free for position p + 1" would be the
/// same stamp), slots a multiple of 8 bytes that hold the header plus `max_message`, and
/// `slot_count * slot_size == capacity`. `inspect` runs the same check.
pub fn check_mpmc_geometry(
    slot_count: u64,
    slot_size: u64,
    max_message: u64,
    capacity: u64,
) -> Result<()> {
    let ok = slot_count.is_power_of_two()
        && slot_count >= 2
        && slot_size % super::layout::RECORD_ALIGN as u64 == 0
        && slot_size >= super::layout::SLOT_HEADER as u64 + max_message
        && slot_count.checked_mul(slot_size) == Some(capacity);
    if !ok {
        return Err(Error::corrupt(format!(
            "slot geometry {slot_count} x {slot_size} (max_message {max_message}, capacity {capacity}) is inconsistent"
        )));
    }
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAME: &str = "/v";

    /// A valid SPSC header of a 4 KiB ring named [`NAME`], by hand (no segment).
    fn good() -> Snapshot {
        Snapshot {
            len: (HEADER_SIZE + 4096) as u64,
            magic: u64::from_ne_bytes(MAGIC),
            state: STATE_READY,
            version: VERSION,
            layout_hash: layout_hash(),
            kind: Kind::Spsc as u32,
            name_len: NAME.len() as u32,
            name: NAME.as_bytes().to_vec(),
            segment_len: (HEADER_SIZE + 4096) as u64,
            data_offset: HEADER_SIZE as u64,
            capacity: 4096,
            max_message: 1024,
            slot_size: 0,
            slot_count: 0,
            wait: 3,
        }
    }

    fn says(s: &Snapshot, names: NameCheck) -> String {
        match validate(s, NAME, None, names) {
            Ok(_) => "valid".into(),
            Err(Invalid::NotYet(n)) => format!("not yet: {n:?}"),
            Err(Invalid::Err(e)) => e.to_string(),
        }
    }

    #[test]
    fn a_good_header_gives_its_geometry() {
        let g = validate(
            &good(),
            NAME,
            Some(Kind::Spsc),
            NameCheck::Is(Backing::Posix),
        )
        .unwrap();
        assert_eq!(
            (g.kind, g.capacity, g.max_message),
            (Kind::Spsc, 4096, 1024)
        );
        assert_eq!((g.segment_len, g.wait), (HEADER_SIZE + 4096, 3));
    }

    #[test]
    fn each_damage_has_its_own_answer() {
        type Damage = fn(&mut Snapshot);
        let cases: &[(Damage, &str)] = &[
            (|s| s.len = 0, "not yet: Empty"),
            (|s| s.len = 7, "not a shmlane segment"),
            (|s| s.magic = 0, "not yet: NoMagic"),
            (|s| s.magic = 1, "not a shmlane segment"),
            (|s| s.len = HEADER_SIZE as u64 - 1, "truncated"),
            (|s| s.state = 0, "not yet: NotReady { state: 0 }"),
            (|s| s.version = VERSION + 1, "version"),
            (|s| s.layout_hash ^= 1, "layout"),
            (|s| s.kind = 99, "unknown ring kind 99"),
            (|s| s.name_len = NAME_CAP as u32 + 1, "stored name length"),
            (|s| s.name = b"/w".to_vec(), "says its name is \"/w\""),
            (|s| s.segment_len += 1, "truncated"),
            (|s| s.data_offset = 8, "data offset 8"),
            (|s| s.capacity = 8192, "does not fit"),
            (|s| s.capacity = 2048, "max_message 1024 takes a record"),
            (|s| s.max_message = 4000, "capacity / 2"),
            (
                |s| {
                    s.capacity = 4000;
                    s.segment_len = (HEADER_SIZE + 4000) as u64
                },
                "power of two",
            ),
        ];
        for (damage, want) in cases {
            let mut s = good();
            damage(&mut s);
            let got = says(&s, NameCheck::Is(Backing::Posix));
            assert!(got.contains(want), "{want:?} not in {got:?}");
        }
    }

    #[test]
    fn names_are_checked_as_asked() {
        let mut s = good();
        s.name = b"/w".to_vec();
        assert!(
            says(&s, NameCheck::Is(Backing::SysV))
                .contains("is used by a shmlane segment named /w"),
            "{}",
            says(&s, NameCheck::Is(Backing::SysV))
        );
        assert_eq!(says(&s, NameCheck::Any), "valid");
        assert_eq!(says(&s, NameCheck::HashesTo(sysv_key("/w"))), "valid");
        assert!(says(&s, NameCheck::HashesTo(sysv_key("/v"))).contains("does not give that key"));
        let g = validate(&good(), NAME, Some(Kind::Mpmc), NameCheck::Any).unwrap_err();
        assert!(
            matches!(g, Invalid::Err(Error::KindMismatch { .. })),
            "{g:?}"
        );
    }

    proptest! {
        /// Any header at all: an answer, never a panic; and a geometry only when the data
        /// area fits the length the segment has.
        #[test]
        fn never_panics_and_only_accepts_what_fits(
            len in prop_oneof![Just((HEADER_SIZE + 4096) as u64), any::<u64>()],
            kind in 0u32..4, name_len in 0u32..300, segment_len in any::<u64>(),
            capacity in prop_oneof![Just(4096u64), any::<u64>()],
            max_message in any::<u32>(), slot_size in any::<u32>(), slot_count in any::<u64>(),
        ) {
            let mut s = good();
            s.len = len;
            s.kind = kind;
            s.name_len = name_len;
            s.segment_len = segment_len;
            s.capacity = capacity;
            s.max_message = max_message;
            s.slot_size = slot_size;
            s.slot_count = slot_count;
            if let Ok(g) = validate(&s, NAME, None, NameCheck::Any) {
                prop_assert!(HEADER_SIZE as u64 + g.capacity as u64 <= g.segment_len as u64);
                prop_assert!(g.segment_len as u64 <= len);
                prop_assert!(g.max_message <= g.capacity / 2);
            }
        }
    }
}
