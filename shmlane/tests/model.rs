//! Model test of the SPSC ring: random sequences of operations on one producer and one
//! consumer (same process, never blocking) are checked against a model.
//!
//! The model is a `VecDeque` of what is in the ring, in order: messages `(tag, payload)`
//! and the padding records the producer writes when a record does not fit before the end
//! of the data area. It tracks the positions exactly (record sizes and padding computed
//! as docs/ARCHITECTURE.md says, independently of the crate; the consumer's lazy release
//! of space too), so it predicts exactly when `try_send` / `try_reserve` must report `Full` (never
//! on an empty ring), and which bytes and tag every receive must return. Each case runs on
//! both backings, on rings of 64 to 4096 bytes with `max_message` anywhere in
//! `0..=capacity / 2` (the capacity doubles when a max-sized record is more than half of
//! it).
//!
//! `send_batch` and `recv_batch` wait when the ring is full / empty, so they are used
//! only when the model says they need not; if the ring disagrees, a helper thread wakes
//! them (see `with_rescue`) and the case fails instead of hanging.

mod common;

use std::collections::VecDeque;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::TestName;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use shmlane::spsc::{Consumer, Producer};
use shmlane::{Backing, Options, TryRecvError, TrySendError, Wait};

/// Bytes of a record header `{len: u32, tag: u32}`.
const HEADER: u64 = 8;

/// Bytes a record of `len` payload bytes takes: header plus payload padded to 8.
fn rec_size(len: usize) -> u64 {
    HEADER + ((len as u64 + 7) & !7)
}

/// The bytes a message with sequence number `seq` carries (as `common::fill` writes them).
fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    common::fill(&mut v, seq);
    v
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A padding record of this many bytes (header included), running to the ring's end.
    Pad(u64),
    /// A message.
    Msg { tag: u32, data: Vec<u8> },
}

/// What the ring holds, and where the positions are.
///
/// The consumer tells the producer what it has consumed lazily (as `ConsumerRing` does
/// today): once it is an eighth of the ring ahead of what it last released, when it finds
/// it has caught up with the producer, and at the end of `recv_batch`. (The docs promise
/// the space back when a guard drops; `eager` models that, see [`release_on_drop`].)
/// The producer measures its free space from the released position, so the model tracks
/// that one too, and the producer position as the consumer last loaded it (it reloads it
/// only once it has read everything up to it).
#[derive(Debug, Clone)]
struct RingModel {
    cap: u64,
    /// The producer's position (everything up to here is published).
    write: u64,
    /// The consumer's position (everything up to here is consumed).
    read: u64,
    /// The consumer position the producer can see.
    released: u64,
    /// The producer position as the consumer last loaded it.
    seen_write: u64,
    /// The records between `read` and `write`, in order.
    entries: VecDeque<Entry>,
    /// Whether consumed space is released at once rather than lazily.
    eager: bool,
}

impl RingModel {
    fn new(cap: usize, eager: bool) -> RingModel {
        RingModel {
            eager,
            cap: cap as u64,
            write: 0,
            read: 0,
            released: 0,
            seen_write: 0,
            entries: VecDeque::new(),
        }
    }

    /// The producer's free space: what the consumer has released.
    fn free(&self) -> u64 {
        self.cap - (self.write - self.released)
    }

    /// The producer's reservation of a record of `len` payload bytes: whether it fits
    /// now. Like the ring, it may publish a padding record first (even when the record
    /// then does not fit, and even if the reservation is later dropped).
    fn reserve(&mut self, len: usize) -> bool {
        let rec = rec_size(len);
        let to_end = self.cap - self.write % self.cap;
        if rec <= to_end {
            return self.free() >= rec;
        }
        if self.free() < to_end {
            return false;
        }
        self.entries.push_back(Entry::Pad(to_end));
        self.write += to_end;
        self.free() >= rec
    }

    /// Commits a record reserved by a successful [`reserve`](Self::reserve).
    fn commit(&mut self, tag: u32, data: Vec<u8>) {
        self.write += rec_size(data.len());
        self.entries.push_back(Entry::Msg { tag, data });
        assert!(self.write - self.released <= self.cap, "model overfilled");
    }

    /// Releases what was consumed once it adds up to an eighth of the ring.
    fn release_lazy(&mut self) {
        if self.eager || self.read - self.released >= self.cap / 8 {
            self.released = self.read;
        }
    }

    /// The consumer's look for the next message (`try_peek`): skips padding, reloads the
    /// producer position when it has read up to the one it knows, and releases
    /// everything when it has caught up. Does not consume the message.
    fn peek_msg(&mut self) -> Option<(u32, Vec<u8>)> {
        loop {
            if self.seen_write == self.read {
                self.seen_write = self.write;
                if self.write == self.read {
                    self.released = self.read;
                    return None;
                }
            }
            match self.entries.front() {
                Some(Entry::Pad(n)) => {
                    self.read += *n;
                    self.entries.pop_front();
                    self.release_lazy();
                }
                Some(Entry::Msg { tag, data }) => return Some((*tag, data.clone())),
                None => unreachable!("positions say there is a record"),
            }
        }
    }

    /// Consumes the message at the front (after `peek_msg` returned it), without
    /// releasing it.
    fn consume_msg(&mut self) {
        match self.entries.pop_front() {
            Some(Entry::Msg { data, .. }) => self.read += rec_size(data.len()),
            other => panic!("consume_msg with {other:?} at the front"),
        }
    }

    /// A `ReadGuard` drops: the message is consumed and maybe released.
    fn drop_guard(&mut self) {
        self.consume_msg();
        self.release_lazy();
    }

    /// `try_recv` and drop the guard.
    fn pop_msg(&mut self) -> Option<(u32, Vec<u8>)> {
        let m = self.peek_msg();
        if m.is_some() {
            self.drop_guard();
        }
        m
    }

    fn messages(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e, Entry::Msg { .. }))
            .count()
    }

    /// No message in the ring, and everything consumed handed back to the producer.
    fn is_empty(&self) -> bool {
        self.messages() == 0 && self.released == self.read
    }

    /// The bytes the entries take equal the distance between the positions.
    fn check_invariant(&self) {
        let sum: u64 = self
            .entries
            .iter()
            .map(|e| match e {
                Entry::Pad(n) => *n,
                Entry::Msg { data, .. } => rec_size(data.len()),
            })
            .sum();
        assert_eq!(sum, self.write - self.read, "model positions disagree");
        assert!(self.released <= self.read && self.read <= self.seen_write);
        assert!(self.seen_write <= self.write && self.write - self.released <= self.cap);
        assert!(self.write % 8 == 0 && self.read % 8 == 0);
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// `try_send_tagged`.
    TrySend { tag: u32, len: usize },
    /// `try_send` of more than `max_message` bytes.
    TrySendTooLarge { extra: usize },
    /// `try_reserve`, write, maybe `set_tag` / `truncate`, then commit or drop the grant.
    Reserve {
        len: usize,
        tag: Option<u32>,
        truncate: Option<usize>,
        commit: bool,
    },
    /// `send_batch` of the longest prefix of `lens` that the model says fits now.
    SendBatch { lens: Vec<usize> },
    /// `try_recv`.
    TryRecv,
    /// `try_recv`, and while holding the guard (space not released yet) a `try_send`.
    RecvHoldSend { tag: u32, len: usize },
    /// `recv_batch(max)` (only when the model holds a message, or when `max == 0`).
    RecvBatch { max: usize },
}

fn len_strategy(max: usize) -> BoxedStrategy<usize> {
    prop_oneof![
        4 => 0..=max,
        1 => Just(max),
        1 => Just(0),
        1 => max.saturating_sub(9)..=max,
    ]
    .boxed()
}

fn tag_strategy() -> BoxedStrategy<u32> {
    prop_oneof![
        3 => any::<u32>(),
        1 => Just(0u32),
        1 => Just(u32::MAX),
        1 => Just(1u32 << 31),
    ]
    .boxed()
}

fn op_strategy(max: usize) -> BoxedStrategy<Op> {
    prop_oneof![
        8 => (tag_strategy(), len_strategy(max)).prop_map(|(tag, len)| Op::TrySend { tag, len }),
        1 => (1usize..100).prop_map(|extra| Op::TrySendTooLarge { extra }),
        4 => (
            len_strategy(max),
            proptest::option::of(tag_strategy()),
            proptest::option::weighted(0.3, 0..=max + 8),
            proptest::bool::weighted(0.75),
        )
            .prop_map(|(len, tag, truncate, commit)| Op::Reserve {
                len,
                tag,
                truncate,
                commit,
            }),
        2 => proptest::collection::vec(len_strategy(max), 0..12)
            .prop_map(|lens| Op::SendBatch { lens }),
        9 => Just(Op::TryRecv),
        2 => (tag_strategy(), len_strategy(max))
            .prop_map(|(tag, len)| Op::RecvHoldSend { tag, len }),
        3 => (0usize..8).prop_map(|max| Op::RecvBatch { max }),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
struct Case {
    /// The ring's real capacity (a power of two): the requested one rounded up, doubled
    /// when a record of `max_message` bytes is more than half of that.
    cap: usize,
    /// The capacity asked for (rounds up to `cap`).
    requested: usize,
    max_message: usize,
    ops: Vec<Op>,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    prop_oneof![Just(64usize), Just(128), Just(256), Just(4096)]
        .prop_flat_map(|cap| {
            let lowest = if cap == 64 { 1 } else { cap / 2 + 1 };
            let max = prop_oneof![
                3 => 0..=cap / 2,
                1 => Just(cap / 2),
                1 => Just(cap / 2 - 8),
                1 => Just(0),
                1 => (cap / 2 - 16)..=(cap / 2),
            ];
            (Just(cap), lowest..=cap, max)
        })
        .prop_flat_map(|(cap, requested, max_message)| {
            let cap = if 2 * rec_size(max_message) > cap as u64 {
                2 * cap
            } else {
                cap
            };
            proptest::collection::vec(op_strategy(max_message), 0..=200).prop_map(move |ops| Case {
                cap,
                requested,
                max_message,
                ops,
            })
        })
}

/// Runs `op`, an operation that waits if the ring disagrees with the model, so that a
/// disagreement fails the test instead of hanging it. `op` runs with [`Wait::Block`]
/// (set by the caller), so if it waits it soon sleeps on the ring's semaphore, which
/// `wait::stats::sleeps()` counts; a helper thread watching that counter (or, as a last
/// resort, the clock) then calls `rescue(other)` until `op` returns; `rescue` drops the
/// other endpoint, which wakes `op` (with what it waited for, or `Disconnected`). Returns `op`'s result and whether it had to be rescued.
fn with_rescue<A: Send, T>(
    other: &mut A,
    op: impl FnOnce() -> T,
    mut rescue: impl FnMut(&mut A) + Send,
) -> (T, bool) {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let sleeps = shmlane::wait::stats::sleeps();
    let start = Instant::now();
    std::thread::scope(|s| {
        let helper = s.spawn(move || {
            loop {
                match done_rx.recv_timeout(Duration::from_millis(1)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return false,
                }
                if shmlane::wait::stats::sleeps() != sleeps
                    || start.elapsed() > Duration::from_secs(10)
                {
                    break;
                }
            }
            loop {
                rescue(other);
                match done_rx.recv_timeout(Duration::from_millis(1)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return true,
                }
            }
        });
        let r = op();
        drop(done_tx);
        (r, helper.join().expect("rescue thread panicked"))
    })
}

/// Runs one case on one backing.
fn run(case: &Case, backing: Backing) -> Result<(), TestCaseError> {
    let name = TestName::new("model");
    let opts = Options::new()
        .capacity(case.requested)
        .max_message(case.max_message)
        .backing(backing)
        .wait(Wait::Spin);
    let tx = Producer::create(&name, &opts).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let rx = Consumer::open(&name).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(tx.capacity(), case.cap);
    prop_assert_eq!(rx.capacity(), case.cap);
    prop_assert_eq!(tx.max_message(), case.max_message);
    prop_assert_eq!(rx.max_message(), case.max_message);

    let cap = case.cap as u64;
    let max = case.max_message;
    // A dropped guard gives its space back at once.
    let mut model = RingModel::new(case.cap, true);
    let mut seq: u64 = 0;
    // In slots so that a rescue can drop one end (see `with_rescue`).
    let mut tx_slot = Some(tx);
    let mut rx_slot = Some(rx);

    for (step, op) in case.ops.iter().enumerate() {
        let tx = tx_slot.as_mut().expect("producer");
        let rx = rx_slot.as_mut().expect("consumer");
        match op {
            Op::TrySend { tag, len } => {
                seq += 1;
                let data = payload(seq, *len);
                let fits = model.reserve(*len);
                let r = tx.try_send_tagged(*tag, &data);
                if fits {
                    prop_assert_eq!(r, Ok(()), "step {}: try_send of {} bytes", step, len);
                    model.commit(*tag, data);
                } else {
                    prop_assert_eq!(
                        r,
                        Err(TrySendError::Full),
                        "step {}: try_send of {} bytes should be Full",
                        step,
                        len
                    );
                    prop_assert!(
                        !model.is_empty(),
                        "step {}: the model is Full for {} bytes on an empty ring: {:?}",
                        step,
                        len,
                        model
                    );
                }
            }
            Op::TrySendTooLarge { extra } => {
                let len = max + extra;
                let r = tx.try_send_tagged(1, &vec![7u8; len]);
                prop_assert_eq!(r, Err(TrySendError::TooLarge { len, max }));
                let r = tx.try_reserve(len).map(|_| ());
                prop_assert_eq!(r, Err(TrySendError::TooLarge { len, max }));
            }
            Op::Reserve {
                len,
                tag,
                truncate,
                commit,
            } => {
                seq += 1;
                let data = payload(seq, *len);
                let fits = model.reserve(*len);
                match tx.try_reserve(*len) {
                    Ok(mut g) => {
                        prop_assert!(fits, "step {}: reserve of {} should be Full", step, len);
                        prop_assert_eq!(g.len(), *len);
                        g.copy_from_slice(&data);
                        if let Some(t) = tag {
                            g.set_tag(*t);
                        }
                        let final_len = truncate.map_or(*len, |t| t.min(*len));
                        if let Some(t) = truncate {
                            g.truncate(*t);
                        }
                        prop_assert_eq!(g.len(), final_len);
                        prop_assert_eq!(&g[..], &data[..final_len]);
                        // Committed, or dropped here without a commit (sends nothing).
                        if *commit {
                            g.commit();
                            model.commit(tag.unwrap_or(0), data[..final_len].to_vec());
                        }
                    }
                    Err(e) => {
                        prop_assert!(!fits, "step {}: reserve of {} failed: {:?}", step, len, e);
                        prop_assert_eq!(e, TrySendError::Full);
                        prop_assert!(
                            !model.is_empty(),
                            "step {}: the model is Full for {} bytes on an empty ring",
                            step,
                            len
                        );
                    }
                }
            }
            Op::SendBatch { lens } => {
                // send_batch waits when full: only send what the model says fits now.
                let mut sim = model.clone();
                let mut k = 0;
                for &len in lens {
                    if !sim.reserve(len) {
                        break;
                    }
                    sim.commit(0, vec![0; len]);
                    k += 1;
                }
                let msgs: Vec<Vec<u8>> = lens[..k]
                    .iter()
                    .map(|&len| {
                        seq += 1;
                        payload(seq, len)
                    })
                    .collect();
                // If the ring disagrees with the model, send_batch waits for room: it is
                // then rescued by dropping the consumer, and the test fails.
                tx.set_wait(Wait::Block);
                let (n, rescued) = with_rescue(
                    &mut rx_slot,
                    || tx.send_batch(msgs.iter().map(|m| m.as_slice())),
                    |rx| drop(rx.take()),
                );
                tx.set_wait(Wait::Spin);
                prop_assert!(
                    !rescued,
                    "step {}: send_batch of {:?} waited for room",
                    step,
                    &lens[..k]
                );
                prop_assert_eq!(n.ok(), Some(k), "step {}: send_batch", step);
                for m in msgs {
                    prop_assert!(model.reserve(m.len()));
                    model.commit(0, m);
                }
            }
            Op::TryRecv => {
                let expected = model.pop_msg();
                let got = rx.try_recv().map(|g| (g.tag(), g.to_vec()));
                match got {
                    Ok(got) => {
                        prop_assert_eq!(Some(got), expected, "step {}: try_recv", step);
                    }
                    Err(e) => {
                        prop_assert_eq!(e, TryRecvError::Empty, "step {}", step);
                        prop_assert_eq!(expected, None, "step {}: try_recv said Empty", step);
                        // It has looked at the producer's position and read everything.
                        prop_assert_eq!(rx.pending_bytes(), 0);
                    }
                }
            }
            Op::RecvHoldSend { tag, len } => {
                let expected = model.peek_msg();
                match rx.try_recv() {
                    Ok(g) => {
                        prop_assert_eq!(Some((g.tag(), g.to_vec())), expected.clone());
                        // The held message's space is not released yet.
                        seq += 1;
                        let data = payload(seq, *len);
                        let fits = model.reserve(*len);
                        let r = tx.try_send_tagged(*tag, &data);
                        if fits {
                            prop_assert_eq!(r, Ok(()), "step {}: send while holding", step);
                            model.commit(*tag, data);
                        } else {
                            prop_assert_eq!(r, Err(TrySendError::Full), "step {}", step);
                        }
                        // Still readable after the producer wrote more.
                        prop_assert_eq!(Some((g.tag(), g.to_vec())), expected);
                        drop(g);
                        model.drop_guard();
                    }
                    Err(e) => {
                        prop_assert_eq!(e, TryRecvError::Empty, "step {}", step);
                        prop_assert_eq!(expected, None, "step {}: try_recv said Empty", step);
                    }
                }
            }
            Op::RecvBatch { max: bmax } => {
                if *bmax > 0 && model.messages() == 0 {
                    // recv_batch waits for a first message: it would block forever here.
                    continue;
                }
                let mut got = Vec::new();
                // If the ring is empty although the model is not, recv_batch waits: it is
                // then rescued by dropping the producer, and the test fails.
                rx.set_wait(Wait::Block);
                let (n, rescued) = with_rescue(
                    &mut tx_slot,
                    || rx.recv_batch(*bmax, |tag, p| got.push((tag, p.to_vec()))),
                    |tx| drop(tx.take()),
                );
                rx.set_wait(Wait::Spin);
                prop_assert!(!rescued, "step {}: recv_batch waited for a message", step);
                let want = (*bmax).min(model.messages());
                prop_assert_eq!(n.ok(), Some(want), "step {}: recv_batch({})", step, bmax);
                prop_assert_eq!(got.len(), want);
                for m in got {
                    prop_assert_eq!(Some(m), model.peek_msg(), "step {}: recv_batch", step);
                    model.consume_msg();
                }
                if want > 0 && want < *bmax {
                    // It looked for one more and found it had caught up.
                    prop_assert_eq!(model.peek_msg(), None);
                }
                // One release for the whole batch.
                if want > 0 {
                    model.released = model.read;
                }
            }
        }
        model.check_invariant();
    }

    let mut tx = tx_slot.take().expect("producer");
    let mut rx = rx_slot.take().expect("consumer");
    // Drain everything and compare.
    let mut drained = 0;
    loop {
        prop_assert!(drained <= case.cap / 8 + 1, "drain does not end");
        match rx.try_recv() {
            Ok(g) => {
                let got = (g.tag(), g.to_vec());
                drop(g);
                prop_assert_eq!(Some(got), model.pop_msg(), "drain");
                drained += 1;
            }
            Err(e) => {
                prop_assert_eq!(e, TryRecvError::Empty);
                prop_assert_eq!(model.peek_msg(), None, "drain: Empty");
                break;
            }
        }
    }
    prop_assert_eq!(
        model.messages(),
        0,
        "messages left in the model after the drain"
    );
    model.check_invariant();
    prop_assert_eq!(model.write, model.read);
    prop_assert_eq!(model.released, model.read);
    // Having found the ring empty, the consumer has released all of it: the whole ring
    // takes zero-length records (8 bytes, never padded).
    let mut n = 0;
    while tx.try_send_tagged(n, b"").is_ok() {
        n += 1;
        prop_assert!(n as u64 <= cap / 8, "more than the ring holds");
    }
    prop_assert_eq!(n as u64, cap / 8, "free space after the drain");
    for i in 0..n {
        let got = rx.try_recv().map(|g| (g.tag(), g.len()));
        prop_assert_eq!(got, Ok((i, 0)));
    }

    // Once the producer has gone, the consumer sees Disconnected, not Empty.
    drop(tx);
    prop_assert_eq!(rx.try_recv().map(|_| ()), Err(TryRecvError::Disconnected));
    drop(rx);
    drop(name);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Keep the tests directory clean: no proptest-regressions files.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn spsc_matches_model(case in case_strategy()) {
        run(&case, Backing::Posix)?;
        run(&case, Backing::SysV)?;
    }
}

#[test]
fn record_size_matches_the_crate() {
    for len in 0..300 {
        assert_eq!(
            rec_size(len),
            shmlane::format::record_size(len) as u64,
            "len {len}"
        );
    }
}

/// The model itself, on the case that made the crate double the capacity for a
/// `max_message` of `capacity / 2 - 7 ..= capacity / 2`: a max-sized record of more than half
/// the ring at the middle of an empty ring needs padding, and padding plus record are more
/// than the ring, so it only fits once the consumer has skipped the padding.
#[test]
fn model_pads_then_needs_the_consumer() {
    let mut m = RingModel::new(256, false);
    assert!(m.reserve(120));
    m.commit(0, vec![0; 120]);
    assert!(m.pop_msg().is_some());
    assert_eq!(m.pop_msg(), None);
    assert_eq!((m.write, m.read, m.released), (128, 128, 128));
    assert!(m.is_empty());
    assert!(!m.reserve(128), "pad of 128 + record of 136 > 256");
    assert_eq!(m.entries, VecDeque::from([Entry::Pad(128)]));
    assert_eq!(m.pop_msg(), None);
    assert!(m.reserve(128));
    m.check_invariant();
}

/// The geometries the crate makes (a max-sized record at most half the ring): at every
/// offset of an empty ring, a record of up to half the ring fits at once.
#[test]
fn model_empty_ring_takes_a_max_sized_record_at_every_offset() {
    for cap in [64usize, 128, 256, 4096] {
        let largest = cap / 2 - 8;
        for off in (0..cap as u64).step_by(8) {
            for len in [0, 1, largest / 2, largest - 7, largest] {
                let mut m = RingModel::new(cap, false);
                m.write = off;
                m.read = off;
                m.released = off;
                m.seen_write = off;
                assert!(m.is_empty());
                assert!(m.reserve(len), "cap {cap}, offset {off}, {len} bytes");
                m.check_invariant();
            }
        }
    }
}

/// The model's lazy release: 8-byte records are released four at a time (an eighth of
/// 256 bytes), or all at once when the consumer finds it has caught up.
#[test]
fn model_releases_lazily() {
    let mut m = RingModel::new(256, false);
    for _ in 0..32 {
        assert!(m.reserve(0));
        m.commit(0, vec![]);
    }
    assert!(!m.reserve(0));
    for i in 1..=5 {
        assert!(m.pop_msg().is_some());
        assert_eq!(m.released, if i < 4 { 0 } else { 32 });
    }
    assert_eq!(m.free(), 32);
    while m.pop_msg().is_some() {}
    assert_eq!(m.free(), 256);
    m.check_invariant();
}
