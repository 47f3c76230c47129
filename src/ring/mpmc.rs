//! The multi-producer multi-consumer ring: fixed-size slots with one sequence stamp each
//! (Vyukov's bounded MPMC queue, as in `crossbeam::ArrayQueue`), in shared memory.
//!
//! Slot `pos & mask` is free for the producer of position `pos` when its stamp is `pos`,
//! holds a published message for the consumer of `pos` when its stamp is `pos + 1`, and is
//! free again (for `pos + count`) once that consumer stores `pos + count`. Producers claim
//! a position with a CAS on the enqueue index, consumers with a CAS on the dequeue index.
//!
//! Each claimer writes its claim word (its registry entry, that entry's generation and the
//! position) into the slot, so a slot left claimed by a process that died is recognised and skipped (counted in the header's `lost`) instead of
//! stalling everybody behind it. Publish and release are CASes on the stamp, so a slow
//! claimer whose slot was reclaimed finds out instead of corrupting the next lap.

use crate::sync::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::spsc::Corrupt;
use super::SLOT_HEADER;
use crate::segment::header::{self, Mapped, PeerState, MAX_ENDPOINTS, ROLE_SENDER};
use crate::segment::Held;

/// `len` of a slot whose producer dropped its grant without committing: skipped silently.
pub(crate) const CANCELLED: u32 = u32::MAX;

/// The header at the start of every slot.
#[repr(C)]
pub(crate) struct SlotHeader {
    stamp: AtomicU64,
    producer_claim: AtomicU64,
    consumer_claim: AtomicU64,
    len: AtomicU32,
    tag: AtomicU32,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<SlotHeader>() == SLOT_HEADER);
#[cfg(loom)]
const _: () = assert!(std::mem::size_of::<SlotHeader>() <= SLOT_HEADER);

/// The high half of the claim words a registration writes: `(index + 1) << 48 |
/// generation << 32` (never zero). Pids are not used: they mean nothing across PID
/// namespaces and are reused; an entry's generation changes whenever it is taken again.
pub(crate) fn claim_id(index: usize, generation: u16) -> u64 {
    ((index as u64 + 1) << 48) | (u64::from(generation) << 32)
}

fn claim_word(id: u64, pos: u64) -> u64 {
    id | (pos & 0xffff_ffff)
}

/// Returns the claimer's `(registry index, generation)` if `word` was written for `pos`. A
/// zero word (a slot never claimed, or whose claimer has not written its word yet on the
/// first lap), or one naming no registry entry, names nobody.
fn claimer(word: u64, pos: u64) -> Option<(usize, u16)> {
    let index = (word >> 48) as usize;
    (index != 0 && index <= MAX_ENDPOINTS && word & 0xffff_ffff == pos & 0xffff_ffff)
        .then(|| (index - 1, (word >> 32) as u16))
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

/// A position this producer has claimed: write the payload, then publish or cancel.
#[derive(Debug)]
pub(crate) struct SendClaim {
    pos: u64,
}

/// A published message this consumer has claimed: read it, then release it.
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
    /// `pos + 1` of a stuck slot whose claimer could not be named at the last look: it is
    /// skipped only if it is still stuck at the next look (a live claimer names itself
    /// within nanoseconds of its claim).
    suspect: std::sync::atomic::AtomicU64,
}

// SAFETY: the raw pointer points into `mapped`, which the ring owns a share of; all
// shared state is reached through atomics, and payload bytes only through claims that
// the stamp protocol makes exclusive.
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
            suspect: std::sync::atomic::AtomicU64::new(0),
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
        // valid for any bytes.
        unsafe { &*(self.slots.add(i * self.slot_size) as *const SlotHeader) }
    }

    #[inline]
    fn payload_ptr(&self, pos: u64) -> *mut u8 {
        let i = (pos & self.mask) as usize;
        // SAFETY: in the slot (see `slot`), after its header.
        unsafe { self.slots.add(i * self.slot_size + SLOT_HEADER) }
    }

    /// Claims the next position for a producer, or `None` if the ring is full.
    #[inline]
    pub(crate) fn try_claim_send(&self, id: u64) -> Result<Option<SendClaim>, Corrupt> {
        let h = self.mapped.header();
        let mut pos = h.write_pos.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(pos);
            let stamp = slot.stamp.load(Ordering::Acquire);
            let diff = stamp.wrapping_sub(pos) as i64;
            if diff == 0 {
                match h.write_pos.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        slot.producer_claim
                            .store(claim_word(id, pos), Ordering::Relaxed);
                        return Ok(Some(SendClaim { pos }));
                    }
                    Err(cur) => pos = cur,
                }
            } else if diff < 0 {
                // Full: the slot still holds lap `pos - count` (published, or claimed).
                let c = self.count as i64;
                if diff == -c || diff == 1 - c {
                    return Ok(None);
                }
                let cur = h.write_pos.load(Ordering::Relaxed);
                if cur == pos && slot.stamp.load(Ordering::Acquire) == stamp {
                    return Err(Corrupt(format!(
                        "slot stamp {stamp} is impossible at enqueue position {pos}"
                    )));
                }
                pos = cur;
            } else {
                // Someone claimed `pos` before us: move on, unless nobody moved at all.
                let cur = h.write_pos.load(Ordering::Relaxed);
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
        // SAFETY: the claim is exclusive (we won the CAS for this position and the stamp
        // keeps consumers and other producers off the slot until we publish), and
        // SLOT_HEADER + max_message <= slot_size was validated.
        unsafe { std::slice::from_raw_parts_mut(self.payload_ptr(claim.pos), len) }
    }

    /// The payload bytes of a claimed slot, shared (reading back what we wrote).
    #[inline]
    pub(crate) fn claimed_payload<'c>(&'c self, claim: &'c SendClaim, len: usize) -> &'c [u8] {
        assert!(len <= self.max_message);
        // SAFETY: as in payload_mut.
        unsafe { std::slice::from_raw_parts(self.payload_ptr(claim.pos), len) }
    }

    /// Publishes a claimed slot with `len` bytes (or [`CANCELLED`]).
    #[inline]
    pub(crate) fn publish(&self, claim: SendClaim, len: u32, tag: u32) -> Result<(), Reclaimed> {
        let slot = self.slot(claim.pos);
        slot.len.store(len, Ordering::Relaxed);
        slot.tag.store(tag, Ordering::Relaxed);
        slot.stamp
            .compare_exchange(
                claim.pos,
                claim.pos.wrapping_add(1),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .map(|_| ())
            .map_err(|_| Reclaimed)
    }

    /// Claims the next published message for a consumer, or `None` if there is none.
    /// Cancelled slots are released and skipped.
    #[inline]
    pub(crate) fn try_claim_recv(&self, id: u64) -> Result<Option<RecvClaim>, Corrupt> {
        let h = self.mapped.header();
        let mut pos = h.read_pos.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(pos);
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
                match h.read_pos.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        slot.consumer_claim
                            .store(claim_word(id, pos), Ordering::Relaxed);
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
                    Err(cur) => pos = cur,
                }
            } else if diff < 0 {
                // Empty: not yet published (stamp == pos), or the slot still holds the
                // previous lap's message (claimed by a consumer not done with it).
                if stamp == pos || stamp == pos.wrapping_add(1).wrapping_sub(self.count) {
                    return Ok(None);
                }
                let cur = h.read_pos.load(Ordering::Relaxed);
                if cur == pos && slot.stamp.load(Ordering::Acquire) == stamp {
                    return Err(Corrupt(format!(
                        "slot stamp {stamp} is impossible at dequeue position {pos}"
                    )));
                }
                pos = cur;
            } else {
                let cur = h.read_pos.load(Ordering::Relaxed);
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
        // SAFETY: len <= max_message was checked in try_claim_recv; the stamp keeps
        // producers off the slot until we release it.
        unsafe { std::slice::from_raw_parts(self.payload_ptr(claim.pos), claim.len) }
    }

    /// Frees a claimed slot for the producers of the next lap.
    #[inline]
    pub(crate) fn release(&self, claim: RecvClaim) {
        let next = claim.pos.wrapping_add(self.count);
        // Fails only if a producer gave us up for dead and took the slot back.
        let _ = self.slot(claim.pos).stamp.compare_exchange(
            claim.pos.wrapping_add(1),
            next,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// Whether a sender registered in the segment has died without closing.
    fn a_sender_died(&self) -> bool {
        (0..MAX_ENDPOINTS).any(|i| {
            header::word_role(self.mapped.entry_word(i)) == ROLE_SENDER
                && matches!(self.mapped.entry_state(i), PeerState::Dead(_))
        })
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

    /// Slow path for a consumer that found the ring empty although producers have claimed
    /// positions ahead: if the slot at the dequeue position was claimed by a process that
    /// has died, take it and skip it (counting it in `lost`). Returns a message if the
    /// slot turned out to be published after all.
    pub(crate) fn recover_recv(&self, id: u64) -> Result<Option<RecvClaim>, Corrupt> {
        let h = self.mapped.header();
        let pos = h.read_pos.load(Ordering::Acquire);
        if h.write_pos.load(Ordering::Acquire) == pos {
            return Ok(None); // Truly empty.
        }
        let slot = self.slot(pos);
        if slot.stamp.load(Ordering::Acquire) != pos {
            return Ok(None); // Not a claimed-but-unpublished slot.
        }
        let dead = match claimer(slot.producer_claim.load(Ordering::Acquire), pos) {
            Some((index, generation)) => self.claimer_gone(index, generation),
            // The claimer died before it could even write its pid, or is just slow: skip
            // only if it was already stuck here at the last look and a sender has died.
            None => {
                let seen = self
                    .suspect
                    .swap(pos.wrapping_add(1), std::sync::atomic::Ordering::Relaxed);
                seen == pos.wrapping_add(1) && self.a_sender_died()
            }
        };
        if !dead {
            return Ok(None);
        }
        if h.read_pos
            .compare_exchange(
                pos,
                pos.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Ok(None); // Another consumer moved on; try again normally.
        }
        slot.consumer_claim
            .store(claim_word(id, pos), Ordering::Relaxed);
        let next = pos.wrapping_add(self.count);
        match slot
            .stamp
            .compare_exchange(pos, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                h.lost.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            // Published just now: it is ours to read.
            Err(s) if s == pos.wrapping_add(1) => {
                let len = slot.len.load(Ordering::Relaxed);
                let tag = slot.tag.load(Ordering::Relaxed);
                let claim = RecvClaim { pos, len: 0, tag };
                if len == CANCELLED {
                    self.release(claim);
                    return Ok(None);
                }
                if len as usize > self.max_message {
                    self.release(claim);
                    return Err(Corrupt(format!(
                        "slot at position {pos} claims {len} bytes, max_message is {}",
                        self.max_message
                    )));
                }
                Ok(Some(RecvClaim {
                    len: len as usize,
                    ..claim
                }))
            }
            Err(s) => Err(Corrupt(format!(
                "slot stamp {s} is impossible at dequeue position {pos}"
            ))),
        }
    }

    /// Slow path for a producer that found the ring full: if the slot it waits for is
    /// held by a consumer process that died before releasing it, free it (the message it
    /// held counts as lost). Returns whether a slot was freed.
    pub(crate) fn recover_send(&self) -> bool {
        let h = self.mapped.header();
        let pos = h.write_pos.load(Ordering::Acquire);
        let prev = pos.wrapping_sub(self.count);
        if h.read_pos.load(Ordering::Acquire) == prev {
            return false; // Truly full: nobody has claimed the oldest message.
        }
        let slot = self.slot(pos);
        if slot.stamp.load(Ordering::Acquire) != prev.wrapping_add(1) {
            return false;
        }
        let Some((index, generation)) = claimer(slot.consumer_claim.load(Ordering::Acquire), prev)
        else {
            return false;
        };
        if !self.claimer_gone(index, generation) {
            return false;
        }
        if slot
            .stamp
            .compare_exchange(
                prev.wrapping_add(1),
                pos,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            h.lost.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Messages published and not yet claimed, as seen now (approximate under contention).
    pub(crate) fn len(&self) -> u64 {
        let h = self.mapped.header();
        let w = h.write_pos.load(Ordering::Acquire);
        let r = h.read_pos.load(Ordering::Acquire);
        w.wrapping_sub(r).min(self.count)
    }
}
