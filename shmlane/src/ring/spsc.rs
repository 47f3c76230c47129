//! The single-producer single-consumer variable-length byte ring.
//!
//! Positions are free-running `u64` byte counters (`index = pos & (capacity - 1)`). A
//! record is `{ len: u32, tag: u32 }` plus the payload padded to 8 bytes, and never wraps:
//! when it does not fit before the end of the data area the producer publishes a padding
//! record (`len == PAD_FLAG`) that runs to the end, and starts again at offset 0. Each
//! side caches the other's position and reloads it only when the cache says full/empty.

use crate::sync::Ordering;
use std::sync::Arc;

use super::{record_size, RECORD_HEADER};
use crate::segment::header::{Header, Mapped};
use crate::wait;

/// `len` of a padding record (the top bit; real lengths are below it).
pub(crate) const PAD_FLAG: u32 = 1 << 31;

/// A value read from shared memory was out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Corrupt(pub String);

impl From<Corrupt> for crate::Error {
    fn from(c: Corrupt) -> crate::Error {
        crate::Error::Corrupt { what: c.0 }
    }
}

/// Writes `{len, tag}` at `data + off`.
///
/// # Safety
/// `off + RECORD_HEADER <= capacity`, `off` 8-aligned, `data` the ring's data area.
#[inline]
unsafe fn write_record_header(data: *mut u8, off: usize, len: u32, tag: u32) {
    // SAFETY: in bounds and aligned per the contract.
    unsafe {
        let p = data.add(off).cast::<u32>();
        p.write(len);
        p.add(1).write(tag);
    }
}

/// Reads `{len, tag}` at `data + off`, volatile: the peer owns this memory.
///
/// # Safety
/// As for [`write_record_header`].
#[inline]
unsafe fn read_record_header(data: *const u8, off: usize) -> (u32, u32) {
    // SAFETY: in bounds and aligned per the contract.
    unsafe {
        let p = data.add(off).cast::<u32>();
        (p.read_volatile(), p.add(1).read_volatile())
    }
}

/// Checks the two shared positions against each other: both 8-aligned, and
/// `read <= write <= read + capacity` (in wrapping arithmetic).
fn check_positions(write: u64, read: u64, cap: u64) -> Result<(), Corrupt> {
    if write % 8 != 0 || read % 8 != 0 || write.wrapping_sub(read) > cap {
        return Err(Corrupt(format!(
            "ring positions out of range (write {write}, read {read}, capacity {cap})"
        )));
    }
    Ok(())
}

/// Checks that a peer's position did not move backwards since we last loaded it.
fn check_forward(what: &str, before: u64, now: u64, cap: u64) -> Result<(), Corrupt> {
    if now.wrapping_sub(before) > cap {
        return Err(Corrupt(format!(
            "the {what} position moved backwards (from {before} to {now})"
        )));
    }
    Ok(())
}

/// The producer's side of an SPSC ring.
pub(crate) struct ProducerRing {
    mapped: Arc<Mapped>,
    data: *mut u8,
    cap: u64,
    mask: u64,
    max_message: usize,
    /// End of the last committed record (ours, trusted).
    write: u64,
    /// What `write_pos` holds.
    published: u64,
    /// The consumer's position as last loaded.
    cached_read: u64,
}

// SAFETY: the raw pointer points into `mapped`, which moves along with it; the ring
// protocol, not thread affinity, guards the memory.
unsafe impl Send for ProducerRing {}

impl ProducerRing {
    /// Takes the producer's side of a validated SPSC segment, going on from the last
    /// published position (a dead predecessor's unpublished record is discarded).
    pub(crate) fn new(mapped: Arc<Mapped>) -> Result<ProducerRing, Corrupt> {
        let g = *mapped.geometry();
        let h = mapped.header();
        let write = h.write_pos.load(Ordering::Acquire);
        let read = h.read_pos.load(Ordering::Acquire);
        check_positions(write, read, g.capacity as u64)?;
        Ok(ProducerRing {
            data: mapped.data_ptr(),
            cap: g.capacity as u64,
            mask: g.capacity as u64 - 1,
            max_message: g.max_message,
            write,
            published: write,
            cached_read: read,
            mapped,
        })
    }

    #[inline]
    fn header(&self) -> &Header {
        self.mapped.header()
    }

    pub(crate) fn max_message(&self) -> usize {
        self.max_message
    }

    /// Whether `n` more bytes fit, reloading the consumer position if the cache says no.
    #[inline]
    fn has_space(&mut self, n: u64) -> Result<bool, Corrupt> {
        if self.cap - self.write.wrapping_sub(self.cached_read) >= n {
            return Ok(true);
        }
        let read = self.header().read_pos.load(Ordering::Acquire);
        check_positions(self.write, read, self.cap)?;
        check_forward("read", self.cached_read, read, self.cap)?;
        self.cached_read = read;
        Ok(self.cap - self.write.wrapping_sub(read) >= n)
    }

    /// Finds room for a record of `len` payload bytes. Returns the record's offset in the
    /// data area, or `None` when the ring is full. May publish a padding record.
    /// `len` must be at most `max_message` (checked by the caller).
    #[inline]
    pub(crate) fn try_reserve(&mut self, len: usize) -> Result<Option<usize>, Corrupt> {
        debug_assert!(len <= self.max_message);
        let rec = record_size(len) as u64;
        let off = self.write & self.mask;
        let to_end = self.cap - off;
        if rec <= to_end {
            return Ok(if self.has_space(rec)? {
                Some(off as usize)
            } else {
                None
            });
        }
        // Pad to the end of the data area, publish the padding so the consumer can free
        // that space, then start over at offset 0.
        if !self.has_space(to_end)? {
            return Ok(None);
        }
        self.mapped.track_write(off as usize, RECORD_HEADER);
        // SAFETY: off < cap, 8-aligned, and to_end >= RECORD_HEADER (a multiple of 8).
        unsafe { write_record_header(self.data, off as usize, PAD_FLAG, 0) };
        self.write = self.write.wrapping_add(to_end);
        self.publish();
        Ok(if self.has_space(rec)? { Some(0) } else { None })
    }

    /// The payload bytes of a record reserved at `off`.
    #[inline]
    pub(crate) fn payload_mut(&mut self, off: usize, len: usize) -> &mut [u8] {
        debug_assert!(off + record_size(len) <= self.cap as usize);
        self.mapped.track_write(off + RECORD_HEADER, len);
        // SAFETY: `off` came from try_reserve for `len`, so the whole record lies inside
        // the data area, in space the consumer has released and will not read until we
        // publish it.
        unsafe { std::slice::from_raw_parts_mut(self.data.add(off + RECORD_HEADER), len) }
    }

    /// The payload bytes of a record reserved at `off`, shared.
    #[inline]
    pub(crate) fn payload(&self, off: usize, len: usize) -> &[u8] {
        debug_assert!(off + record_size(len) <= self.cap as usize);
        self.mapped.track_read(off + RECORD_HEADER, len);
        // SAFETY: as for payload_mut; we only read back our own unpublished bytes.
        unsafe { std::slice::from_raw_parts(self.data.add(off + RECORD_HEADER), len) }
    }

    /// Commits the record reserved at `off` without publishing it yet.
    #[inline]
    pub(crate) fn commit_deferred(&mut self, off: usize, len: usize, tag: u32) {
        debug_assert_eq!(off as u64, self.write & self.mask);
        self.mapped.track_write(off, RECORD_HEADER);
        // SAFETY: `off` came from try_reserve: in bounds, aligned, not visible to the
        // consumer yet.
        unsafe { write_record_header(self.data, off, len as u32, tag) };
        self.write = self.write.wrapping_add(record_size(len) as u64);
    }

    /// Makes every committed record visible to the consumer, and wakes it if it sleeps.
    #[inline]
    pub(crate) fn publish(&mut self) {
        if self.published != self.write {
            self.published = self.write;
            let h = self.mapped.header();
            h.write_pos.store(self.write, Ordering::Release);
            wait::wake(&h.data_waiters, &h.data_sem);
        }
    }
}

/// A record found by [`ConsumerRing::try_peek`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record {
    pub off: usize,
    pub len: usize,
    pub tag: u32,
}

/// The consumer's side of an SPSC ring.
pub(crate) struct ConsumerRing {
    mapped: Arc<Mapped>,
    data: *const u8,
    cap: u64,
    mask: u64,
    max_message: usize,
    /// Start of the next record to read (ours, trusted).
    read: u64,
    /// What `read_pos` holds.
    released: u64,
    /// The producer's position as last loaded (checked).
    cached_write: u64,
}

// SAFETY: as for ProducerRing.
unsafe impl Send for ConsumerRing {}

impl ConsumerRing {
    /// Takes the consumer's side of a validated SPSC segment, going on from the last
    /// released position.
    pub(crate) fn new(mapped: Arc<Mapped>) -> Result<ConsumerRing, Corrupt> {
        let g = *mapped.geometry();
        let h = mapped.header();
        let write = h.write_pos.load(Ordering::Acquire);
        let read = h.read_pos.load(Ordering::Acquire);
        check_positions(write, read, g.capacity as u64)?;
        Ok(ConsumerRing {
            data: mapped.data_ptr(),
            cap: g.capacity as u64,
            mask: g.capacity as u64 - 1,
            max_message: g.max_message,
            read,
            released: read,
            cached_write: write,
            mapped,
        })
    }

    /// Whether the producer has published records we have not read, reloading its position.
    pub(crate) fn refresh(&mut self) -> Result<bool, Corrupt> {
        let write = self.mapped.header().write_pos.load(Ordering::Acquire);
        check_positions(write, self.read, self.cap)?;
        check_forward("write", self.cached_write, write, self.cap)?;
        self.cached_write = write;
        if write == self.read {
            // Caught up: hand back everything read before we wait for more.
            self.release_now();
            return Ok(false);
        }
        Ok(true)
    }

    /// The next record, if one is published. Skips (and releases) padding. Every field of
    /// the record header is checked against the ring before it is returned.
    #[inline]
    pub(crate) fn try_peek(&mut self) -> Result<Option<Record>, Corrupt> {
        loop {
            if self.cached_write == self.read && !self.refresh()? {
                return Ok(None);
            }
            let avail = self.cached_write.wrapping_sub(self.read);
            let off = self.read & self.mask;
            if avail > 64 - (off & 63) {
                // Published bytes go on into the next cache line: start loading it now.
                let next = ((off | 63) + 1) & self.mask;
                // SAFETY: next < cap, so the address is inside the data area.
                super::prefetch_line(unsafe { self.data.add(next as usize) });
            }
            self.mapped.track_read(off as usize, RECORD_HEADER);
            // SAFETY: off < cap and 8-aligned (read is 8-aligned, checked at attach and
            // only advanced by multiples of 8), and cap - off >= 8.
            let (len, tag) = unsafe { read_record_header(self.data, off as usize) };
            if len & PAD_FLAG != 0 {
                let pad = self.cap - off;
                if len != PAD_FLAG || pad > avail {
                    return Err(Corrupt(format!(
                        "bad padding record at position {} (len field {len:#x}, {pad} bytes to the end, {avail} published)",
                        self.read
                    )));
                }
                self.read = self.read.wrapping_add(pad);
                self.release_now();
                continue;
            }
            let len = len as usize;
            if len > self.max_message {
                return Err(Corrupt(format!(
                    "record at position {} claims {len} bytes, max_message is {}",
                    self.read, self.max_message
                )));
            }
            let rec = record_size(len) as u64;
            if rec > avail || off + rec > self.cap {
                return Err(Corrupt(format!(
                    "record at position {} of {len} bytes runs past the published data ({avail} bytes) or the ring end",
                    self.read
                )));
            }
            return Ok(Some(Record {
                off: off as usize,
                len,
                tag,
            }));
        }
    }

    /// The payload of a record returned by `try_peek`.
    #[inline]
    pub(crate) fn payload(&self, r: &Record) -> &[u8] {
        self.mapped.track_read(r.off + RECORD_HEADER, r.len);
        // SAFETY: try_peek checked off + record_size(len) <= cap and that the producer has
        // published these bytes; it will not touch them until we release them.
        unsafe { std::slice::from_raw_parts(self.data.add(r.off + RECORD_HEADER), r.len) }
    }

    /// Consumes the record returned by `try_peek`, without telling the producer yet.
    #[inline]
    pub(crate) fn consume_deferred(&mut self, r: &Record) {
        self.read = self.read.wrapping_add(record_size(r.len) as u64);
    }

    /// Tells the producer about everything consumed, and wakes it if it sleeps.
    #[inline]
    pub(crate) fn release_now(&mut self) {
        if self.released != self.read {
            self.released = self.read;
            let h = self.mapped.header();
            h.read_pos.store(self.read, Ordering::Release);
            wait::wake(&h.space_waiters, &h.space_sem);
        }
    }

    /// Bytes published and not yet consumed, as last seen.
    pub(crate) fn pending_bytes(&self) -> u64 {
        self.cached_write.wrapping_sub(self.read)
    }
}
