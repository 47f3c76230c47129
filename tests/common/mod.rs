//! Helpers shared by the integration tests: unique segment names that are removed even
//! when a test fails, and running part of a test in a child process.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A segment name unique to this process and call, removed (whichever backing) on drop.
pub struct TestName(pub String);

impl TestName {
    pub fn new(tag: &str) -> TestName {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        TestName(format!("/shmlane-test-{tag}-{}-{n}", std::process::id()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for TestName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for TestName {
    fn drop(&mut self) {
        // Both backings may hold the name (a test can make either); ignore "not found".
        let _ = shmlane::segment::Segment::remove(&self.0);
        let _ = shmlane::segment::Segment::remove(&self.0);
        let _ = std::fs::remove_file(format!("/dev/shm{}", self.0));
    }
}

/// The environment variable that tells a test binary it runs as a child.
pub const CHILD_ENV: &str = "SHMLANE_TEST_CHILD";

/// Whether this process is a child started by [`spawn_child`] for `test`.
pub fn is_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).map(|v| v == test).unwrap_or(false)
}

/// Reads a parameter passed to the child.
pub fn child_arg(key: &str) -> String {
    std::env::var(format!("SHMLANE_ARG_{key}"))
        .unwrap_or_else(|_| panic!("missing child arg {key}"))
}

/// Runs the test function `test` of this same test binary in a child process, with
/// `args` as environment parameters (read with [`child_arg`]).
pub fn spawn_child(test: &str, args: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        test,
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
    ])
    .env(CHILD_ENV, test)
    .stdin(Stdio::null());
    for (k, v) in args {
        cmd.env(format!("SHMLANE_ARG_{k}"), v);
    }
    cmd.spawn().expect("spawn child test process")
}

/// Waits for a child with a deadline; kills it (by pid) and panics if it overruns.
pub fn wait_child(mut child: Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "child process {} did not finish within {limit:?}",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A small, fast, deterministic PRNG (xorshift64*), so parent and child agree on sizes.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Fills `buf` with bytes derived from `seq`, so a receiver can check every byte.
pub fn fill(buf: &mut [u8], seq: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
}

/// Checks bytes written by [`fill`].
pub fn check(buf: &[u8], seq: u64) -> bool {
    buf.iter()
        .enumerate()
        .all(|(i, b)| *b == (seq as u8).wrapping_mul(31).wrapping_add(i as u8))
}
