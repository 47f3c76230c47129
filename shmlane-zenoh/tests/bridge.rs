//! The bridge end to end, over loopback only: `out` and `in` are real processes (this
//! crate's binary); the local producer and consumer are either `shmlane cat` processes
//! (the 50 MB pipeline) or the library in this test process (where a test needs tags,
//! exact message boundaries or a view of how far the producer got).

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use shmlane::spsc::{Consumer, Producer};
use shmlane::Options;

/// The `shmlane` CLI built in the same target directory as this crate's binary (a
/// workspace `cargo test` builds it), or None.
fn shmlane_cli() -> Option<std::path::PathBuf> {
    let me = std::path::Path::new(env!("CARGO_BIN_EXE_shmlane-zenoh"));
    let p = me.parent()?.join("shmlane");
    p.exists().then_some(p)
}

/// `shmlane cat --to /a < file | out | in | shmlane cat --from /b > copy` with 50 MB of
/// random bytes: the copy is byte-identical and all four exit 0.
#[test]
fn pipeline_of_four_processes_copies_50_mb_exactly() {
    let Some(cli) = shmlane_cli() else {
        let why = "the `shmlane` binary is not built next to shmlane-zenoh (run `cargo test` at the workspace root, or `cargo build --bin shmlane` first)";
        assert!(!in_ci(), "skipped under CI: {why}");
        eprintln!("SKIP: {why}");
        return;
    };
    let dir = TempDir::new("pipeline");
    let seed = seed();
    eprintln!("seed {seed}");
    let input = dir.0.join("input");
    let copy = dir.0.join("copy");
    let mut data = vec![0u8; 50 << 20];
    Rng(seed).fill(&mut data);
    std::fs::write(&input, &data).unwrap();
    let (a, b, key) = (TestName::new("pa"), TestName::new("pb"), key("pipeline"));
    let ep = tcp_endpoint("");

    let mut inb = inn(&b, &key, &["--listen", &ep, "--capacity", "4M"]);
    let mut cat_from = {
        let mut c = Command::new(&cli);
        c.args(["cat", "--from", &b, "--wait-for", "60"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&copy).unwrap());
        Proc::spawn("cat --from", c)
    };
    let mut outa = out(&a, &key, &["--connect", &ep]);
    let mut cat_to = {
        let mut c = Command::new(&cli);
        c.args(["cat", "--to", &a, "--capacity", "4M", "--wait-for", "60"])
            .stdin(std::fs::File::open(&input).unwrap())
            .stdout(Stdio::null());
        Proc::spawn("cat --to", c)
    };
    cat_to.expect_success();
    outa.expect_success();
    inb.expect_success();
    cat_from.expect_success();
    let got = std::fs::read(&copy).unwrap();
    assert_eq!(got.len(), data.len(), "copy length");
    assert!(got == data, "the copy differs from the input");
    assert!(inb.stderr().contains("gaps: 0 "), "{}", inb.stderr());
}

/// The body of message `i` of a stream seeded with `seed`: its length and bytes.
fn body(seed: u64, i: u64, max: usize) -> Vec<u8> {
    let mut r = Rng(seed ^ (i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
    let len = match r.next() % 16 {
        0 => 0,
        1 => max,
        _ => (r.next() % 4097) as usize,
    };
    let mut v = vec![0u8; len];
    r.fill(&mut v);
    v
}

fn tag(seed: u64, i: u64) -> u32 {
    (Rng(seed.rotate_left(17) ^ i | 1).next() >> 32) as u32
}

/// Messages of random sizes (0 and the max included) and random tags, over a unix socket,
/// with `out` started before `in`: every one arrives with its tag and exact length, in order, then Disconnected.
#[test]
fn tags_and_message_boundaries_cross() {
    const N: u64 = 20_000;
    let seed = seed();
    eprintln!("seed {seed}");
    let dir = TempDir::new("tagged");
    let ep = format!("unixsock-stream/{}", dir.0.join("z.sock").display());
    let (a, b, key) = (TestName::new("ta"), TestName::new("tb"), key("tagged"));
    let opts = Options::new().capacity(1 << 20).max_message(64 << 10);
    let max = 64 << 10;
    let mut tx = Producer::create(&a, &opts).unwrap();
    // The start-up race: `out` starts first and finds messages in its ring with nobody to
    // publish them to (`in` is not even listening yet); it must not publish into the void.
    let mut outa = out(&a, &key, &["--connect", &ep]);
    let producer = std::thread::spawn(move || {
        for i in 0..N {
            tx.send_tagged(tag(seed, i), &body(seed, i, max)).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut inb = inn(
        &b,
        &key,
        &["--listen", &ep, "--capacity", "1M", "--max-message", "64K"],
    );
    let b2 = b.0.clone();
    let reader = std::thread::spawn(move || {
        let mut rx = Consumer::open_timeout(&b2, LIMIT).unwrap();
        let mut i = 0u64;
        loop {
            match rx.recv_timeout(LIMIT) {
                Ok(m) => {
                    assert_eq!(m.tag(), tag(seed, i), "tag of message {i}");
                    let want = body(seed, i, max);
                    assert_eq!(m.len(), want.len(), "length of message {i}");
                    assert!(m[..] == want[..], "bytes of message {i}");
                    i += 1;
                }
                Err(shmlane::Error::Disconnected) => return i,
                Err(e) => panic!("after {i} messages: {e}"),
            }
        }
    });
    // The reader first: if it fails, the producer may be blocked for good (its ring full,
    // nobody draining it); the test fails at once and the bridges are killed on drop.
    assert_eq!(reader.join().expect("the reader failed"), N);
    producer.join().unwrap();
    outa.expect_success();
    inb.expect_success();
    assert!(
        inb.stderr().contains(&format!("{N} messages")),
        "{}",
        inb.stderr()
    );
    assert!(inb.stderr().contains("gaps: 0 "), "{}", inb.stderr());
}

/// Message `i` of a numbered stream: `i` in the first 8 bytes, then filler.
fn numbered(i: u64, len: usize) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; len];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

fn number_of(m: &[u8]) -> u64 {
    u64::from_le_bytes(m[..8].try_into().unwrap())
}

/// The far reader sleeps a second mid-stream: nothing is lost, and meanwhile the near
/// producer gets no further ahead than the two rings, zenoh's queue and the (pinned)
/// socket buffers hold.
#[test]
fn a_slow_far_reader_holds_the_near_producer_back() {
    const MSG: usize = 4096;
    const N: u64 = 8192; // 32 MiB
    const CAP: usize = 64 << 10;
    const SOCKBUF: usize = 64 << 10;
    let (a, b, key) = (
        TestName::new("ba"),
        TestName::new("bb"),
        key("backpressure"),
    );
    // Fixed socket buffers (no autotuning up to tens of MB), so the bound is known.
    let ep = tcp_endpoint(&format!("#so_sndbuf={SOCKBUF};so_rcvbuf={SOCKBUF}"));
    let opts = Options::new().capacity(CAP).max_message(8 << 10);
    let mut tx = Producer::create(&a, &opts).unwrap();
    let mut inb = inn(
        &b,
        &key,
        &["--listen", &ep, "--capacity", "64K", "--max-message", "8K"],
    );
    let mut outa = out(&a, &key, &["--connect", &ep]);
    let sent = Arc::new(AtomicU64::new(0));
    let s2 = Arc::clone(&sent);
    let producer = std::thread::spawn(move || {
        for i in 0..N {
            tx.send(&numbered(i, MSG)).unwrap();
            s2.store(i + 1, Ordering::SeqCst);
        }
    });
    let mut rx = Consumer::open_timeout(&b, LIMIT).unwrap();
    let mut next = 0u64;
    let mut ahead = None;
    loop {
        match rx.recv_timeout(LIMIT) {
            Ok(m) => {
                assert_eq!(m.len(), MSG);
                assert_eq!(number_of(&m), next, "message out of order or lost");
                next += 1;
            }
            Err(shmlane::Error::Disconnected) => break,
            Err(e) => panic!("after {next} messages: {e}"),
        }
        if next == N / 4 {
            std::thread::sleep(Duration::from_secs(1));
            ahead = Some(sent.load(Ordering::SeqCst) - next);
        }
    }
    producer.join().unwrap();
    outa.expect_success();
    inb.expect_success();
    assert_eq!(next, N, "every message arrived");
    // What may sit between the producer and this reader: ring /a and ring /b, a message
    // in `out`'s hands and one in `in`'s, zenoh's data queue (2 batches of 64 KiB), the
    // receiving side's read buffer (64 KiB), and both sockets' buffers (the kernel
    // doubles the asked size, and a loopback pair has a send and a receive buffer).
    let bound = 2 * CAP + 2 * MSG + 2 * 65_535 + 65_535 + 2 * 2 * 2 * SOCKBUF;
    let ahead = ahead.unwrap() * MSG as u64;
    eprintln!("the producer ran {ahead} bytes ahead of the sleeping reader (bound {bound})");
    assert!(
        ahead <= bound as u64,
        "the producer ran {ahead} bytes ahead of a sleeping reader, more than the {bound} the rings and queues hold: it was not held back"
    );
    assert!(inb.stderr().contains("gaps: 0 "), "{}", inb.stderr());
}

/// With `--drop` (zenoh's lossy congestion control) a stalled far reader does not hold
/// the near producer back: it sends its whole stream while the reader sleeps (in `Block`
/// mode it could not get further than the rings and queues hold, see the test above).
/// What arrives is in order without duplicates, `in` counts and logs the holes (exactly
/// the messages that did not arrive), and the stream still ends cleanly: the end marker
/// crosses, both bridges exit 0, the reader sees Disconnected.
#[test]
fn with_drop_a_stalled_far_reader_does_not_hold_the_producer_back() {
    const MSG: usize = 4096;
    const N: u64 = 8192; // 32 MiB, 256 times what the rings and queues hold
    const CAP: usize = 64 << 10;
    const SOCKBUF: usize = 64 << 10;
    let (a, b, key) = (TestName::new("da"), TestName::new("db"), key("drop"));
    let ep = tcp_endpoint(&format!("#so_sndbuf={SOCKBUF};so_rcvbuf={SOCKBUF}"));
    let opts = Options::new().capacity(CAP).max_message(8 << 10);
    let mut tx = Producer::create(&a, &opts).unwrap();
    let mut inb = inn(
        &b,
        &key,
        &["--listen", &ep, "--capacity", "64K", "--max-message", "8K"],
    );
    let mut outa = {
        let mut c = bridge();
        c.args(["out", "--ring", &a, "--key", &key, "--wait-for", "60"])
            .args(["--connect", &ep, "--drop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        Proc::spawn("out --drop", c)
    };
    let sent = Arc::new(AtomicU64::new(0));
    let s2 = Arc::clone(&sent);
    let producer = std::thread::spawn(move || {
        for i in 0..N {
            tx.send(&numbered(i, MSG)).unwrap();
            s2.store(i + 1, Ordering::SeqCst);
        }
    });
    let mut rx = Consumer::open_timeout(&b, LIMIT).unwrap();
    // The first message: the whole path is up (`out` publishes only once `in` matches).
    let first = number_of(&rx.recv_timeout(LIMIT).expect("the first message"));
    let mut got = vec![first];
    // Stall. The producer must get through its whole stream meanwhile; give it long
    // enough that only a held-back producer misses it (not a measure of speed: a
    // `Block` producer stops for good at a few hundred KiB).
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent.load(Ordering::SeqCst) < N && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = sent.load(Ordering::SeqCst);
    let held = rx.pending_bytes();
    assert_eq!(
        done, N,
        "the producer sent {done} of {N} messages while the far reader stalled (its ring holding {held} bytes): with --drop it must not be held back"
    );
    producer.join().unwrap();
    loop {
        match rx.recv_timeout(LIMIT) {
            Ok(m) => {
                assert_eq!(m.len(), MSG);
                got.push(number_of(&m));
            }
            Err(shmlane::Error::Disconnected) => break,
            Err(e) => panic!("after {} messages: {e}", got.len()),
        }
    }
    outa.expect_success();
    inb.expect_success();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "messages out of order or duplicated"
    );
    let lost = N - got.len() as u64;
    let err = inb.stderr();
    eprintln!(
        "{} of {N} messages arrived, {lost} dropped; in said: {err}",
        got.len()
    );
    assert!(
        lost > 0,
        "nothing was dropped: the far side was not stalled?"
    );
    assert!(
        err.contains("message(s) missing"),
        "in did not log the holes: {err}"
    );
    assert!(
        err.contains(&format!("{} messages (", got.len()))
            && err.contains(&format!(
                "({lost} messages known missing, 0 `out` restarts)"
            )),
        "in's counts do not match what arrived: {err}"
    );
}

/// `out` is SIGKILLed mid-stream and started again: `in` reports the gap (an `out`
/// restart without an end marker), what arrives stays in order without duplicates, and
/// the stream goes on to its end.
#[test]
fn sigkilled_out_restarts_and_in_reports_the_gap() {
    const MSG: usize = 1024;
    const N: u64 = 20_000;
    let (a, b, key) = (TestName::new("ka"), TestName::new("kb"), key("sigkill"));
    let ep = tcp_endpoint("");
    let opts = Options::new().capacity(64 << 10);
    let mut tx = Producer::create(&a, &opts).unwrap();
    let mut inb = inn(&b, &key, &["--listen", &ep, "--capacity", "64K"]);
    let mut out1 = out(&a, &key, &["--connect", &ep]);
    // The producer keeps going across the kill: while no live consumer is attached to /a
    // (the old `out` is dead, the new one not yet there) its send says PeerDied at once;
    // it retries until the new `out` has taken over.
    let producer = std::thread::spawn(move || {
        let deadline = Instant::now() + LIMIT;
        for i in 0..N {
            let msg = numbered(i, MSG);
            loop {
                match tx.send(&msg) {
                    Ok(()) => break,
                    Err(shmlane::Error::PeerDied) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("sending message {i}: {e}"),
                }
            }
        }
    });
    let mut rx = Consumer::open_timeout(&b, LIMIT).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + LIMIT;
    let mut out2 = None;
    loop {
        match rx.recv_timeout(LIMIT) {
            Ok(m) => got.push(number_of(&m)),
            Err(shmlane::Error::Disconnected) => break,
            Err(e) => panic!("after {} messages: {e}", got.len()),
        }
        if got.len() == 2_000 && out2.is_none() {
            out1.kill();
            // Long enough for the producer to notice the dead consumer (~100 ms), as a
            // restart by hand or by a supervisor would be.
            std::thread::sleep(Duration::from_millis(300));
            out2 = Some(out(&a, &key, &["--connect", &ep]));
        }
        assert!(Instant::now() < deadline, "the stream did not end in time");
    }
    producer.join().unwrap();
    let mut out2 = out2.expect("out was restarted");
    out2.expect_success();
    inb.expect_success();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "messages out of order or duplicated"
    );
    assert_eq!(got.last(), Some(&(N - 1)), "the stream went on to its end");
    let lost = N - got.len() as u64;
    let err = inb.stderr();
    eprintln!("{lost} messages lost at the kill; in said: {err}");
    assert!(err.contains("gap: `out` restarted"), "{err}");
    assert!(
        err.contains("gaps: 1 ") && err.contains("1 `out` restarts"),
        "{err}"
    );
}
