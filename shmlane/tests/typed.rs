//! Typed messages (issue #17): structs across processes in order and intact, in-place
//! reads aligned to the type, slices, the type fingerprint (`TypeMismatch`), and corrupt
//! lengths. The message types derive zerocopy's traits through shmlane's re-export, so
//! this file also checks that the derive works that way (no direct zerocopy dependency).

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::Duration;

use common::{child_arg, is_child, spawn_child, wait_child, Rng, TestName};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use shmlane::format::HEADER_SIZE;
use shmlane::typed::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
use shmlane::typed::{Consumer, Producer, Receiver, Sender};
use shmlane::{mpmc, spsc, Error, Options, TryRecvError};

#[derive(Debug, Clone, Copy, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[zerocopy(crate = "shmlane::typed::zerocopy")]
#[repr(C)]
struct Tick {
    seq: u64,
    price: f64,
    qty: u32,
    side: u8,
    _pad: [u8; 3],
}

impl Tick {
    fn of(seq: u64) -> Tick {
        let mut r = Rng(seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        Tick {
            seq,
            price: (r.below(1_000_000) as f64) * 0.01,
            qty: r.next() as u32,
            side: (r.next() % 2) as u8,
            _pad: [seq as u8; 3],
        }
    }
}

/// Another type of the same size: another name.
#[derive(Debug, Clone, Copy, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[zerocopy(crate = "shmlane::typed::zerocopy")]
#[repr(C)]
struct Quote {
    bid: f64,
    ask: f64,
    seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[zerocopy(crate = "shmlane::typed::zerocopy")]
#[repr(C, align(16))]
struct A16 {
    a: u64,
    b: u64,
    c: u32,
    _pad: [u8; 12],
}

#[derive(Debug, Clone, Copy, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[zerocopy(crate = "shmlane::typed::zerocopy")]
#[repr(C, align(64))]
struct A64 {
    a: u64,
    rest: [u8; 56],
}

impl A64 {
    fn of(v: u64) -> A64 {
        A64 {
            a: v,
            rest: [v as u8; 56],
        }
    }
}

const T: Duration = Duration::from_secs(20);
const TICKS: u64 = 100_000;

/// Cross-process tests spin on two cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn ticks_cross_process_spsc() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = TestName::new("typed-xspsc");
    let opts = Options::new().capacity(64 << 10).schema(7);
    let mut tx = Producer::<Tick>::create(&name, &opts).unwrap();
    let child = spawn_child(
        "child_spsc_ticks",
        &[("NAME", name.to_string()), ("COUNT", TICKS.to_string())],
    );
    for seq in 0..TICKS {
        let t = Tick::of(seq);
        match seq % 3 {
            0 => tx.send_timeout(&t, T).unwrap(),
            1 => {
                let mut g = tx.reserve().unwrap();
                *g = t;
                g.commit();
            }
            _ => tx.send(&t).unwrap(),
        }
    }
    drop(tx);
    let status = wait_child(child, Duration::from_secs(120));
    assert!(status.success(), "child failed: {status}");
}

#[test]
fn child_spsc_ticks() {
    if !is_child("child_spsc_ticks") {
        return;
    }
    let name = child_arg("NAME");
    let count: u64 = child_arg("COUNT").parse().unwrap();
    let mut rx = Consumer::<Tick>::open_timeout(&name, 7, T).unwrap();
    for seq in 0..count {
        if seq % 2 == 0 {
            let m = rx.recv_timeout(T).unwrap();
            assert_eq!(*m, Tick::of(seq), "tick {seq}");
        } else {
            assert_eq!(rx.recv_copy().unwrap(), Tick::of(seq), "tick {seq}");
        }
    }
    assert!(matches!(rx.recv_timeout(T), Err(Error::Disconnected)));
}

#[test]
fn ticks_cross_process_mpmc() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = TestName::new("typed-xmpmc");
    let tx = Sender::<Tick>::create(&name, &Options::new().slots(256)).unwrap();
    let child = spawn_child(
        "child_mpmc_ticks",
        &[("NAME", name.to_string()), ("COUNT", TICKS.to_string())],
    );
    for seq in 0..TICKS {
        let t = Tick::of(seq);
        if seq % 2 == 0 {
            tx.send_timeout(&t, T).unwrap();
        } else {
            let mut g = tx.reserve().unwrap();
            *g = t;
            g.commit();
        }
    }
    drop(tx);
    let status = wait_child(child, Duration::from_secs(120));
    assert!(status.success(), "child failed: {status}");
}

#[test]
fn child_mpmc_ticks() {
    if !is_child("child_mpmc_ticks") {
        return;
    }
    let name = child_arg("NAME");
    let count: u64 = child_arg("COUNT").parse().unwrap();
    let rx = Receiver::<Tick>::open_timeout(&name, 0, T).unwrap();
    for seq in 0..count {
        if seq % 2 == 0 {
            let m = rx.recv_timeout(T).unwrap();
            assert_eq!(*m, Tick::of(seq), "tick {seq}");
        } else {
            assert_eq!(rx.recv_copy().unwrap(), Tick::of(seq), "tick {seq}");
        }
    }
    assert!(matches!(rx.recv_timeout(T), Err(Error::Disconnected)));
}

#[test]
fn slices_round_trip() {
    let name = TestName::new("typed-slice");
    let mut tx = Producer::<Tick>::create(&name, &Options::new().capacity(1 << 16)).unwrap();
    let mut rx = Consumer::<Tick>::open(&name).unwrap();
    let max = tx.max_slice_len();
    assert_eq!(
        max,
        (32 << 10) / 24,
        "max_message 32 KiB - 8 holds this many"
    );
    for n in [0, 1, 2, 17, max] {
        let ticks: Vec<Tick> = (0..n as u64).map(Tick::of).collect();
        tx.send_slice(&ticks).unwrap();
        let s = rx.recv_slice().unwrap();
        assert_eq!(&s[..], &ticks[..], "{n} ticks");
    }
    assert!(matches!(
        tx.send_slice(&vec![Tick::of(0); max + 1]),
        Err(Error::MessageTooLarge { .. })
    ));
    // A value sent alone is a slice of one; a slice of two is not one value.
    tx.send(&Tick::of(5)).unwrap();
    assert_eq!(&rx.recv_slice().unwrap()[..], &[Tick::of(5)]);
    tx.send_slice(&[Tick::of(1), Tick::of(2)]).unwrap();
    assert!(matches!(rx.recv(), Err(Error::Corrupt { .. })));
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));

    // MPMC: slots hold one value unless max_message says more.
    let name = TestName::new("typed-slice-mpmc");
    let opts = Options::new().slots(8).max_message(24 * 40);
    let tx = Sender::<Tick>::create(&name, &opts).unwrap();
    let rx = Receiver::<Tick>::open(&name).unwrap();
    assert_eq!(tx.max_slice_len(), 40);
    for n in [0, 1, 39, 40] {
        let ticks: Vec<Tick> = (0..n as u64).map(Tick::of).collect();
        tx.send_slice(&ticks).unwrap();
        assert_eq!(&rx.recv_slice().unwrap()[..], &ticks[..], "{n} ticks");
    }
    let name = TestName::new("typed-one-slot");
    let tx = Sender::<Tick>::create(&name, &Options::new().slots(8)).unwrap();
    assert_eq!(tx.max_slice_len(), 1);
    assert!(matches!(
        Sender::<Tick>::create(&TestName::new("x"), &Options::new().max_message(23)),
        Err(Error::InvalidOptions { .. })
    ));
}

/// Sends `n` values of a type aligned above the ring's record alignment, between byte
/// messages of every length so the records start at every 8-byte offset, and checks
/// each reference is aligned.
#[test]
fn over_aligned_types_are_read_in_place_aligned() {
    let name = TestName::new("typed-a16");
    let mut tx = Producer::<A16>::create(&name, &Options::new().capacity(4096)).unwrap();
    let mut rx = Consumer::<A16>::open(&name).unwrap();
    for i in 0..500u64 {
        let v = A16 {
            a: i,
            b: !i,
            c: i as u32,
            _pad: [0; 12],
        };
        if i % 2 == 0 {
            tx.send(&v).unwrap();
        } else {
            tx.send_slice(&[v, v]).unwrap();
        }
        if i % 2 == 0 {
            let m = rx.recv().unwrap();
            assert_eq!(&*m as *const A16 as usize % 16, 0, "message {i}");
            assert_eq!(*m, v);
        } else {
            let m = rx.recv_slice().unwrap();
            assert_eq!(m.as_ptr() as usize % 16, 0, "message {i}");
            assert_eq!(&m[..], &[v, v]);
        }
    }

    let name = TestName::new("typed-a64");
    let mut tx = Producer::<A64>::create(&name, &Options::new().capacity(8192)).unwrap();
    let mut rx = Consumer::<A64>::open(&name).unwrap();
    for i in 0..1000u64 {
        // A record of 8 + 64 + 56 = 128 bytes: the payload moves through every 8-byte
        // offset mod 64 when we alternate with slices of 1..=7 values.
        let vals: Vec<A64> = (0..=(i % 8)).map(|k| A64::of(i * 10 + k)).collect();
        tx.send_slice(&vals).unwrap();
        let m = rx.recv_slice().unwrap();
        assert_eq!(m.as_ptr() as usize % 64, 0, "message {i}");
        assert_eq!(&m[..], &vals[..]);
        drop(m);
        let mut g = tx.reserve().unwrap();
        assert_eq!(&*g as *const A64 as usize % 64, 0);
        *g = A64::of(i);
        g.commit();
        let m = rx.recv().unwrap();
        assert_eq!(&*m as *const A64 as usize % 64, 0, "message {i}");
        assert_eq!(m.a, i);
    }

    // MPMC payloads are 32-aligned: 16 needs no room, 64 does.
    let name = TestName::new("typed-a64-mpmc");
    let tx = Sender::<A64>::create(&name, &Options::new().slots(4)).unwrap();
    let rx = Receiver::<A64>::open(&name).unwrap();
    for i in 0..100u64 {
        tx.send(&A64::of(i)).unwrap();
        let m = rx.recv().unwrap();
        assert_eq!(&*m as *const A64 as usize % 64, 0, "message {i}");
        assert_eq!(*m, A64::of(i));
    }
    let name = TestName::new("typed-a16-mpmc");
    let tx = Sender::<A16>::create(&name, &Options::new().slots(4)).unwrap();
    let rx = Receiver::<A16>::open(&name).unwrap();
    tx.send(&A16 {
        a: 1,
        b: 2,
        c: 3,
        _pad: [0; 12],
    })
    .unwrap();
    let m = rx.recv().unwrap();
    assert_eq!(&*m as *const A16 as usize % 16, 0);
    assert_eq!((m.a, m.b, m.c), (1, 2, 3));
}

fn mismatch<T: std::fmt::Debug>(r: shmlane::Result<T>) -> (String, String) {
    match r {
        Err(Error::TypeMismatch { stored, asked }) => (stored, asked),
        other => panic!("expected TypeMismatch, got {other:?}"),
    }
}

#[test]
fn type_mismatch_spsc() {
    let name = TestName::new("typed-mm");
    let opts = Options::new().capacity(4096).schema(2);
    let _tx = Producer::<Tick>::create(&name, &opts).unwrap();
    // Another type of the same size.
    let (stored, asked) = mismatch(Consumer::<Quote>::open_schema(&name, 2));
    assert!(
        stored.contains("Tick (24 B, align 8, schema 2)"),
        "{stored}"
    );
    assert!(asked.contains("Quote (24 B, align 8, schema 2)"), "{asked}");
    // Another size.
    let (_, asked) = mismatch(Consumer::<A16>::open_schema(&name, 2));
    assert!(asked.contains("(32 B, align 16, schema 2)"), "{asked}");
    // Another schema.
    let (stored, asked) = mismatch(Consumer::<Tick>::open(&name));
    assert!(stored.ends_with("schema 2)") && asked.ends_with("schema 0)"));
    // Untyped endpoints on a typed channel.
    let (stored, asked) = mismatch(spsc::Consumer::open(&name));
    assert!(
        stored.contains("Tick") && asked == "untyped bytes",
        "{asked}"
    );
    mismatch(spsc::Producer::open(&name));
    mismatch(spsc::Consumer::open_timeout(&name, T));
    // The right type and schema open.
    Consumer::<Tick>::open_schema(&name, 2).unwrap();

    // A typed endpoint on an untyped channel.
    let name = TestName::new("typed-mm-untyped");
    let _tx = spsc::Producer::create(&name, &Options::new().capacity(4096)).unwrap();
    let (stored, asked) = mismatch(Consumer::<Tick>::open(&name));
    assert_eq!(stored, "untyped bytes");
    assert!(asked.contains("Tick"));
    // create_or_open of an existing channel checks too.
    mismatch(Producer::<Quote>::create_or_open(&name, &Options::new()));
    // An untyped channel has no schema.
    assert!(matches!(
        spsc::Producer::create(&TestName::new("s"), &Options::new().schema(1)),
        Err(Error::InvalidOptions { .. })
    ));
}

#[test]
fn type_mismatch_mpmc() {
    let name = TestName::new("typed-mm-mpmc");
    let _tx = Sender::<Tick>::create(&name, &Options::new().slots(4)).unwrap();
    mismatch(Receiver::<Quote>::open(&name));
    mismatch(Receiver::<Tick>::open_schema(&name, 1));
    mismatch(Receiver::<[u8; 24]>::open(&name));
    mismatch(mpmc::Receiver::open(&name));
    mismatch(mpmc::Sender::open(&name));
    Receiver::<Tick>::open(&name).unwrap();
    Sender::<Tick>::open(&name).unwrap();

    let name = TestName::new("typed-mm-mpmc-untyped");
    let _tx = mpmc::Sender::create(&name, &Options::new().slots(4)).unwrap();
    mismatch(Receiver::<Tick>::open(&name));
    mismatch(Sender::<Tick>::open(&name));
}

fn poke_u32(name: &TestName, off: u64, v: u32) {
    let f = OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm{}", name.as_str()))
        .unwrap();
    f.write_all_at(&v.to_ne_bytes(), off).unwrap();
}

#[test]
fn corrupt_lengths_are_corrupt() {
    let data = HEADER_SIZE as u64;
    // SPSC: the first record's len field is at the start of the data area.
    for (bad, slice) in [
        (16u32, false),
        (0, false),
        (48, false),
        (20, true),
        (40, true),
    ] {
        let name = TestName::new("typed-corrupt");
        let mut tx = Producer::<Tick>::create(&name, &Options::new().capacity(4096)).unwrap();
        let mut rx = Consumer::<Tick>::open(&name).unwrap();
        tx.send_slice(&[Tick::of(1), Tick::of(2)]).unwrap();
        poke_u32(&name, data, bad);
        let r = if slice {
            rx.recv_slice().map(|s| s.len())
        } else {
            rx.recv().map(|_| 1)
        };
        match r {
            Err(Error::Corrupt { what }) => assert!(what.contains("typed"), "{what}"),
            other => panic!("len {bad}, slice {slice}: expected Corrupt, got {other:?}"),
        }
    }
    let name = TestName::new("typed-corrupt-try");
    let mut tx = Producer::<Tick>::create(&name, &Options::new().capacity(4096)).unwrap();
    let mut rx = Consumer::<Tick>::open(&name).unwrap();
    tx.send(&Tick::of(1)).unwrap();
    poke_u32(&name, data, 8);
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Corrupt { .. })));
    // MPMC: the slot header's len is 24 bytes into the first slot.
    let name = TestName::new("typed-corrupt-mpmc");
    let tx = Sender::<Tick>::create(&name, &Options::new().slots(4)).unwrap();
    let rx = Receiver::<Tick>::open(&name).unwrap();
    tx.send(&Tick::of(1)).unwrap();
    poke_u32(&name, data + 24, 12);
    match rx.recv() {
        Err(Error::Corrupt { what }) => assert!(what.contains("typed"), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    tx.send(&Tick::of(2)).unwrap();
    assert_eq!(rx.recv_copy().unwrap(), Tick::of(2));
}

#[test]
fn random_slices_round_trip() {
    let name = TestName::new("typed-prop");
    let tx = Producer::<A64>::create(&name, &Options::new().capacity(1 << 14)).unwrap();
    let rx = Consumer::<A64>::open(&name).unwrap();
    let max = tx.max_slice_len();
    // The runner's closure is `Fn`: the endpoints live in cells.
    let (tx, rx) = (std::cell::RefCell::new(tx), std::cell::RefCell::new(rx));
    let name2 = TestName::new("typed-prop-mpmc");
    let opts = Options::new().slots(4).max_message(64 * 20);
    let stx = Sender::<u32>::create(&name2, &opts).unwrap();
    let srx = Receiver::<u32>::open(&name2).unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(
        proptest::collection::vec(any::<u64>(), 0..=max.min(40)),
        1..12,
    );
    runner
        .run(&strategy, |batch| {
            for vals in &batch {
                let vals: Vec<A64> = vals.iter().map(|&v| A64::of(v)).collect();
                tx.borrow_mut().send_slice(&vals).unwrap();
                let mut rx = rx.borrow_mut();
                let got = rx.recv_slice().unwrap();
                prop_assert_eq!(got.as_ptr() as usize % 64, 0);
                prop_assert_eq!(&got[..], &vals[..]);
                let small: Vec<u32> = vals.iter().take(20).map(|v| v.a as u32).collect();
                stx.send_slice(&small).unwrap();
                prop_assert_eq!(&srx.recv_slice().unwrap()[..], &small[..]);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn inspect_shows_the_stored_type() {
    let name = TestName::new("typed-inspect");
    let opts = Options::new().capacity(4096).schema(3);
    let _tx = Producer::<Tick>::create(&name, &opts).unwrap();
    let r = shmlane::inspect::inspect(&name).unwrap();
    let ty = r.message_type().unwrap();
    assert!(
        ty.starts_with("typed::Tick (24 B, align 8, schema 3; name hash 0x"),
        "{ty}"
    );
    assert_eq!(r.fields.type_size, Some(24));

    let name = TestName::new("typed-inspect-untyped");
    let _tx = mpmc::Sender::create(&name, &Options::new().slots(4)).unwrap();
    let r = shmlane::inspect::inspect(&name).unwrap();
    assert_eq!(r.message_type().as_deref(), Some("untyped bytes"));
}

/// Child: opens the typed producer of NAME (schema 7) and sends `Tick`s, writing some in
/// place through `reserve`, until it is killed.
#[test]
fn child_typed_producer_forever() {
    if !is_child("child_typed_producer_forever") {
        return;
    }
    let mut tx = Producer::<Tick>::open_schema(&child_arg("NAME"), 7).unwrap();
    println!("attached");
    for seq in 0.. {
        if seq % 2 == 0 {
            tx.send(&Tick::of(seq)).unwrap();
        } else {
            // Killed between reserve and commit, this one is never seen.
            let mut g = tx.reserve().unwrap();
            *g = Tick::of(seq);
            g.commit();
        }
    }
}

/// A typed producer SIGKILLed at random points mid-stream: every value received is
/// intact and in order, the stream ends with `PeerDied` after the last published value,
/// and everything published was read.
#[test]
fn typed_producer_killed_at_random_points() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng(0x7e57_0001);
    for round in 0..6 {
        let name = TestName::new("typed-kill");
        let opts = Options::new().capacity(4096).schema(7);
        let mut rx = Consumer::<Tick>::create(&name, &opts).unwrap();
        let mut child = spawn_child(
            "child_typed_producer_forever",
            &[("NAME", name.to_string())],
        );
        child.expect_line("attached", T);
        let kill_after = 1 + rng.below(20_000);
        let mut next = 0u64;
        let end = loop {
            match rx.recv_timeout(T) {
                Ok(m) => {
                    assert_eq!(
                        *m,
                        Tick::of(next),
                        "round {round}: value {next} torn or out of order"
                    );
                    next += 1;
                    if next == kill_after {
                        let _ = child.kill();
                    }
                }
                Err(e) => break e,
            }
        };
        let _ = child.wait();
        assert!(matches!(end, Error::PeerDied), "round {round}: {end:?}");
        assert!(next >= kill_after, "round {round}: ended at {next}");
        let f = shmlane::inspect::inspect(&name).unwrap().fields;
        assert_eq!(
            f.read_pos, f.write_pos,
            "round {round}: published values left unread"
        );
    }
}
