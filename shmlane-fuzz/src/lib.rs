//! The logic of the fuzz targets under `fuzz/`, as plain functions of the input bytes.
//!
//! Each `pub fn NAME(data: &[u8])` is what `fuzz/fuzz_targets/NAME.rs` calls, and what
//! `shmlane-fuzz/tests/fuzz_corpus.rs` replays for every file of `fuzz/corpus/NAME/` (and
//! `fuzz/regressions/NAME/`) on stable, so `cargo test` covers the corpora.
//!
//! None of them panics on any input unless the library breaks one of its promises: a
//! message handed out that the model says was never sent, a result the model says is
//! impossible, a length over `max_message`, an error that is not a specific one. Shared
//! memory is untrusted input, so every corruption must end in [`Error::Corrupt`] (or
//! another specific error), never in a panic, a hang or an out-of-bounds read.
//!
//! Every function works on real segments in `/dev/shm`, named
//! `/shmlane-fuzz-<target>-<pid>-<counter>`, and removes them before it returns (a drop
//! guard, so also when an assertion fails and unwinds).
#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![cfg(target_os = "linux")]

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use memoffset::offset_of;

use shmlane::format::{Header, HEADER_SIZE, MAGIC, STATE_READY};
use shmlane::mpmc::{Receiver, Sender};
use shmlane::spsc::{Consumer, Producer};
use shmlane::{Error, Options, TryRecvError, TrySendError, Wait};

/// Overwrites `bytes` at `off` of a segment file behind the endpoints' backs (the
/// corrupt-segment targets); returns whether anything changed.
fn scribble(file: &File, off: u64, bytes: &[u8]) -> bool {
    let mut old = vec![0u8; bytes.len()];
    file.read_exact_at(&mut old, off)
        .unwrap_or_else(|e| panic!("fuzz setup: read segment file: {e}"));
    file.write_all_at(bytes, off)
        .unwrap_or_else(|e| panic!("fuzz setup: write segment file: {e}"));
    old != bytes
}

/// Largest input `open_header` writes to its segment file.
pub const OPEN_HEADER_MAX_LEN: usize = 64 << 10;

/// Whether the fuzz functions steer around the known bugs (see [`work_around_known_bugs`]).
static WORK_AROUND_KNOWN_BUGS: AtomicBool = AtomicBool::new(true);

/// Turns the work-arounds for known, not yet fixed library bugs on (the default) or off,
/// for this process. With them on, fuzzing goes on past a known failure to find new ones;
/// `shmlane-fuzz/tests/fuzz_corpus.rs` turns them off (in a child process) to replay the inputs
/// `fuzz/regressions/<target>/known-bug-*` that still reproduce.
///
/// There are no known bugs at the moment, so no fuzz function reads this flag and it
/// changes nothing. When fuzzing finds a bug that is not fixed at once, its work-around
/// goes where the failing assertion is, skipped while `WORK_AROUND_KNOWN_BUGS` is set, and
/// is described here; once the bug is fixed, the work-around goes again and the inputs
/// lose their `known-bug-` prefix (as `spsc_ops/fixed-full-on-empty-ring` did: `try_send`
/// reported `Full` on an empty ring whose max-sized record was more than half of it, until
/// such a `max_message` doubled the capacity).
pub fn work_around_known_bugs(on: bool) {
    WORK_AROUND_KNOWN_BUGS.store(on, Ordering::Relaxed);
}

/// The stored name that `open_header` replaces with the segment's real name (so inputs
/// copied from a real segment pass the name check whatever the name of the fuzz segment).
pub const NAME_PLACEHOLDER: &[u8] = b"@";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique segment name, whose `/dev/shm` file is removed when this guard drops.
struct ShmName(String);

impl ShmName {
    fn new(tag: &str) -> ShmName {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        ShmName(format!("/shmlane-fuzz-{tag}-{}-{n}", std::process::id()))
    }

    fn path(&self) -> String {
        format!("/dev/shm{}", self.0)
    }

    /// The segment file, opened for reading and writing behind the endpoints' backs.
    fn open_file(&self) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path())
            .unwrap_or_else(|e| panic!("fuzz setup: open {}: {e}", self.path()))
    }
}

impl std::ops::Deref for ShmName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for ShmName {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

/// Reads the fuzz input front to back; past its end every read is zero.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    fn new(data: &'a [u8]) -> Bytes<'a> {
        Bytes { data, pos: 0 }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `n` of the remaining bytes.
    fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = end;
        &self.data[start..end]
    }

    /// A tag: mostly small, sometimes any `u32`.
    fn tag(&mut self) -> u32 {
        let b = self.u8();
        if b & 0x80 != 0 {
            self.u32()
        } else {
            u32::from(b)
        }
    }

    /// A message length in `0 ..= max`, now and then `max + 1 ..` (too large).
    fn len(&mut self, max: usize) -> usize {
        match self.u8() {
            0xff => max + 1 + usize::from(self.u8()),
            0xfe => max,
            _ => usize::from(self.u16()) % (max + 1),
        }
    }
}

/// The payload of message number `seq`: every byte checkable.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8) ^ (seq >> 8) as u8)
        .collect()
}

/// The bytes an SPSC record of `len` payload bytes takes (docs/ARCHITECTURE.md: an 8-byte
/// header, the payload padded to 8).
fn record_bytes(len: usize) -> u64 {
    8 + (len as u64).div_ceil(8) * 8
}

/// Reads every byte of a received payload (a fault here is an out-of-bounds slice).
fn touch(bytes: &[u8]) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

fn wait_of(b: u8) -> Wait {
    match b % 3 {
        0 => Wait::Spin,
        1 => Wait::Yield,
        _ => Wait::Block,
    }
}

/// A short timeout for the `*_timeout` calls: zero or a few microseconds.
fn short(b: u8) -> Duration {
    Duration::from_micros(u64::from(b % 4) * 20)
}

/// A received message against what the model says it must be.
fn check_msg(what: &str, got: (&[u8], u32), want: Option<(usize, u32, u64)>) {
    let Some((len, tag, seq)) = want else {
        panic!(
            "{what}: received {} bytes (tag {}) that the model says were never sent",
            got.0.len(),
            got.1
        );
    };
    assert_eq!(got.0.len(), len, "{what}: length of message {seq}");
    assert_eq!(got.1, tag, "{what}: tag of message {seq}");
    assert!(got.0 == payload(seq, len), "{what}: bytes of message {seq}");
}

/// The `u64` at byte `off` of a segment file.
fn get_u64(file: &File, off: u64) -> u64 {
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, off)
        .unwrap_or_else(|e| panic!("fuzz setup: read segment file: {e}"));
    u64::from_ne_bytes(b)
}

mod broadcast_corrupt;
mod broadcast_ops;
mod corrupt;
mod header;
mod mpmc_ops;
mod spsc_ops;

pub use broadcast_corrupt::broadcast_corrupt;
pub use broadcast_ops::broadcast_ops;
pub use corrupt::{corrupt_consume, corrupt_consume_mpmc};
pub use header::{open_header, open_header_opened, validate_header};
pub use mpmc_ops::mpmc_ops;
pub use spsc_ops::spsc_ops;
