//! No lost wake-ups between processes: a `Wait::Block` ping-pong in which each side
//! pauses before it answers, so the other side really sleeps, and every sleep must be
//! ended by the peer's post, not by the sleeper's timer.
//!
//! Why this is needed: a `Block` sleep is a timed wait of one slice (50 ms), so a `wake()`
//! that never posts does not hang anything, it only makes each sleep last the whole slice.
//! A test that only checks the messages arrive cannot tell. Here each process counts its
//! sleeps and those that ended having taken a post (`wait::stats::{sleeps, woken}`).
//!
//! Run twice: with `membarrier(2)` (light wakers, the sleeper's heavy barrier) and with
//! `SHMLANE_NO_MEMBARRIER=1` (full fences on both sides). The variable is read once per
//! process, so both ends run in child processes with the environment set.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{child_arg, finish_child, is_child, spawn_child_env, TestName};
use shmlane::spsc::{Consumer, Producer};
use shmlane::wait::stats;
use shmlane::{Error, Options, Wait};

/// Round trips; each makes each side sleep once.
const ROUNDS: u32 = 40;
/// How long a side waits before it sends, so the other is asleep by then (the sleeper
/// polls for 50 µs, then sleeps for up to a 50 ms slice).
const PAUSE: Duration = Duration::from_millis(15);
/// Generous per-message bound: a lost wake-up costs a slice, not a hang, so this only
/// catches a dead peer.
const RECV_LIMIT: Duration = Duration::from_secs(10);

static SERIAL: Mutex<()> = Mutex::new(());

fn opts() -> Options {
    Options::new()
        .capacity(4096)
        .max_message(64)
        .wait(Wait::Block)
}

/// Opens a segment the other child may not have created yet.
fn open_retry<T>(mut open: impl FnMut() -> shmlane::Result<T>) -> T {
    let t = Instant::now();
    loop {
        match open() {
            Err(Error::NotFound { .. }) if t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(2))
            }
            other => return other.expect("open"),
        }
    }
}

/// Checks this process's sleep counters over the rounds and prints them for the parent.
fn check_sleeps(who: &str, sleeps: u64, woken: u64) {
    println!("{who} sleeps={sleeps} woken={woken}");
    // Each round this side waited PAUSE for its peer: it must have slept, not polled.
    assert!(
        sleeps >= u64::from(ROUNDS) / 2,
        "{who}: only {sleeps} sleeps in {ROUNDS} rounds: the test did not make it sleep"
    );
    // A sleep ended by its timer means a post was missing (or the peer took longer than
    // a slice minus PAUSE, which a loaded machine may cause now and then).
    let timed_out = sleeps - woken.min(sleeps);
    assert!(
        timed_out <= sleeps / 5,
        "{who}: {timed_out} of {sleeps} sleeps ended by their timer, not by the peer's post \
         (a lost wake-up)"
    );
}

/// Child: creates both channels, sends pings, sleeps waiting for each pong.
#[test]
fn child_pinger() {
    if !is_child("child_pinger") {
        return;
    }
    let mut ping = Producer::create(&child_arg("PING"), &opts()).expect("create ping");
    let mut pong = Consumer::create(&child_arg("PONG"), &opts()).expect("create pong");
    // Whether this process really uses the barrier variant it is run for: light wakers
    // set the segment's flag at attach.
    let want_light = std::env::var_os("SHMLANE_NO_MEMBARRIER").is_none();
    let light = shmlane::inspect::inspect(&child_arg("PING"))
        .expect("inspect")
        .fields
        .light_wakers
        .expect("light_wakers");
    assert_eq!(light != 0, want_light, "light_wakers = {light}");
    // The first pong says the ponger has attached to both.
    {
        let m = pong.recv_timeout(RECV_LIMIT).expect("hello");
        assert_eq!(&m[..], b"hello");
    }
    let (s0, w0) = (stats::sleeps(), stats::woken());
    for i in 0..ROUNDS {
        std::thread::sleep(PAUSE);
        ping.send_tagged(i, b"ping").expect("send ping");
        let m = pong.recv_timeout(RECV_LIMIT).expect("recv pong");
        assert_eq!((m.tag(), &m[..]), (i, &b"pong"[..]));
        drop(m);
    }
    check_sleeps("pinger", stats::sleeps() - s0, stats::woken() - w0);
}

/// Child: answers each ping with a pong after a pause.
#[test]
fn child_ponger() {
    if !is_child("child_ponger") {
        return;
    }
    let mut pong = open_retry(|| Producer::open(&child_arg("PONG")));
    let mut ping = open_retry(|| Consumer::open(&child_arg("PING")));
    pong.send(b"hello").expect("hello");
    let (s0, w0) = (stats::sleeps(), stats::woken());
    for i in 0..ROUNDS {
        {
            let m = ping.recv_timeout(RECV_LIMIT).expect("recv ping");
            assert_eq!((m.tag(), &m[..]), (i, &b"ping"[..]));
        }
        std::thread::sleep(PAUSE);
        pong.send_tagged(i, b"pong").expect("send pong");
    }
    check_sleeps("ponger", stats::sleeps() - s0, stats::woken() - w0);
    // Stay attached until the pinger has read the last pong and left.
    let end = ping.recv_timeout(RECV_LIMIT).map(|m| m.to_vec());
    assert!(
        matches!(end, Err(Error::Disconnected)),
        "expected Disconnected, got {end:?}"
    );
}

fn ping_pong(env: &[(&str, &str)]) {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ping = TestName::new("wake-ping");
    let pong = TestName::new("wake-pong");
    let args = [("PING", ping.to_string()), ("PONG", pong.to_string())];
    let pinger = spawn_child_env("child_pinger", &args, env);
    let ponger = spawn_child_env("child_ponger", &args, env);
    let limit = Duration::from_secs(60);
    // Both must pass and have run (a skip is impossible here: nothing to skip on).
    assert!(finish_child(pinger, limit), "pinger skipped");
    assert!(finish_child(ponger, limit), "ponger skipped");
}

#[test]
fn block_sleeps_end_by_a_post_with_membarrier() {
    ping_pong(&[]);
}

#[test]
fn block_sleeps_end_by_a_post_with_full_fences() {
    ping_pong(&[("SHMLANE_NO_MEMBARRIER", "1")]);
}
