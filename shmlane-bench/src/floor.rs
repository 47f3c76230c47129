//! The machine's floor, for the benchmark to compare against: what two processes get from
//! shared memory with nothing in the way.
//!
//! - Bandwidth: the sender copies chunks of the message size into a ring of chunks and
//!   bumps one counter; the receiver waits for the counter, reads (checksums) the chunk in
//!   place, and bumps its own counter. No framing, no wake-ups, no validation.
//! - Latency: one cache line bouncing between two processes (ping writes `2k+1`, pong
//!   answers `2k+2`).

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use shmlane::format::Segment;
use shmlane::{Error, Result};

/// Layout of a floor segment: two counters, then `chunks` chunks of `size` bytes.
#[repr(C)]
struct FloorHeader {
    sent: CachePadded<AtomicU64>,
    done: CachePadded<AtomicU64>,
}

const HEADER: usize = 4096;
const _: () = assert!(std::mem::size_of::<FloorHeader>() <= HEADER);

/// A mapped floor segment.
#[derive(Debug)]
pub struct Floor {
    seg: Segment,
    size: usize,
    chunks: u64,
}

impl Floor {
    /// Bytes a floor segment needs for `chunks` chunks of `size` bytes (saturating: a
    /// size no segment can have is refused by [`new`](Self::new)).
    pub fn segment_len(size: usize, chunks: u64) -> usize {
        usize::try_from(chunks)
            .ok()
            .and_then(|c| size.max(64).checked_mul(c))
            .and_then(|b| b.checked_add(HEADER))
            .unwrap_or(usize::MAX)
    }

    /// Takes a segment made (zeroed) for `chunks` chunks of `size` bytes.
    pub fn new(seg: Segment, size: usize, chunks: u64) -> Result<Floor> {
        let need = Floor::segment_len(size, chunks);
        if chunks == 0 || need == usize::MAX || seg.len() < need {
            return Err(Error::corrupt("floor segment too small"));
        }
        Ok(Floor { seg, size, chunks })
    }

    fn header(&self) -> &FloorHeader {
        // SAFETY: the segment holds at least HEADER bytes (checked in new), is page
        // aligned, and FloorHeader is all atomics.
        unsafe { &*(self.seg.as_ptr() as *const FloorHeader) }
    }

    fn chunk(&self, i: u64) -> *mut u8 {
        let off = HEADER + (i % self.chunks) as usize * self.size.max(64);
        // SAFETY: off + size <= segment_len <= len (checked in new).
        unsafe { self.seg.as_ptr().add(off) }
    }

    /// Sends `count` chunks copied from `src` (whose length is the chunk size). Takes
    /// `&mut self`: two senders of one floor would write the same chunk.
    pub fn send(&mut self, src: &[u8], count: u64) {
        assert_eq!(src.len(), self.size);
        let h = self.header();
        let mut done = 0;
        for i in 0..count {
            while i - done >= self.chunks {
                done = h.done.load(Ordering::Acquire);
                std::hint::spin_loop();
            }
            // SAFETY: the receiver has released chunk i - chunks (done > i - chunks), so
            // chunk i is ours until we publish it; it is `size` bytes inside the segment.
            let dst = unsafe { std::slice::from_raw_parts_mut(self.chunk(i), self.size) };
            shmlane::format::copy_bytes(dst, src);
            h.sent.store(i + 1, Ordering::Release);
        }
    }

    /// Receives `count` chunks, reading each in place with `f`.
    pub fn recv(&self, count: u64, mut f: impl FnMut(&[u8])) {
        let h = self.header();
        let mut sent = 0;
        for i in 0..count {
            while sent <= i {
                sent = h.sent.load(Ordering::Acquire);
                std::hint::spin_loop();
            }
            // SAFETY: the sender published chunk i (sent > i) and will not touch it until
            // we release it below.
            let src = unsafe { std::slice::from_raw_parts(self.chunk(i), self.size) };
            f(src);
            h.done.store(i + 1, Ordering::Release);
        }
    }

    /// Ping side of the cache-line bounce: `rounds` round trips, returned in nanoseconds.
    pub fn ping(&self, rounds: u64) -> Vec<u64> {
        let line = &self.header().sent;
        let mut out = Vec::with_capacity(rounds as usize);
        for k in 0..rounds {
            let t = std::time::Instant::now();
            line.store(2 * k + 1, Ordering::Release);
            while line.load(Ordering::Acquire) != 2 * k + 2 {
                std::hint::spin_loop();
            }
            out.push(t.elapsed().as_nanos() as u64);
        }
        out
    }

    /// Pong side of the cache-line bounce.
    pub fn pong(&self, rounds: u64) {
        let line = &self.header().sent;
        for k in 0..rounds {
            while line.load(Ordering::Acquire) != 2 * k + 1 {
                std::hint::spin_loop();
            }
            line.store(2 * k + 2, Ordering::Release);
        }
    }
}
