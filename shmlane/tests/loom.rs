//! loom models of the real ring code, on heap memory:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --test loom
//! ```
//!
//! loom runs each model under every interleaving (up to a preemption bound) and every
//! ordering its memory model allows, so a missing Acquire/Release, a lost wake-up (a
//! sleeper nobody posts: loom reports the deadlock) or a torn message shows up here.
#![cfg(loom)]

use loom::thread;
use shmlane::{broadcast, mpmc, spsc, Error, TryRecvError, TrySendError, Wait};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    // Polling loops (try_* plus a yield) take many steps per execution.
    b.max_branches = 100_000;
    b.check(f);
}

/// Like [`model`] with a preemption bound of 1, for the models with three blocking or
/// polling threads (the state space grows steeply with the bound; these stay under a minute).
fn model_small(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(1);
    b.max_branches = 100_000;
    b.check(f);
}

fn spsc_send(p: &mut spsc::Producer, msg: &[u8]) {
    loop {
        match p.try_send(msg) {
            Ok(()) => return,
            Err(TrySendError::Full) => thread::yield_now(),
            Err(e) => panic!("try_send: {e}"),
        }
    }
}

/// Three 16-byte messages on a 64-byte ring: records of 24 bytes at offsets 0 and 24, then
/// a padding record at 48 and the third message back at offset 0.
#[test]
fn spsc_push_pop_with_wrap() {
    model(|| {
        let (mut p, mut c) = spsc::model_pair(64, 16, Wait::Spin);
        let t = thread::spawn(move || {
            for i in 1..=3u8 {
                spsc_send(&mut p, &[i; 16]);
            }
        });
        let mut next = 1u8;
        while next <= 3 {
            let r = c.try_recv().map(|m| m.to_vec());
            match r {
                Ok(m) => {
                    assert_eq!(&m[..], &[next; 16], "message {next} torn or out of order");
                    next += 1;
                }
                Err(TryRecvError::Empty) => thread::yield_now(),
                Err(e) => panic!("try_recv: {e} {:?} next {next}", c.peer()),
            }
        }
        t.join().unwrap();
    });
}

/// The wake protocol: a consumer that blocks (registers as a waiter, re-checks, sleeps on
/// the semaphore) is always woken by the producer's publish or close.
#[test]
fn spsc_blocking_wake_and_disconnect() {
    model(|| {
        let (mut p, mut c) = spsc::model_pair(64, 16, Wait::Block);
        let t = thread::spawn(move || {
            p.send(&[7; 8]).unwrap();
        });
        assert_eq!(&c.recv().unwrap()[..], &[7; 8]);
        assert!(matches!(c.recv(), Err(Error::Disconnected)));
        t.join().unwrap();
    });
}

/// A producer blocked on a full ring is woken when the consumer frees space.
#[test]
fn spsc_blocking_producer_wakes() {
    model(|| {
        // 64-byte ring, 24-byte records: two fit, the third waits for space.
        let (mut p, mut c) = spsc::model_pair(64, 16, Wait::Block);
        let t = thread::spawn(move || {
            for i in 1..=3u8 {
                p.send(&[i; 16]).unwrap();
            }
        });
        for i in 1..=3u8 {
            assert_eq!(&c.recv().unwrap()[..], &[i; 16]);
        }
        t.join().unwrap();
    });
}

fn mpmc_send(tx: &mpmc::Sender, msg: &[u8]) {
    loop {
        match tx.try_send(msg) {
            Ok(()) => return,
            Err(TrySendError::Full) => thread::yield_now(),
            Err(e) => panic!("try_send: {e}"),
        }
    }
}

fn mpmc_recv(rx: &mpmc::Receiver) -> u8 {
    loop {
        match rx.try_recv() {
            Ok(m) => {
                assert!(m.iter().all(|&b| b == m[0]), "torn message");
                return m[0];
            }
            Err(TryRecvError::Empty) => thread::yield_now(),
            Err(e) => panic!("try_recv: {e}"),
        }
    }
}

/// Two producers, one consumer, two slots: each message arrives exactly once.
#[test]
fn mpmc_two_producers_one_consumer() {
    model(|| {
        let (tx, rx) = mpmc::model_pair(2, 8, Wait::Spin);
        let tx2 = tx.clone();
        let a = thread::spawn(move || mpmc_send(&tx, &[1; 8]));
        let b = thread::spawn(move || mpmc_send(&tx2, &[2; 8]));
        let mut got = [mpmc_recv(&rx), mpmc_recv(&rx)];
        got.sort();
        assert_eq!(got, [1, 2]);
        a.join().unwrap();
        b.join().unwrap();
    });
}

/// One producer, two consumers: each message is taken exactly once.
#[test]
fn mpmc_one_producer_two_consumers() {
    model(|| {
        let (tx, rx) = mpmc::model_pair(2, 8, Wait::Spin);
        let rx2 = rx.clone();
        let c = thread::spawn(move || mpmc_recv(&rx2));
        mpmc_send(&tx, &[1; 8]);
        mpmc_send(&tx, &[2; 8]);
        let mut got = [mpmc_recv(&rx), c.join().unwrap()];
        got.sort();
        assert_eq!(got, [1, 2]);
    });
}

/// One producer, one consumer, two slots, three messages: the third laps the ring and
/// must wait for the consumer to free its slot.
#[test]
fn mpmc_lap() {
    model(|| {
        let (tx, rx) = mpmc::model_pair(2, 8, Wait::Spin);
        let t = thread::spawn(move || {
            for i in 1..=3u8 {
                mpmc_send(&tx, &[i; 8]);
            }
        });
        for i in 1..=3u8 {
            assert_eq!(mpmc_recv(&rx), i);
        }
        t.join().unwrap();
    });
}

/// MPMC blocking: a receiver asleep on an empty ring is woken by a send, and then by the
/// last sender leaving.
#[test]
fn mpmc_blocking_wake_and_disconnect() {
    model(|| {
        let (tx, rx) = mpmc::model_pair(2, 8, Wait::Block);
        let t = thread::spawn(move || {
            tx.send(&[5; 8]).unwrap();
        });
        assert_eq!(&rx.recv().unwrap()[..], &[5; 8]);
        assert!(matches!(rx.recv(), Err(Error::Disconnected)));
        t.join().unwrap();
    });
}

/// Two blocking receivers; one sender claims positions 0 and 1 and commits them out of
/// order (1, then 0). A receiver woken for message 1 finds the head unpublished and
/// sleeps again; the publisher of the head must then wake for both messages (a lost
/// wake-up is a deadlock here: the model's semaphore has no timeout).
#[test]
fn mpmc_blocking_receivers_out_of_order_commits() {
    model_small(|| {
        let (tx, rx) = mpmc::model_pair(2, 8, Wait::Block);
        let rx2 = rx.clone();
        let r = thread::spawn(move || {
            let m = rx2.recv().unwrap();
            assert!(m.iter().all(|&b| b == m[0]), "torn message");
            m[0]
        });
        let t = thread::spawn(move || {
            let mut a = tx.reserve(8).unwrap();
            let mut b = tx.reserve(8).unwrap();
            a.copy_from_slice(&[1; 8]);
            b.copy_from_slice(&[2; 8]);
            b.commit();
            a.commit();
        });
        let m = rx.recv().unwrap();
        assert!(m.iter().all(|&b| b == m[0]), "torn message");
        let mut got = [m[0], r.join().unwrap()];
        drop(m);
        got.sort();
        assert_eq!(got, [1, 2]);
        t.join().unwrap();
    });
}

/// Two blocking senders on a full two-slot ring; the receiver releases out of order
/// (message 2, then 1). Both senders must be woken.
#[test]
fn mpmc_blocking_senders_out_of_order_releases() {
    model_small(|| {
        let (tx, rx) = mpmc::model_pair(2, 8, Wait::Block);
        tx.send(&[1; 8]).unwrap();
        tx.send(&[2; 8]).unwrap();
        let tx2 = tx.clone();
        let a = thread::spawn(move || tx.send(&[3; 8]).unwrap());
        let b = thread::spawn(move || tx2.send(&[4; 8]).unwrap());
        {
            let m1 = rx.recv().unwrap();
            let m2 = rx.recv().unwrap();
            assert_eq!((m1[0], m2[0]), (1, 2));
            drop(m2);
            drop(m1);
        }
        let mut got = [rx.recv().unwrap()[0], rx.recv().unwrap()[0]];
        got.sort();
        assert_eq!(got, [3, 4]);
        a.join().unwrap();
        b.join().unwrap();
    });
}

/// A recovery in flight: the head is owned by a sender that has gone, a live sender
/// publishes behind it, and two receivers race to recover the head (as cancelled) and
/// take the message. Exactly one receiver gets it, intact; one message is counted lost.
#[test]
fn mpmc_recovery_races_two_receivers() {
    model_small(|| {
        let (tx, rx) = mpmc::model_pair(2, 8, Wait::Spin);
        assert!(tx.model_dead_claim());
        let rx2 = rx.clone();
        let t = thread::spawn(move || mpmc_send(&tx, &[7; 8]));
        let r = thread::spawn(move || match rx2.try_recv() {
            Ok(m) => Some(m[0]),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
            Err(e) => panic!("try_recv: {e}"),
        });
        let mine = match rx.try_recv() {
            Ok(m) => Some(m[0]),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
            Err(e) => panic!("try_recv: {e}"),
        };
        let theirs = r.join().unwrap();
        t.join().unwrap();
        let got = match (mine, theirs) {
            (Some(_), Some(_)) => panic!("one message delivered twice"),
            (Some(m), None) | (None, Some(m)) => m,
            (None, None) => mpmc_recv(&rx),
        };
        assert_eq!(got, 7);
        assert_eq!(rx.lost(), 1);
    });
}

/// A live sender in the middle of its claim while receivers recover (every look, under
/// loom) with a gone sender's claim in the ring: the live claim is never taken, and two
/// senders never own one slot (the payload bytes are tracked).
#[test]
fn mpmc_live_claim_is_never_taken() {
    model(|| {
        let (tx, rx) = mpmc::model_pair(2, 8, Wait::Spin);
        let tx2 = tx.clone();
        let a = thread::spawn(move || mpmc_send(&tx, &[1; 8]));
        let b = thread::spawn(move || mpmc_send(&tx2, &[2; 8]));
        let mut got = [mpmc_recv(&rx), mpmc_recv(&rx)];
        got.sort();
        assert_eq!(got, [1, 2]);
        assert_eq!(rx.lost(), 0);
        a.join().unwrap();
        b.join().unwrap();
    });
}

/// The wake protocol when sleeps time out before the post arrives (a 50 ms slice running
/// out while the waker is on its way): the sleeper takes itself off the waiter count while
/// the waker may be taking it off too; nothing is lost or woken twice for good.
#[test]
fn spsc_blocking_with_spurious_timeouts() {
    shmlane::format::SPURIOUS_TIMEOUTS.with(|c| c.set(2));
    model(|| {
        let (mut p, mut c) = spsc::model_pair(64, 16, Wait::Block);
        let t = thread::spawn(move || {
            p.send(&[7; 8]).unwrap();
            p.send(&[8; 8]).unwrap();
        });
        assert_eq!(&c.recv().unwrap()[..], &[7; 8]);
        assert_eq!(&c.recv().unwrap()[..], &[8; 8]);
        assert!(matches!(c.recv(), Err(Error::Disconnected)));
        t.join().unwrap();
    });
    shmlane::format::SPURIOUS_TIMEOUTS.with(|c| c.set(0));
}

/// MPMC blocking receive and send with spurious timeouts of the semaphores.
#[test]
fn mpmc_blocking_with_spurious_timeouts() {
    shmlane::format::SPURIOUS_TIMEOUTS.with(|c| c.set(2));
    model(|| {
        let (tx, rx) = mpmc::model_pair(2, 8, Wait::Block);
        let t = thread::spawn(move || {
            tx.send(&[1; 8]).unwrap();
        });
        assert_eq!(&rx.recv().unwrap()[..], &[1; 8]);
        assert!(matches!(rx.recv(), Err(Error::Disconnected)));
        t.join().unwrap();
    });
    shmlane::format::SPURIOUS_TIMEOUTS.with(|c| c.set(0));
}

/// The async endpoints' registration (issue #14) against the producer's post: the
/// consumer registers (waiter count, fence, look again: `wait::register_then_check`) and
/// then waits as the helper thread does, until the semaphore is posted. A lost wake-up
/// leaves it waiting forever, which loom reports; the count is balanced at the end.
#[test]
fn spsc_async_register_then_check() {
    model(|| {
        let (mut p, mut c) = spsc::model_pair(64, 16, Wait::Block);
        let t = thread::spawn(move || {
            spsc_send(&mut p, &[5; 8]);
            p
        });
        assert_eq!(c.model_async_recv(false).unwrap(), 0);
        let p = t.join().unwrap();
        assert_eq!(c.model_data_waiters(), 0, "waiter count unbalanced");
        drop(p);
    });
}

/// A cancelled async wait (a dropped `recv()` future gives its unit back) racing the
/// post: the next wait still gets the message, and the waiter count ends balanced.
#[test]
fn spsc_async_cancelled_wait() {
    model(|| {
        let (mut p, mut c) = spsc::model_pair(64, 16, Wait::Block);
        let t = thread::spawn(move || {
            spsc_send(&mut p, &[6; 8]);
            p
        });
        assert_eq!(c.model_async_recv(true).unwrap(), 0);
        let p = t.join().unwrap();
        assert_eq!(c.model_data_waiters(), 0, "waiter count unbalanced");
        drop(p);
    });
}

// ------------------------------------------------------------------ broadcast (issue #13)

/// What a subscriber has accounted for of the model stream (message `i` is `[i; 8]` with
/// tag `i`): read, or reported missed by `Lapped`.
#[derive(Debug, Default)]
struct BcSeen {
    next: u64,
    evicted: bool,
    done: bool,
    /// `Lapped` results seen.
    laps: u32,
}

impl BcSeen {
    /// One non-blocking look. Every message read must be intact and in order: loom's
    /// relaxed payload words make a copy that was not validated (or was validated against
    /// a weakened ordering) show up as a wrong byte here.
    fn poll(&mut self, s: &mut broadcast::Subscriber) {
        if self.done {
            return;
        }
        match s.try_recv() {
            Ok(m) => {
                assert_eq!(m.position(), self.next, "message out of order");
                assert_eq!(m.tag() as u64, self.next, "tag of message {}", self.next);
                assert_eq!(&m[..], &[self.next as u8; 8], "message {} torn", self.next);
                self.next += 1;
            }
            Err(Error::Lapped { missed }) => {
                assert!(missed > 0);
                self.next += missed;
                self.laps += 1;
            }
            Err(Error::Evicted) => {
                self.evicted = true;
                self.done = true;
            }
            Err(Error::Disconnected) => self.done = true,
            Err(Error::Empty) => {}
            Err(e) => panic!("try_recv: {e}"),
        }
    }
}

fn bc_publish(p: &mut broadcast::Publisher, total: u64) {
    for i in 0..total {
        if i % 2 == 0 {
            p.send_tagged(i as u32, &[i as u8; 8]).unwrap();
        } else {
            let mut g = p.reserve(8).unwrap();
            g.copy_from_slice(&[i as u8; 8]);
            g.set_tag(i as u32);
            g.commit();
        }
    }
}

/// Polls both subscribers until both are done (Disconnected or Evicted).
fn bc_poll_both(a: &mut broadcast::Subscriber, b: &mut broadcast::Subscriber) -> (BcSeen, BcSeen) {
    let (mut sa, mut sb) = (BcSeen::default(), BcSeen::default());
    while !(sa.done && sb.done) {
        sa.poll(a);
        sb.poll(b);
        thread::yield_now();
    }
    (sa, sb)
}

fn bc_trio(
    overflow: broadcast::Overflow,
    evict_ms: u64,
    wait: Wait,
) -> (
    broadcast::Publisher,
    broadcast::Subscriber,
    broadcast::Subscriber,
) {
    // 128-byte ring, 8-byte messages: 32-byte records, three fit beside the 16-byte stub,
    // so the fourth overwrites the first.
    broadcast::model_trio(
        128,
        8,
        overflow,
        std::time::Duration::from_millis(evict_ms),
        wait,
    )
}

/// Lap mode: a publisher laps a 128-byte ring while two subscribers read: everything
/// read is intact and in order, laps count exactly what was skipped (both account for all
/// four messages), then Disconnected.
#[test]
fn broadcast_lap_two_subscribers() {
    model(|| {
        let (mut p, mut a, mut b) = bc_trio(broadcast::Overflow::Lap, 1000, Wait::Spin);
        let t = thread::spawn(move || bc_publish(&mut p, 4));
        let (sa, sb) = bc_poll_both(&mut a, &mut b);
        assert_eq!((sa.next, sa.evicted), (4, false));
        assert_eq!((sb.next, sb.evicted), (4, false));
        t.join().unwrap();
    });
}

/// Block mode: the publisher (blocking) waits for the slower of two subscribers that
/// poll; it must be woken by their cursor moves (a lost wake-up is a loom deadlock), and
/// both read all four messages, then Disconnected.
#[test]
fn broadcast_block_two_subscribers() {
    model(|| {
        let (mut p, mut a, mut b) = bc_trio(broadcast::Overflow::Block, 3_600_000, Wait::Block);
        let t = thread::spawn(move || bc_publish(&mut p, 4));
        let (sa, sb) = bc_poll_both(&mut a, &mut b);
        assert_eq!((sa.next, sa.evicted), (4, false));
        assert_eq!((sb.next, sb.evicted), (4, false));
        t.join().unwrap();
    });
}

/// A blocking subscriber is woken by each publish and by the publisher's close.
#[test]
fn broadcast_blocking_subscriber_wakes() {
    model(|| {
        let (mut p, mut a, _b) = bc_trio(broadcast::Overflow::Block, 3_600_000, Wait::Block);
        let t = thread::spawn(move || bc_publish(&mut p, 2));
        for i in 0..2u64 {
            let m = a.recv().unwrap();
            assert_eq!((m.position(), &m[..]), (i, &[i as u8; 8][..]));
        }
        assert!(matches!(a.recv(), Err(Error::Disconnected)));
        t.join().unwrap();
    });
}

/// Block mode with eviction at the first look (`evict_after` 0, loom only: models have
/// no clock): the publisher evicts subscribers that hold it back and overwrites what they
/// had not read while they read it. Whatever either reads before `Evicted` is intact and
/// in order.
#[test]
fn broadcast_evict_while_reading() {
    model(|| {
        let (mut p, mut a, mut b) = bc_trio(broadcast::Overflow::Block, 0, Wait::Spin);
        let t = thread::spawn(move || bc_publish(&mut p, 4));
        let (sa, sb) = bc_poll_both(&mut a, &mut b);
        assert!(sa.evicted || sa.next == 4);
        assert!(sb.evicted || sb.next == 4);
        t.join().unwrap();
    });
}

/// A subscriber joins (`start`) while the publisher sends `total` messages of 8 bytes on a
/// 128-byte ring (three records fit, the fourth overwrites the first) with no other
/// subscriber: the publisher has cached "nobody holds me" and learns of the joiner only
/// through the join handshake (ring/broadcast.rs module docs, (5) and (7)). Returns what
/// the joiner accounted for, from where it started.
fn bc_join(overflow: broadcast::Overflow, start: broadcast::StartAt, total: u64) -> (u64, BcSeen) {
    let (mut p, ring) = broadcast::model_publisher(
        128,
        8,
        1,
        overflow,
        std::time::Duration::from_secs(3600),
        Wait::Block,
    );
    let t = thread::spawn(move || bc_publish(&mut p, total));
    let mut s = ring.subscribe(start).unwrap();
    let first = s.next_position();
    assert!(first <= total, "joined at message {first} of {total}");
    let mut seen = BcSeen {
        next: first,
        ..BcSeen::default()
    };
    while !seen.done {
        seen.poll(&mut s);
        thread::yield_now();
    }
    t.join().unwrap();
    (first, seen)
}

/// What a Block-mode joiner must see: every message from where it starts, intact and in
/// order, never evicted and never lapped (the publisher honours its cursor from the join
/// on). The lap was a bug: in the Dekker handshake (5) both sides may see each other; the
/// joiner saw an old `frontier <= pos` (joined, trusted) while the publisher, after storing
/// a `frontier` past `pos`, saw the new epoch, found the cursor below its `frontier`, marked
/// it `LAPPED` and overwrote the record; loom found it with the joiner at 0 and the fourth
/// message overwriting the first. Now the publisher holds such a joiner instead.
fn bc_join_block_ok(start: broadcast::StartAt) {
    let (first, seen) = bc_join(broadcast::Overflow::Block, start, 4);
    assert_eq!(
        (seen.next, seen.laps, seen.evicted),
        (4, 0, false),
        "joined at {first}"
    );
}

/// Block mode, a joiner at `Oldest` racing the publisher's overwrite of the oldest
/// record (the joiner's and the publisher's halves of the handshake, (5), in every order).
#[test]
fn broadcast_join_block_oldest() {
    model(|| bc_join_block_ok(broadcast::StartAt::Oldest));
}

/// Block mode, a joiner at `Latest`: as for `Oldest`, from the next message published
/// when it joined.
#[test]
fn broadcast_join_block_latest() {
    model(|| bc_join_block_ok(broadcast::StartAt::Latest));
}

/// Lap mode, a joiner at `Oldest` (the publisher never waits for it): intact messages in
/// order, and laps that count exactly what it skipped, so it accounts for all four.
#[test]
fn broadcast_join_lap_oldest() {
    model(|| {
        let (first, seen) = bc_join(broadcast::Overflow::Lap, broadcast::StartAt::Oldest, 4);
        assert_eq!((seen.next, seen.evicted), (4, false), "joined at {first}");
    });
}

/// Lap mode, a joiner at `Latest`.
#[test]
fn broadcast_join_lap_latest() {
    model(|| {
        let (first, seen) = bc_join(broadcast::Overflow::Lap, broadcast::StartAt::Latest, 4);
        assert_eq!((seen.next, seen.evicted), (4, false), "joined at {first}");
    });
}
