//! Helpers for the bridge tests: unique ring names removed even on failure, loopback
//! endpoints, bridge processes that are killed (by their own pid) if a test fails, and
//! zenoh's runtime pinned for a 2-core machine.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// zenoh's runtimes for tests: one worker thread each for app (with the acceptor and the
/// network runtime handed over to it), tx and rx; few blocking threads.
pub const ZENOH_RUNTIME: &str = "(app: (worker_threads: 1, max_blocking_threads: 2), acc: (handover: app), net: (handover: app), tx: (worker_threads: 1, max_blocking_threads: 1), rx: (worker_threads: 1, max_blocking_threads: 1))";

/// How long any one bridge process may take before the test kills it and fails.
pub const LIMIT: Duration = Duration::from_secs(120);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A ring name unique to this process and call, removed on drop.
pub struct TestName(pub String);

impl TestName {
    pub fn new(tag: &str) -> TestName {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        TestName(format!(
            "/shmlane-test-zenoh-{tag}-{}-{n}",
            std::process::id()
        ))
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
        let _ = shmlane::format::Segment::remove(&self.0);
        let _ = shmlane::format::Segment::remove(&self.0);
        let _ = std::fs::remove_file(format!("/dev/shm{}", self.0));
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!(
            "shmlane-zenoh-test-{tag}-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A key unique to this test run.
pub fn key(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("shmlane/test/{tag}/{}/{n}", std::process::id())
}

/// A loopback TCP endpoint on a free port (with `#config` appended if given).
pub fn tcp_endpoint(config: &str) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("tcp/127.0.0.1:{port}{config}")
}

/// A child process (a bridge or a cat) whose stderr is collected, SIGKILLed by its pid if
/// still running on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.env("ZENOH_RUNTIME", ZENOH_RUNTIME)
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let s2 = Arc::clone(&stderr);
        let label = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                eprintln!("[{label}] {line}");
                let mut s = s2.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Proc {
            name: name.to_string(),
            child: Some(child),
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILLs this process (only it: by its pid) and reaps it.
    pub fn kill(&mut self) {
        let c = self.child.as_mut().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Waits for the exit, at most [`LIMIT`]; kills it and panics past that.
    pub fn wait(&mut self) -> ExitStatus {
        let c = self.child.as_mut().unwrap();
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                // Let the stderr thread catch up with the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return s;
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "{} did not exit within {} s; stderr: {}",
                    self.name,
                    LIMIT.as_secs(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits and checks the exit status is 0.
    pub fn expect_success(&mut self) {
        let s = self.wait();
        assert!(
            s.success(),
            "{} exited with {s}; stderr: {}",
            self.name,
            self.stderr()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The bridge binary.
pub fn bridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shmlane-zenoh"))
}

/// `shmlane-zenoh out` on `ring`/`key` with endpoint arguments.
pub fn out(ring: &str, key: &str, net: &[&str]) -> Proc {
    let mut c = bridge();
    c.args(["out", "--ring", ring, "--key", key, "--wait-for", "60"])
        .args(net)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    Proc::spawn("out", c)
}

/// `shmlane-zenoh in` on `ring`/`key` with endpoint and other arguments.
pub fn inn(ring: &str, key: &str, args: &[&str]) -> Proc {
    let mut c = bridge();
    c.args(["in", "--ring", ring, "--key", key])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    Proc::spawn("in", c)
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A seed that differs between runs (printed by the tests so a failure can be replayed).
pub fn seed() -> u64 {
    std::env::var("SHMLANE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// Whether the environment says this is a CI run, where a skip is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}
