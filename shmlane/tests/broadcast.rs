//! Issue #13: broadcast rings. One publisher, many subscribers, each sees every message;
//! late joiners, slow, lapped, evicted, crashed subscribers and a crashed publisher.
//! Cross-process tests run subscribers (or the publisher) as child processes of this
//! test binary.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{child_arg, is_child, spawn_child, wait_child, Rng, TestName};
use shmlane::broadcast::{Overflow, Publisher, StartAt, Subscriber};
use shmlane::{Backing, Error, Options, TrySendError, Wait};

/// Cross-process tests spin on two cores: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const MAX: usize = 300;

/// A file that tells a waiting child to go on (outside /dev/shm).
fn go_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}-go", name.trim_start_matches('/')))
}

/// Message `i` of the stream with `seed`: its length, tag and bytes.
fn message(seed: u64, i: u64, buf: &mut Vec<u8>) -> u32 {
    let mut rng = Rng(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x1234_5678);
    rng.next();
    let len = rng.below(MAX as u64 + 1) as usize;
    buf.clear();
    buf.extend((0..len).map(|_| rng.next() as u8));
    rng.next() as u32
}

/// Checks that `got` (bytes, tag, position) is message `i`.
fn expect(seed: u64, i: u64, bytes: &[u8], tag: u32, pos: u64, scratch: &mut Vec<u8>) {
    let want_tag = message(seed, i, scratch);
    assert_eq!(pos, i, "position of message {i}");
    assert_eq!(tag, want_tag, "tag of message {i}");
    assert!(
        bytes == &scratch[..],
        "bytes of message {i} differ (len {} vs {})",
        bytes.len(),
        scratch.len()
    );
}

fn publish(p: &mut Publisher, seed: u64, range: std::ops::Range<u64>) {
    let mut buf = Vec::new();
    for i in range {
        let tag = message(seed, i, &mut buf);
        if i % 3 == 0 {
            let mut g = p.reserve(buf.len()).expect("reserve");
            g.copy_from_slice(&buf);
            g.set_tag(tag);
            g.commit();
        } else {
            p.send_tagged(tag, &buf).expect("send");
        }
    }
}

// ---------------------------------------------------------------- same process

#[test]
fn every_subscriber_sees_every_message() {
    let name = TestName::new("bc-basic");
    let opts = Options::new().capacity(4096).max_message(MAX);
    let mut p = Publisher::create(&name, &opts).unwrap();
    let mut a = Subscriber::open(&name, StartAt::Oldest).unwrap();
    let mut b = Subscriber::open(&name, StartAt::Latest).unwrap();
    assert_eq!(p.subscribers(), 2);
    let mut scratch = Vec::new();
    // Interleaved so the ring wraps many times while both keep up.
    for round in 0..200u64 {
        publish(&mut p, 7, round * 5..round * 5 + 5);
        for s in [&mut a, &mut b] {
            for i in round * 5..round * 5 + 5 {
                let m = s.recv().unwrap();
                let (tag, pos) = (m.tag(), m.position());
                let bytes = m.to_vec();
                expect(7, i, &bytes, tag, pos, &mut scratch);
            }
            assert!(matches!(s.try_recv(), Err(Error::Empty)));
            assert_eq!(s.lag(), 0);
        }
    }
    drop(p);
    assert!(matches!(a.recv(), Err(Error::Disconnected)));
    assert!(matches!(b.try_recv(), Err(Error::Disconnected)));
}

#[test]
fn late_joiners_start_oldest_or_latest() {
    let name = TestName::new("bc-join");
    let opts = Options::new().capacity(4096).max_message(64);
    let mut p = Publisher::create(&name, &opts).unwrap();
    for i in 0..10u64 {
        p.send_tagged(i as u32, &i.to_ne_bytes()).unwrap();
    }
    let mut old = Subscriber::open(&name, StartAt::Oldest).unwrap();
    let mut new = Subscriber::open(&name, StartAt::Latest).unwrap();
    assert!(matches!(new.try_recv(), Err(Error::Empty)));
    p.send_tagged(10, b"ten").unwrap();
    assert_eq!(old.recv().unwrap().position(), 0);
    let m = new.recv().unwrap();
    assert_eq!((m.position(), m.tag(), &m[..]), (10, 10, &b"ten"[..]));
    assert_eq!(old.lag(), 9 * 32 + 32);
    let mut buf = [0u8; 8];
    assert_eq!(old.recv_into(&mut buf).unwrap(), (1, 8));
    assert_eq!(u64::from_ne_bytes(buf), 1);
    let mut small = [0u8; 2];
    assert!(matches!(
        old.recv_into(&mut small),
        Err(Error::MessageTooLarge { len: 8, max: 2 })
    ));
    // Left in place.
    assert_eq!(old.recv().unwrap().position(), 2);
}

#[test]
fn block_mode_fills_and_frees() {
    let name = TestName::new("bc-full");
    let opts = Options::new()
        .capacity(256)
        .max_message(32)
        .evict_after(Duration::from_secs(60));
    let mut p = Publisher::create(&name, &opts).unwrap();
    let mut s = Subscriber::open(&name, StartAt::Oldest).unwrap();
    let mut sent = 0u64;
    loop {
        match p.try_send(&sent.to_ne_bytes()) {
            Ok(()) => sent += 1,
            Err(TrySendError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    // 256 bytes, 32 per record, 16 for the stub.
    assert_eq!(sent, 7);
    assert!(matches!(
        p.send_tagged_timeout(0, b"x", Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    for i in 0..sent {
        assert_eq!(s.recv().unwrap()[..], i.to_ne_bytes());
    }
    p.try_send(b"again").unwrap();
    assert_eq!(&s.recv().unwrap()[..], b"again");
    // Without subscribers a Block publisher never waits.
    drop(s);
    for _ in 0..100 {
        p.try_send(b"nobody listens").unwrap();
    }
}

#[test]
fn lap_mode_counts_exactly_what_was_missed() {
    let name = TestName::new("bc-lap");
    let opts = Options::new()
        .capacity(1024)
        .max_message(MAX)
        .overflow(Overflow::Lap);
    let mut p = Publisher::create(&name, &opts).unwrap();
    let mut s = Subscriber::open(&name, StartAt::Oldest).unwrap();
    let mut scratch = Vec::new();
    let mut next = 0u64;
    let mut sent = 0u64;
    let mut laps = 0;
    for round in 0..300u64 {
        // Publish a random amount (sometimes more than the ring holds), then read some.
        let n = round % 17;
        publish(&mut p, 3, sent..sent + n);
        sent += n;
        for _ in 0..(round % 5) {
            match s.try_recv() {
                Ok(m) => {
                    let (tag, pos, bytes) = (m.tag(), m.position(), m.to_vec());
                    expect(3, next, &bytes, tag, pos, &mut scratch);
                    next += 1;
                }
                Err(Error::Lapped { missed }) => {
                    laps += 1;
                    assert!(missed > 0);
                    next += missed;
                    assert_eq!(s.next_position(), next);
                }
                Err(Error::Empty) => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(laps > 5, "only {laps} laps");
    assert!(next <= sent);
}

/// Where the messages of a stream land in a broadcast ring of `cap` bytes, and where its
/// frontier is: the ring's documented rules (16-byte header, payload padded to 16, no
/// record wraps; before a record overwrites bytes at or above the frontier, the frontier
/// moves to the next multiple of the step, or to the write position if that is lower).
struct Layout {
    cap: u64,
    step: u64,
    write: u64,
    frontier: u64,
    /// Per message: (padding start or record start, record start).
    spans: Vec<(u64, u64)>,
}

impl Layout {
    fn push(&mut self, len: usize) {
        let rec = 16 + len.next_multiple_of(16) as u64;
        let to_end = self.cap - self.write % self.cap;
        let first = self.write;
        let pos = if rec > to_end { first + to_end } else { first };
        let lo = (pos + rec + 16).saturating_sub(self.cap);
        if lo > self.frontier {
            self.frontier = lo.next_multiple_of(self.step).min(first).max(lo);
        }
        self.write = pos + rec;
        self.spans.push((first, pos));
    }

    /// The oldest message still in the ring: the first record at or after the frontier.
    fn oldest(&self) -> u64 {
        self.spans
            .partition_point(|&(_, start)| start < self.frontier) as u64
    }
}

/// The ring gives up old messages a frontier step at a time (1/16 of the ring here):
/// `StartAt::Oldest` still finds every message but at most a step (plus a record) of the
/// ring's bytes, exactly as published, also after the publisher was closed and reopened
/// (a new publisher finds the tail by walking the records it did not write); a Lap
/// subscriber's counts stay exact throughout.
#[test]
fn oldest_keeps_all_but_a_step_of_history_across_publishers() {
    let name = TestName::new("bc-steps");
    let cap = 4096u64;
    let step = cap / 16;
    let max_rec = 16 + MAX.next_multiple_of(16) as u64;
    let opts = Options::new()
        .capacity(cap as usize)
        .max_message(MAX)
        .overflow(Overflow::Lap)
        .persist(true); // the name outlives the first publisher (TestName removes it)
    let mut p = Some(Publisher::create(&name, &opts).unwrap());
    let mut slow = Subscriber::open(&name, StartAt::Oldest).unwrap();
    let mut layout = Layout {
        cap,
        step,
        write: 0,
        frontier: 0,
        spans: Vec::new(),
    };
    let (mut scratch, mut buf) = (Vec::new(), Vec::new());
    let (mut sent, mut next, mut laps, mut checked) = (0u64, 0u64, 0, 0);
    for round in 0..400u64 {
        if round % 23 == 11 {
            // A new publisher, which did not write what is in the ring.
            drop(p.take());
            p = Some(Publisher::open(&name).unwrap());
        }
        let n = (round * 7) % 13;
        for i in sent..sent + n {
            message(5, i, &mut buf);
            layout.push(buf.len());
        }
        publish(p.as_mut().unwrap(), 5, sent..sent + n);
        sent += n;
        if round % 3 == 0 && sent > 0 {
            let mut late = Subscriber::open(&name, StartAt::Oldest).unwrap();
            let m = late.try_recv().unwrap();
            let first = m.position();
            let (tag, bytes) = (m.tag(), m.to_vec());
            expect(5, first, &bytes, tag, first, &mut scratch);
            assert_eq!(
                first,
                layout.oldest(),
                "the oldest message still in the ring"
            );
            let (pad_or_start, start) = layout.spans[first as usize];
            // At most a step (and the record across its end) of the ring is given up.
            assert!(layout.write - start <= cap - 16);
            assert!(first == 0 || layout.write - pad_or_start > cap - step - max_rec);
            checked += 1;
        }
        for _ in 0..(round % 4) {
            match slow.try_recv() {
                Ok(m) => {
                    let (tag, pos, bytes) = (m.tag(), m.position(), m.to_vec());
                    expect(5, next, &bytes, tag, pos, &mut scratch);
                    next += 1;
                }
                Err(Error::Lapped { missed }) => {
                    laps += 1;
                    next += missed;
                    assert_eq!(slow.next_position(), next);
                }
                Err(Error::Empty) => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(
        laps > 5 && checked > 100,
        "{laps} laps, {checked} joiners checked"
    );
}

/// A Block publisher that caught up with its slowest subscriber waits until that
/// subscriber has freed a whole frontier step, not a single record.
#[test]
fn block_mode_frees_a_step_at_a_time() {
    let name = TestName::new("bc-step-block");
    // 4096-byte ring: a step is 256 bytes, four 64-byte records (48-byte payloads).
    let opts = Options::new()
        .capacity(4096)
        .max_message(48)
        .evict_after(Duration::from_secs(60));
    let mut p = Publisher::create(&name, &opts).unwrap();
    let mut s = Subscriber::open(&name, StartAt::Oldest).unwrap();
    let mut sent = 0u64;
    while p.try_send(&[sent as u8; 48]).is_ok() {
        sent += 1;
    }
    // 4096 bytes, 64 per record, 16 for the stub: the 64th record would overwrite the
    // first 16 bytes, so the frontier must move to 256 — past the unread first step.
    assert_eq!(sent, 63);
    for i in 0..3u64 {
        assert_eq!(s.recv().unwrap()[0], i as u8);
        assert!(
            matches!(p.try_send(&[0; 48]), Err(TrySendError::Full)),
            "room after reading {} records of the step",
            i + 1
        );
    }
    assert_eq!(s.recv().unwrap()[0], 3);
    p.try_send(&[sent as u8; 48]).unwrap();
    for i in 4..=sent {
        assert_eq!(s.recv().unwrap()[0], i as u8);
    }
}

#[test]
fn roles_limits_and_bad_options() {
    let name = TestName::new("bc-roles");
    let opts = Options::new().max_subscribers(2).capacity(4096);
    let p = Publisher::create(&name, &opts).unwrap();
    assert!(matches!(
        Publisher::open(&name),
        Err(Error::RoleTaken { .. })
    ));
    let a = Subscriber::open(&name, StartAt::Oldest).unwrap();
    let b = Subscriber::open_named(&name, "x", StartAt::Oldest).unwrap();
    assert!(matches!(
        Subscriber::open(&name, StartAt::Oldest),
        Err(Error::TooManyEndpoints { max: 2 })
    ));
    assert!(matches!(
        Subscriber::open_named(&name, "x", StartAt::Oldest),
        Err(Error::RoleTaken { .. })
    ));
    assert!(matches!(
        Subscriber::open_named(&name, "", StartAt::Oldest),
        Err(Error::InvalidName { .. })
    ));
    drop(a);
    let _c = Subscriber::open(&name, StartAt::Oldest).unwrap();
    drop(b);
    // The named cursor keeps its slot while detached.
    assert!(matches!(
        Subscriber::open(&name, StartAt::Oldest),
        Err(Error::TooManyEndpoints { max: 2 })
    ));
    assert!(matches!(
        shmlane::spsc::Consumer::open(&name),
        Err(Error::KindMismatch { .. })
    ));
    drop(p);
    for bad in [
        Options::new().max_subscribers(0),
        Options::new().max_subscribers(64),
        Options::new().evict_after(Duration::ZERO),
        Options::new().capacity(256).max_message(200),
    ] {
        let n = TestName::new("bc-bad");
        assert!(
            matches!(
                Publisher::create(&n, &bad),
                Err(Error::InvalidOptions { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn both_backings_and_strategies() {
    for backing in [Backing::Posix, Backing::SysV] {
        for wait in [Wait::Spin, Wait::Yield, Wait::Block] {
            let name = TestName::new("bc-backing");
            let opts = Options::new()
                .capacity(1024)
                .max_message(MAX)
                .backing(backing)
                .wait(wait);
            let mut p = Publisher::create(&name, &opts).unwrap();
            let mut s = Subscriber::open(&name, StartAt::Oldest).unwrap();
            let mut scratch = Vec::new();
            let t = std::thread::spawn(move || {
                publish(&mut p, 11, 0..2000);
            });
            for i in 0..2000 {
                let m = s.recv().unwrap();
                let (tag, pos, bytes) = (m.tag(), m.position(), m.to_vec());
                expect(11, i, &bytes, tag, pos, &mut scratch);
            }
            t.join().unwrap();
            assert!(matches!(s.recv(), Err(Error::Disconnected)));
        }
    }
}

#[test]
fn a_stalled_subscriber_is_evicted() {
    let name = TestName::new("bc-evict");
    let opts = Options::new()
        .capacity(1024)
        .max_message(64)
        .evict_after(Duration::from_millis(100));
    let mut p = Publisher::create(&name, &opts).unwrap();
    let mut slow = Subscriber::open(&name, StartAt::Oldest).unwrap();
    let t0 = Instant::now();
    for i in 0..200u64 {
        p.send(&i.to_ne_bytes()).unwrap();
    }
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(100), "{took:?}");
    // Evicted: attached, but no longer a subscriber the publisher serves.
    assert_eq!(p.subscribers(), 0);
    // What it had not lost is still intact; then Evicted.
    let mut n = 0;
    loop {
        match slow.try_recv() {
            Ok(m) => {
                assert_eq!(m[..], (m.position()).to_ne_bytes());
                n += 1;
            }
            Err(Error::Evicted) => break,
            Err(e) => panic!("after {n}: {e}"),
        }
    }
    assert!(matches!(slow.recv(), Err(Error::Evicted)));
    drop(slow);
    // Its slot is free again.
    let _again = Subscriber::open(&name, StartAt::Latest).unwrap();
}

#[test]
fn named_cursor_resumes_in_process() {
    let name = TestName::new("bc-named");
    let opts = Options::new().capacity(4096).max_message(64);
    let mut p = Publisher::create(&name, &opts).unwrap();
    for i in 0..20u64 {
        p.send(&i.to_ne_bytes()).unwrap();
    }
    let mut r = Subscriber::open_named(&name, "risk", StartAt::Latest).unwrap();
    assert_eq!(r.cursor_name(), Some("risk"));
    for i in 20..30u64 {
        p.send(&i.to_ne_bytes()).unwrap();
    }
    for i in 20..25u64 {
        assert_eq!(r.recv().unwrap()[..], i.to_ne_bytes());
    }
    drop(r);
    // StartAt counts only the first time.
    let mut r = Subscriber::open_named(&name, "risk", StartAt::Oldest).unwrap();
    for i in 25..30u64 {
        let m = r.recv().unwrap();
        assert_eq!((m.position(), &m[..]), (i, &i.to_ne_bytes()[..]));
    }
}

// ---------------------------------------------------------------- across processes

/// Subscribers per cross-process run and messages each: 200,000 as the issue asks.
const XP_MESSAGES: u64 = 200_000;

#[test]
fn three_subscriber_processes_see_everything() {
    let _s = serial();
    let name = TestName::new("bc-xp");
    let seed = 0xb0ad_ca57;
    let opts = Options::new()
        .capacity(64 << 10)
        .max_message(MAX)
        .evict_after(Duration::from_secs(30));
    let mut p = Publisher::create(&name, &opts).unwrap();
    let kids: Vec<_> = (0..3)
        .map(|k| {
            spawn_child(
                "child_subscriber",
                &[
                    ("NAME", name.to_string()),
                    ("SEED", seed.to_string()),
                    ("COUNT", XP_MESSAGES.to_string()),
                    ("K", k.to_string()),
                ],
            )
        })
        .collect();
    let mut kids: Vec<_> = kids
        .into_iter()
        .map(|mut c| {
            c.expect_line("subscribed", Duration::from_secs(20));
            c
        })
        .collect();
    assert_eq!(p.subscribers(), 3);
    publish(&mut p, seed, 0..XP_MESSAGES);
    drop(p);
    for c in kids.drain(..) {
        let st = wait_child(c, Duration::from_secs(300));
        assert!(st.success(), "subscriber failed: {st}");
    }
}

#[test]
fn child_subscriber() {
    if !is_child("child_subscriber") {
        return;
    }
    let name = child_arg("NAME");
    let seed: u64 = child_arg("SEED").parse().unwrap();
    let count: u64 = child_arg("COUNT").parse().unwrap();
    let mut s = Subscriber::open(&name, StartAt::Oldest).unwrap();
    println!("subscribed");
    let mut scratch = Vec::new();
    for i in 0..count {
        let m = s.recv().unwrap_or_else(|e| panic!("message {i}: {e}"));
        let (tag, pos, bytes) = (m.tag(), m.position(), m.to_vec());
        expect(seed, i, &bytes, tag, pos, &mut scratch);
    }
    assert!(matches!(s.recv(), Err(Error::Disconnected)));
    println!("received {count}");
}

#[test]
fn a_killed_subscriber_does_not_stall_the_others() {
    let _s = serial();
    let name = TestName::new("bc-kill-sub");
    // evict_after is long: a *dead* subscriber must stop holding the publisher back at
    // once (the kernel says so), long before eviction could cut it loose.
    let opts = Options::new()
        .capacity(4096)
        .max_message(64)
        .evict_after(Duration::from_secs(20));
    let mut p = Publisher::create(&name, &opts).unwrap();
    let mut victim = spawn_child("child_sleeping_subscriber", &[("NAME", name.to_string())]);
    victim.expect_line("subscribed", Duration::from_secs(20));
    let mut live = Subscriber::open(&name, StartAt::Oldest).unwrap();
    assert_eq!(p.subscribers(), 2);
    // Fill the ring: the sleeping subscriber holds it.
    let mut sent = 0u64;
    while p.try_send(&sent.to_ne_bytes()).is_ok() {
        sent += 1;
    }
    for i in 0..sent {
        assert_eq!(live.recv().unwrap()[..], i.to_ne_bytes());
    }
    assert!(matches!(p.try_send(b"x"), Err(TrySendError::Full)));
    victim.kill().unwrap();
    victim.wait().unwrap();
    let t0 = Instant::now();
    for i in sent..sent + 1000 {
        p.send_tagged_timeout(0, &i.to_ne_bytes(), Duration::from_secs(10))
            .unwrap();
        assert_eq!(live.recv().unwrap()[..], i.to_ne_bytes());
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the dead subscriber held the publisher for {took:?}"
    );
    assert_eq!(p.subscribers(), 1);
    drop(p);
}

#[test]
fn child_sleeping_subscriber() {
    if !is_child("child_sleeping_subscriber") {
        return;
    }
    let _s = Subscriber::open(&child_arg("NAME"), StartAt::Oldest).unwrap();
    println!("subscribed");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_subscriber_that_stops_reading_is_evicted_after_evict_after() {
    let _s = serial();
    let name = TestName::new("bc-stop-sub");
    let opts = Options::new()
        .capacity(4096)
        .max_message(64)
        .evict_after(Duration::from_millis(300));
    let mut p = Publisher::create(&name, &opts).unwrap();
    // Alive (the kernel says so) but never reading.
    let mut frozen = spawn_child("child_sleeping_subscriber", &[("NAME", name.to_string())]);
    frozen.expect_line("subscribed", Duration::from_secs(20));
    let mut live = Subscriber::open(&name, StartAt::Oldest).unwrap();
    let t0 = Instant::now();
    for i in 0..1000u64 {
        p.send_tagged_timeout(0, &i.to_ne_bytes(), Duration::from_secs(10))
            .unwrap();
        assert_eq!(live.recv().unwrap()[..], i.to_ne_bytes());
    }
    let took = t0.elapsed();
    // Held once for evict_after (300 ms), never for good.
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    frozen.kill().unwrap();
    frozen.wait().unwrap();
}

#[test]
fn a_lapped_subscriber_gets_the_exact_count_then_intact_messages() {
    let _s = serial();
    let name = TestName::new("bc-lap-xp");
    let seed = 99;
    let opts = Options::new()
        .capacity(8192)
        .max_message(MAX)
        .overflow(Overflow::Lap);
    let mut p = Publisher::create(&name, &opts).unwrap();
    let mut child = spawn_child(
        "child_lapped",
        &[("NAME", name.to_string()), ("SEED", seed.to_string())],
    );
    child.expect_line("subscribed", Duration::from_secs(20));
    // Far more than the ring holds, while the child waits.
    publish(&mut p, seed, 0..1000);
    let go = std::fs::write(go_path(&name), b"go");
    go.unwrap();
    child.expect_line("lapped", Duration::from_secs(20));
    // Once it has read up to 999, a few more (less than a ring: no second lap).
    child.expect_line("caught up", Duration::from_secs(20));
    publish(&mut p, seed, 1000..1020);
    drop(p);
    let _ = std::fs::remove_file(go_path(&name));
    let st = wait_child(child, Duration::from_secs(60));
    assert!(st.success(), "{st}");
}

#[test]
fn child_lapped() {
    if !is_child("child_lapped") {
        return;
    }
    let name = child_arg("NAME");
    let seed: u64 = child_arg("SEED").parse().unwrap();
    let mut s = Subscriber::open(&name, StartAt::Oldest).unwrap();
    println!("subscribed");
    let go = go_path(&name);
    while std::fs::metadata(&go).is_err() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let missed = match s.recv() {
        Err(Error::Lapped { missed }) => missed,
        other => panic!("expected Lapped, got {other:?}"),
    };
    println!("lapped {missed}");
    assert!(missed > 0 && missed < 1000);
    let mut scratch = Vec::new();
    let mut next = missed;
    // Everything from the oldest message still in the ring, intact and in order.
    loop {
        match s.recv() {
            Ok(m) => {
                let (tag, pos, bytes) = (m.tag(), m.position(), m.to_vec());
                expect(seed, next, &bytes, tag, pos, &mut scratch);
                next += 1;
                if next == 1000 {
                    println!("caught up");
                }
            }
            Err(Error::Disconnected) => break,
            Err(e) => panic!("after {next}: {e}"),
        }
    }
    assert_eq!(next, 1020);
}

#[test]
fn a_named_cursor_resumes_exactly_across_processes() {
    let _s = serial();
    let name = TestName::new("bc-named-xp");
    let seed = 5;
    let opts = Options::new()
        .capacity(64 << 10)
        .max_message(MAX)
        .evict_after(Duration::from_secs(30));
    let mut p = Publisher::create(&name, &opts).unwrap();
    publish(&mut p, seed, 0..50);
    let mut from = 0u64;
    for (take, start) in [(17u64, "oldest"), (100, "latest"), (33, "latest")] {
        let child = spawn_child(
            "child_named",
            &[
                ("NAME", name.to_string()),
                ("SEED", seed.to_string()),
                ("FROM", from.to_string()),
                ("TAKE", take.to_string()),
                ("START", start.to_string()),
            ],
        );
        // The child reads `take` messages while we publish them.
        publish(&mut p, seed, 50 + from..50 + from + take);
        let st = wait_child(child, Duration::from_secs(60));
        assert!(st.success(), "{st}");
        from += take;
    }
}

#[test]
fn child_named() {
    if !is_child("child_named") {
        return;
    }
    let name = child_arg("NAME");
    let seed: u64 = child_arg("SEED").parse().unwrap();
    let from: u64 = child_arg("FROM").parse().unwrap();
    let take: u64 = child_arg("TAKE").parse().unwrap();
    let start = match child_arg("START").as_str() {
        "oldest" => StartAt::Oldest,
        _ => StartAt::Latest,
    };
    let mut s = Subscriber::open_named(&name, "risk", start).unwrap();
    let mut scratch = Vec::new();
    for i in from..from + take {
        let m = s.recv().unwrap();
        let (tag, pos, bytes) = (m.tag(), m.position(), m.to_vec());
        expect(seed, i, &bytes, tag, pos, &mut scratch);
    }
}

#[test]
fn publisher_killed_gives_every_subscriber_disconnected_after_the_last_message() {
    let _s = serial();
    let name = TestName::new("bc-kill-pub");
    let seed = 77;
    let count = 5000u64;
    let mut child = spawn_child(
        "child_publisher",
        &[
            ("NAME", name.to_string()),
            ("SEED", seed.to_string()),
            ("COUNT", count.to_string()),
        ],
    );
    child.expect_line("created", Duration::from_secs(20));
    let mut subs: Vec<_> = (0..3)
        .map(|_| Subscriber::open(&name, StartAt::Oldest).unwrap())
        .collect();
    std::fs::write(go_path(&name), b"go").unwrap();
    child.expect_line("published", Duration::from_secs(60));
    let _ = std::fs::remove_file(go_path(&name));
    child.kill().unwrap();
    child.wait().unwrap();
    let mut scratch = Vec::new();
    for s in subs.iter_mut() {
        for i in 0..count {
            let m = s.recv().unwrap_or_else(|e| panic!("message {i}: {e}"));
            let (tag, pos, bytes) = (m.tag(), m.position(), m.to_vec());
            expect(seed, i, &bytes, tag, pos, &mut scratch);
        }
        // A dead publisher is noticed within a liveness interval and a sleep slice.
        let end = s.recv_timeout(Duration::from_secs(5));
        assert!(matches!(end, Err(Error::Disconnected)), "{end:?}");
    }
}

#[test]
fn child_publisher() {
    if !is_child("child_publisher") {
        return;
    }
    let name = child_arg("NAME");
    let seed: u64 = child_arg("SEED").parse().unwrap();
    let count: u64 = child_arg("COUNT").parse().unwrap();
    let opts = Options::new()
        .capacity(1 << 20)
        .max_message(MAX)
        .persist(true);
    let mut p = Publisher::create(&name, &opts).unwrap();
    println!("created");
    let go = go_path(&name);
    while std::fs::metadata(&go).is_err() {
        std::thread::sleep(Duration::from_millis(5));
    }
    publish(&mut p, seed, 0..count);
    println!("published");
    std::thread::sleep(Duration::from_secs(60));
}
