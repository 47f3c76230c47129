//! MPMC: exactly-once delivery across processes and threads, disconnect, bad input.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use common::{child_arg, is_child, spawn_child, wait_child, TestName};
use shmlane::mpmc::{Receiver, Sender};
use shmlane::{Error, Options, TryRecvError, TrySendError, Wait};

const SENDERS: u32 = 3;
const RECEIVERS: u32 = 3;
const PER_SENDER: u32 = 100_000;

static SERIAL: Mutex<()> = Mutex::new(());

fn encode(sender: u32, seq: u32) -> [u8; 24] {
    let mut m = [0u8; 24];
    m[..4].copy_from_slice(&sender.to_le_bytes());
    m[4..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in m[8..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8);
    }
    m
}

fn decode(m: &[u8]) -> (u32, u32) {
    assert_eq!(m.len(), 24, "message length");
    let sender = u32::from_le_bytes(m[..4].try_into().unwrap());
    let seq = u32::from_le_bytes(m[4..8].try_into().unwrap());
    assert_eq!(m, &encode(sender, seq)[..], "message bytes");
    (sender, seq)
}

/// Receives until Disconnected, checking per-sender order; returns (sender, seq) pairs.
fn receive_all(rx: &Receiver) -> Vec<(u32, u32)> {
    let mut got = Vec::new();
    let mut last: Vec<Option<u32>> = vec![None; SENDERS as usize];
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(m) => {
                let (s, q) = decode(&m);
                assert_eq!(m.tag(), s, "tag");
                if let Some(prev) = last[s as usize] {
                    assert!(q > prev, "sender {s}: {q} after {prev} at one receiver");
                }
                last[s as usize] = Some(q);
                got.push((s, q));
            }
            Err(Error::Disconnected) => return got,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn check_exactly_once(all: impl IntoIterator<Item = (u32, u32)>) {
    let mut seen = HashSet::new();
    let mut n = 0u64;
    for id in all {
        assert!(seen.insert(id), "message {id:?} received twice");
        n += 1;
    }
    assert_eq!(n, u64::from(SENDERS * PER_SENDER), "messages received");
}

#[test]
fn child_sender() {
    if !is_child("child_sender") {
        return;
    }
    let tx = Sender::open(&child_arg("NAME")).expect("open sender");
    let id: u32 = child_arg("ID").parse().unwrap();
    for seq in 0..PER_SENDER {
        tx.send_tagged_timeout(id, &encode(id, seq), Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("sender {id} seq {seq}: {e}"));
    }
}

#[test]
fn child_receiver() {
    if !is_child("child_receiver") {
        return;
    }
    let rx = Receiver::open(&child_arg("NAME")).expect("open receiver");
    let got = receive_all(&rx);
    let mut out = Vec::with_capacity(got.len() * 8);
    for (s, q) in got {
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&q.to_le_bytes());
    }
    std::fs::write(child_arg("OUT"), out).expect("write results");
}

#[test]
fn exactly_once_across_processes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = TestName::new("mpmc-xproc");
    let opts = Options::new().slots(1024).max_message(64).wait(Wait::Block);
    // The parent's sender keeps the channel "connected" until every sender child is done.
    let keep = Sender::create(&name, &opts).expect("create");
    let outs: Vec<_> = (0..RECEIVERS)
        .map(|r| std::env::temp_dir().join(format!("shmlane-test-{}-rx{r}", std::process::id())))
        .collect();
    let receivers: Vec<_> = outs
        .iter()
        .map(|out| {
            spawn_child(
                "child_receiver",
                &[
                    ("NAME", name.to_string()),
                    ("OUT", out.display().to_string()),
                ],
            )
        })
        .collect();
    let senders: Vec<_> = (0..SENDERS)
        .map(|id| {
            spawn_child(
                "child_sender",
                &[("NAME", name.to_string()), ("ID", id.to_string())],
            )
        })
        .collect();
    for s in senders {
        assert!(
            wait_child(s, Duration::from_secs(120)).success(),
            "a sender failed"
        );
    }
    drop(keep);
    for r in receivers {
        assert!(
            wait_child(r, Duration::from_secs(120)).success(),
            "a receiver failed"
        );
    }
    let mut all = Vec::new();
    for out in &outs {
        let bytes = std::fs::read(out).expect("receiver results");
        let _ = std::fs::remove_file(out);
        for c in bytes.chunks_exact(8) {
            all.push((
                u32::from_le_bytes(c[..4].try_into().unwrap()),
                u32::from_le_bytes(c[4..].try_into().unwrap()),
            ));
        }
    }
    check_exactly_once(all);
}

#[test]
fn exactly_once_across_threads() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = TestName::new("mpmc-threads");
    let tx = Sender::create(&name, &Options::new().slots(256).max_message(24)).expect("create");
    let rx = Receiver::open(&name).expect("open");
    let per = PER_SENDER / 4;
    let all = std::thread::scope(|s| {
        let receivers: Vec<_> = (0..RECEIVERS)
            .map(|_| {
                let rx = rx.clone();
                s.spawn(move || receive_all(&rx))
            })
            .collect();
        for id in 0..SENDERS {
            let tx = tx.clone();
            s.spawn(move || {
                for seq in 0..per {
                    tx.send_tagged(id, &encode(id, seq)).unwrap();
                }
            });
        }
        drop(tx);
        drop(rx);
        receivers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let mut seen = HashSet::new();
    for id in &all {
        assert!(seen.insert(*id), "{id:?} twice");
    }
    assert_eq!(all.len() as u32, SENDERS * per);
}

#[test]
fn zero_copy_grant_tags_and_cancel() {
    let name = TestName::new("mpmc-grant");
    let tx = Sender::create(&name, &Options::new().slots(8).max_message(100)).unwrap();
    let rx = Receiver::open(&name).unwrap();
    let mut g = tx.reserve(100).unwrap();
    g.copy_from_slice(&[1u8; 100]);
    g.set_tag(9);
    g.commit();
    drop(tx.reserve(5).unwrap()); // cancelled: nothing sent
    tx.send_tagged(2, b"job").unwrap();
    let m = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((&m[..], m.tag()), (&[1u8; 100][..], 9));
    drop(m);
    let m = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((&m[..], m.tag()), (&b"job"[..], 2));
    drop(m);
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
}

#[test]
fn full_empty_timeout_and_too_large() {
    let name = TestName::new("mpmc-full");
    let tx = Sender::create(&name, &Options::new().slots(4).max_message(8)).unwrap();
    let rx = Receiver::open(&name).unwrap();
    for i in 0..4u8 {
        tx.try_send(&[i]).unwrap();
    }
    assert!(matches!(tx.try_send(b"x"), Err(TrySendError::Full)));
    assert!(matches!(
        tx.send_timeout(b"x", Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert!(matches!(
        tx.send(&[0u8; 9]),
        Err(Error::MessageTooLarge { len: 9, max: 8 })
    ));
    assert!(matches!(
        tx.try_send(&[0u8; 9]),
        Err(TrySendError::TooLarge { len: 9, max: 8 })
    ));
    for i in 0..4u8 {
        assert_eq!(&rx.try_recv().unwrap()[..], &[i]);
    }
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
}

#[test]
fn disconnect_both_ways() {
    let name = TestName::new("mpmc-disc");
    let tx = Sender::create(&name, &Options::new().slots(8).max_message(8)).unwrap();
    let rx = Receiver::open(&name).unwrap();
    let tx2 = tx.clone();
    tx.send(b"a").unwrap();
    tx2.send(b"b").unwrap();
    drop(tx);
    drop(tx2);
    assert_eq!(&rx.recv_timeout(Duration::from_secs(5)).unwrap()[..], b"a");
    assert_eq!(&rx.recv_timeout(Duration::from_secs(5)).unwrap()[..], b"b");
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(5)),
        Err(Error::Disconnected)
    ));
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));

    let name = TestName::new("mpmc-disc2");
    let rx = Receiver::create(&name, &Options::new().slots(8).max_message(8)).unwrap();
    let tx = Sender::open(&name).unwrap();
    drop(rx);
    assert!(matches!(tx.send(b"x"), Err(Error::Disconnected)));
}

#[test]
fn wrong_kind_is_refused() {
    let name = TestName::new("mpmc-kind");
    let _tx = Sender::create(&name, &Options::new()).unwrap();
    assert!(matches!(
        shmlane::spsc::Consumer::open(&name),
        Err(Error::KindMismatch {
            found: "mpmc",
            expected: "spsc",
            ..
        })
    ));
    let name2 = TestName::new("mpmc-kind2");
    let _p = shmlane::spsc::Producer::create(&name2, &Options::new()).unwrap();
    assert!(matches!(
        Receiver::open(&name2),
        Err(Error::KindMismatch {
            found: "spsc",
            expected: "mpmc",
            ..
        })
    ));
}

#[test]
fn dead_sender_mid_message_is_skipped() {
    if is_child("dead_sender_mid_message_is_skipped") {
        let tx = Sender::open(&child_arg("NAME")).unwrap();
        tx.send(b"before").unwrap();
        let g = tx.reserve(8).unwrap();
        std::mem::forget(g); // claimed, never published
        std::mem::forget(tx);
        std::process::exit(0);
    }
    let name = TestName::new("mpmc-dead");
    let rx = Receiver::create(&name, &Options::new().slots(8).max_message(8)).unwrap();
    let child = spawn_child(
        "dead_sender_mid_message_is_skipped",
        &[("NAME", name.to_string())],
    );
    assert!(wait_child(child, Duration::from_secs(30)).success());
    let tx = Sender::open(&name).unwrap();
    tx.send(b"after").unwrap();
    assert_eq!(
        &rx.recv_timeout(Duration::from_secs(5)).unwrap()[..],
        b"before"
    );
    // The dead child's claimed slot sits in front of "after": it must be skipped.
    let start = std::time::Instant::now();
    assert_eq!(
        &rx.recv_timeout(Duration::from_secs(5)).unwrap()[..],
        b"after"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(rx.lost(), 1);
}
