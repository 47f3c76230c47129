//! Helpers shared by the integration tests: unique segment names that are removed even
//! when a test fails, and running part of a test in a child process.
#![allow(dead_code)]
#![allow(clippy::disallowed_types)] // test-local counters (the library's clippy.toml is for its ring code)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
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
        let _ = shmlane::format::Segment::remove(&self.0);
        let _ = shmlane::format::Segment::remove(&self.0);
        let _ = std::fs::remove_file(format!("/dev/shm{}", self.0));
    }
}

/// The environment variable that tells a test binary it runs as a child.
pub const CHILD_ENV: &str = "SHMLANE_TEST_CHILD";

/// What a child prints (from [`is_child`]) when it starts the test it was spawned for, so
/// the parent knows the test ran: a renamed or mistyped child test runs 0 tests and exits
/// 0, which must not count as a pass.
pub const RAN_MARKER: &str = "SHMLANE-CHILD-RAN";

/// The exit code of a child that skipped its test ([`skip`]); distinct from a pass (0) and
/// from a libtest failure (101).
pub const SKIP_EXIT: i32 = 77;

/// Whether the environment says this is a CI run (`CI` set and not empty or "false"),
/// where a skipped test is a failure: CI runs as root with every permission a test needs.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Skips the current test: prints `SKIP: reason`; under CI panics instead (a skip there
/// means the environment lost something the test needs). In a child process it exits with
/// [`SKIP_EXIT`], which [`finish_child`] reports; in the test process itself it returns,
/// and the caller returns.
pub fn skip(reason: &str) {
    println!("SKIP: {reason}");
    eprintln!("SKIP: {reason}");
    if in_ci() {
        panic!("skipped under CI (a skip is a failure there): {reason}");
    }
    if std::env::var_os(CHILD_ENV).is_some() {
        std::process::exit(SKIP_EXIT);
    }
}

/// Whether this process is a child started by [`spawn_child`] for `test`. When it is,
/// prints [`RAN_MARKER`] so the parent can tell that the test really ran.
pub fn is_child(test: &str) -> bool {
    let me = std::env::var(CHILD_ENV).map(|v| v == test).unwrap_or(false);
    if me {
        // On a line of its own: libtest has just printed "test <name> ... " without one.
        println!("\n{RAN_MARKER} {test}");
    }
    me
}

/// Reads a parameter passed to the child.
pub fn child_arg(key: &str) -> String {
    std::env::var(format!("SHMLANE_ARG_{key}"))
        .unwrap_or_else(|_| panic!("missing child arg {key}"))
}

/// A child test process: its stdout is read by a thread that echoes every line and keeps
/// them, so the parent can wait for a line ([`TestChild::expect_line`]) and check that the
/// child ran its test ([`finish_child`]).
pub struct TestChild {
    child: Child,
    test: String,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl TestChild {
    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the child.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()
    }

    /// Waits for the child to exit.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }

    /// Polls the child's exit.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// The bare process, for tests that manage its exit themselves (a kill without a
    /// reap, say). Its output goes on being echoed; whether it ran is no longer checked.
    pub fn into_child(self) -> Child {
        // Keep draining the echo thread's lines, so the child's stdout never breaks.
        let lines = self.lines;
        std::thread::spawn(move || while lines.recv().is_ok() {});
        self.child
    }

    /// Waits up to `limit` for a line of the child's stdout starting with `prefix` and
    /// returns it; panics (after killing the child) if none comes.
    pub fn expect_line(&mut self, prefix: &str, limit: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return l.clone();
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.starts_with(prefix);
                    self.seen.push(l.clone());
                    if hit {
                        return l;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "child {} ({}) printed no line starting with {prefix:?} ({e:?}); it printed {:?}",
                        self.child.id(),
                        self.test,
                        self.seen
                    );
                }
            }
        }
    }

    /// Every stdout line, once the child has exited and closed it (bounded wait).
    fn collect_output(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => return,
            }
        }
    }

    fn ran(&self) -> bool {
        let want = format!("{RAN_MARKER} {}", self.test);
        self.seen.iter().any(|l| l.trim_end().ends_with(&want))
    }
}

/// Runs the test function `test` of this same test binary in a child process, with
/// `args` as environment parameters (read with [`child_arg`]).
pub fn spawn_child(test: &str, args: &[(&str, String)]) -> TestChild {
    spawn_child_env(test, args, &[])
}

/// [`spawn_child`] with extra environment variables for the child (e.g.
/// `SHMLANE_NO_MEMBARRIER`, read once per process).
pub fn spawn_child_env(test: &str, args: &[(&str, String)], env: &[(&str, &str)]) -> TestChild {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        test,
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
    ])
    .env(CHILD_ENV, test)
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    for (k, v) in args {
        cmd.env(format!("SHMLANE_ARG_{k}"), v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn child test process");
    let out = child.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    let tag = format!("[child {}]", child.id());
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            println!("{tag} {line}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    TestChild {
        child,
        test: test.to_string(),
        lines,
        seen: Vec::new(),
    }
}

/// Anything [`wait_child`] can wait for.
pub trait Waitable {
    /// The process id.
    fn pid(&self) -> u32;
    /// Polls for the exit status.
    fn poll(&mut self) -> Option<ExitStatus>;
    /// Kills and reaps the process.
    fn kill_and_reap(&mut self);
}

impl Waitable for Child {
    fn pid(&self) -> u32 {
        self.id()
    }
    fn poll(&mut self) -> Option<ExitStatus> {
        self.try_wait().unwrap()
    }
    fn kill_and_reap(&mut self) {
        let _ = self.kill();
        let _ = self.wait();
    }
}

impl Waitable for TestChild {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn poll(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }
    fn kill_and_reap(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_deadline(child: &mut impl Waitable, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.poll() {
            return status;
        }
        if start.elapsed() > limit {
            child.kill_and_reap();
            panic!(
                "child process {} did not finish within {limit:?}",
                child.pid()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for a child with a deadline; kills it (by pid) and panics if it overruns. For a
/// [`TestChild`] that exited with success, also checks that it really ran its test (it
/// printed [`RAN_MARKER`]) and panics otherwise; a child that skipped is not a success.
pub fn wait_child<C: Waitable + 'static>(mut child: C, limit: Duration) -> ExitStatus {
    let status = wait_deadline(&mut child, limit);
    let any: &mut dyn std::any::Any = &mut child;
    if let Some(tc) = any.downcast_mut::<TestChild>() {
        tc.collect_output();
        if status.success() {
            assert!(
                tc.ran(),
                "child {} exited 0 without running the test {:?} (renamed?); it printed {:?}",
                tc.child.id(),
                tc.test,
                tc.seen
            );
        }
    }
    status
}

/// Waits for a child test (as [`wait_child`]) that must pass or skip: returns true if it
/// passed (and ran), false if it skipped outside CI; panics if it failed, or skipped
/// under CI.
pub fn finish_child(mut child: TestChild, limit: Duration) -> bool {
    let status = wait_deadline(&mut child, limit);
    child.collect_output();
    if status.code() == Some(SKIP_EXIT) {
        assert!(
            !in_ci(),
            "child {:?} skipped under CI: {:?}",
            child.test,
            child.seen
        );
        eprintln!("SKIP (child {:?}): {:?}", child.test, child.seen);
        return false;
    }
    assert!(status.success(), "child {:?} failed: {status}", child.test);
    assert!(
        child.ran(),
        "child exited 0 without running the test {:?} (renamed?); it printed {:?}",
        child.test,
        child.seen
    );
    true
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

/// Gives this process a mount namespace of its own (mounts made private, so nothing leaks
/// back to the host) and mounts a `fstype` file system with options `data` on `target`
/// in it. Returns false if the kernel refused (not root, no namespaces): the caller skips.
/// Processes started afterwards inherit the namespace.
pub fn mount_privately(
    fstype: &std::ffi::CStr,
    target: &std::ffi::CStr,
    data: &std::ffi::CStr,
) -> bool {
    // SAFETY: plain syscalls with valid, NUL-terminated arguments. The namespace is this
    // thread's (and so the process's children's).
    unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            && libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            ) == 0
    }
}
