//! Crash safety: peers killed with SIGKILL at random points. Nothing torn, nothing
//! duplicated or reordered, no hang; a new endpoint can take a dead one's place.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{check, child_arg, fill, is_child, spawn_child, Rng, TestName};
use shmlane::mpmc;
use shmlane::spsc::{Consumer, Producer};
use shmlane::{Error, Options, PeerState, Wait};

/// Runs of the random-kill loops, and a bound on their time.
const RUNS: u32 = 100;
const TIME_BOUND: Duration = Duration::from_secs(60);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn msg_len(seq: u64) -> usize {
    (seq as usize * 7) % 200
}

/// Child: opens the producer and streams messages until it is killed.
#[test]
fn child_producer_forever() {
    if !is_child("child_producer_forever") {
        return;
    }
    let mut tx = Producer::open(&child_arg("NAME")).expect("open producer");
    let mut buf = vec![0u8; 256];
    for seq in 0u64.. {
        let len = msg_len(seq);
        fill(&mut buf[..len], seq);
        if tx.send_tagged(seq as u32, &buf[..len]).is_err() {
            return;
        }
    }
}

/// Drains a consumer: messages must continue the sequence from `next`, intact, until
/// `PeerDied` (its producer is killed). Returns the next expected sequence number (the
/// count received).
fn drain(rx: &mut Consumer, mut next: u64) -> u64 {
    let start = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(m) => {
                assert_eq!(
                    u64::from(m.tag()),
                    next & 0xffff_ffff,
                    "out of order or duplicated"
                );
                assert_eq!(m.len(), msg_len(next), "message {next} torn (length)");
                assert!(check(&m, next), "message {next} torn (bytes)");
                next += 1;
            }
            // A killed producer ends the stream with PeerDied, not the clean Disconnected.
            Err(Error::PeerDied) => return next,
            Err(e) => panic!("after {next} messages: {e}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "draining did not end"
        );
    }
}

#[test]
fn producer_killed_at_random_points() {
    let _s = serial();
    let mut rng = Rng(0x5eed);
    let start = Instant::now();
    let mut runs = 0;
    let mut total = 0;
    while runs < RUNS && start.elapsed() < TIME_BOUND {
        let name = TestName::new("kill-prod");
        let mut rx =
            Consumer::create(&name, &Options::new().capacity(16 << 10).max_message(256)).unwrap();
        let mut child = spawn_child("child_producer_forever", &[("NAME", name.to_string())]);
        // Kill only once it has attached (a producer that never attached is not a
        // disconnect: the consumer would rightly keep waiting for one).
        let t = Instant::now();
        while !matches!(rx.peer(), PeerState::Alive(_)) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the producer never attached"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        let delay = Duration::from_micros(rng.below(20_000));
        // The consumer reads while the producer runs, so the kill lands mid-stream: in the
        // middle of a copy, a publish, or a wait for room.
        let (received, noticed) = std::thread::scope(|s| {
            let reader = s.spawn(|| drain(&mut rx, 0));
            std::thread::sleep(delay);
            let _ = child.kill();
            let killed = Instant::now();
            let _ = child.wait();
            let n = reader.join().expect("reader");
            (n, killed.elapsed())
        });
        assert!(
            noticed < Duration::from_secs(2),
            "dead producer noticed after {noticed:?}"
        );
        // Everything the dead producer published arrived: the consumer has released up to
        // the published write position (nothing left behind the PeerDied).
        let f = shmlane::inspect::inspect(&name).expect("inspect").fields;
        assert_eq!(
            f.read_pos, f.write_pos,
            "after draining {received} messages, published data was left unread"
        );
        total += received;
        runs += 1;
    }
    assert!(runs >= 10, "only {runs} runs in {TIME_BOUND:?}");
    eprintln!("{runs} kills, {total} messages verified");
}

#[test]
fn new_producer_takes_over_from_a_dead_one() {
    let _s = serial();
    let name = TestName::new("takeover");
    let mut rx =
        Consumer::create(&name, &Options::new().capacity(16 << 10).max_message(256)).unwrap();
    let mut child = spawn_child("child_producer_forever", &[("NAME", name.to_string())]);
    // A takeover needs a producer that attached and sent: wait for it to be alive and read
    // the start of its stream, so the kill lands mid-stream (not before the first open).
    let t = Instant::now();
    while !matches!(rx.peer(), PeerState::Alive(_)) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the producer never attached"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    const BEFORE: u64 = 100;
    let mut next = 0u64;
    while next < BEFORE {
        let m = rx.recv_timeout(Duration::from_secs(5)).expect("recv");
        assert_eq!(u64::from(m.tag()), next);
        assert!(
            m.len() == msg_len(next) && check(&m, next),
            "message {next} torn"
        );
        next += 1;
    }
    let _ = child.kill();
    let _ = child.wait();
    // The role is held by a dead process now, not free: this is a takeover.
    assert!(
        matches!(rx.peer(), PeerState::Dead(_)),
        "the killed producer is not seen as dead: {:?}",
        rx.peer()
    );
    // The dead producer's role is free; its partial record (if any) is discarded. The ring
    // may be full, so the new producer sends from a thread while we drain.
    let mut tx = Producer::open(&name).expect("take over the dead producer's role");
    assert!(
        matches!(rx.peer(), PeerState::Alive(_)),
        "the new producer is not the peer: {:?}",
        rx.peer()
    );
    let sender = std::thread::spawn(move || {
        tx.send_tagged_timeout(u32::MAX, b"after", Duration::from_secs(10))
            .unwrap();
    });
    loop {
        let m = rx.recv_timeout(Duration::from_secs(5)).expect("recv");
        if m.tag() == u32::MAX {
            assert_eq!(&m[..], b"after");
            break;
        }
        assert_eq!(u64::from(m.tag()), next);
        assert!(
            m.len() == msg_len(next) && check(&m, next),
            "message {next} torn"
        );
        next += 1;
    }
    assert!(next >= BEFORE, "the dead producer's stream ended at {next}");
    sender.join().unwrap();
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(5)),
        Err(Error::Disconnected)
    ));
}

/// Child: opens the consumer, reads some messages, then holds one until it is killed.
#[test]
fn child_consumer_holds_guard() {
    if !is_child("child_consumer_holds_guard") {
        return;
    }
    let mut rx = Consumer::open(&child_arg("NAME")).expect("open consumer");
    let n: u64 = child_arg("N").parse().unwrap();
    for _ in 0..n {
        drop(rx.recv_timeout(Duration::from_secs(10)).expect("recv"));
    }
    let held = rx.recv_timeout(Duration::from_secs(10)).expect("recv");
    println!("holding {}", held.tag());
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn consumer_killed_holding_a_guard() {
    let _s = serial();
    let mut rng = Rng(7);
    for _ in 0..5 {
        let name = TestName::new("kill-cons");
        let mut tx = Producer::create(
            &name,
            &Options::new()
                .capacity(4096)
                .max_message(64)
                .wait(Wait::Block),
        )
        .unwrap();
        let n = rng.below(100);
        let mut child = spawn_child(
            "child_consumer_holds_guard",
            &[("NAME", name.to_string()), ("N", n.to_string())],
        );
        let mut seq = 0u64;
        // Send until the ring is full behind the held message.
        loop {
            let len = msg_len(seq) % 65;
            let mut buf = vec![0u8; len];
            fill(&mut buf, seq);
            match tx.send_tagged_timeout(seq as u32, &buf, Duration::from_millis(300)) {
                Ok(()) => seq += 1,
                Err(Error::Timeout) => break,
                Err(e) => panic!("send {seq}: {e}"),
            }
            assert!(seq < 1_000_000);
        }
        // The child holds message n (the kill must land while it does).
        let line = child.expect_line("holding", Duration::from_secs(10));
        assert_eq!(
            line,
            format!("holding {n}"),
            "the child holds another message"
        );
        let _ = child.kill();
        let _ = child.wait();
        // Sends go on while there is room; once the ring is full, the blocked send notices
        // the dead consumer within the wait slices.
        let t = Instant::now();
        loop {
            let mut buf = vec![0u8; msg_len(seq) % 65];
            fill(&mut buf, seq);
            match tx.send_tagged_timeout(seq as u32, &buf, Duration::from_secs(5)) {
                Ok(()) => seq += 1,
                Err(Error::PeerDied) => break,
                Err(e) => panic!("expected PeerDied (the consumer was killed), got {e}"),
            }
        }
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            t.elapsed()
        );
        // A new consumer takes over and reads a consecutive, intact run of the stream
        // ending with the last message sent (what the dead one held, or had read but not
        // yet handed back, is delivered again: at-least-once across a consumer crash).
        let mut rx = Consumer::open(&name).expect("take over the dead consumer's role");
        drop(tx);
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let mut next = u64::from(first.tag());
        // It had released 0..n, so the new consumer starts exactly at the held message.
        assert_eq!(
            next, n,
            "the new consumer must start at the message the dead one held"
        );
        drop(first);
        next += 1;
        loop {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(m) => {
                    assert_eq!(u64::from(m.tag()), next);
                    assert!(
                        m.len() == msg_len(next) % 65 && check(&m, next),
                        "message {next} torn"
                    );
                    next += 1;
                }
                Err(Error::Disconnected) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(next, seq, "the stream ends with the last message sent");
    }
}

/// Child: an MPMC sender streaming until killed.
#[test]
fn child_mpmc_sender_forever() {
    if !is_child("child_mpmc_sender_forever") {
        return;
    }
    let tx = mpmc::Sender::open(&child_arg("NAME")).expect("open sender");
    let id: u32 = child_arg("ID").parse().unwrap();
    for seq in 0u64.. {
        let mut m = [0u8; 32];
        m[..4].copy_from_slice(&id.to_le_bytes());
        m[4..12].copy_from_slice(&seq.to_le_bytes());
        fill(&mut m[12..], seq);
        // Every other message through a grant held for a moment, so that many kills land
        // between claim and publish (the slot the receivers must skip and count as lost).
        if seq % 2 == 0 {
            if tx.send_tagged(id, &m).is_err() {
                return;
            }
            continue;
        }
        let Ok(mut g) = tx.reserve(m.len()) else {
            return;
        };
        for (i, b) in m.iter().enumerate() {
            g[i] = *b;
            for _ in 0..50 {
                std::hint::spin_loop();
            }
        }
        g.set_tag(id);
        g.commit();
    }
}

#[test]
fn mpmc_senders_killed_mid_stream() {
    let _s = serial();
    let mut rng = Rng(99);
    let start = Instant::now();
    let mut runs = 0;
    let (mut total, mut lost) = (0u64, 0u64);
    while runs < 20 && start.elapsed() < TIME_BOUND {
        let name = TestName::new("kill-mpmc");
        let rx = mpmc::Receiver::create(&name, &Options::new().slots(64).max_message(32)).unwrap();
        let mut kids: Vec<_> = (0..2u32)
            .map(|id| {
                spawn_child(
                    "child_mpmc_sender_forever",
                    &[("NAME", name.to_string()), ("ID", id.to_string())],
                )
            })
            .collect();
        let t = Instant::now();
        while rx.senders() < 2 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the senders never attached"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        // Each sender's stream must arrive whole and in order: 0, 1, 2, ... A killed sender
        // holds at most one claimed slot, its next message, so what it loses (counted in
        // `lost`) comes after its last delivered one, never in the middle. The receiver
        // reads while the senders run, so the kills land mid-send (claimed, not published).
        let delay = Duration::from_micros(rng.below(30_000));
        let received = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut next = [0u64; 2];
                let mut n = 0u64;
                let t = Instant::now();
                loop {
                    match rx.recv_timeout(Duration::from_secs(5)) {
                        Ok(m) => {
                            assert_eq!(m.len(), 32, "message of the wrong length");
                            let id = u32::from_le_bytes(m[..4].try_into().unwrap()) as usize;
                            let seq = u64::from_le_bytes(m[4..12].try_into().unwrap());
                            assert!(id < 2 && m.tag() as usize == id, "bad sender id");
                            assert!(check(&m[12..], seq), "torn message");
                            assert_eq!(
                                seq, next[id],
                                "sender {id}: message {seq} after {} (gap, duplicate or reorder)",
                                next[id]
                            );
                            next[id] += 1;
                            n += 1;
                        }
                        // Both senders were killed: a crash, not a clean end.
                        Err(Error::PeerDied) => return n,
                        Err(e) => panic!("{e}"),
                    }
                    assert!(
                        t.elapsed() < Duration::from_secs(30),
                        "draining did not end"
                    );
                }
            });
            std::thread::sleep(delay);
            for k in &mut kids {
                let _ = k.kill();
                let _ = k.wait();
            }
            reader.join().expect("reader")
        });
        total += received;
        // At most one claimed slot per killed sender is skipped and counted.
        assert!(rx.lost() <= 2, "lost {} with 2 senders killed", rx.lost());
        lost += rx.lost();
        runs += 1;
    }
    assert!(runs >= 5);
    assert!(total > 0, "no message went through in {runs} runs");
    eprintln!("{runs} runs, {total} messages verified, {lost} lost to kills");
}

/// Child: an MPMC receiver that takes one message and is killed holding it.
#[test]
fn child_mpmc_receiver_holds() {
    if !is_child("child_mpmc_receiver_holds") {
        return;
    }
    let rx = mpmc::Receiver::open(&child_arg("NAME")).expect("open receiver");
    let held = rx.recv_timeout(Duration::from_secs(10)).expect("recv");
    println!("holding {}", held[0]);
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn mpmc_receiver_killed_holding_a_slot() {
    let _s = serial();
    let name = TestName::new("kill-mpmc-rx");
    let tx = mpmc::Sender::create(&name, &Options::new().slots(4).max_message(8)).unwrap();
    let rx = mpmc::Receiver::open(&name).unwrap();
    let mut child = spawn_child("child_mpmc_receiver_holds", &[("NAME", name.to_string())]);
    tx.send(&[0]).unwrap();
    // Wait until the child has taken message 0.
    let t = Instant::now();
    while !rx.is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        child.expect_line("holding", Duration::from_secs(10)),
        "holding 0"
    );
    let _ = child.kill();
    let _ = child.wait();
    // Fill the ring: the slot the dead receiver held is reclaimed when a sender needs it.
    for i in 1..=4u8 {
        tx.send_timeout(&[i], Duration::from_secs(5))
            .expect("send reclaims the dead receiver's slot");
    }
    for i in 1..=4u8 {
        assert_eq!(&rx.recv_timeout(Duration::from_secs(5)).unwrap()[..], &[i]);
    }
    assert_eq!(rx.lost(), 1, "the held message counts as lost");
}
