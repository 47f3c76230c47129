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

// ---------------------------------------------------------------------------------------
// open_header
// ---------------------------------------------------------------------------------------

/// `fuzz/fuzz_targets/validate_header.rs`: the header validator alone, with no segment and
/// no `/dev/shm`. The input is a header image; the segment's length is the input's length,
/// and, when the input is longer than the header, also its last 8 bytes read as a length
/// (so lengths the input cannot hold are tried too). As in [`open_header`], a header with
/// the shmlane magic gets `state = READY` and its placeholder name replaced, so inputs
/// reach the deep checks. Must hold: `validate` answers (never panics), and a geometry it
/// accepts fits the segment: the data area inside `segment_len`, `segment_len` inside the
/// length, `max_message` at most half the data area, MPMC slots that multiply out.
pub fn validate_header(data: &[u8]) {
    use shmlane::format::{validate, Kind, NameCheck, Snapshot};
    let mut content = data.to_vec();
    let mut lens = vec![content.len() as u64];
    if content.len() > HEADER_SIZE + 8 {
        let tail = content.len() - 8;
        lens.push(u64::from_ne_bytes(content[tail..].try_into().unwrap()) % (1 << 40));
    }
    if content.len() >= HEADER_SIZE && content[..8] == MAGIC {
        let state = offset_of!(Header, state);
        content[state..state + 4].copy_from_slice(&STATE_READY.to_ne_bytes());
    }
    let name = "/shmlane-fuzz-validate";
    let nl = offset_of!(Header, name_len);
    let n = offset_of!(Header, name);
    if content.len() >= n + name.len()
        && content[nl..nl + 4] == (NAME_PLACEHOLDER.len() as u32).to_ne_bytes()
        && &content[n..n + NAME_PLACEHOLDER.len()] == NAME_PLACEHOLDER
    {
        content[nl..nl + 4].copy_from_slice(&(name.len() as u32).to_ne_bytes());
        content[n..n + name.len()].copy_from_slice(name.as_bytes());
    }
    for (len, names) in lens.into_iter().flat_map(|l| {
        [
            (l, NameCheck::Is(shmlane::Backing::Posix)),
            (l, NameCheck::Any),
        ]
    }) {
        let snapshot = Snapshot::from_bytes(&content, len);
        let Ok(g) = validate(&snapshot, name, None, names) else {
            continue;
        };
        assert!(
            HEADER_SIZE as u64 + g.capacity as u64 <= g.segment_len as u64,
            "{g:?}"
        );
        assert!(g.segment_len as u64 <= len, "{g:?} in {len} bytes");
        assert!(g.max_message <= g.capacity / 2, "{g:?}");
        if g.kind == Kind::Mpmc {
            assert_eq!(
                g.slot_count.checked_mul(g.slot_size),
                Some(g.capacity),
                "{g:?}"
            );
        }
    }
}

/// Opens a segment whose whole content is `data` (at most [`OPEN_HEADER_MAX_LEN`]
/// bytes) with all four endpoint types, and uses whatever opens with a few non-blocking
/// calls.
///
/// So that executions stay fast and inputs from real segments reach the deep checks:
/// empty inputs, and inputs whose first 8 bytes are zero (the opener would wait 2 s for
/// a creator that is "not finished"), are skipped; a header with the shmlane magic gets
/// `state = READY` for the same reason; and a stored name equal to [`NAME_PLACEHOLDER`]
/// is replaced by the segment's real name.
pub fn open_header(data: &[u8]) {
    open_header_opened(data);
}

/// [`open_header`], returning which opens succeeded: `[Consumer, Producer, Receiver,
/// Sender]` (so a test can tell that seeds copied from real segments still open).
pub fn open_header_opened(data: &[u8]) -> [bool; 4] {
    let data = &data[..data.len().min(OPEN_HEADER_MAX_LEN)];
    if data.len() < 8 || data[..8] == [0u8; 8] {
        // Empty or zero magic: "creator not finished", the opener would wait 2 s.
        return [false; 4];
    }
    let name = ShmName::new("oh");
    let mut content = data.to_vec();
    if content[..8] == MAGIC && content.len() >= HEADER_SIZE {
        let state = offset_of!(Header, state);
        content[state..state + 4].copy_from_slice(&STATE_READY.to_ne_bytes());
        let nl = offset_of!(Header, name_len);
        let n = offset_of!(Header, name);
        let stored_len = u32::from_ne_bytes(content[nl..nl + 4].try_into().unwrap());
        if stored_len as usize == NAME_PLACEHOLDER.len()
            && &content[n..n + NAME_PLACEHOLDER.len()] == NAME_PLACEHOLDER
        {
            let real = name.as_bytes();
            content[nl..nl + 4].copy_from_slice(&(real.len() as u32).to_ne_bytes());
            content[n..n + real.len()].copy_from_slice(real);
        }
    }
    {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(name.path())
            .unwrap_or_else(|e| panic!("fuzz setup: create {}: {e}", name.path()));
        file.write_all_at(&content, 0)
            .unwrap_or_else(|e| panic!("fuzz setup: write {}: {e}", name.path()));
    }

    let consumer = Consumer::open(&name);
    let producer = Producer::open(&name);
    check_open_result("Consumer::open", &consumer);
    check_open_result("Producer::open", &producer);
    let mut opened = [consumer.is_ok(), producer.is_ok(), false, false];
    let (mut consumer, mut producer) = (consumer.ok(), producer.ok());
    let max = consumer
        .as_ref()
        .map(|c| c.max_message())
        .or_else(|| producer.as_ref().map(|p| p.max_message()));
    if let Some(max) = max {
        let msg = vec![0x5a_u8; max + 1];
        for (i, len) in [0, 1, max / 2, max, max + 1, 7.min(max + 1)]
            .into_iter()
            .enumerate()
        {
            if let Some(p) = producer.as_mut() {
                let r = p.try_send_tagged(i as u32, &msg[..len]);
                match r {
                    Ok(()) | Err(TrySendError::Full) | Err(TrySendError::Disconnected) => {
                        assert!(len <= max, "a message over max_message was sent");
                    }
                    Err(TrySendError::TooLarge { .. }) => assert!(len > max),
                    Err(TrySendError::Corrupt { .. }) => {}
                }
            }
            if let Some(c) = consumer.as_mut() {
                spsc_consume_any(c, i % 3 == 2);
            }
        }
        if let Some(p) = producer.as_mut() {
            if let Ok(mut g) = p.try_reserve(max.min(3)) {
                g.set_tag(9);
                // Dropped without commit: sends nothing.
            }
        }
        if let Some(c) = consumer.as_mut() {
            for _ in 0..4 {
                spsc_consume_any(c, false);
            }
        }
    }
    drop((consumer, producer));

    let receiver = Receiver::open(&name);
    let sender = Sender::open(&name);
    check_open_result("Receiver::open", &receiver);
    check_open_result("Sender::open", &sender);
    opened[2] = receiver.is_ok();
    opened[3] = sender.is_ok();
    let (receiver, sender) = (receiver.ok(), sender.ok());
    let max = receiver
        .as_ref()
        .map(|r| r.max_message())
        .or_else(|| sender.as_ref().map(|s| s.max_message()));
    if let Some(max) = max {
        let msg = vec![0xa5_u8; max + 1];
        for (i, len) in [0, max, 1, max + 1, max / 3].into_iter().enumerate() {
            if let Some(s) = sender.as_ref() {
                match s.try_send_tagged(i as u32, &msg[..len]) {
                    Ok(()) | Err(TrySendError::Full) | Err(TrySendError::Disconnected) => {
                        assert!(len <= max, "a message over max_message was sent");
                    }
                    Err(TrySendError::TooLarge { .. }) => assert!(len > max),
                    Err(TrySendError::Corrupt { .. }) => {}
                }
                if i == 2 {
                    // A cancelled slot for the receiver to skip.
                    let _ = s.try_reserve(len.min(max));
                }
            }
            if let Some(r) = receiver.as_ref() {
                mpmc_consume_any(r, i % 2 == 1);
                let _ = r.len();
            }
        }
        if let Some(r) = receiver.as_ref() {
            for _ in 0..4 {
                mpmc_consume_any(r, false);
            }
        }
    }
    opened
}

/// The errors an `open` of arbitrary bytes may return: those that describe what it read.
fn check_open_result<T>(what: &str, r: &Result<T, Error>) {
    // An allow-list: what an open of arbitrary bytes under an existing POSIX name may
    // say. Anything else (`Io`, `Disconnected`, `NotFound`, `NotReady` for a header
    // marked ready, ...) is a bug.
    if let Err(e) = r {
        assert!(
            matches!(
                e,
                Error::NotShmlane { .. }
                    | Error::Truncated { .. }
                    | Error::VersionMismatch { .. }
                    | Error::LayoutMismatch { .. }
                    | Error::KindMismatch { .. }
                    | Error::TypeMismatch { .. }
                    | Error::Corrupt { .. }
                    | Error::RoleTaken { .. }
                    | Error::TooManyEndpoints { .. }
            ),
            "{what}: unexpected error {e:?}"
        );
    }
}

/// One receive of anything from a possibly corrupt SPSC ring: a message of at most
/// `max_message` bytes, or a specific error.
fn spsc_consume_any(c: &mut Consumer, blocking: bool) {
    let max = c.max_message();
    let r = if blocking {
        c.recv_timeout(Duration::ZERO)
            .map(|m| (m.len(), touch(&m)).0)
    } else {
        c.try_recv()
            .map(|m| (m.len(), touch(&m)).0)
            .map_err(Error::from)
    };
    match &r {
        Ok(len) => assert!(*len <= max, "received {len} bytes, max_message is {max}"),
        Err(e) => assert!(
            matches!(
                e,
                Error::Corrupt { .. } | Error::Empty | Error::Timeout | Error::Disconnected
            ),
            "unexpected receive error {e:?}"
        ),
    }
}

/// As [`spsc_consume_any`], for an MPMC receiver.
fn mpmc_consume_any(r: &Receiver, blocking: bool) {
    let max = r.max_message();
    let res = if blocking {
        r.recv_timeout(Duration::ZERO)
            .map(|m| (m.len(), touch(&m)).0)
    } else {
        r.try_recv()
            .map(|m| (m.len(), touch(&m)).0)
            .map_err(Error::from)
    };
    match &res {
        Ok(len) => assert!(*len <= max, "received {len} bytes, max_message is {max}"),
        Err(e) => assert!(
            matches!(
                e,
                Error::Corrupt { .. } | Error::Empty | Error::Timeout | Error::Disconnected
            ),
            "unexpected receive error {e:?}"
        ),
    }
}

// ---------------------------------------------------------------------------------------
// spsc_ops
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpscRec {
    /// A padding record running to the end of the data area.
    Pad,
    /// A message.
    Msg { len: usize, tag: u32, seq: u64 },
}

/// The SPSC ring as docs/ARCHITECTURE.md describes it, byte for byte: free-running
/// positions, records never wrapping (padding instead). The consumer may hand space back to the
/// producer lazily: the model reads the released position from shared memory and checks
/// it against what must have been handed back (everything, once the consumer found the
/// ring empty, finished a batch or left) and what was consumed.
#[derive(Debug, Clone)]
struct SpscModel {
    cap: u64,
    /// Producer position (everything committed is published at the points we look).
    w: u64,
    /// Consumer position.
    r: u64,
    /// What the consumer has handed back to the producer (`read_pos`, as last synced).
    rel: u64,
    /// What it must have handed back by now.
    rel_min: u64,
    /// Published records not yet consumed, with their sizes in bytes.
    q: VecDeque<(u64, SpscRec)>,
}

impl SpscModel {
    fn free(&self) -> u64 {
        self.cap - (self.w - self.rel)
    }

    /// `try_reserve(len)`: whether a record of `len` bytes fits now. Publishes a padding
    /// record first when the record does not fit before the end and the padding does.
    fn reserve(&mut self, len: usize) -> bool {
        let rec = record_bytes(len);
        let off = self.w % self.cap;
        let to_end = self.cap - off;
        if rec <= to_end {
            return self.free() >= rec;
        }
        if self.free() < to_end {
            return false;
        }
        self.q.push_back((to_end, SpscRec::Pad));
        self.w += to_end;
        self.free() >= rec
    }

    fn commit(&mut self, len: usize, tag: u32, seq: u64) {
        self.q
            .push_back((record_bytes(len), SpscRec::Msg { len, tag, seq }));
        self.w += record_bytes(len);
    }

    /// Takes `read_pos` from shared memory: between what must have been handed back
    /// and what was consumed.
    fn sync(&mut self, read_pos: u64) {
        assert!(
            self.rel_min <= read_pos && read_pos <= self.r && read_pos % 8 == 0,
            "read_pos {read_pos} out of what the consumer did: {self:?}"
        );
        self.rel = read_pos;
    }

    /// Everything consumed is handed back now.
    fn released_all(&mut self) {
        self.rel_min = self.r;
        self.rel = self.r;
    }

    /// The consumer looks for the next message: skips padding; finding nothing, it
    /// hands everything back.
    fn peek(&mut self) -> Option<(usize, u32, u64)> {
        loop {
            match self.q.front().copied() {
                None => {
                    self.released_all();
                    return None;
                }
                Some((size, SpscRec::Pad)) => {
                    self.q.pop_front();
                    self.r += size;
                }
                Some((_, SpscRec::Msg { len, tag, seq })) => return Some((len, tag, seq)),
            }
        }
    }

    /// Consumes the message `peek` returned, without handing it back.
    fn consume(&mut self) {
        let (size, rec) = self.q.pop_front().expect("model: consume after peek");
        debug_assert!(matches!(rec, SpscRec::Msg { .. }));
        self.r += size;
    }

    fn messages(&self) -> usize {
        self.q
            .iter()
            .filter(|(_, r)| matches!(r, SpscRec::Msg { .. }))
            .count()
    }

    /// No message pending, and everything consumed handed back to the producer.
    fn is_empty(&self) -> bool {
        self.messages() == 0 && self.rel == self.r
    }

    /// Whether every message of `lens` fits now, one after the other.
    fn batch_fits(&self, lens: &[usize]) -> bool {
        let mut m = self.clone();
        lens.iter().all(|&len| {
            let ok = m.reserve(len);
            m.commit(len, 0, 0);
            ok
        })
    }
}

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

/// Drives one SPSC `Producer` and one `Consumer` (in this process, on a small ring whose
/// capacity and `max_message` come from the first bytes) through the operations encoded
/// in `data`, checked against a model (`SpscModel`): every message received is the model's
/// next one (bytes and tag), `Full` comes exactly when the model has no room, `Empty`
/// exactly when it has no message.
pub fn spsc_ops(data: &[u8]) {
    let mut inp = Bytes::new(data);
    let asked = 64u64 << (inp.u8() % 5); // 64 ..= 1024
    let half = asked as usize / 2;
    let max = match inp.u8() {
        b @ 0..=63 => usize::from(b) % (half + 1),
        b @ 64..=127 => half.saturating_sub(usize::from(b) % 16),
        b => usize::from(b) * half / 255,
    };
    let wait = wait_of(inp.u8());
    let name = ShmName::new("spsc");
    let opts = Options::new()
        .capacity(asked as usize)
        .max_message(max)
        .wait(wait)
        .persist(true);
    let mut tx = Some(
        Producer::create(&name, &opts)
            .unwrap_or_else(|e| panic!("fuzz setup: Producer::create: {e}")),
    );
    let mut rx =
        Some(Consumer::open(&name).unwrap_or_else(|e| panic!("fuzz setup: Consumer::open: {e}")));
    // The capacity asked for is a power of two; it doubles when a record of max_message
    // bytes is more than half of it (so that padding plus a record fit an empty ring).
    let cap = tx.as_ref().unwrap().capacity() as u64;
    let want = if 2 * record_bytes(max) > asked {
        2 * asked
    } else {
        asked
    };
    assert_eq!(cap, want, "capacity for {asked} with max_message {max}");
    let file = name.open_file();
    let read_pos = || get_u64(&file, offset_of!(Header, read_pos) as u64);
    assert_eq!(rx.as_ref().unwrap().max_message(), max);

    let mut m = SpscModel {
        cap,
        w: 0,
        r: 0,
        rel: 0,
        rel_min: 0,
        q: VecDeque::new(),
    };
    let mut seq = 0u64;
    let mut steps = 0;
    while !inp.is_empty() && steps < 2000 {
        steps += 1;
        m.sync(read_pos());
        match inp.u8() % 12 {
            // try_send_tagged
            0 | 1 => {
                let (tag, len) = (inp.tag(), inp.len(max));
                let Some(p) = tx.as_mut() else { continue };
                seq += 1;
                let msg = payload(seq, len);
                let r = p.try_send_tagged(tag, &msg);
                if len > max {
                    assert_eq!(r, Err(TrySendError::TooLarge { len, max }));
                } else if rx.is_none() {
                    assert_eq!(r, Err(TrySendError::Disconnected), "no consumer");
                } else if m.reserve(len) {
                    assert_eq!(r, Ok(()), "model: {len} bytes fit ({m:?})");
                    m.commit(len, tag, seq);
                } else {
                    assert_eq!(r, Err(TrySendError::Full), "model: no room ({m:?})");
                    // The ring is full only while a message is pending or the consumer
                    // has not handed everything back: never when it is empty.
                    assert!(
                        !m.is_empty(),
                        "try_send({len}) Full on an empty ring: {m:?}"
                    );
                }
            }
            // try_reserve, write, maybe truncate, commit
            2 => {
                let (tag, len, cut) = (inp.tag(), inp.len(max), inp.u8());
                let Some(p) = tx.as_mut() else { continue };
                seq += 1;
                let r = p.try_reserve(len);
                let fits = len <= max && rx.is_some() && m.reserve(len);
                match r {
                    Ok(mut g) => {
                        assert!(fits, "try_reserve({len}) succeeded, model: {m:?}");
                        assert_eq!(g.len(), len);
                        g.copy_from(&payload(seq, len));
                        g.set_tag(tag);
                        let len = if cut & 1 != 0 {
                            let t = usize::from(cut >> 1) % (len + 1);
                            g.truncate(t);
                            t
                        } else {
                            len
                        };
                        assert_eq!(g.len(), len);
                        g.commit();
                        m.commit(len, tag, seq);
                    }
                    Err(e) => {
                        assert!(!fits, "try_reserve({len}) failed: {e:?}, model: {m:?}");
                        let want = if len > max {
                            TrySendError::TooLarge { len, max }
                        } else if rx.is_none() {
                            TrySendError::Disconnected
                        } else {
                            assert!(
                                !m.is_empty(),
                                "try_reserve({len}) Full on an empty ring: {m:?}"
                            );
                            TrySendError::Full
                        };
                        assert_eq!(e, want);
                    }
                }
            }
            // try_reserve, then drop the grant: sends nothing (padding may be published)
            3 => {
                let len = inp.len(max);
                let Some(p) = tx.as_mut() else { continue };
                let r = p.try_reserve(len).map(|mut g| g.fill(0xee));
                let fits = len <= max && rx.is_some() && m.reserve(len);
                assert_eq!(r.is_ok(), fits, "dropped grant of {len}: {r:?}, {m:?}");
                if r == Err(TrySendError::Full) {
                    assert!(
                        !m.is_empty(),
                        "try_reserve({len}) Full on an empty ring: {m:?}"
                    );
                }
            }
            // send_batch, only when it surely fits (it would wait otherwise)
            4 => {
                let n = usize::from(inp.u8() % 6);
                let lens: Vec<usize> = (0..n).map(|_| inp.len(max).min(max)).collect();
                let Some(p) = tx.as_mut() else { continue };
                if rx.is_none() || !m.batch_fits(&lens) {
                    continue;
                }
                let msgs: Vec<(u64, Vec<u8>)> = lens
                    .iter()
                    .map(|&len| {
                        seq += 1;
                        (seq, payload(seq, len))
                    })
                    .collect();
                let r = p.send_batch(msgs.iter().map(|(_, v)| &v[..]));
                assert_eq!(r.ok(), Some(n), "send_batch of {lens:?}");
                for (s, v) in &msgs {
                    assert!(m.reserve(v.len()));
                    m.commit(v.len(), 0, *s);
                }
            }
            // try_recv, dropping the guard at once
            5 | 6 => {
                let Some(c) = rx.as_mut() else { continue };
                let want = m.peek();
                match c.try_recv() {
                    Ok(g) => {
                        check_msg("try_recv", (&g, g.tag()), want);
                        drop(g);
                        m.consume();
                    }
                    Err(e) => {
                        assert!(want.is_none(), "try_recv: {e:?}, model has {want:?}");
                        let expect = if tx.is_some() {
                            TryRecvError::Empty
                        } else {
                            TryRecvError::Disconnected
                        };
                        assert_eq!(e, expect);
                    }
                }
            }
            // recv_timeout (short)
            7 => {
                let t = short(inp.u8());
                let Some(c) = rx.as_mut() else { continue };
                let want = m.peek();
                match c.recv_timeout(t) {
                    Ok(g) => {
                        check_msg("recv_timeout", (&g, g.tag()), want);
                        drop(g);
                        m.consume();
                    }
                    Err(e) => {
                        assert!(want.is_none(), "recv_timeout: {e:?}, model has {want:?}");
                        if tx.is_some() {
                            assert!(matches!(e, Error::Timeout), "recv_timeout: {e:?}");
                        } else {
                            assert!(matches!(e, Error::Disconnected), "recv_timeout: {e:?}");
                        }
                    }
                }
            }
            // recv_batch, only when a message is there (it would wait otherwise)
            8 => {
                let maxn = usize::from(inp.u8() % 8);
                let Some(c) = rx.as_mut() else { continue };
                if m.messages() == 0 {
                    continue;
                }
                let mut got: Vec<(u32, Vec<u8>)> = Vec::new();
                let r = c.recv_batch(maxn, |tag, bytes| got.push((tag, bytes.to_vec())));
                let n = r.unwrap_or_else(|e| panic!("recv_batch: {e:?}"));
                assert_eq!(n, got.len());
                assert_eq!(n, maxn.min(m.messages()), "recv_batch({maxn})");
                for (tag, bytes) in &got {
                    let want = m.peek();
                    check_msg("recv_batch", (bytes, *tag), want);
                    m.consume();
                }
                if n < maxn {
                    // It looked once more, stepping over trailing padding.
                    assert_eq!(m.peek(), None);
                }
                if maxn > 0 {
                    // Everything consumed is handed back at the end.
                    m.released_all();
                }
            }
            // wait strategies
            9 => {
                let b = inp.u8();
                if let Some(p) = tx.as_mut() {
                    p.set_wait(wait_of(b));
                    assert_eq!(p.wait(), wait_of(b));
                }
                if let Some(c) = rx.as_mut() {
                    c.set_wait(wait_of(b >> 2));
                    assert_eq!(c.wait(), wait_of(b >> 2));
                }
            }
            // send_timeout (short)
            10 => {
                let (len, t) = (inp.len(max).min(max), short(inp.u8()));
                let Some(p) = tx.as_mut() else { continue };
                seq += 1;
                let r = p.send_timeout(&payload(seq, len), t);
                if rx.is_none() {
                    assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
                } else if m.reserve(len) {
                    assert!(r.is_ok(), "send_timeout({len}): {r:?}, {m:?}");
                    m.commit(len, 0, seq);
                } else {
                    assert!(
                        matches!(r, Err(Error::Timeout)),
                        "send_timeout({len}): {r:?}, model: no room ({m:?})"
                    );
                }
            }
            // an endpoint leaves, or comes back
            _ => match inp.u8() % 4 {
                0 if tx.is_some() => tx = None,
                1 if rx.is_some() => {
                    rx = None;
                    m.released_all();
                }
                _ => {
                    if tx.is_none() {
                        tx = Some(
                            Producer::open(&name)
                                .unwrap_or_else(|e| panic!("Producer::open again: {e:?}")),
                        );
                    }
                    if rx.is_none() {
                        rx = Some(
                            Consumer::open(&name)
                                .unwrap_or_else(|e| panic!("Consumer::open again: {e:?}")),
                        );
                    }
                }
            },
        }
    }

    // Everything sent comes out, in order, and nothing else.
    if rx.is_none() {
        rx = Some(Consumer::open(&name).unwrap_or_else(|e| panic!("Consumer::open: {e:?}")));
    }
    let c = rx.as_mut().unwrap();
    loop {
        let want = m.peek();
        match c.try_recv() {
            Ok(g) => {
                check_msg("drain", (&g, g.tag()), want);
                drop(g);
                m.consume();
            }
            Err(e) => {
                assert!(want.is_none(), "drain: {e:?}, model has {want:?}");
                // Drained: the ring is empty (or its producer has left); never Corrupt.
                assert!(
                    matches!(e, TryRecvError::Empty | TryRecvError::Disconnected),
                    "drain: {e:?} after the last message"
                );
                break;
            }
        }
    }
    assert_eq!(m.messages(), 0);
}

// ---------------------------------------------------------------------------------------
// mpmc_ops
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Claimed by a grant not committed yet.
    Claimed,
    /// Committed, not taken.
    Published { len: usize, tag: u32, seq: u64 },
    /// Dropped grant: receivers skip it.
    Cancelled,
    /// Taken by a receiver whose guard lives.
    Held,
}

/// Vyukov's bounded queue as docs/ARCHITECTURE.md describes it: position `p` can be
/// claimed once position `p - slots` is released; a receiver at position `p` waits while `p` is
/// claimed and not published. Positions not in `states` are released.
#[derive(Debug)]
struct MpmcModel {
    count: u64,
    w: u64,
    r: u64,
    states: BTreeMap<u64, SlotState>,
}

impl MpmcModel {
    fn can_claim(&self) -> bool {
        self.w < self.count || !self.states.contains_key(&(self.w - self.count))
    }

    fn claim(&mut self) -> u64 {
        let p = self.w;
        self.states.insert(p, SlotState::Claimed);
        self.w += 1;
        p
    }

    /// The next message a receiver gets (skipping cancelled slots), now held.
    fn recv(&mut self) -> Option<(u64, usize, u32, u64)> {
        loop {
            if self.r == self.w {
                return None;
            }
            match self.states.get(&self.r).copied() {
                Some(SlotState::Claimed) => return None,
                Some(SlotState::Cancelled) => {
                    self.states.remove(&self.r);
                    self.r += 1;
                }
                Some(SlotState::Published { len, tag, seq }) => {
                    let p = self.r;
                    self.states.insert(p, SlotState::Held);
                    self.r += 1;
                    return Some((p, len, tag, seq));
                }
                other => panic!("model: position {} is {other:?} at the read end", self.r),
            }
        }
    }

    fn published(&self) -> usize {
        self.states
            .values()
            .filter(|s| matches!(s, SlotState::Published { .. }))
            .count()
    }
}

/// Drives three `Sender`s (the creator, a clone, and one opened separately) and three
/// `Receiver`s of one small MPMC ring through the operations encoded in `data`, holding
/// grants and read guards across operations, committing or dropping (cancelling) grants
/// in any order, checked against a model (`MpmcModel`).
pub fn mpmc_ops(data: &[u8]) {
    let mut inp = Bytes::new(data);
    let asked = 1u64 << (inp.u8() % 5); // 1 ..= 16 slots
    let max = usize::from(inp.u8()) % 200;
    let wait = wait_of(inp.u8());
    let name = ShmName::new("mpmc");
    let opts = Options::new()
        .slots(asked as usize)
        .max_message(max)
        .wait(wait)
        .persist(true);
    let s0 =
        Sender::create(&name, &opts).unwrap_or_else(|e| panic!("fuzz setup: Sender::create: {e}"));
    let s2 = Sender::open(&name).unwrap_or_else(|e| panic!("fuzz setup: Sender::open: {e}"));
    let r0 = Receiver::open(&name).unwrap_or_else(|e| panic!("fuzz setup: Receiver::open: {e}"));
    let r2 = Receiver::open(&name).unwrap_or_else(|e| panic!("fuzz setup: Receiver::open: {e}"));
    let senders = [s0.clone(), s0, s2];
    let receivers = [r0.clone(), r0, r2];
    // The slot count is rounded up (to a power of two, and a minimum).
    let count = senders[0].slots() as u64;
    assert!(
        count.is_power_of_two() && count >= asked,
        "{count} slots for {asked}"
    );
    assert_eq!(receivers[2].max_message(), max);

    let mut m = MpmcModel {
        count,
        w: 0,
        r: 0,
        states: BTreeMap::new(),
    };
    let mut grants = Vec::new();
    let mut held = Vec::new();
    let mut seq = 0u64;
    let mut steps = 0;
    while !inp.is_empty() && steps < 2000 {
        steps += 1;
        let op = inp.u8();
        let who = usize::from(op >> 4) % 3;
        match op % 12 {
            // try_send_tagged
            0 | 1 => {
                let (tag, len) = (inp.tag(), inp.len(max));
                seq += 1;
                let r = senders[who].try_send_tagged(tag, &payload(seq, len));
                if len > max {
                    assert_eq!(r, Err(TrySendError::TooLarge { len, max }));
                } else if m.can_claim() {
                    assert_eq!(r, Ok(()), "model: a slot is free ({m:?})");
                    let p = m.claim();
                    m.states.insert(p, SlotState::Published { len, tag, seq });
                } else {
                    assert_eq!(r, Err(TrySendError::Full), "model: full ({m:?})");
                }
            }
            // try_reserve and keep the grant
            2 => {
                let len = inp.len(max);
                let r = senders[who].try_reserve(len);
                match r {
                    Ok(g) => {
                        assert!(len <= max && m.can_claim(), "try_reserve: model {m:?}");
                        assert_eq!(g.len(), len);
                        let p = m.claim();
                        grants.push((g, p));
                    }
                    Err(e) => {
                        let want = if len > max {
                            TrySendError::TooLarge { len, max }
                        } else {
                            assert!(!m.can_claim(), "try_reserve: {e:?}, model {m:?}");
                            TrySendError::Full
                        };
                        assert_eq!(e, want);
                    }
                }
            }
            // commit a held grant (maybe truncated, tagged)
            3 => {
                let (i, tag, cut) = (usize::from(inp.u8()), inp.tag(), inp.u8());
                if grants.is_empty() {
                    continue;
                }
                let (mut g, p) = grants.remove(i % grants.len());
                seq += 1;
                let len = g.len();
                g.copy_from(&payload(seq, len));
                g.set_tag(tag);
                let len = if cut & 1 != 0 {
                    let t = usize::from(cut >> 1) % (len + 1);
                    g.truncate(t);
                    t
                } else {
                    len
                };
                g.commit();
                assert_eq!(m.states.get(&p), Some(&SlotState::Claimed));
                m.states.insert(p, SlotState::Published { len, tag, seq });
            }
            // drop a held grant: cancelled
            4 => {
                let i = usize::from(inp.u8());
                if grants.is_empty() {
                    continue;
                }
                let (g, p) = grants.remove(i % grants.len());
                drop(g);
                assert_eq!(m.states.get(&p), Some(&SlotState::Claimed));
                m.states.insert(p, SlotState::Cancelled);
            }
            // try_recv, keeping the guard or not
            5 | 6 => {
                let keep = inp.u8() & 1 != 0;
                let want = m.recv();
                match receivers[who].try_recv() {
                    Ok(g) => {
                        let Some((p, len, tag, s)) = want else {
                            panic!("try_recv: {} bytes the model says were never sent", g.len());
                        };
                        check_msg("mpmc try_recv", (&g, g.tag()), Some((len, tag, s)));
                        if keep {
                            held.push((g, p));
                        } else {
                            drop(g);
                            m.states.remove(&p);
                        }
                    }
                    Err(e) => {
                        assert!(want.is_none(), "try_recv: {e:?}, model has {want:?}");
                        assert_eq!(e, TryRecvError::Empty);
                    }
                }
            }
            // drop a held read guard: the slot is free again
            7 => {
                let i = usize::from(inp.u8());
                if held.is_empty() {
                    continue;
                }
                let (g, p) = held.remove(i % held.len());
                drop(g);
                assert_eq!(m.states.remove(&p), Some(SlotState::Held));
            }
            // a clone sends, and goes
            8 => {
                let (tag, len) = (inp.tag(), inp.len(max).min(max));
                let c = senders[who].clone();
                seq += 1;
                let r = c.try_send_tagged(tag, &payload(seq, len));
                drop(c);
                if m.can_claim() {
                    assert_eq!(r, Ok(()), "clone: model {m:?}");
                    let p = m.claim();
                    m.states.insert(p, SlotState::Published { len, tag, seq });
                } else {
                    assert_eq!(r, Err(TrySendError::Full), "clone: model {m:?}");
                }
            }
            // recv_timeout (short), through a clone half the time
            9 => {
                let b = inp.u8();
                let recv = |rx: &Receiver| {
                    rx.recv_timeout(short(b >> 1))
                        .map(|g| (g.tag(), g.to_vec()))
                };
                let want = m.recv();
                let r = if b & 1 != 0 {
                    recv(&receivers[who].clone())
                } else {
                    recv(&receivers[who])
                };
                match r {
                    Ok((tag, bytes)) => {
                        let Some((p, len, t, s)) = want else {
                            panic!("recv_timeout: a message the model says was never sent");
                        };
                        check_msg("mpmc recv_timeout", (&bytes, tag), Some((len, t, s)));
                        m.states.remove(&p);
                    }
                    Err(e) => {
                        assert!(want.is_none(), "recv_timeout: {e:?}, model has {want:?}");
                        assert!(matches!(e, Error::Timeout), "recv_timeout: {e:?}");
                    }
                }
            }
            // send_timeout (short)
            10 => {
                let (len, t) = (inp.len(max).min(max), short(inp.u8()));
                seq += 1;
                let r = senders[who].send_timeout(&payload(seq, len), t);
                if m.can_claim() {
                    assert!(r.is_ok(), "send_timeout: {r:?}, model {m:?}");
                    let p = m.claim();
                    m.states
                        .insert(p, SlotState::Published { len, tag: 0, seq });
                } else {
                    assert!(matches!(r, Err(Error::Timeout)), "send_timeout: {r:?}");
                }
            }
            // wait strategy, len, is_empty
            _ => {
                let b = inp.u8();
                senders[who].set_wait(wait_of(b));
                receivers[who].set_wait(wait_of(b >> 2));
                assert_eq!(senders[who].wait(), wait_of(b));
                if who < 2 {
                    assert_eq!(senders[1 - who].wait(), wait_of(b), "clones share the wait");
                }
                let want = (m.w - m.r).min(count) as usize;
                assert_eq!(receivers[who].len(), want, "len, model {m:?}");
                assert_eq!(senders[who].is_empty(), want == 0);
            }
        }
    }

    // Grants left are cancelled, guards released; then exactly the published messages
    // come out, in order.
    for (g, p) in grants.drain(..).rev() {
        drop(g);
        m.states.insert(p, SlotState::Cancelled);
    }
    for (g, p) in held.drain(..) {
        drop(g);
        assert_eq!(m.states.remove(&p), Some(SlotState::Held));
    }
    loop {
        let want = m.recv();
        match receivers[0].try_recv() {
            Ok(g) => {
                let Some((p, len, tag, s)) = want else {
                    panic!("drain: a message the model says was never sent");
                };
                check_msg("mpmc drain", (&g, g.tag()), Some((len, tag, s)));
                drop(g);
                m.states.remove(&p);
            }
            Err(e) => {
                assert!(want.is_none(), "drain: {e:?}, model has {want:?}");
                assert_eq!(e, TryRecvError::Empty);
                break;
            }
        }
    }
    assert_eq!(m.published(), 0);
    assert!(m.states.is_empty(), "model: {m:?}");
}

// ---------------------------------------------------------------------------------------
// corrupt_consume (SPSC) and corrupt_consume_mpmc
// ---------------------------------------------------------------------------------------

/// Overwrites `bytes` at `off` of the file; returns whether anything changed.
fn scribble(file: &File, off: u64, bytes: &[u8]) -> bool {
    let mut old = vec![0u8; bytes.len()];
    file.read_exact_at(&mut old, off)
        .unwrap_or_else(|e| panic!("fuzz setup: read segment file: {e}"));
    file.write_all_at(bytes, off)
        .unwrap_or_else(|e| panic!("fuzz setup: write segment file: {e}"));
    old != bytes
}

fn get_u64(file: &File, off: u64) -> u64 {
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, off)
        .unwrap_or_else(|e| panic!("fuzz setup: read segment file: {e}"));
    u64::from_ne_bytes(b)
}

/// A new value for a shared position: a small move of the current one (often still
/// aligned), or any `u64`.
fn new_pos(inp: &mut Bytes<'_>, cur: u64) -> u64 {
    match inp.u8() % 4 {
        0 => inp.u64(),
        1 => cur.wrapping_add(u64::from(inp.u16()) * 8),
        2 => cur.wrapping_sub(u64::from(inp.u16()) * 8),
        _ => cur.wrapping_add(i64::from(inp.u16() as i16) as u64),
    }
}

/// Creates a real SPSC ring, sends (and partly receives) a few valid messages, then
/// overwrites, from `data`, the shared positions, a window of the data area (record
/// headers and payload) and a few other header fields through the `/dev/shm` file,
/// and consumes in a bounded loop (`try_recv`, `recv_timeout`, and a consumer opened
/// afresh): every result must be a message of at most `max_message` bytes or a
/// specific error. When nothing actually changed, the messages must come out intact.
pub fn corrupt_consume(data: &[u8]) {
    let mut inp = Bytes::new(data);
    let asked = 256usize << (inp.u8() % 3); // 256 ..= 1024
    let max = usize::from(inp.u8()) % (asked / 2 + 1);
    let name = ShmName::new("cc");
    let opts = Options::new()
        .capacity(asked)
        .max_message(max)
        .wait(Wait::Spin)
        .persist(true);
    let mut tx = Some(
        Producer::create(&name, &opts)
            .unwrap_or_else(|e| panic!("fuzz setup: Producer::create: {e}")),
    );
    let mut rx =
        Some(Consumer::open(&name).unwrap_or_else(|e| panic!("fuzz setup: Consumer::open: {e}")));
    let file = name.open_file();
    let cap = tx.as_ref().unwrap().capacity() as u64; // rounded up

    // A few valid round trips to move the positions (so padding is in play), then a few
    // messages left in the ring.
    let rounds = inp.u8() % 24;
    for _ in 0..rounds {
        let len = inp.len(max).min(max);
        let (p, c) = (tx.as_mut().unwrap(), rx.as_mut().unwrap());
        // The ring is empty (the last receive found it so and handed everything back):
        // the record fits, padding or not.
        p.try_send(&payload(0, len))
            .unwrap_or_else(|e| panic!("round trip send of {len} bytes: {e:?}"));
        let g = c
            .try_recv()
            .unwrap_or_else(|e| panic!("round trip recv: {e:?}"));
        assert_eq!(g.len(), len);
        drop(g);
        // Finding the ring empty hands everything back at once.
        assert_eq!(c.try_recv().map(|g| g.len()), Err(TryRecvError::Empty));
    }
    let mut sent: VecDeque<(usize, u32, u64)> = VecDeque::new();
    for i in 0..inp.u8() % 8 {
        let len = inp.len(max).min(max);
        let seq = 1000 + u64::from(i);
        match tx
            .as_mut()
            .unwrap()
            .try_send_tagged(seq as u32, &payload(seq, len))
        {
            Ok(()) => sent.push_back((len, seq as u32, seq)),
            Err(TrySendError::Full) => break,
            Err(e) => panic!("valid send: {e:?}"),
        }
    }

    // The corruption.
    let wp_off = offset_of!(Header, write_pos) as u64;
    let rp_off = offset_of!(Header, read_pos) as u64;
    let flags = inp.u8();
    let mut changed = false;
    if flags & 1 != 0 {
        let v = new_pos(&mut inp, get_u64(&file, wp_off));
        changed |= scribble(&file, wp_off, &v.to_ne_bytes());
    }
    if flags & 2 != 0 {
        let v = new_pos(&mut inp, get_u64(&file, rp_off));
        changed |= scribble(&file, rp_off, &v.to_ne_bytes());
    }
    if flags & 4 != 0 {
        // Waiter counts and the endpoint registry: wake-ups, eager release, peers.
        let which = inp.u8() % 4;
        let (off, v) = match which {
            0 => (offset_of!(Header, data_waiters), inp.u8() as u32 % 3),
            1 => (offset_of!(Header, space_waiters), inp.u8() as u32 % 3),
            2 => (offset_of!(Header, light_wakers), inp.u8() as u32),
            _ => (
                offset_of!(Header, endpoints) + 16 * usize::from(inp.u8() % 2),
                inp.u32(),
            ),
        };
        changed |= scribble(&file, off as u64, &v.to_ne_bytes());
    }
    // A window of the data area, at an 8-aligned offset (where record headers live)
    // or anywhere.
    let window_at = inp.u16();
    let off = if flags & 8 != 0 {
        u64::from(window_at) % cap
    } else {
        (u64::from(window_at) * 8) % cap
    };
    let want_len = usize::from(inp.u8());
    let bytes = inp.take(want_len.min((cap - off) as usize));
    changed |= scribble(&file, HEADER_SIZE as u64 + off, bytes);

    if flags & 0x10 != 0 {
        // A new consumer starts from the (possibly corrupt) read_pos.
        drop(rx.take());
        match Consumer::open(&name) {
            Ok(c) => rx = Some(c),
            Err(e) => {
                assert!(changed, "fresh consumer refused an intact ring: {e:?}");
                assert!(
                    matches!(e, Error::Corrupt { .. } | Error::RoleTaken { .. }),
                    "Consumer::open: {e:?}"
                );
            }
        }
    }
    if flags & 0x20 != 0 {
        drop(tx.take());
        if flags & 0x40 != 0 {
            match Producer::open(&name) {
                Ok(p) => tx = Some(p),
                Err(e) => {
                    assert!(changed, "fresh producer refused an intact ring: {e:?}");
                    assert!(
                        matches!(e, Error::Corrupt { .. } | Error::RoleTaken { .. }),
                        "Producer::open: {e:?}"
                    );
                }
            }
        }
    }

    if let Some(c) = rx.as_mut() {
        let mut got = 0;
        let mut corrupt = false;
        for i in 0..cap / 8 + 8 {
            let r = if i % 4 == 3 {
                c.recv_timeout(Duration::ZERO)
                    .map(|g| (g.len(), g.tag(), g.to_vec()))
            } else {
                c.try_recv()
                    .map(|g| (g.len(), g.tag(), g.to_vec()))
                    .map_err(Error::from)
            };
            match r {
                Ok((len, tag, bytes)) => {
                    assert!(len <= max, "received {len} bytes, max_message is {max}");
                    assert!(!corrupt, "a message after Corrupt");
                    if !changed {
                        let want = sent.pop_front();
                        check_msg("intact ring", (&bytes, tag), want);
                    }
                    got += 1;
                }
                Err(Error::Corrupt { .. }) => {
                    assert!(changed, "an intact ring is corrupt");
                    corrupt = true;
                }
                Err(e @ (Error::Empty | Error::Timeout | Error::Disconnected)) => {
                    assert!(!corrupt, "{e:?} after Corrupt");
                    if !changed {
                        assert!(sent.is_empty(), "{e:?} with {} messages left", sent.len());
                    }
                    break;
                }
                Err(e) => panic!("consumer: unexpected error {e:?}"),
            }
        }
        let _ = got;
    }
    if let Some(p) = tx.as_mut() {
        // The producer reloads the consumer position only when the ring looks full.
        for _ in 0..cap / 8 + 4 {
            match p.try_send(&payload(7, max.min(24))) {
                Ok(()) => {}
                Err(TrySendError::Corrupt { .. }) => {
                    assert!(changed, "producer: an intact ring is corrupt");
                    break;
                }
                Err(TrySendError::Full | TrySendError::Disconnected) => break,
                Err(e) => panic!("producer: unexpected error {e:?}"),
            }
        }
    }
}

/// The MPMC counterpart of [`corrupt_consume`]: overwrites the shared positions and a
/// window of the slots (stamps, claim words, lengths, tags, payload) and consumes and
/// sends in a bounded loop.
pub fn corrupt_consume_mpmc(data: &[u8]) {
    let mut inp = Bytes::new(data);
    let asked = 1usize << (inp.u8() % 4); // 1 ..= 8 slots
    let max = usize::from(inp.u8()) % 100;
    let name = ShmName::new("ccm");
    let opts = Options::new()
        .slots(asked)
        .max_message(max)
        .wait(Wait::Spin)
        .persist(true);
    let tx =
        Sender::create(&name, &opts).unwrap_or_else(|e| panic!("fuzz setup: Sender::create: {e}"));
    let rx = Receiver::open(&name).unwrap_or_else(|e| panic!("fuzz setup: Receiver::open: {e}"));
    let file = name.open_file();
    let count = tx.slots() as u64; // rounded up
    let mut b = [0u8; 4];
    file.read_exact_at(&mut b, offset_of!(Header, slot_size) as u64)
        .unwrap_or_else(|e| panic!("fuzz setup: read segment file: {e}"));
    let slot_size = u32::from_ne_bytes(b) as usize;

    let rounds = inp.u8() % 20;
    for _ in 0..rounds {
        let len = inp.len(max).min(max);
        tx.try_send(&payload(0, len))
            .unwrap_or_else(|e| panic!("round trip send: {e:?}"));
        let g = rx
            .try_recv()
            .unwrap_or_else(|e| panic!("round trip recv: {e:?}"));
        assert_eq!(g.len(), len);
    }
    let mut sent: VecDeque<(usize, u32, u64)> = VecDeque::new();
    let mut grant = None;
    let mut guard = None;
    let n = inp.u8() % 10;
    for i in 0..n {
        let len = inp.len(max).min(max);
        let seq = 2000 + u64::from(i);
        match tx.try_send_tagged(seq as u32, &payload(seq, len)) {
            Ok(()) => sent.push_back((len, seq as u32, seq)),
            Err(TrySendError::Full) => break,
            Err(e) => panic!("valid send: {e:?}"),
        }
    }
    let flags = inp.u8();
    if flags & 0x40 != 0 {
        // A grant held across the corruption (claimed, unpublished slot).
        grant = tx.try_reserve(max.min(5)).ok();
    }

    let wp_off = offset_of!(Header, write_pos) as u64;
    let rp_off = offset_of!(Header, read_pos) as u64;
    let mut changed = false;
    if flags & 1 != 0 {
        let v = new_pos(&mut inp, get_u64(&file, wp_off));
        changed |= scribble(&file, wp_off, &v.to_ne_bytes());
    }
    if flags & 2 != 0 {
        let v = new_pos(&mut inp, get_u64(&file, rp_off));
        changed |= scribble(&file, rp_off, &v.to_ne_bytes());
    }
    if flags & 4 != 0 {
        let which = inp.u8() % 4;
        let (off, v) = match which {
            0 => (offset_of!(Header, mpmc_live), inp.u32() % 3),
            1 => (offset_of!(Header, mpmc_ever), inp.u32() % 4),
            2 => (offset_of!(Header, space_waiters), inp.u32() % 3),
            _ => (offset_of!(Header, data_waiters), inp.u32() % 3),
        };
        changed |= scribble(&file, off as u64, &v.to_ne_bytes());
    }
    let data_len = count * slot_size as u64;
    // One slot field (stamp, claims, len/tag) with a value near the positions, or a raw
    // window anywhere in the slots.
    if flags & 8 != 0 {
        let slot = u64::from(inp.u8()) % count;
        let field = u64::from(inp.u8() % 4) * 8;
        let base = get_u64(&file, if inp.u8() & 1 != 0 { wp_off } else { rp_off });
        let v = match inp.u8() % 3 {
            0 => base.wrapping_add(u64::from(inp.u8())).wrapping_sub(16),
            1 => u64::from(inp.u32()) | (u64::from(std::process::id()) << 32),
            _ => inp.u64(),
        };
        let at = HEADER_SIZE as u64 + slot * slot_size as u64 + field;
        changed |= scribble(&file, at, &v.to_ne_bytes());
    }
    let off = u64::from(inp.u16()) % data_len;
    let want_len = usize::from(inp.u8());
    let bytes = inp.take(want_len.min((data_len - off) as usize));
    changed |= scribble(&file, HEADER_SIZE as u64 + off, bytes);

    if flags & 0x10 != 0 {
        // A receiver that holds a message across what follows.
        if let Ok(g) = rx.try_recv() {
            assert!(g.len() <= max);
            if !changed {
                check_msg("mpmc intact ring (held)", (&g, g.tag()), sent.pop_front());
            }
            guard = Some(g);
        }
    }
    let rx2 = Receiver::open(&name);
    if let Err(e) = &rx2 {
        assert!(
            matches!(e, Error::Corrupt { .. } | Error::TooManyEndpoints { .. }),
            "Receiver::open: {e:?}"
        );
    }
    let mut corrupt = false;
    for i in 0..2 * count + 6 {
        let r = match (i % 3, rx2.as_ref()) {
            (2, Ok(r2)) => r2
                .try_recv()
                .map(|g| (g.tag(), g.to_vec()))
                .map_err(Error::from),
            (1, _) => rx
                .recv_timeout(Duration::ZERO)
                .map(|g| (g.tag(), g.to_vec())),
            _ => rx
                .try_recv()
                .map(|g| (g.tag(), g.to_vec()))
                .map_err(Error::from),
        };
        match r {
            Ok((tag, bytes)) => {
                assert!(
                    bytes.len() <= max,
                    "received {} bytes, max {max}",
                    bytes.len()
                );
                if !changed {
                    check_msg("mpmc intact ring", (&bytes, tag), sent.pop_front());
                }
            }
            Err(Error::Corrupt { .. }) => {
                assert!(changed, "an intact MPMC ring is corrupt");
                corrupt = true;
            }
            Err(e @ (Error::Empty | Error::Timeout | Error::Disconnected)) => {
                // A held grant claims a slot after every sent message, and a held guard
                // took the first of them: neither keeps the others from coming out.
                if !changed {
                    assert!(sent.is_empty(), "{e:?} with {} messages left", sent.len());
                }
                if !corrupt {
                    break;
                }
            }
            Err(e) => panic!("receiver: unexpected error {e:?}"),
        }
    }
    drop(guard);
    drop(grant);
    for _ in 0..2 * count + 2 {
        match tx.try_send(&payload(9, max.min(16))) {
            Ok(()) => {}
            Err(TrySendError::Corrupt { .. }) => {
                assert!(changed, "sender: an intact MPMC ring is corrupt");
                break;
            }
            Err(TrySendError::Full | TrySendError::Disconnected) => break,
            Err(e) => panic!("sender: unexpected error {e:?}"),
        }
    }
}
