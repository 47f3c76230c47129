//! A child process receives a million messages of random sizes and tags from the test
//! process, in order and intact, for each wait strategy and backing.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{check, child_arg, fill, is_child, spawn_child, wait_child, Rng, TestName};
use shmlane::spsc::{Consumer, Producer};
use shmlane::{Backing, Error, Options, Wait};

const MESSAGES: u64 = 1_000_000;
const MAX_MESSAGE: usize = 256;

/// Cross-process tests spin on two cores: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn sizes(seed: u64) -> impl Iterator<Item = usize> {
    let mut rng = Rng(seed);
    std::iter::repeat_with(move || rng.below(MAX_MESSAGE as u64 + 1) as usize)
}

fn run(backing: Backing, wait: Wait, seed: u64) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = TestName::new("xproc");
    let opts = Options::new()
        .capacity(64 << 10)
        .max_message(MAX_MESSAGE)
        .backing(backing)
        .wait(wait);
    let mut tx = Producer::create(&name, &opts).expect("create");
    let child = spawn_child(
        "child_receiver",
        &[
            ("NAME", name.to_string()),
            ("SEED", seed.to_string()),
            ("COUNT", MESSAGES.to_string()),
        ],
    );
    let mut buf = vec![0u8; MAX_MESSAGE];
    for (seq, len) in (0..MESSAGES).zip(sizes(seed)) {
        fill(&mut buf[..len], seq);
        tx.send_tagged_timeout(seq as u32, &buf[..len], Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("send {seq}: {e}"));
        // Check that the child is alive now and then, so a dead child fails the test fast.
        if seq % 100_000 == 0 && tx.is_disconnected() && seq > 0 {
            panic!("the receiver went away after {seq} messages");
        }
    }
    drop(tx);
    let status = wait_child(child, Duration::from_secs(120));
    assert!(status.success(), "child receiver failed: {status}");
}

#[test]
fn child_receiver() {
    if !is_child("child_receiver") {
        return;
    }
    let name = child_arg("NAME");
    let seed: u64 = child_arg("SEED").parse().unwrap();
    let count: u64 = child_arg("COUNT").parse().unwrap();
    let mut rx = Consumer::open(&name).expect("open consumer");
    for (seq, len) in (0..count).zip(sizes(seed)) {
        let m = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("recv {seq}: {e}"));
        assert_eq!(m.len(), len, "message {seq} length");
        assert_eq!(m.tag(), seq as u32, "message {seq} tag");
        assert!(check(&m, seq), "message {seq} bytes differ");
    }
    // Everything sent arrived; the producer then left.
    match rx.recv_timeout(Duration::from_secs(20)) {
        Err(Error::Disconnected) => {}
        other => panic!("expected Disconnected after the last message, got {other:?}"),
    };
}

#[test]
fn posix_block() {
    run(Backing::Posix, Wait::Block, 1);
}

#[test]
fn posix_spin() {
    run(Backing::Posix, Wait::Spin, 2);
}

#[test]
fn sysv_block() {
    run(Backing::SysV, Wait::Block, 3);
}

#[test]
fn sysv_spin() {
    run(Backing::SysV, Wait::Spin, 4);
}

#[test]
fn posix_yield() {
    run(Backing::Posix, Wait::Yield, 5);
}

#[test]
fn sysv_yield() {
    run(Backing::SysV, Wait::Yield, 6);
}
