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
use shmlane::{mpmc, spsc, Error, TryRecvError, TrySendError, Wait};

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
