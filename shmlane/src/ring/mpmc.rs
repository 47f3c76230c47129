//! The multi-producer multi-consumer ring: fixed-size slots with one sequence stamp each
//! (Vyukov's bounded MPMC queue, as in `crossbeam::ArrayQueue`), in shared memory, with
//! one rule added: **own before you write**.
//!
//! Slot `pos & mask` is free for the producer of position `pos` when its stamp is `pos`,
//! holds a published message for the consumer of `pos` when its stamp is `pos + 1`, and is
//! free again (for `pos + count`) once that consumer stores `pos + count`.
//!
//! A claimer owns a slot for one position by one CAS that names it: the producer CASes
//! the slot's `producer_claim` word (the consumer its `consumer_claim`) from whatever an
//! earlier lap left there to its own claim word for this position (its registry entry,
//! that entry's generation and the position). Nothing is written to the slot before that
//! CAS, and only the owner moves the stamp on. Only then does it move the shared index on
//! (a CAS others also make on its behalf: a claimer that dies or stalls right after owning
//! never holds anybody up). Recovery takes a slot from a claimer that the kernel says is
//! gone by the same CAS on the same word, so a live claimer can never lose its slot, and a
//! slow one never finds its slot reused under it. See `docs/ARCHITECTURE.md`, section 6.

use crate::sync::{AtomicU32, AtomicU64, Bytes, Ordering};
use std::sync::Arc;

use super::spsc::Corrupt;
use super::SLOT_HEADER;
use crate::segment::header::{self, Mapped, MAX_ENDPOINTS};
use crate::segment::Held;
use crate::testing::{self, Point};
use crate::wait;

/// `len` of a slot whose producer dropped its grant without committing, or that a
/// receiver took from a dead producer: skipped silently.
pub(crate) const CANCELLED: u32 = u32::MAX;

/// The header at the start of every slot.
#[repr(C)]
pub(crate) struct SlotHeader {
    stamp: AtomicU64,
    producer_claim: AtomicU64,
    consumer_claim: AtomicU64,
    len: AtomicU32,
    tag: AtomicU32,
    /// The payload bytes, for loom (nothing otherwise).
    bytes: Bytes,
}

const _: () = assert!(
    std::mem::size_of::<SlotHeader>() == SLOT_HEADER
        || !crate::sync::sizes::SLOT_HEADER_EXACT
            && std::mem::size_of::<SlotHeader>() <= SLOT_HEADER
);

/// The high half of the claim words a registration writes: `(index + 1) << 48 |
/// generation << 32` (never zero). Pids are not used: they mean nothing across PID
/// namespaces and are reused; an entry's generation changes whenever it is taken again.
pub(crate) fn claim_id(index: usize, generation: u16) -> u64 {
    ((index as u64 + 1) << 48) | (u64::from(generation) << 32)
}

/// Set in a claim word written by a recovery (a claimer taking a slot from a gone one):
/// whoever takes the slot from a gone recoverer knows no message was in it.
const RECOVERY: u64 = 1 << 63;

/// Set with [`RECOVERY`] when the slot held a claimed message (a real claimer's, not a
/// recoverer's) that the recovery throws away; whoever finishes the recovery counts it in
/// `lost`, so a recoverer that dies midway neither loses nor doubles the count.
const LOST: u64 = 1 << 62;

/// The claim word a recovery writes over `word`, a claim for `pos` whose owner is gone.
fn recovery_word(id: u64, pos: u64, word: u64) -> u64 {
    let lost = if word & RECOVERY == 0 {
        LOST
    } else {
        word & LOST
    };
    claim_word(id, pos) | RECOVERY | lost
}

fn claim_word(id: u64, pos: u64) -> u64 {
    id | (pos & 0xffff_ffff)
}

/// Whether `word` is a claim for `pos`: the slot is owned for this lap. A zero word (a
/// slot never claimed) or one left by an earlier lap is not.
#[inline]
fn claims(word: u64, pos: u64) -> bool {
    (word >> 48) & 0x3fff != 0 && word as u32 == pos as u32
}

/// The claimer's `(registry index, generation)` of a claim word for `pos`, if it names a
/// registry entry at all.
fn claimer(word: u64, pos: u64) -> Option<(usize, u16)> {
    let index = ((word >> 48) & 0x3fff) as usize;
    (claims(word, pos) && index <= MAX_ENDPOINTS).then(|| (index - 1, (word >> 32) as u16))
}

/// Writes the initial stamps (slot `i` free for position `i`) of a freshly created ring,
/// before the segment is marked ready.
pub(crate) fn init_stamps(mapped: &Mapped) {
    let ring = MpmcRingView::new(mapped);
    for pos in 0..ring.count {
        #[cfg(not(loom))]
        ring.slot(pos).stamp.store(pos, Ordering::Relaxed);
        #[cfg(loom)]
        // SAFETY: under loom the data area is fresh heap memory that nothing refers to
        // yet; each slot gets a constructed header (loom atomics cannot be zeroed).
        unsafe {
            let p = ring.slots.add((pos % ring.count) as usize * ring.slot_size) as *mut SlotHeader;
            std::ptr::write(
                p,
                SlotHeader {
                    stamp: AtomicU64::new(pos),
                    producer_claim: AtomicU64::new(0),
                    consumer_claim: AtomicU64::new(0),
                    len: AtomicU32::new(0),
                    tag: AtomicU32::new(0),
                    bytes: Bytes::new(),
                },
            );
        }
    }
}

/// The slot arithmetic, borrowed from a `Mapped`.
struct MpmcRingView<'m> {
    slots: *mut u8,
    count: u64,
    slot_size: usize,
    _m: std::marker::PhantomData<&'m Mapped>,
}

impl<'m> MpmcRingView<'m> {
    fn new(mapped: &'m Mapped) -> Self {
        let g = mapped.geometry();
        MpmcRingView {
            slots: mapped.data_ptr(),
            count: g.slot_count as u64,
            slot_size: g.slot_size,
            _m: std::marker::PhantomData,
        }
    }

    #[cfg_attr(loom, allow(dead_code))]
    fn slot(&self, pos: u64) -> &'m SlotHeader {
        let i = (pos % self.count) as usize;
        // SAFETY: as in MpmcRing::slot: inside the validated data area, aligned, atomics.
        unsafe { &*(self.slots.add(i * self.slot_size) as *const SlotHeader) }
    }
}

/// A position this producer owns: write the payload, then publish or cancel.
#[derive(Debug)]
pub(crate) struct SendClaim {
    pos: u64,
}

/// A published message this consumer owns: read it, then release it.
#[derive(Debug)]
pub(crate) struct RecvClaim {
    pos: u64,
    pub len: usize,
    pub tag: u32,
}

/// The publish found that a receiver had given this slot up for dead.
#[derive(Debug)]
pub(crate) struct Reclaimed;

/// The MPMC ring over a validated segment. All methods take `&self`: any number of
/// threads and processes use it at once.
pub(crate) struct MpmcRing {
    mapped: Arc<Mapped>,
    slots: *mut u8,
    count: u64,
    mask: u64,
    slot_size: usize,
    max_message: usize,
}

// SAFETY: the raw pointer points into `mapped`, which the ring owns a share of; all
// shared state is reached through atomics, and payload bytes only through claims that
// the claim-word protocol makes exclusive.
unsafe impl Send for MpmcRing {}
// SAFETY: as above; every method is safe to call concurrently.
unsafe impl Sync for MpmcRing {}

impl MpmcRing {
    /// Takes a validated MPMC segment.
    pub(crate) fn new(mapped: Arc<Mapped>) -> MpmcRing {
        let g = *mapped.geometry();
        MpmcRing {
            slots: mapped.data_ptr(),
            count: g.slot_count as u64,
            mask: g.slot_count as u64 - 1,
            slot_size: g.slot_size,
            max_message: g.max_message,
            mapped,
        }
    }

    pub(crate) fn max_message(&self) -> usize {
        self.max_message
    }

    #[inline]
    fn slot(&self, pos: u64) -> &SlotHeader {
        let i = (pos & self.mask) as usize;
        // SAFETY: i < count and count * slot_size == capacity (validated), so the slot
        // lies inside the data area; slot_size is a multiple of 8 (validated), so the
        // header is 8-byte aligned as its atomics need, and SlotHeader is all atomics,
        // valid for any bytes (its `bytes` field is zero-sized outside loom).
        unsafe { &*(self.slots.add(i * self.slot_size) as *const SlotHeader) }
    }

    #[inline]
    fn payload_ptr(&self, pos: u64) -> *mut u8 {
        let i = (pos & self.mask) as usize;
        // SAFETY: in the slot (see `slot`), after its header.
        unsafe { self.slots.add(i * self.slot_size + SLOT_HEADER) }
    }

    /// Claims the next position for a producer, or `None` if the ring is full.
    ///
    /// Own, then move the index: the claim-word CAS makes the slot ours for `pos`; the
    /// `write_pos` CAS after it may fail (another producer saw our claim and moved the
    /// index on for us). Seeing a claim for `pos` on a slot still free for `pos`, a
    /// producer only helps the index on: somebody owns that position.
    #[inline]
    pub(crate) fn try_claim_send(&self, id: u64) -> Result<Option<SendClaim>, Corrupt> {
        let h = self.mapped.header();
        let mut pos = h.write_pos.load(Ordering::Acquire);
        loop {
            let slot = self.slot(pos);
            // The word before the stamp (Acquire): a word read before a stamp that says
            // "free for `pos`" was left by an earlier lap unless it claims `pos`.
            let word = slot.producer_claim.load(Ordering::Acquire);
            let stamp = slot.stamp.load(Ordering::Acquire);
            let diff = stamp.wrapping_sub(pos) as i64;
            if diff == 0 {
                if !claims(word, pos) {
                    if slot
                        .producer_claim
                        .compare_exchange(
                            word,
                            claim_word(id, pos),
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        testing::point(Point::SendOwned);
                        let _ = h.write_pos.compare_exchange(
                            pos,
                            pos.wrapping_add(1),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                        return Ok(Some(SendClaim { pos }));
                    }
                    // Somebody owned it first (or a recovery moved the word): look again.
                    pos = h.write_pos.load(Ordering::Acquire);
                    continue;
                }
                // Owned by another producer that has not moved the index yet: help.
                let _ = h.write_pos.compare_exchange(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                pos = h.write_pos.load(Ordering::Acquire);
            } else if diff < 0 {
                // Full: the slot still holds lap `pos - count` (published, or claimed).
                let c = self.count as i64;
                if diff == -c || diff == 1 - c {
                    return Ok(None);
                }
                let cur = h.write_pos.load(Ordering::Acquire);
                if cur == pos && slot.stamp.load(Ordering::Acquire) == stamp {
                    return Err(Corrupt(format!(
                        "slot stamp {stamp} is impossible at enqueue position {pos}"
                    )));
                }
                pos = cur;
            } else {
                // Someone claimed `pos` before us: move on, unless nobody moved at all.
                let cur = h.write_pos.load(Ordering::Acquire);
                if cur == pos {
                    return Err(Corrupt(format!(
                        "slot stamp {stamp} is ahead of the enqueue position {pos}"
                    )));
                }
                pos = cur;
            }
        }
    }

    /// The payload bytes of a claimed slot.
    #[inline]
    pub(crate) fn payload_mut<'c>(&'c self, claim: &'c mut SendClaim, len: usize) -> &'c mut [u8] {
        assert!(len <= self.max_message);
        self.slot(claim.pos).bytes.write();
        // SAFETY: the claim is exclusive (we won the slot's claim word for this position,
        // and only its owner moves the stamp on), and SLOT_HEADER + max_message <=
        // slot_size was validated.
        unsafe { std::slice::from_raw_parts_mut(self.payload_ptr(claim.pos), len) }
    }

    /// The payload bytes of a claimed slot, shared (reading back what we wrote).
    #[inline]
    pub(crate) fn claimed_payload<'c>(&'c self, claim: &'c SendClaim, len: usize) -> &'c [u8] {
        assert!(len <= self.max_message);
        self.slot(claim.pos).bytes.read();
        // SAFETY: as in payload_mut.
        unsafe { std::slice::from_raw_parts(self.payload_ptr(claim.pos), len) }
    }

    /// Publishes a claimed slot with `len` bytes (or [`CANCELLED`]) and wakes receivers:
    /// one if any sleeps, and one more for each published message behind this one while
    /// sleepers remain (`wait::wake_run`).
    #[inline]
    pub(crate) fn publish(&self, claim: SendClaim, len: u32, tag: u32) -> Result<(), Reclaimed> {
        let slot = self.slot(claim.pos);
        slot.len.store(len, Ordering::Relaxed);
        slot.tag.store(tag, Ordering::Relaxed);
        let r = slot
            .stamp
            .compare_exchange(
                claim.pos,
                claim.pos.wrapping_add(1),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .map(|_| ())
            .map_err(|_| Reclaimed);
        self.wake_receivers(claim.pos);
        r
    }

    fn wake_receivers(&self, pos: u64) {
        let h = self.mapped.header();
        wait::wake_run(&h.data_waiters, &h.data_sem, |n| {
            let p = pos.wrapping_add(n);
            n < self.count && self.slot(p).stamp.load(Ordering::Acquire) == p.wrapping_add(1)
        });
    }

    fn wake_senders(&self, pos: u64) {
        let h = self.mapped.header();
        wait::wake_run(&h.space_waiters, &h.space_sem, |n| {
            let p = pos.wrapping_add(n);
            n < self.count
                && self.slot(p).stamp.load(Ordering::Acquire) == p.wrapping_add(self.count)
        });
    }

    /// Claims the next published message for a consumer, or `None` if there is none.
    /// Cancelled slots are released and skipped. Own, then move the index, as producers do.
    #[inline]
    pub(crate) fn try_claim_recv(&self, id: u64) -> Result<Option<RecvClaim>, Corrupt> {
        let h = self.mapped.header();
        let mut pos = h.read_pos.load(Ordering::Acquire);
        loop {
            let slot = self.slot(pos);
            let word = slot.consumer_claim.load(Ordering::Acquire);
            let stamp = slot.stamp.load(Ordering::Acquire);
            let diff = stamp.wrapping_sub(pos.wrapping_add(1)) as i64;
            if diff == 0 {
                if self.slot_size > 64 {
                    // The message goes on into the slot's second cache line: start loading
                    // it while we claim the slot.
                    let base = (slot as *const SlotHeader).cast::<u8>();
                    // SAFETY: 64 < slot_size, so the address is inside this slot.
                    super::prefetch_line(unsafe { base.add(64) });
                }
                if !claims(word, pos) {
                    if slot
                        .consumer_claim
                        .compare_exchange(
                            word,
                            claim_word(id, pos),
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        testing::point(Point::RecvOwned);
                        let _ = h.read_pos.compare_exchange(
                            pos,
                            pos.wrapping_add(1),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                        let len = slot.len.load(Ordering::Relaxed);
                        let tag = slot.tag.load(Ordering::Relaxed);
                        let claim = RecvClaim { pos, len: 0, tag };
                        if len == CANCELLED {
                            self.release(claim);
                            pos = pos.wrapping_add(1);
                            continue;
                        }
                        if len as usize > self.max_message {
                            self.release(claim);
                            return Err(Corrupt(format!(
                                "slot at position {pos} claims {len} bytes, max_message is {}",
                                self.max_message
                            )));
                        }
                        return Ok(Some(RecvClaim {
                            len: len as usize,
                            ..claim
                        }));
                    }
                    pos = h.read_pos.load(Ordering::Acquire);
                    continue;
                }
                // Owned by another consumer that has not moved the index yet: help.
                let _ = h.read_pos.compare_exchange(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                pos = h.read_pos.load(Ordering::Acquire);
            } else if diff < 0 {
                // Empty: not yet published (stamp == pos), or the slot still holds the
                // previous lap's message (claimed by a consumer not done with it).
                if stamp == pos || stamp == pos.wrapping_add(1).wrapping_sub(self.count) {
                    return Ok(None);
                }
                let cur = h.read_pos.load(Ordering::Acquire);
                if cur == pos && slot.stamp.load(Ordering::Acquire) == stamp {
                    return Err(Corrupt(format!(
                        "slot stamp {stamp} is impossible at dequeue position {pos}"
                    )));
                }
                pos = cur;
            } else {
                let cur = h.read_pos.load(Ordering::Acquire);
                if cur == pos {
                    return Err(Corrupt(format!(
                        "slot stamp {stamp} is ahead of the dequeue position {pos}"
                    )));
                }
                pos = cur;
            }
        }
    }

    /// The payload of a claimed message.
    #[inline]
    pub(crate) fn payload<'c>(&'c self, claim: &'c RecvClaim) -> &'c [u8] {
        self.slot(claim.pos).bytes.read();
        // SAFETY: len <= max_message was checked in try_claim_recv; we own the slot's
        // consumer claim, and producers stay off it until we release it.
        unsafe { std::slice::from_raw_parts(self.payload_ptr(claim.pos), claim.len) }
    }

    /// Frees a claimed slot for the producers of the next lap and wakes senders: one if
    /// any sleeps, and one more for each free slot behind this one while sleepers remain.
    #[inline]
    pub(crate) fn release(&self, claim: RecvClaim) {
        let next = claim.pos.wrapping_add(self.count);
        // Fails only if a producer took the slot from us, believing us gone.
        let _ = self.slot(claim.pos).stamp.compare_exchange(
            claim.pos.wrapping_add(1),
            next,
            Ordering::Release,
            Ordering::Relaxed,
        );
        self.wake_senders(claim.pos);
    }

    /// Whether the registration that wrote a claim naming `(index, generation)` is gone
    /// without having finished it: its entry was taken again since (a new generation), or
    /// it closed (a clean close with a claim still out: a guard that was leaked), or the
    /// kernel says nobody holds it. A live claimer is never taken for dead: when the
    /// kernel cannot be asked, the answer is "alive".
    fn claimer_gone(&self, index: usize, generation: u16) -> bool {
        let word = self.mapped.entry_word(index);
        if header::word_generation(word) != generation {
            return true;
        }
        if header::split_word(word).1 == header::EP_CLOSED {
            return true;
        }
        self.mapped.segment().held(index) == Held::No
    }

    /// Whether the owner named by claim word `word` (a claim for `pos`) is gone. Our own
    /// registration (`id`) is alive by definition (and the kernel does not show a POSIX
    /// segment's handle its own locks); a word naming no entry is garbage, so nobody.
    fn owner_gone(&self, word: u64, pos: u64, id: u64) -> bool {
        if word & !(RECOVERY | LOST | 0xffff_ffff) == id {
            return false;
        }
        match claimer(word, pos) {
            Some((index, generation)) => self.claimer_gone(index, generation),
            None => true,
        }
    }

    /// Slow path for a consumer that found the ring empty: if the slot at the dequeue
    /// position is owned by a producer that is gone (or by a recoverer that is gone), take
    /// it over by the same claim-word CAS a producer makes and publish it as
    /// [`CANCELLED`] (counting it in `lost` if a producer had owned it), so consumers skip
    /// it as any cancelled slot. Returns a message if one can be claimed afterwards.
    ///
    /// A slot nobody owns is never taken: a producer that has moved the index on has
    /// owned its slot first, so an unowned head is simply not claimed yet.
    pub(crate) fn recover_recv(&self, id: u64) -> Result<Option<RecvClaim>, Corrupt> {
        let h = self.mapped.header();
        let pos = h.read_pos.load(Ordering::Acquire);
        let slot = self.slot(pos);
        let word = slot.producer_claim.load(Ordering::Acquire);
        if slot.stamp.load(Ordering::Acquire) != pos || !claims(word, pos) {
            return Ok(None); // Published, not yet claimed, or moved on.
        }
        if !self.owner_gone(word, pos, id) {
            return Ok(None);
        }
        if slot
            .producer_claim
            .compare_exchange(
                word,
                recovery_word(id, pos, word),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Ok(None); // Another receiver took it over first.
        }
        testing::point(Point::RecoverRecv);
        // Ours now. The gone owner may have published before it went (and a consumer
        // may even have taken that message since): then there is nothing to do.
        if slot.stamp.load(Ordering::Acquire) != pos {
            return self.try_claim_recv(id);
        }
        // The gone owner may have died before moving the index on.
        let _ = h.write_pos.compare_exchange(
            pos,
            pos.wrapping_add(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        let published = self.publish(SendClaim { pos }, CANCELLED, 0).is_ok();
        if published && word & (RECOVERY | LOST) != RECOVERY {
            h.lost.fetch_add(1, Ordering::Relaxed);
        }
        self.try_claim_recv(id)
    }

    /// Slow path for a producer that found the ring full: if the slot it waits for is
    /// owned by a consumer that is gone (or by a recoverer that is gone), take it over by
    /// the consumer's claim-word CAS and free it (the message counts as lost if a consumer
    /// had owned it). Returns whether a slot was freed.
    pub(crate) fn recover_send(&self, id: u64) -> bool {
        let h = self.mapped.header();
        let pos = h.write_pos.load(Ordering::Acquire);
        let prev = pos.wrapping_sub(self.count);
        let slot = self.slot(pos);
        let word = slot.consumer_claim.load(Ordering::Acquire);
        if slot.stamp.load(Ordering::Acquire) != prev.wrapping_add(1) || !claims(word, prev) {
            return false; // Not full, or the oldest message is not claimed yet.
        }
        if !self.owner_gone(word, prev, id) {
            return false;
        }
        if slot
            .consumer_claim
            .compare_exchange(
                word,
                recovery_word(id, prev, word),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        testing::point(Point::RecoverSend);
        if slot.stamp.load(Ordering::Acquire) != prev.wrapping_add(1) {
            return false; // The gone owner had released it.
        }
        // The gone owner may have died before moving the index on.
        let _ = h.read_pos.compare_exchange(
            prev,
            prev.wrapping_add(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        let freed = slot
            .stamp
            .compare_exchange(
                prev.wrapping_add(1),
                pos,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok();
        if freed && word & (RECOVERY | LOST) != RECOVERY {
            h.lost.fetch_add(1, Ordering::Relaxed);
        }
        self.wake_senders(prev);
        freed
    }

    /// Messages published and not yet claimed, as seen now (approximate under contention).
    pub(crate) fn len(&self) -> u64 {
        let h = self.mapped.header();
        let w = h.write_pos.load(Ordering::Acquire);
        let r = h.read_pos.load(Ordering::Acquire);
        w.wrapping_sub(r).min(self.count)
    }
}
