//! The broadcast ring: one publisher, many subscribers, each reading every message.
//!
//! # Layout of the data area
//!
//! ```text
//! HEADER_SIZE + 0      Control  (128 B): write_pos (hot line); frontier, tail, attach_epoch (next line)
//! HEADER_SIZE + 128    Config   (128 B): overflow mode, evict_after, max_subscribers (set once)
//! HEADER_SIZE + 256    CursorSlot x max_subscribers (128 B each): pos, seq, state, name
//! HEADER_SIZE + ring_offset(n)   the record ring, `capacity` bytes (a power of two)
//! ```
//!
//! Cursor slot `k` belongs to registry entry `k + 1` (entry 0 is the publisher's): the
//! kernel hold on the entry (see `segment::liveness`) is what makes a subscriber the owner
//! of a slot, before it writes a byte of it ("own before you write").
//!
//! # Records
//!
//! `{ len: u32, tag: u32, seq: u64 }` (16 bytes) plus the payload padded to 16 bytes.
//! `seq` is the message's number in the stream (0, 1, 2, ...; padding records carry the
//! number of the message after them). A record never wraps; a padding record
//! (`len == PAD_FLAG`) runs to the end of the ring. Positions are free-running byte
//! counters, multiples of 16; `index = pos & (capacity - 1)`.
//!
//! **The stub.** The 16 bytes at `write_pos` always hold, in their `seq` field, the number
//! of the next message (the publisher writes it with each record, before publishing).
//! So a subscriber that starts at `write_pos` (or at `tail`, or at a named cursor's
//! position) learns the exact message number there, and a later lap can be reported
//! with an exact count of missed messages.
//!
//! # Positions the publisher keeps
//!
//! - `write_pos`: end of the last published record.
//! - `frontier`: bytes below this position may be overwritten (or already are). Before
//!   the publisher writes any byte at position `q` (which lands on the index of `q -
//!   capacity`), it has stored `frontier > q - capacity`.
//! - `tail`: the oldest record start not below `frontier` (where `StartAt::Oldest` and a
//!   lapped subscriber go on). Invariant: `frontier <= tail <= write_pos`.
//!
//! **Frontier steps.** `frontier` does not follow every record: when a record would
//! overwrite bytes at or above it, the publisher moves it to the next multiple of the
//! step ([`frontier_step`]: 1/16 of the ring, at most 64 KiB; or to `write_pos` if that
//! comes first), and takes `tail` from marks it keeps while committing (the first record
//! start at or after each step boundary) instead of walking the records it gives up. So
//! the stores of `frontier` and `tail`, the fence after them, the joiner check and, in
//! Block mode, the look at the cursors happen once per step, not per message; a
//! Lap-mode subscriber's `frontier` load hits its own cache (the line changes once per
//! step; `write_pos`, which changes per message, is on the line before). The price:
//! `frontier` runs up to a step ahead of the overwritten bytes, so the ring keeps
//! between `capacity - step` and `capacity` bytes of messages, a Lap subscriber is lapped
//! up to a step early, and a Block publisher waits until the slowest cursor is past the
//! whole step (it evicts a cursor standing still anywhere below the step's end).
//!
//! # Memory ordering (the argument for each cross-process step)
//!
//! 1. **Publish.** The publisher writes the record bytes, its header and the next stub
//!    with plain stores, then `write_pos.store(Release)`. A subscriber loads `write_pos`
//!    with Acquire before it reads anything below it, so it sees the whole record.
//! 2. **Overwrite (the seqlock).** Before writing bytes that land on older positions the
//!    publisher stores `tail` (Release) and `frontier` (Relaxed) and then issues
//!    `fence(Release)`; only then does it write those bytes. A subscriber copies a record
//!    out of the ring into its own buffer, then issues `fence(Acquire)` and loads
//!    `frontier`. If its copy read any byte the publisher wrote after a `frontier` store,
//!    the fence pair (release fence before that byte store, acquire fence after that
//!    byte load) makes the subscriber's `frontier` load see that store or a later one. So
//!    `frontier <= pos` after the copy proves the copy holds no byte of a later lap: it
//!    is intact, and only then is it handed out (Agrona's `BroadcastReceiver::validate`).
//!    The guard is over the copy, so nothing the publisher does later can change it.
//! 3. **Cursor updates.** A subscriber stores its cursor with Release after it has
//!    copied the record; the Block-mode publisher loads cursors with Acquire before it
//!    decides to overwrite. So the copy happens before the overwrite: a subscriber that
//!    is neither evicted nor lapped is never even sent to the lap path.
//! 4. **Lap recovery.** `tail` is stored with Release after the records it points to were
//!    published (1); a subscriber loads it with Acquire, copies the header there and
//!    validates it as in (2). The `seq` it reads there minus the `seq` it expected is the
//!    exact number of messages it missed.
//! 5. **Joining (Block mode).** The publisher caches the slowest cursor and rescans only
//!    when it runs out of room (or, cheaply, when it sees `attach_epoch` changed before
//!    a step), so a joining subscriber must not slip in behind a
//!    `frontier` the publisher is about to use. It is a Dekker pattern: the subscriber
//!    stores its cursor, bumps `attach_epoch` (SeqCst) and issues the sleeper's barrier
//!    (`fence(SeqCst)`, or the membarrier heavy barrier when light wakers are in use),
//!    then loads `frontier`; the publisher stores `frontier`, issues the waker's barrier
//!    and loads `attach_epoch`. At least one of them sees the other: either the
//!    publisher rescans before it writes (and honours the new cursor from then on), or
//!    the subscriber sees a `frontier` past its cursor and starts again from `tail`.
//!    When the publisher sees the joiner only after its `frontier` store passed the
//!    joiner's cursor, it still honours the cursor if nothing at or above it has been
//!    overwritten yet (`overwritten`, the highest `lo` it reserved): its `room` (how far
//!    it may write, `<= frontier`) stops at the cursor until the joiner reads on. Only
//!    an `ACTIVE` cursor below `overwritten` is marked `LAPPED`, (7). So a Block-mode
//!    joiner is never lapped, even when it joins in the middle of a `frontier` step.
//! 6. **Eviction.** The publisher CASes a slot's state to `EVICTED` and only later
//!    (after the release fence of (2)) overwrites what that subscriber had not read; the
//!    subscriber's copy is validated by (2) whatever its state says, so an evicted
//!    subscriber never hands out torn bytes either.
//!
//! 7. **Block mode's trusted reads.** In Block mode the publisher never overwrites what
//!    an `ACTIVE` cursor has not read without first CASing that slot away from `ACTIVE`
//!    (to `EVICTED`, or to `LAPPED` when a scan finds the cursor below what it has
//!    overwritten: a cursor a predecessor's `frontier` passed), and it issues `fence(Release)`
//!    between that CAS and the overwrite. So a subscriber that joined with
//!    `frontier <= pos` (5) validates a copy with `fence(Acquire)` and a load of its *own*
//!    slot's state (a line nobody else writes while it reads) instead of `frontier` (the
//!    publisher's hot line): if the copy saw an overwritten byte, the state load sees the
//!    CAS. A state other than `ACTIVE` falls back to the `frontier` check. Lap mode always
//!    checks `frontier`.
//!
//! Every value read from the segment is checked before use (positions aligned and
//! ordered, lengths within `max_message` and the ring, cursors within the published
//! range); a bad one is `Corrupt`.

use std::time::{Duration, Instant};

use crate::segment::header::{Mapped, HEADER_SIZE};
use crate::sync::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};

pub(crate) use super::spsc::{Corrupt, PAD_FLAG};

/// Bytes of a broadcast record header `{ len: u32, tag: u32, seq: u64 }`.
pub const BC_HEADER: usize = 16;
/// Broadcast records start on multiples of this.
pub const BC_ALIGN: usize = 16;
/// Smallest broadcast ring.
#[cfg(not(loom))]
pub const BC_MIN_CAPACITY: usize = 256;
/// Smallest broadcast ring (small models under loom).
#[cfg(loom)]
pub const BC_MIN_CAPACITY: usize = 64;
/// Bytes of the control block plus the config block before the cursor table.
pub const CONTROL_SIZE: usize = 256;
/// Bytes of one cursor slot.
pub const CURSOR_SLOT: usize = 128;
/// Longest cursor name stored in a slot.
pub const CURSOR_NAME_CAP: usize = 96;

/// Cursor slot state: never used (or left by an unnamed subscriber).
pub const C_FREE: u32 = 0;
/// Cursor slot state: a subscriber reads through it.
pub const C_ACTIVE: u32 = 1;
/// Cursor slot state: a named cursor whose subscriber left; it holds a Block-mode
/// publisher back for at most `evict_after`.
pub const C_DETACHED: u32 = 2;
/// Cursor slot state: cut loose by the publisher (did not move for `evict_after`).
pub const C_EVICTED: u32 = 3;
/// Cursor slot state: an `ACTIVE` cursor the publisher found below `frontier` (it will
/// overwrite what the cursor points at); the subscriber validates its copies against
/// `frontier` again and rejoins at the tail.
pub const C_LAPPED: u32 = 4;

/// `Config::overflow`: the publisher waits for the slowest live subscriber.
pub const OVERFLOW_BLOCK: u32 = 1;
/// `Config::overflow`: the publisher never waits; slow subscribers are lapped.
pub const OVERFLOW_LAP: u32 = 2;

/// The bytes a record of `len` payload bytes takes in a broadcast ring.
#[inline]
pub const fn bc_record_size(len: usize) -> usize {
    BC_HEADER + ((len + BC_ALIGN - 1) & !(BC_ALIGN - 1))
}

/// How far `frontier` moves at a time in a ring of `cap` bytes: 1/16 of the ring, at
/// most 64 KiB, a multiple of [`BC_ALIGN`].
#[inline]
pub const fn frontier_step(cap: u64) -> u64 {
    let s = cap / 16;
    let s = if s > 64 << 10 { 64 << 10 } else { s };
    let s = s & !(BC_ALIGN as u64 - 1);
    if s < BC_ALIGN as u64 {
        BC_ALIGN as u64
    } else {
        s
    }
}

/// Offset of the record ring in the data area, for `n` cursor slots.
#[inline]
pub const fn ring_offset(n: usize) -> usize {
    CONTROL_SIZE + n * CURSOR_SLOT
}

/// The publisher's positions, on two cache lines: `write_pos` changes with every message;
/// `frontier` (which a Lap-mode subscriber loads after every copy), `tail` and
/// `attach_epoch` change once per frontier step, so those loads hit the subscriber's own
/// cache instead of following the publisher's line around.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct Control {
    /// End of the last published record.
    pub write_pos: AtomicU64,
    /// Keeps the lines apart.
    pub _pad: [u8; 56],
    /// Positions below this may have been overwritten.
    pub frontier: AtomicU64,
    /// Oldest intact record start.
    pub tail: AtomicU64,
    /// Bumped by every subscriber that attaches (see the module docs, (5)).
    pub attach_epoch: AtomicU64,
}

/// Settings chosen at create, read once by every endpoint.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct Config {
    /// [`OVERFLOW_BLOCK`] or [`OVERFLOW_LAP`].
    pub overflow: AtomicU32,
    /// Cursor slots (== the header's `slot_count`).
    pub max_subscribers: AtomicU32,
    /// Block mode: nanoseconds a cursor may stand still before it is evicted.
    pub evict_after_ns: AtomicU64,
}

/// One subscriber's cursor.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct CursorSlot {
    /// Next position to read (stored with Release after the record was copied).
    pub pos: AtomicU64,
    /// The number of the message at `pos` (named cursors; for an exact lap count on reopen).
    pub seq: AtomicU64,
    /// `C_*`.
    pub state: AtomicU32,
    /// Bytes of `name` in use (0: unnamed).
    pub name_len: AtomicU32,
    /// The cursor's name.
    pub name: [AtomicU8; CURSOR_NAME_CAP],
}

const _: () = assert!(std::mem::size_of::<Control>() == 128 || cfg!(loom));
// The data area's layout is pinned here (the header's layout hash does not cover it;
// a change of it bumps `VERSION`).
const _: () = assert!(std::mem::offset_of!(Control, frontier) == 64 || cfg!(loom));
const _: () = assert!(std::mem::size_of::<Config>() == 128 || cfg!(loom));
const _: () = assert!(std::mem::size_of::<CursorSlot>() == CURSOR_SLOT || cfg!(loom));

/// Message numbers read from the segment must be below this: no stream gets this far (at
/// a billion messages a second, 146 years), so a larger one is corrupt, and counting on
/// from any number below it never overflows.
const SEQ_LIMIT: u64 = 1 << 62;

/// A message number read from the segment (`what` says where), if it can be real.
fn check_seq(what: &str, seq: u64) -> Result<u64, Corrupt> {
    if seq < SEQ_LIMIT {
        Ok(seq)
    } else {
        Err(Corrupt(format!(
            "{what} holds message number {seq}, past any real stream"
        )))
    }
}

/// Checks a broadcast segment's geometry (from its header) before anything is trusted.
pub(crate) fn check_geometry(
    capacity: u64,
    max_message: u64,
    slot_count: u64,
    slot_size: u64,
    segment_len: u64,
) -> Result<(), Corrupt> {
    let max_subs = crate::segment::header::MAX_ENDPOINTS as u64 - 1;
    if !capacity.is_power_of_two() || capacity < BC_MIN_CAPACITY as u64 {
        return Err(Corrupt(format!(
            "broadcast capacity {capacity} is not a power of two >= {BC_MIN_CAPACITY}"
        )));
    }
    if max_message > crate::options::MAX_MESSAGE_LIMIT as u64
        || 2 * bc_record_size(max_message as usize) as u64 + BC_HEADER as u64 > capacity
    {
        return Err(Corrupt(format!(
            "broadcast max_message {max_message} does not fit twice in capacity {capacity}"
        )));
    }
    if slot_count == 0 || slot_count > max_subs || slot_size != CURSOR_SLOT as u64 {
        return Err(Corrupt(format!(
            "broadcast cursor table of {slot_count} x {slot_size} is out of range (1..={max_subs} slots of {CURSOR_SLOT} bytes)"
        )));
    }
    let need = HEADER_SIZE as u64 + ring_offset(slot_count as usize) as u64 + capacity;
    if segment_len < need {
        return Err(Corrupt(format!(
            "broadcast segment of {segment_len} bytes is shorter than its layout ({need})"
        )));
    }
    Ok(())
}

/// Views of the shared areas of a validated broadcast segment.
#[derive(Clone, Copy)]
pub(crate) struct Areas<'a> {
    pub control: &'a Control,
    pub config: &'a Config,
    pub cursors: &'a [CursorSlot],
    pub ring: *mut u8,
    pub cap: u64,
    /// Under loom: the ring's bytes as relaxed atomic words (see [`model_areas`]).
    #[cfg(loom)]
    pub words: &'a [AtomicU64],
}

/// [`areas`] of the segment an endpoint keeps alive, for the endpoint to keep beside it.
///
/// The borrow checker cannot see that the `Arc` in the same struct keeps the areas valid,
/// so the lifetime is widened here; the endpoints use the areas inside their own methods
/// and never hand out a reference from them.
fn pinned_areas(m: &std::sync::Arc<Mapped>) -> Areas<'static> {
    let a = areas(m);
    // SAFETY: the areas point into the mapping (under loom: the model objects) owned by
    // `**m`, which stays where it is and mapped while any clone of the Arc lives. Each
    // caller stores the result next to a clone of `m` and never lets it outlive that
    // clone (see above).
    unsafe { std::mem::transmute::<Areas<'_>, Areas<'static>>(a) }
}

/// The areas of `m`, a validated (or freshly made) broadcast segment.
pub(crate) fn areas(m: &Mapped) -> Areas<'_> {
    let g = m.geometry();
    let n = g.slot_count;
    #[cfg(not(loom))]
    {
        let base = m.data_ptr();
        // SAFETY: check_geometry (run by validate for every opened broadcast segment, and
        // true by construction for a created one) proved HEADER_SIZE + ring_offset(n) +
        // capacity <= segment_len <= the mapped length. The data area is page aligned, so
        // the 128-aligned structs at offsets 0, 128 and 256 + 128 k are aligned; they are
        // all atomics, valid for any bytes.
        unsafe {
            Areas {
                control: &*(base as *const Control),
                config: &*(base.add(128) as *const Config),
                cursors: std::slice::from_raw_parts(base.add(CONTROL_SIZE) as *const CursorSlot, n),
                ring: base.add(ring_offset(n)),
                cap: g.capacity as u64,
            }
        }
    }
    #[cfg(loom)]
    {
        let s = m.broadcast_model();
        // SAFETY: the model segment holds ring_offset(n) + capacity data bytes.
        let ring = unsafe { m.data_ptr().add(ring_offset(n)) };
        Areas {
            control: &s.0,
            config: &s.1,
            cursors: &s.2[..n],
            ring,
            cap: g.capacity as u64,
            words: &s.3,
        }
    }
}

/// Under loom: the broadcast control areas as loom objects (loom's atomics cannot live
/// in zeroed memory), and the ring's bytes as one relaxed `AtomicU64` per 8 bytes. Every
/// shared read and write of a record header or payload goes through those words, so loom
/// explores stale and torn reads of the payload too: a subscriber that hands out a copy
/// its validation should have refused fails the model's byte checks. (The publisher's
/// `WriteGrant` writes a private staging area, copied into the words at commit.)
#[cfg(loom)]
pub(crate) fn model_areas(n: usize, cap: usize) -> crate::segment::header::BroadcastModel {
    let z = || AtomicU64::new(0);
    (
        Control {
            write_pos: z(),
            _pad: [0; 56],
            frontier: z(),
            tail: z(),
            attach_epoch: z(),
        },
        Config {
            overflow: AtomicU32::new(0),
            max_subscribers: AtomicU32::new(0),
            evict_after_ns: z(),
        },
        (0..n)
            .map(|_| CursorSlot {
                pos: z(),
                seq: z(),
                state: AtomicU32::new(0),
                name_len: AtomicU32::new(0),
                name: std::array::from_fn(|_| AtomicU8::new(0)),
            })
            .collect(),
        (0..cap / 8).map(|_| AtomicU64::new(0)).collect(),
    )
}

/// Stores the settings of a new segment (inside `Mapped::init`, before it is ready).
pub(crate) fn init(m: &Mapped, overflow: u32, evict_after: Duration) {
    let a = areas(m);
    a.config.overflow.store(overflow, Ordering::Relaxed);
    a.config
        .max_subscribers
        .store(a.cursors.len() as u32, Ordering::Relaxed);
    a.config.evict_after_ns.store(
        evict_after.as_nanos().min(u64::MAX as u128) as u64,
        Ordering::Relaxed,
    );
}

/// A record header as read from the ring (unchecked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawHeader {
    pub len: u32,
    pub tag: u32,
    pub seq: u64,
}

#[cfg(loom)]
impl Areas<'_> {
    fn read_header(&self, off: u64) -> RawHeader {
        let w0 = self.words[off as usize / 8].load(Ordering::Relaxed);
        let seq = self.words[off as usize / 8 + 1].load(Ordering::Relaxed);
        RawHeader {
            len: w0 as u32,
            tag: (w0 >> 32) as u32,
            seq,
        }
    }

    fn write_header(&self, off: u64, h: RawHeader) {
        self.words[off as usize / 8 + 1].store(h.seq, Ordering::Relaxed);
        self.words[off as usize / 8]
            .store(u64::from(h.len) | u64::from(h.tag) << 32, Ordering::Relaxed);
    }

    fn write_stub(&self, off: u64, seq: u64) {
        self.words[off as usize / 8 + 1].store(seq, Ordering::Relaxed);
    }

    fn copy_payload(&self, off: u64, dst: &mut [u8]) {
        let first = (off as usize + BC_HEADER) / 8;
        for (i, chunk) in dst.chunks_mut(8).enumerate() {
            let w = self.words[first + i].load(Ordering::Relaxed).to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }

    /// Copies the publisher's staged payload into the words.
    fn publish_payload(&self, off: u64, len: usize) {
        let first = (off as usize + BC_HEADER) / 8;
        // SAFETY: the staging area is the ring's own memory, written only by the
        // publisher (this thread); off + record_size(len) <= cap.
        let src =
            unsafe { std::slice::from_raw_parts(self.ring.add(off as usize + BC_HEADER), len) };
        for (i, chunk) in src.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.words[first + i].store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
    }
}

#[cfg(not(loom))]
impl Areas<'_> {
    /// Nothing to do outside loom: the payload is in the ring already.
    #[inline(always)]
    fn publish_payload(&self, _off: u64, _len: usize) {}
}

impl Areas<'_> {
    /// Whether bytes at `pos` are still intact after a copy (module docs, (2)).
    #[inline]
    fn intact(&self, pos: u64) -> bool {
        fence(Ordering::Acquire);
        self.control.frontier.load(Ordering::Relaxed) <= pos
    }

    /// The message number at `pos` (a record start or `write_pos`), if the header there is
    /// still intact.
    fn seq_at(&self, pos: u64) -> Option<u64> {
        let h = self.read_header(pos & (self.cap - 1));
        self.intact(pos).then_some(h.seq)
    }
}

#[cfg(not(loom))]
impl Areas<'_> {
    /// Reads the record header at index `off`, volatile.
    #[inline]
    fn read_header(&self, off: u64) -> RawHeader {
        debug_assert!(off % 16 == 0 && off + 16 <= self.cap);
        // SAFETY: callers pass `off = pos & (cap - 1)` with pos 16-aligned, so off is
        // 16-aligned and off + 16 <= cap (cap a power of two >= 256): inside the ring.
        unsafe {
            let p = self.ring.add(off as usize);
            RawHeader {
                len: p.cast::<u32>().read_volatile(),
                tag: p.add(4).cast::<u32>().read_volatile(),
                seq: p.add(8).cast::<u64>().read_volatile(),
            }
        }
    }

    /// Writes a record header at index `off`.
    #[inline]
    fn write_header(&self, off: u64, h: RawHeader) {
        debug_assert!(off % 16 == 0 && off + 16 <= self.cap);
        // SAFETY: as for read_header.
        unsafe {
            let p = self.ring.add(off as usize);
            p.cast::<u32>().write_volatile(h.len);
            p.add(4).cast::<u32>().write_volatile(h.tag);
            p.add(8).cast::<u64>().write_volatile(h.seq);
        }
    }

    /// Writes only the `seq` field of the header at index `off` (the stub).
    #[inline]
    fn write_stub(&self, off: u64, seq: u64) {
        debug_assert!(off % 16 == 0 && off + 16 <= self.cap);
        // SAFETY: as for read_header.
        unsafe {
            self.ring
                .add(off as usize + 8)
                .cast::<u64>()
                .write_volatile(seq)
        };
    }

    /// Copies `len` payload bytes of the record at index `off` into `dst`.
    #[inline]
    fn copy_payload(&self, off: u64, dst: &mut [u8]) {
        debug_assert!(off + bc_record_size(dst.len()) as u64 <= self.cap);
        // SAFETY: the caller checked off + bc_record_size(len) <= cap, so the source lies
        // in the ring; dst is our own buffer of exactly len bytes; they cannot overlap.
        // The source may be written by the publisher meanwhile (a lap): the copy is
        // validated afterwards (module docs, (2)) and thrown away if so.
        unsafe {
            super::copy::copy_raw(
                self.ring.add(off as usize + BC_HEADER),
                dst.as_mut_ptr(),
                dst.len(),
            )
        }
    }
}

fn check_align(what: &str, pos: u64) -> Result<(), Corrupt> {
    if pos % BC_ALIGN as u64 != 0 {
        return Err(Corrupt(format!(
            "broadcast {what} position {pos} is not a multiple of {BC_ALIGN}"
        )));
    }
    Ok(())
}

/// Loads and checks the publisher's three positions: aligned and `frontier <= tail <=
/// write`; with `quiet` (no publisher writing now) also `write - tail <= capacity`.
/// Loaded in the reverse of the order the publisher stores them (Acquire each), so the
/// order holds between concurrent loads too.
pub(crate) fn load_positions(a: &Areas<'_>, quiet: bool) -> Result<(u64, u64, u64), Corrupt> {
    let frontier = a.control.frontier.load(Ordering::Acquire);
    let tail = a.control.tail.load(Ordering::Acquire);
    let write = a.control.write_pos.load(Ordering::Acquire);
    check_align("write", write)?;
    check_align("tail", tail)?;
    if frontier > tail || tail > write || (quiet && write - tail > a.cap) {
        return Err(Corrupt(format!(
            "broadcast positions out of order (frontier {frontier}, tail {tail}, write {write}, capacity {})",
            a.cap
        )));
    }
    Ok((write, tail, frontier))
}

/// What the publisher remembers about one cursor slot, to time evictions.
#[derive(Debug, Clone, Copy, Default)]
struct Watch {
    /// The slot's registry word generation and position when first seen standing still.
    key: Option<(u16, u32, u64)>,
    since: Option<Instant>,
    dead: bool,
}

/// The publisher's side of a broadcast ring.
pub(crate) struct PubRing {
    mapped: std::sync::Arc<Mapped>,
    /// The areas of `mapped` (see [`pinned_areas`]).
    a: Areas<'static>,
    cap: u64,
    mask: u64,
    max_message: usize,
    block: bool,
    evict_after: Duration,
    /// End of the last committed record (ours).
    write: u64,
    /// Number of the next message.
    seq: u64,
    tail: u64,
    frontier: u64,
    /// Block: the slowest holding cursor as last scanned (`u64::MAX`: none).
    slowest: u64,
    /// Records whose `lo` is at most this may be written now: `frontier`, or less in
    /// Block mode while a joiner the last `frontier` move passed is held (see `scan`).
    room: u64,
    /// Bytes below this may have been overwritten (the highest `lo` reserved so far;
    /// `<= room`).
    overwritten: u64,
    /// `frontier` moves in steps of this many bytes (see `advance_frontier`).
    step: u64,
    /// For step boundary `b` in `(write - capacity, write]`, at `marks[b / step % len]`:
    /// the first record start at or after `b` (known from `marked_from` on).
    marks: Vec<u64>,
    /// The first step boundary this publisher marked (it published everything after it).
    marked_from: u64,
    /// The next step boundary to mark (the first above `write`).
    next_mark: u64,
    epoch: u64,
    watch: Vec<Watch>,
    liveness: crate::channel::RateLimit,
}

// SAFETY: the areas (a raw pointer and references) point into `mapped`, which moves
// along with them.
unsafe impl Send for PubRing {}

impl std::fmt::Debug for PubRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubRing")
            .field("write", &self.write)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// A place for a record, found by [`PubRing::try_reserve`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spot {
    /// Position of the record (after any padding).
    pub pos: u64,
    /// Padding bytes before it (a padding record at the old write position).
    pub pad: u64,
}

impl PubRing {
    /// Takes the publisher's side, going on from the last published position.
    pub(crate) fn new(mapped: std::sync::Arc<Mapped>) -> Result<PubRing, Corrupt> {
        let g = *mapped.geometry();
        let a = areas(&mapped);
        let (write, tail, frontier) = load_positions(&a, true)?;
        let overflow = a.config.overflow.load(Ordering::Relaxed);
        let block = match overflow {
            OVERFLOW_BLOCK => true,
            OVERFLOW_LAP => false,
            o => return Err(Corrupt(format!("unknown broadcast overflow mode {o}"))),
        };
        let evict_after = Duration::from_nanos(a.config.evict_after_ns.load(Ordering::Relaxed));
        // The stub at write_pos holds the next message's number (ours to trust: only a
        // publisher writes the ring, and we are the only one now).
        let seq = check_seq(
            "the stub at the write position",
            a.read_header(write & (a.cap - 1)).seq,
        )?;
        let epoch = a.control.attach_epoch.load(Ordering::Acquire);
        let step = frontier_step(g.capacity as u64);
        let first_mark = write
            .checked_next_multiple_of(step)
            .ok_or_else(|| Corrupt(format!("broadcast write position {write} is out of range")))?;
        let mut p = PubRing {
            a: pinned_areas(&mapped),
            cap: g.capacity as u64,
            mask: g.capacity as u64 - 1,
            max_message: g.max_message,
            block,
            evict_after,
            write,
            seq,
            tail,
            frontier,
            // Scan before the first overwrite.
            slowest: 0,
            room: frontier,
            // (What earlier publishers overwrote is not known: all of it, as far as a
            // cursor below `frontier` is concerned.)
            overwritten: frontier,
            step,
            marks: vec![0; (g.capacity as u64 / step) as usize],
            marked_from: first_mark,
            next_mark: first_mark,
            epoch,
            watch: vec![Watch::default(); g.slot_count],
            liveness: Default::default(),
            mapped,
        };
        p.mark(write);
        Ok(p)
    }

    pub(crate) fn max_message(&self) -> usize {
        self.max_message
    }

    pub(crate) fn is_block(&self) -> bool {
        self.block
    }

    pub(crate) fn evict_after(&self) -> Duration {
        self.evict_after
    }

    /// Messages published so far (the next message's number).
    pub(crate) fn published(&self) -> u64 {
        self.seq
    }

    /// Where a record of `len` bytes goes and the lowest position it overwrites.
    #[inline]
    fn plan(&self, len: usize) -> (Spot, u64) {
        let rec = bc_record_size(len) as u64;
        let to_end = self.cap - (self.write & self.mask);
        let pad = if rec > to_end { to_end } else { 0 };
        let pos = self.write + pad;
        // The record, then the next stub (16 bytes).
        let end = pos + rec + BC_HEADER as u64;
        (Spot { pos, pad }, end.saturating_sub(self.cap))
    }

    /// [`try_reserve`](Self::try_reserve) when it is simple: `len <= max_message`, no
    /// padding, and `frontier` already past what the record overwrites. `None`: ask
    /// `try_reserve`.
    #[inline(always)]
    pub(crate) fn try_reserve_fast(&mut self, len: usize) -> Option<Spot> {
        if len > self.max_message {
            return None;
        }
        let (spot, lo) = self.plan(len);
        if spot.pad != 0 || lo > self.room {
            return None;
        }
        self.overwritten = self.overwritten.max(lo);
        Some(spot)
    }

    /// Finds room for a record of `len` payload bytes (`len <= max_message`, checked by
    /// the caller). Block mode: `None` while the slowest holding subscriber has not read
    /// what the record would overwrite. Lap mode: always room.
    #[inline]
    pub(crate) fn try_reserve(&mut self, len: usize) -> Result<Option<Spot>, Corrupt> {
        debug_assert!(len <= self.max_message);
        let (spot, lo) = self.plan(len);
        if lo > self.room && !self.advance_frontier(lo)? {
            return Ok(None);
        }
        self.overwritten = self.overwritten.max(lo);
        if spot.pad > 0 {
            let a = self.a;
            a.write_header(
                self.write & self.mask,
                RawHeader {
                    len: PAD_FLAG,
                    tag: 0,
                    seq: self.seq,
                },
            );
        }
        Ok(Some(spot))
    }

    /// Moves `frontier` past `lo` (a record is about to overwrite the bytes below it) a
    /// whole step at a time: to the next multiple of `step` (or `write_pos`, if that
    /// comes first). Block mode: `Ok(false)` while a holding cursor is below that (no room
    /// yet).
    ///
    /// Once per step instead of once per record: the stores of `tail` and `frontier` (on
    /// the line every subscriber polls), the fence, the joiner check and, in Block mode,
    /// the look at the cursors; `tail` comes from the marks `commit` leaves at each step
    /// instead of a walk over the records given up. The price: `frontier` runs up to a step
    /// ahead of what is overwritten, so a Lap-mode subscriber is lapped up to a step
    /// earlier, `StartAt::Oldest` finds up to a step less history, and a Block-mode
    /// publisher waits for the slowest subscriber to free a whole step.
    #[cold]
    #[inline(never)]
    fn advance_frontier(&mut self, lo: u64) -> Result<bool, Corrupt> {
        if lo > self.frontier {
            // lo <= write (plan: a record and a stub fit twice in the ring).
            let target = lo
                .checked_next_multiple_of(self.step)
                .unwrap_or(u64::MAX)
                .min(self.write)
                .max(lo);
            if self.block {
                // A joiner announced since the last look (module docs, (5)): take its
                // cursor into account before choosing to overwrite.
                let epoch = self.a.control.attach_epoch.load(Ordering::Acquire);
                if target > self.slowest || epoch != self.epoch {
                    self.epoch = epoch;
                    self.slowest = self.scan(target)?;
                }
                if target > self.slowest {
                    return Ok(false);
                }
            }
            let tail = self.tail_for(target)?;
            self.overwrite_below(target, tail)?;
        } else if self.block {
            // `frontier` is far enough, but it passed a joiner we hold (its bytes are
            // intact): how far has it read?
            self.slowest = self.scan(self.frontier)?;
        }
        self.room = if self.block {
            self.frontier.min(self.slowest)
        } else {
            self.frontier
        };
        Ok(lo <= self.room)
    }

    /// The first record start at or after `target` (a multiple of `step`, or `write`).
    fn tail_for(&self, target: u64) -> Result<u64, Corrupt> {
        if target == self.write {
            return Ok(target);
        }
        if target >= self.marked_from && target % self.step == 0 {
            let t = self.marks[self.mark_index(target)];
            debug_assert!(target <= t && t <= self.write);
            return Ok(t);
        }
        // Records published before this publisher attached: walk them.
        let a = self.a;
        let mut tail = self.tail;
        while tail < target {
            // Our own records (published earlier), checked all the same.
            let off = tail & self.mask;
            let h = a.read_header(off);
            let size = if h.len == PAD_FLAG {
                self.cap - off
            } else if (h.len as usize) <= self.max_message
                && off + bc_record_size(h.len as usize) as u64 <= self.cap
            {
                bc_record_size(h.len as usize) as u64
            } else {
                return Err(Corrupt(format!(
                    "broadcast record at position {tail} has a bad length field {:#x}",
                    h.len
                )));
            };
            tail += size;
            if tail > self.write {
                return Err(Corrupt(format!(
                    "broadcast records from the tail run past the write position {}",
                    self.write
                )));
            }
        }
        Ok(tail)
    }

    #[inline]
    fn mark_index(&self, boundary: u64) -> usize {
        ((boundary / self.step) as usize) & (self.marks.len() - 1)
    }

    /// Notes, for each step boundary up to `write`, the first record start at or after it
    /// (`first`, the record just committed after any padding, or `write`).
    #[inline]
    fn mark(&mut self, first: u64) {
        while self.next_mark <= self.write {
            let b = self.next_mark;
            let i = self.mark_index(b);
            self.marks[i] = if b <= first { first } else { self.write };
            self.next_mark += self.step;
        }
    }

    /// Moves `tail` and `frontier` up to `lo` before bytes below it are overwritten
    /// (module docs, (2)); in Block mode, checks for joiners afterwards ((5)).
    fn overwrite_below(&mut self, lo: u64, tail: u64) -> Result<(), Corrupt> {
        let a = self.a;
        self.tail = tail;
        self.frontier = lo;
        a.control.tail.store(tail, Ordering::Release);
        a.control.frontier.store(lo, Ordering::Release);
        fence(Ordering::Release);
        if self.block {
            crate::wait::waker_fence();
            let epoch = a.control.attach_epoch.load(Ordering::Relaxed);
            if epoch != self.epoch {
                self.epoch = epoch;
                // A subscriber joined: honour its cursor from the next record on. (This
                // step only overwrites below `lo`, which the joiner sees, (5).)
                self.slowest = self.scan(lo)?;
                // (7): a joiner found below `lo` was marked LAPPED before we overwrite.
                fence(Ordering::Release);
            }
        }
        Ok(())
    }

    /// The payload bytes of a record reserved at `spot`.
    #[inline]
    pub(crate) fn payload_mut(&mut self, spot: &Spot, len: usize) -> &mut [u8] {
        let off = spot.pos & self.mask;
        debug_assert!(off + bc_record_size(len) as u64 <= self.cap);
        // SAFETY: plan() put the record where it fits before the ring's end, and
        // try_reserve moved `frontier` past everything it overwrites: no subscriber
        // hands out bytes of it before we publish. Subscribers may *read* these bytes
        // (a lapped copy, thrown away after validation); they never write them.
        unsafe { std::slice::from_raw_parts_mut(self.a.ring.add(off as usize + BC_HEADER), len) }
    }

    /// The payload bytes of a record reserved at `spot`, shared.
    #[inline]
    pub(crate) fn payload(&self, spot: &Spot, len: usize) -> &[u8] {
        let off = spot.pos & self.mask;
        // SAFETY: as for payload_mut.
        unsafe { std::slice::from_raw_parts(self.a.ring.add(off as usize + BC_HEADER), len) }
    }

    /// Writes the header and the next stub of the record at `spot` and publishes it.
    #[inline(always)]
    pub(crate) fn commit(&mut self, spot: &Spot, len: usize, tag: u32) {
        let a = self.a;
        let rec = bc_record_size(len) as u64;
        a.publish_payload(spot.pos & self.mask, len);
        a.write_header(
            spot.pos & self.mask,
            RawHeader {
                len: len as u32,
                tag,
                seq: self.seq,
            },
        );
        self.seq += 1;
        self.write = spot.pos + rec;
        if self.write >= self.next_mark {
            self.mark(spot.pos);
        }
        a.write_stub(self.write & self.mask, self.seq);
        a.control.write_pos.store(self.write, Ordering::Release);
        let h = self.mapped.header();
        crate::wait::wake_every(&h.data_waiters, &h.data_sem);
    }

    /// Block mode: the lowest position a holding cursor has not read (`u64::MAX` if no
    /// cursor holds the publisher back), for a write that overwrites everything below
    /// `lo`. Holding: an `ACTIVE` slot whose process lives, or a `DETACHED` named
    /// cursor, not below `frontier`. A holding cursor below `lo` blocks the write; one
    /// that has blocked it without moving for `evict_after` is marked `EVICTED` here and
    /// no longer holds.
    pub(crate) fn scan(&mut self, lo: u64) -> Result<u64, Corrupt> {
        let a = self.a;
        let m = &*self.mapped;
        // Asked only when a cursor blocks: the clock and the kernel cost a system call.
        let mut now: Option<Instant> = None;
        let mut ask_kernel: Option<bool> = None;
        let mut slowest = u64::MAX;
        for (k, slot) in a.cursors.iter().enumerate() {
            let w = &mut self.watch[k];
            let state = slot.state.load(Ordering::Acquire);
            if state != C_ACTIVE && state != C_DETACHED {
                *w = Watch::default();
                continue;
            }
            let c = slot.pos.load(Ordering::Acquire);
            check_align("cursor", c)?;
            if c > self.write {
                return Err(Corrupt(format!(
                    "subscriber cursor {k} at {c} is past the write position {}",
                    self.write
                )));
            }
            if c < self.frontier && (state != C_ACTIVE || c < self.overwritten) {
                // Already lapped: it starts again from the tail; nothing to wait for. An
                // active one is told (7) before anything it points at is overwritten.
                // (An active cursor below `frontier` whose bytes are all still there is a
                // joiner that saw the previous `frontier`, (5): it holds us like any other.)
                if state == C_ACTIVE {
                    let _ = slot.state.compare_exchange(
                        C_ACTIVE,
                        C_LAPPED,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                }
                *w = Watch::default();
                continue;
            }
            if c >= lo {
                // Not in the way of this write.
                w.since = None;
                slowest = slowest.min(c);
                continue;
            }
            let word = m.entry_word(k + 1);
            let key = (crate::segment::header::word_generation(word), state, c);
            if w.key != Some(key) {
                *w = Watch {
                    key: Some(key),
                    since: None,
                    dead: false,
                };
            }
            if state == C_ACTIVE {
                if *ask_kernel.get_or_insert_with(|| self.liveness.due()) {
                    w.dead = matches!(
                        m.entry_state(k + 1),
                        crate::segment::header::PeerState::Dead(_)
                            | crate::segment::header::PeerState::Closed
                    );
                }
                if w.dead {
                    continue;
                }
            }
            // It blocks this write: the clock runs from the first time it did.
            let now = *now.get_or_insert_with(Instant::now);
            let since = *w.since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.evict_after
                && slot
                    .state
                    .compare_exchange(state, C_EVICTED, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                // (6): its bytes are overwritten only after this, behind a release fence.
                *w = Watch::default();
                continue;
            }
            slowest = slowest.min(c);
        }
        Ok(slowest)
    }

    /// Subscribers attached now (`ACTIVE` slots whose process lives).
    pub(crate) fn live_subscribers(&self) -> usize {
        let a = self.a;
        (0..a.cursors.len())
            .filter(|&k| {
                a.cursors[k].state.load(Ordering::Acquire) == C_ACTIVE
                    && matches!(
                        self.mapped.entry_state(k + 1),
                        crate::segment::header::PeerState::Alive(_)
                    )
            })
            .count()
    }
}

/// Why a subscriber's read did not return a message.
#[derive(Debug)]
pub(crate) enum ReadErr {
    /// The publisher overwrote `missed` unread messages; the cursor moved to the tail.
    Lapped(u64),
    /// The publisher cut this subscriber loose.
    Evicted,
    Corrupt(Corrupt),
}

impl From<Corrupt> for ReadErr {
    fn from(c: Corrupt) -> ReadErr {
        ReadErr::Corrupt(c)
    }
}

/// A message copied out by [`SubRing::try_read`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Got {
    pub len: usize,
    pub tag: u32,
    pub seq: u64,
}

/// A subscriber's side of a broadcast ring.
pub(crate) struct SubRing {
    mapped: std::sync::Arc<Mapped>,
    /// The areas of `mapped` (see [`pinned_areas`]).
    a: Areas<'static>,
    cap: u64,
    mask: u64,
    max_message: usize,
    slot: usize,
    named: bool,
    block: bool,
    /// Next position to read (ours).
    pos: u64,
    /// Number of the message at `pos`.
    seq: u64,
    /// `write_pos` as last loaded (checked).
    cached_write: u64,
    /// Block mode, joined with `frontier <= pos`: copies are validated by our own slot's
    /// state (module docs, (7)).
    trusted: bool,
}

// SAFETY: as for PubRing.
unsafe impl Send for SubRing {}

impl std::fmt::Debug for SubRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubRing")
            .field("slot", &self.slot)
            .field("pos", &self.pos)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// Where a subscriber starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    Oldest,
    Latest,
    /// A named cursor's stored position (and message number, used if the ring no longer
    /// holds that position).
    Resume(u64, u64),
}

impl SubRing {
    /// Starts reading through cursor slot `slot` (whose registry entry the caller holds).
    pub(crate) fn new(
        mapped: std::sync::Arc<Mapped>,
        slot: usize,
        named: bool,
        start: Start,
    ) -> Result<SubRing, Corrupt> {
        let g = *mapped.geometry();
        let a = areas(&mapped);
        let block = a.config.overflow.load(Ordering::Relaxed) == OVERFLOW_BLOCK;
        let mut s = SubRing {
            a: pinned_areas(&mapped),
            cap: g.capacity as u64,
            mask: g.capacity as u64 - 1,
            max_message: g.max_message,
            slot,
            named,
            block,
            pos: 0,
            seq: 0,
            cached_write: 0,
            trusted: false,
            mapped,
        };
        s.join(start)?;
        Ok(s)
    }

    /// Places the cursor and makes it `ACTIVE` (module docs, (5)).
    fn join(&mut self, start: Start) -> Result<(), Corrupt> {
        for _ in 0..10_000 {
            let (write, tail, _) = load_positions(&self.a, false)?;
            let (pos, known) = match start {
                Start::Latest => (write, None),
                Start::Oldest => (tail, None),
                Start::Resume(p, s) => {
                    check_align("cursor", p)?;
                    if p > write {
                        return Err(Corrupt(format!(
                            "named cursor at {p} is past the write position {write}"
                        )));
                    }
                    (p, Some(s))
                }
            };
            let a = self.a;
            let seq = match (a.seq_at(pos), known) {
                (Some(s), _) => check_seq("the record the cursor joins at", s)?,
                // The ring no longer holds the resumed position: keep the stored number,
                // so the first read reports the exact lap.
                (None, Some(s)) => check_seq("the named cursor", s)?,
                (None, None) => continue,
            };
            let slot = &a.cursors[self.slot];
            slot.state.store(C_FREE, Ordering::Release);
            let Ok(clear) = self.announce(pos, seq) else {
                unreachable!("a slot we own and just freed is not evicted")
            };
            if clear || matches!(start, Start::Resume(..)) {
                // (A resumed cursor the ring no longer holds reports its lap on the
                // first read.)
                return Ok(());
            }
            // The publisher moved past us while we joined: again, from where it is now.
        }
        Err(Corrupt(
            "could not join the broadcast ring: the publisher laps it faster than a subscriber can start"
                .into(),
        ))
    }

    /// Puts the cursor at `pos` (message `seq`), makes it `ACTIVE` and tells a Block
    /// publisher (module docs, (5)). `Ok(true)`: the publisher had not moved past `pos`,
    /// so from now on it honours the cursor (reads are trusted, (7)); `Ok(false)`: it had
    /// (choose again). `Err(())`: the publisher evicted us meanwhile.
    fn announce(&mut self, pos: u64, seq: u64) -> Result<bool, ()> {
        let a = self.a;
        let slot = &a.cursors[self.slot];
        slot.seq.store(seq, Ordering::Relaxed);
        slot.pos.store(pos, Ordering::Release);
        let mut cur = slot.state.load(Ordering::Acquire);
        loop {
            if cur == C_EVICTED {
                return Err(());
            }
            match slot
                .state
                .compare_exchange(cur, C_ACTIVE, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        a.control.attach_epoch.fetch_add(1, Ordering::SeqCst);
        crate::wait::sleeper_fence(&self.mapped.header().light_wakers);
        let frontier = a.control.frontier.load(Ordering::SeqCst);
        self.pos = pos;
        self.seq = seq;
        self.cached_write = pos;
        let clear = frontier <= pos;
        self.trusted = self.block && clear;
        if self.block {
            // A Block publisher may be waiting for this slot's cursor (held at a position
            // we are leaving, (5)): tell it the cursor moved.
            let h = self.mapped.header();
            crate::wait::wake(&h.space_waiters, &h.space_sem);
        }
        Ok(clear)
    }

    /// Whether a copy of the bytes at `pos` is intact (module docs, (2) and (7)).
    #[inline]
    fn valid(&self, a: &Areas<'_>, pos: u64) -> bool {
        fence(Ordering::Acquire);
        if self.trusted && a.cursors[self.slot].state.load(Ordering::Relaxed) == C_ACTIVE {
            return true;
        }
        a.control.frontier.load(Ordering::Relaxed) <= pos
    }

    pub(crate) fn slot(&self) -> usize {
        self.slot
    }

    pub(crate) fn max_message(&self) -> usize {
        self.max_message
    }

    /// Number of the next message to read.
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Bytes published that this subscriber has not read (loads `write_pos`).
    pub(crate) fn lag(&self) -> u64 {
        let w = self.a.control.write_pos.load(Ordering::Acquire);
        w.saturating_sub(self.pos)
    }

    /// Whether the publisher has marked this cursor evicted.
    #[inline]
    pub(crate) fn evicted(&self) -> bool {
        self.a.cursors[self.slot].state.load(Ordering::Acquire) == C_EVICTED
    }

    /// Whether a published message waits (reloads `write_pos` if the cache says no).
    #[inline]
    pub(crate) fn ready(&mut self) -> Result<bool, Corrupt> {
        if self.cached_write != self.pos {
            return Ok(true);
        }
        let w = self.a.control.write_pos.load(Ordering::Acquire);
        check_align("write", w)?;
        if w < self.cached_write {
            return Err(Corrupt(format!(
                "the broadcast write position moved backwards (from {} to {w})",
                self.cached_write
            )));
        }
        self.cached_write = w;
        Ok(w != self.pos)
    }

    /// Copies the next message into `buf` (at least `max_message` bytes, or the message's
    /// length: a longer message is left in place and reported as `Ok(Err(len))`).
    /// `Ok(None)`: nothing published yet.
    #[inline]
    pub(crate) fn try_read(
        &mut self,
        buf: &mut [u8],
    ) -> Result<Option<Result<Got, usize>>, ReadErr> {
        if let Some(got) = self.read_fast(buf) {
            return Ok(Some(Ok(got)));
        }
        self.read_slow(buf)
    }

    /// The common case of [`try_read`](Self::try_read) in one straight line: the cursor
    /// `ACTIVE`, a whole message published at it that fits `buf`, copied intact. `None`
    /// for anything else (nothing published, padding, a lap, an eviction, a bad field):
    /// [`read_slow`](Self::read_slow) then starts over and tells which. Nothing changes
    /// unless the message is returned.
    #[inline(always)]
    pub(crate) fn read_fast(&mut self, buf: &mut [u8]) -> Option<Got> {
        let a = self.a;
        let pos = self.pos;
        if self.cached_write == pos {
            let w = a.control.write_pos.load(Ordering::Acquire);
            // Backwards or misaligned: the slow path says so.
            if w <= pos || w % BC_ALIGN as u64 != 0 {
                return None;
            }
            self.cached_write = w;
        }
        let avail = self.cached_write - pos;
        if a.cursors[self.slot].state.load(Ordering::Acquire) != C_ACTIVE {
            return None;
        }
        let off = pos & self.mask;
        let h = a.read_header(off);
        // (A padding record's length, PAD_FLAG, is above every max_message.)
        let len = h.len as usize;
        if len > self.max_message || len > buf.len() {
            return None;
        }
        let rec = bc_record_size(len) as u64;
        if avail > self.cap || rec > avail || off + rec > self.cap {
            return None;
        }
        a.copy_payload(off, &mut buf[..len]);
        if !self.valid(&a, pos) || h.seq != self.seq {
            return None;
        }
        self.seq += 1;
        self.advance(pos + rec);
        Some(Got {
            len,
            tag: h.tag,
            seq: h.seq,
        })
    }

    /// Everything [`read_fast`](Self::read_fast) leaves: waits nothing, reports laps,
    /// evictions and corruption, skips padding.
    #[cold]
    #[inline(never)]
    fn read_slow(&mut self, buf: &mut [u8]) -> Result<Option<Result<Got, usize>>, ReadErr> {
        if self.evicted() {
            return Err(ReadErr::Evicted);
        }
        loop {
            if !self.ready()? {
                return Ok(None);
            }
            let a = self.a;
            let pos = self.pos;
            let avail = self.cached_write - pos;
            let off = pos & self.mask;
            let h = a.read_header(off);
            if avail > self.cap {
                // More than a ring behind: the publisher overwrote our position.
                match self.lapped() {
                    ReadErr::Lapped(0) => continue,
                    e => return Err(e),
                }
            }
            if h.len == PAD_FLAG {
                let pad = self.cap - off;
                let ok = pad <= avail && h.seq == self.seq;
                if !self.valid(&a, pos) {
                    match self.lapped() {
                        ReadErr::Lapped(0) => continue,
                        e => return Err(e),
                    }
                }
                if !ok {
                    return Err(Corrupt(format!(
                        "bad padding record at position {pos} (seq {}, expected {}; {pad} bytes to the end, {avail} published)",
                        h.seq, self.seq
                    ))
                    .into());
                }
                self.advance(pos + pad);
                continue;
            }
            let len = h.len as usize;
            let rec = bc_record_size(len.min(self.max_message)) as u64;
            let fits = len <= self.max_message && rec <= avail && off + rec <= self.cap;
            if !fits {
                if !self.valid(&a, pos) {
                    match self.lapped() {
                        ReadErr::Lapped(0) => continue,
                        e => return Err(e),
                    }
                }
                return Err(Corrupt(format!(
                    "broadcast record at position {pos} claims {len} bytes (max_message {}, {avail} published, {} to the ring end)",
                    self.max_message,
                    self.cap - off
                ))
                .into());
            }
            if len > buf.len() {
                if !self.valid(&a, pos) {
                    match self.lapped() {
                        ReadErr::Lapped(0) => continue,
                        e => return Err(e),
                    }
                }
                return Ok(Some(Err(len)));
            }
            a.copy_payload(off, &mut buf[..len]);
            if !self.valid(&a, pos) {
                match self.lapped() {
                    ReadErr::Lapped(0) => continue,
                    e => return Err(e),
                }
            }
            if h.seq != self.seq {
                return Err(Corrupt(format!(
                    "broadcast record at position {pos} is message {}, expected {}",
                    h.seq, self.seq
                ))
                .into());
            }
            let got = Got {
                len,
                tag: h.tag,
                seq: h.seq,
            };
            self.seq += 1;
            self.advance(pos + rec);
            return Ok(Some(Ok(got)));
        }
    }

    /// Moves the cursor to `pos` and tells the publisher (module docs, (3)).
    #[inline]
    fn advance(&mut self, pos: u64) {
        self.pos = pos;
        let a = self.a;
        let slot = &a.cursors[self.slot];
        // The number too (for a named cursor's exact lap count on reopen, and `inspect`).
        slot.seq.store(self.seq, Ordering::Relaxed);
        slot.pos.store(pos, Ordering::Release);
        if self.block {
            let h = self.mapped.header();
            crate::wait::wake(&h.space_waiters, &h.space_sem);
        }
    }

    /// Our position was overwritten: go on from the tail and say how many we missed
    /// (module docs, (4)). `Lapped(0)`: only padding was lost (the caller reads on).
    #[cold]
    fn lapped(&mut self) -> ReadErr {
        for _ in 0..10_000 {
            if self.evicted() {
                return ReadErr::Evicted;
            }
            let a = self.a;
            let (write, tail, _) = match load_positions(&a, false) {
                Ok(p) => p,
                Err(c) => return c.into(),
            };
            if write - tail > self.cap {
                // The publisher keeps `write - tail <= capacity`: loaded while it moved on
                // (load again), or corrupt (then rejoining at the tail would find us more
                // than a ring behind again, forever: this loop is bounded, ending in
                // Corrupt below).
                continue;
            }
            let Some(seq) = a.seq_at(tail) else {
                continue;
            };
            let seq = match check_seq("the record at the tail", seq) {
                Ok(s) => s,
                Err(c) => return c.into(),
            };
            if seq < self.seq || tail < self.pos {
                return Corrupt(format!(
                    "lapped at position {} (message {}), but the tail {tail} holds message {seq}",
                    self.pos, self.seq
                ))
                .into();
            }
            let missed = seq - self.seq;
            // Rejoin at the tail (5), so a Block publisher honours the cursor again.
            match self.announce(tail, seq) {
                Err(()) => return ReadErr::Evicted,
                Ok(false) => continue,
                Ok(true) => {}
            }
            self.cached_write = write;
            if self.block {
                let h = self.mapped.header();
                crate::wait::wake(&h.space_waiters, &h.space_sem);
            }
            return ReadErr::Lapped(missed);
        }
        Corrupt("the publisher laps the ring faster than a subscriber can find its tail".into())
            .into()
    }

    /// Makes this an unnamed cursor (a named one that lost a race for its name).
    pub(crate) fn forget_name(&mut self) {
        self.named = false;
    }

    /// Leaves the slot: a named cursor stays (`DETACHED`), an unnamed one is freed.
    pub(crate) fn detach(&mut self) {
        let a = self.a;
        let slot = &a.cursors[self.slot];
        slot.seq.store(self.seq, Ordering::Relaxed);
        slot.pos.store(self.pos, Ordering::Release);
        let next = if self.named { C_DETACHED } else { C_FREE };
        // An evicted named cursor stays evicted (it no longer holds anyone back); an
        // evicted unnamed one is freed.
        let cur = slot.state.load(Ordering::Acquire);
        if !(self.named && cur == C_EVICTED) {
            let _ = slot
                .state
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Relaxed);
        }
        if !self.named {
            slot.name_len.store(0, Ordering::Relaxed);
        }
        if self.block {
            let h = self.mapped.header();
            crate::wait::wake(&h.space_waiters, &h.space_sem);
        }
    }
}

/// Reads a cursor slot's name.
pub(crate) fn slot_name(slot: &CursorSlot) -> Vec<u8> {
    let len = (slot.name_len.load(Ordering::Acquire) as usize).min(CURSOR_NAME_CAP);
    slot.name[..len]
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .collect()
}

/// Writes a cursor slot's name (the caller owns the slot).
pub(crate) fn set_slot_name(slot: &CursorSlot, name: &[u8]) {
    debug_assert!(name.len() <= CURSOR_NAME_CAP);
    for (cell, b) in slot.name.iter().zip(name) {
        cell.store(*b, Ordering::Relaxed);
    }
    slot.name_len.store(name.len() as u32, Ordering::Release);
}
