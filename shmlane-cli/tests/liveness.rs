//! Issue #10: whether a peer is alive must not depend on reading `/proc/<pid>/stat` with
//! the pid stored in the segment. These tests put the peer where that read goes wrong
//! (its own PID namespace, a command name that is not UTF-8, a `/proc` mounted
//! `hidepid=2`, a killed child nobody has reaped yet, callers polling with short
//! timeouts) and check the crash promises against the public API and the CLI only.
//!
//! A test that cannot run here (no `unshare`, not root, the kernel refuses) prints
//! `SKIP: <reason>` to stderr and passes, except when the environment variable `CI` is
//! set: there it fails, because CI runs as root where every one of these must really run.

#[path = "../../shmlane/tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    check, child_arg, fill, is_child, skip, spawn_child, wait_child, TestName, CHILD_ENV, SKIP_EXIT,
};
use shmlane::mpmc;
use shmlane::spsc::{Consumer, Producer};
use shmlane::{Error, Options, PeerState, TryRecvError};

/// The contract: a SIGKILLed peer is reported dead this soon after the kill.
const DEAD_WITHIN: Duration = Duration::from_millis(500);

fn shmlane_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shmlane")
}

/// A started process, killed (by its pid, SIGKILL) and reaped on drop if still running.
struct Proc {
    child: Option<Child>,
    what: String,
}

impl Proc {
    fn spawn(mut cmd: Command, what: &str) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc {
            child: Some(child),
            what: what.to_string(),
        }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("process already reaped")
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("process already reaped").id()
    }

    /// SIGKILL, without reaping (the process stays a zombie until [`Proc::reap`]).
    fn kill(&mut self) {
        self.child().kill().expect("SIGKILL");
    }

    fn reap(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("process already reaped");
        c.wait().expect("wait")
    }

    /// Still running (not exited)? Does not reap a zombie's status away: it keeps it.
    fn running(&mut self) -> Option<ExitStatus> {
        self.child().try_wait().expect("try_wait")
    }

    /// Waits with a deadline; kills it and panics if it overruns.
    fn wait_for(&mut self, limit: Duration) -> ExitStatus {
        let c = self.child.take().expect("process already reaped");
        let what = self.what.clone();
        let start = Instant::now();
        let mut c = c;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > limit {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{what} (pid {}) did not finish within {limit:?}", c.id());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A command line: program and arguments.
fn cmdline(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

fn command(prefix: &[String], args: &[&str]) -> Command {
    let mut cmd = Command::new(&prefix[0]);
    cmd.args(&prefix[1..]).args(args);
    cmd
}

/// The `unshare` prefix that runs a command as PID 1 of a new PID namespace with its own
/// `/proc`, and kills it if `unshare` itself is killed.
fn unshare_pid() -> Vec<String> {
    cmdline(&["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"])
}

/// Why a new PID namespace cannot be made here, if it cannot.
fn pid_namespace_refused() -> Option<String> {
    let mut cmd = command(&unshare_pid(), &["true"]);
    match cmd.stdin(Stdio::null()).output() {
        Err(e) => Some(format!("cannot run unshare (util-linux): {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "`unshare --pid --fork --mount-proc` refused ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Reads a pipe to its end in a thread, starting after `delay`.
fn collect<R: Read + Send + 'static>(mut r: R, delay: Duration) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Lines sent at once first: 300 KB, more than the reader's stdout pipe (64 KiB), its
/// output buffer (64 KiB) and the ring (16 KiB) hold, so that while the test does not
/// read the reader's output the writer has to wait for room, and so looks at whether the
/// reader lives.
const BURST_LINES: usize = 300;
const BURST_LINE_LEN: usize = 1000;
/// How long the test leaves the reader's output unread.
const READ_DELAY: Duration = Duration::from_millis(600);
/// Then lines sent 200 ms apart, so that the reader waits for data, and so looks at
/// whether the writer lives.
const LINES: usize = 5;
const LINE_GAP: Duration = Duration::from_millis(200);

/// `writer cat --to NAME --lines` fed a burst of lines and then five lines 200 ms apart,
/// `reader cat --from NAME --lines` reading: the reader must print every line and exit 0,
/// and must still be running when the writer's input ends (it may not take the writer
/// for gone before then); the writer must exit 0. `writer`/`reader` are command prefixes
/// (a program and arguments) put before `cat ...`. `look` is called with both pids once
/// both started.
fn cat_pair(name: &str, writer: &[String], reader: &[String], look: &dyn Fn(u32, u32)) {
    let mut w = command(
        writer,
        &[
            "cat",
            "--to",
            name,
            "--lines",
            "--capacity",
            "16K",
            "--wait-for",
            "10",
        ],
    );
    w.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut w = Proc::spawn(w, "the writer (cat --to)");
    let w_err = collect(w.child().stderr.take().unwrap(), Duration::ZERO);
    let mut stdin = w.child().stdin.take().unwrap();

    let mut r = command(
        reader,
        &["cat", "--from", name, "--lines", "--wait-for", "10"],
    );
    r.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut r = Proc::spawn(r, "the reader (cat --from)");
    let r_out = collect(r.child().stdout.take().unwrap(), READ_DELAY);
    let r_err = collect(r.child().stderr.take().unwrap(), Duration::ZERO);
    look(w.pid(), r.pid());

    let mut expected = String::new();
    let mut burst = String::new();
    for i in 0..BURST_LINES {
        let line = format!("{i:04} {}\n", "x".repeat(BURST_LINE_LEN - 5));
        burst.push_str(&line);
    }
    let paced = (0..LINES).map(|i| format!("line {i} of {LINES}\n"));
    for (i, chunk) in std::iter::once(burst).chain(paced).enumerate() {
        expected.push_str(&chunk);
        if let Err(e) = stdin
            .write_all(chunk.as_bytes())
            .and_then(|_| stdin.flush())
        {
            drop(stdin);
            let status = w.wait_for(Duration::from_secs(5));
            let _ = r.wait_for(Duration::from_secs(5));
            panic!(
                "the writer stopped reading its input at chunk {i} ({e}); it exited {status}; stderr {:?}; the reader printed {} bytes",
                w_err.join().unwrap(),
                r_out.join().unwrap().len()
            );
        }
        std::thread::sleep(LINE_GAP);
        if let Some(status) = r.running() {
            drop(stdin);
            let _ = w.wait_for(Duration::from_secs(5));
            let out = r_out.join().unwrap();
            panic!(
                "the reader exited ({status}) after chunk {i}, while the writer was still sending; it printed {} of {} bytes; stderr {:?}; writer stderr {:?}",
                out.len(),
                expected.len(),
                r_err.join().unwrap(),
                w_err.join().unwrap()
            );
        }
    }
    drop(stdin); // EOF: the writer finishes
    let w_status = w.wait_for(Duration::from_secs(5));
    let r_status = r.wait_for(Duration::from_secs(5));
    let (out, r_err, w_err) = (
        r_out.join().unwrap(),
        r_err.join().unwrap(),
        w_err.join().unwrap(),
    );
    assert!(
        w_status.success(),
        "the writer exited {w_status}; stderr {w_err:?}"
    );
    assert!(
        r_status.success(),
        "the reader exited {r_status}; stderr {r_err:?}"
    );
    assert!(
        out == expected,
        "the reader printed {} bytes, not the {} sent",
        out.len(),
        expected.len()
    );
}

// ---------------------------------------------------------------------------------
// 1. A peer in its own PID namespace.

#[test]
fn cat_writer_in_its_own_pid_namespace() {
    if let Some(why) = pid_namespace_refused() {
        return skip(&why);
    }
    let name = TestName::new("ns-writer");
    let mut writer = unshare_pid();
    writer.push(shmlane_bin().into());
    cat_pair(&name, &writer, &cmdline(&[shmlane_bin()]), &|_, _| {});
}

#[test]
fn cat_reader_in_its_own_pid_namespace() {
    if let Some(why) = pid_namespace_refused() {
        return skip(&why);
    }
    let name = TestName::new("ns-reader");
    let mut reader = unshare_pid();
    reader.push(shmlane_bin().into());
    cat_pair(&name, &cmdline(&[shmlane_bin()]), &reader, &|_, _| {});
}

const NS_MESSAGES: u64 = 20;

/// Child (run in its own PID namespace): a producer sending `NS_MESSAGES` messages 25 ms
/// apart, then closing.
#[test]
fn child_producer_in_namespace() {
    if !is_child("child_producer_in_namespace") {
        return;
    }
    let mut tx = Producer::open(&child_arg("NAME")).expect("open producer");
    let mut buf = [0u8; 100];
    for seq in 0..NS_MESSAGES {
        let len = (seq as usize * 13) % 100;
        fill(&mut buf[..len], seq);
        tx.send_tagged_timeout(seq as u32, &buf[..len], Duration::from_secs(5))
            .expect("send");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `spawn_child`, but with the child test process run under a command prefix.
fn child_under(prefix: &[String], test: &str, args: &[(&str, String)]) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = command(
        prefix,
        &[
            exe.to_str().unwrap(),
            test,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ],
    );
    cmd.env(CHILD_ENV, test).stdin(Stdio::null());
    for (k, v) in args {
        cmd.env(format!("SHMLANE_ARG_{k}"), v);
    }
    cmd
}

#[test]
fn producer_in_its_own_pid_namespace_stays_alive() {
    if let Some(why) = pid_namespace_refused() {
        return skip(&why);
    }
    let name = TestName::new("ns-lib");
    let mut rx = Consumer::create(&name, &Options::new().capacity(4096).max_message(128)).unwrap();
    let mut child = Proc::spawn(
        child_under(
            &unshare_pid(),
            "child_producer_in_namespace",
            &[("NAME", name.to_string())],
        ),
        "the producer in a PID namespace",
    );
    for seq in 0..NS_MESSAGES {
        let got = rx.recv_timeout(Duration::from_secs(5)).map(|m| {
            (
                m.tag(),
                m.len() == (seq as usize * 13) % 100 && check(&m, seq),
            )
        });
        match got {
            Ok((tag, intact)) => {
                assert_eq!(u64::from(tag), seq, "out of order");
                assert!(intact, "message {seq} torn");
            }
            Err(e) => panic!(
                "after {seq} of {NS_MESSAGES} messages, with the producer still sending: {e} (peer {:?})",
                rx.peer()
            ),
        }
        if seq + 1 < NS_MESSAGES {
            let peer = rx.peer();
            assert!(
                matches!(peer, PeerState::Alive(_)),
                "peer() is {peer:?} after message {seq}, while the producer runs"
            );
        }
    }
    match rx.recv_timeout(Duration::from_secs(5)) {
        Err(Error::Disconnected) => {}
        Ok(m) => panic!("an extra message (tag {})", m.tag()),
        Err(e) => panic!("expected Disconnected after the producer closed, got {e}"),
    }
    let status = child.wait_for(Duration::from_secs(10));
    assert!(status.success(), "the producer child exited {status}");
}

// ---------------------------------------------------------------------------------
// 2. A peer whose command name is not UTF-8.

/// A copy of the `shmlane` binary in a world-readable directory of its own, removed on
/// drop.
struct BinCopy {
    dir: std::path::PathBuf,
    exe: std::path::PathBuf,
}

impl BinCopy {
    fn new(base: &std::path::Path, tag: &str, file_name: &str) -> BinCopy {
        BinCopy::of(std::path::Path::new(shmlane_bin()), base, tag, file_name)
    }

    /// A copy of the executable `src`.
    fn of(src: &std::path::Path, base: &std::path::Path, tag: &str, file_name: &str) -> BinCopy {
        use std::os::unix::fs::PermissionsExt;
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = base.join(format!("shmlane-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.join(file_name);
        std::fs::copy(src, &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        BinCopy { dir, exe }
    }

    fn prefix(&self) -> Vec<String> {
        vec![self.exe.to_str().unwrap().to_string()]
    }
}

impl Drop for BinCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `shmlane` binary copied under the name of nine `é`: the kernel cuts `comm` to 15
/// bytes, in the middle of the eighth `é`.
fn odd_comm_copy() -> BinCopy {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    BinCopy::new(base, "comm", &"\u{e9}".repeat(9))
}

/// Checks that the process `pid`'s `comm` really is not UTF-8 (else the test tests
/// nothing). Waits a little: `spawn` may return before the kernel renamed the child.
fn assert_comm_not_utf8(pid: u32) {
    let start = Instant::now();
    loop {
        let comm = std::fs::read(format!("/proc/{pid}/comm")).expect("read comm");
        if std::str::from_utf8(&comm).is_err() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "comm of {pid} is valid UTF-8: {comm:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn cat_writer_with_a_non_utf8_comm() {
    let copy = odd_comm_copy();
    let name = TestName::new("comm-writer");
    cat_pair(
        &name,
        &copy.prefix(),
        &cmdline(&[shmlane_bin()]),
        &|w, _| assert_comm_not_utf8(w),
    );
}

#[test]
fn cat_reader_with_a_non_utf8_comm() {
    let copy = odd_comm_copy();
    let name = TestName::new("comm-reader");
    cat_pair(
        &name,
        &cmdline(&[shmlane_bin()]),
        &copy.prefix(),
        &|_, r| assert_comm_not_utf8(r),
    );
}

/// Child (run under a non-UTF-8 name): a consumer that lets the producer fill the ring
/// and wait, then reads `NOBODY_MESSAGES` messages of 1000 bytes and the disconnect.
#[test]
fn child_slow_consumer() {
    if !is_child("child_slow_consumer") {
        return;
    }
    let mut rx = Consumer::open(&child_arg("NAME")).expect("open consumer");
    std::thread::sleep(Duration::from_millis(500));
    for seq in 0..NOBODY_MESSAGES {
        let m = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("message {seq}: {e}"));
        assert_eq!(u64::from(m.tag()), seq, "out of order");
        assert!(m.len() == 1000 && check(&m, seq), "message {seq} torn");
    }
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(5)),
        Err(Error::Disconnected)
    ));
}

#[test]
fn producer_waiting_on_a_consumer_with_a_non_utf8_comm() {
    let me = std::env::current_exe().unwrap();
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let copy = BinCopy::of(&me, base, "comm-lib", &"\u{e9}".repeat(9));
    let name = TestName::new("comm-lib");
    let mut tx =
        Producer::create(&name, &Options::new().capacity(16 << 10).max_message(1024)).unwrap();
    let mut child = Proc::spawn(
        child_under(
            &[copy.exe.to_str().unwrap().to_string()],
            "child_slow_consumer",
            &[("NAME", name.to_string())],
        ),
        "the consumer with a non-UTF-8 comm",
    );
    assert_comm_not_utf8(child.pid());
    // The ring (16 KiB) fills while the consumer sleeps: the producer waits for room and
    // looks at whether the consumer lives.
    let mut buf = [0u8; 1000];
    for seq in 0..NOBODY_MESSAGES {
        fill(&mut buf, seq);
        if let Err(e) = tx.send_tagged_timeout(seq as u32, &buf, Duration::from_secs(5)) {
            panic!(
                "send {seq} of {NOBODY_MESSAGES}: {e} (peer {:?}, while the consumer lives)",
                tx.peer()
            );
        }
    }
    drop(tx);
    let status = child.wait_for(Duration::from_secs(10));
    assert!(status.success(), "the consumer child exited {status}");
}

// ---------------------------------------------------------------------------------
// 3. A peer of another user, under a /proc mounted hidepid=2.

const HIDEPID_CHILD: &str = "child_hidepid_cat_pair";

/// Child: in a private mount namespace with `/proc` mounted `hidepid=2`, runs
/// `cat --to` as `nobody` and `cat --from` as root.
#[test]
fn child_hidepid_cat_pair() {
    if !is_child(HIDEPID_CHILD) {
        return;
    }
    let ok = common::mount_privately(c"proc", c"/proc", c"hidepid=2");
    if !ok {
        eprintln!(
            "SKIP: cannot mount /proc with hidepid=2 in a private mount namespace: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(SKIP_EXIT);
    }
    // `nobody` must be able to run the binary: a copy in a world-readable directory.
    let copy = BinCopy::new(&std::env::temp_dir(), "hidepid", "shmlane");
    let exe = copy.exe.to_str().unwrap().to_string();
    let as_nobody = cmdline(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &exe,
    ]);
    // The mount took: nobody cannot see this (root's) process.
    let me = std::process::id().to_string();
    let seen = Command::new(&as_nobody[0])
        .args(&as_nobody[1..4])
        .args(["test", "-e", &format!("/proc/{me}/stat")])
        .status();
    match seen {
        Err(e) => {
            eprintln!("SKIP: cannot run setpriv (util-linux): {e}");
            std::process::exit(SKIP_EXIT);
        }
        Ok(s) if s.code() == Some(0) => panic!("hidepid=2 did not hide root's process"),
        Ok(s) if s.code() == Some(1) => {}
        Ok(s) => {
            eprintln!("SKIP: setpriv --reuid=65534 refused ({s})");
            std::process::exit(SKIP_EXIT);
        }
    }
    let name = TestName::new("hidepid");
    cat_pair(&name, &as_nobody, &[exe], &|_, _| {});

    // The same through the library: this test binary, run as nobody, is the producer; it
    // fills the ring and waits for room while we (root) do not read, so it must look at
    // whether we live, through a /proc that hides us.
    let me = std::env::current_exe().unwrap();
    let test_copy = BinCopy::of(&me, &std::env::temp_dir(), "hidepid-lib", "liveness");
    let name = TestName::new("hidepid-lib");
    let mut rx = Consumer::create(
        &name,
        &Options::new()
            .capacity(16 << 10)
            .max_message(1024)
            .mode(0o666),
    )
    .unwrap();
    let mut nobody = as_nobody.clone();
    nobody.pop();
    nobody.push(test_copy.exe.to_str().unwrap().to_string());
    let mut child = Proc::spawn(
        child_under(
            &nobody,
            "child_nobody_producer",
            &[("NAME", name.to_string())],
        ),
        "the producer run as nobody",
    );
    std::thread::sleep(Duration::from_millis(500));
    for seq in 0..NOBODY_MESSAGES {
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .map(|m| (m.tag(), m.len() == 1000 && check(&m, seq)));
        match got {
            Ok((tag, intact)) => {
                assert_eq!(u64::from(tag), seq, "out of order");
                assert!(intact, "message {seq} torn");
            }
            Err(e) => panic!("message {seq} of {NOBODY_MESSAGES}: {e}"),
        }
    }
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(5)),
        Err(Error::Disconnected)
    ));
    let status = child.wait_for(Duration::from_secs(10));
    assert!(
        status.success(),
        "the producer run as nobody exited {status} (it took root's consumer for gone?)"
    );
}

const NOBODY_MESSAGES: u64 = 100;

/// Child (run as nobody under hidepid=2): sends `NOBODY_MESSAGES` messages of 1000 bytes
/// into a 16 KiB ring, waiting for room.
#[test]
fn child_nobody_producer() {
    if !is_child("child_nobody_producer") {
        return;
    }
    let mut tx = Producer::open(&child_arg("NAME")).expect("open producer");
    let mut buf = [0u8; 1000];
    for seq in 0..NOBODY_MESSAGES {
        fill(&mut buf, seq);
        if let Err(e) = tx.send_tagged(seq as u32, &buf) {
            panic!("send {seq}: {e} (peer {:?})", tx.peer());
        }
    }
}

#[test]
fn cat_writer_of_another_user_under_hidepid() {
    if !is_root() {
        return skip("needs root (a private mount namespace, and a writer run as nobody)");
    }
    let child = spawn_child(HIDEPID_CHILD, &[]);
    let status = wait_child(child, Duration::from_secs(30));
    if status.code() == Some(SKIP_EXIT) {
        return skip("the child could not set up hidepid=2 (reason printed above)");
    }
    assert!(status.success(), "the child exited {status}");
}

// ---------------------------------------------------------------------------------
// 4. A SIGKILLed peer that its parent has not reaped yet.

const IDLE_MESSAGES: u64 = 10;

/// Child: opens a producer, sends `IDLE_MESSAGES` messages, then idles until killed.
#[test]
fn child_idle_producer() {
    if !is_child("child_idle_producer") {
        return;
    }
    let mut tx = Producer::open(&child_arg("NAME")).expect("open producer");
    for seq in 0..IDLE_MESSAGES {
        tx.send_tagged(seq as u32, &[seq as u8; 16]).expect("send");
    }
    std::thread::sleep(Duration::from_secs(60));
}

/// How the consumer waits in the killed-producer tests.
#[derive(Clone, Copy, Debug)]
enum Waiting {
    /// `recv()`.
    Blocking,
    /// `recv_timeout(10 ms)` in a loop.
    ShortTimeouts,
    /// `try_recv()` and a 1 ms sleep in a loop.
    Polling,
}

/// One waiting receive step: `Ok(true)` a message, `Ok(false)` nothing yet.
fn recv_step(rx: &mut Consumer, how: Waiting) -> Result<bool, Error> {
    match how {
        Waiting::Blocking => rx.recv().map(|_| true),
        Waiting::ShortTimeouts => match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(_) => Ok(true),
            Err(Error::Timeout) => Ok(false),
            Err(e) => Err(e),
        },
        Waiting::Polling => match rx.try_recv().map(|_| ()) {
            Ok(()) => Ok(true),
            Err(TryRecvError::Empty) => {
                std::thread::sleep(Duration::from_millis(1));
                Ok(false)
            }
            // try_* say Disconnected for both ends; `peer()` tells a death apart.
            Err(TryRecvError::Disconnected) if matches!(rx.peer(), PeerState::Dead(_)) => {
                Err(Error::PeerDied)
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// The producer child is SIGKILLed while the consumer waits, and not reaped: the consumer
/// must drain and get `PeerDied` within `DEAD_WITHIN` of the kill.
fn unreaped_producer_killed(how: Waiting) {
    let name = TestName::new("zombie-prod");
    let mut rx = Consumer::create(&name, &Options::new().capacity(4096).max_message(64)).unwrap();
    let mut child = Proc {
        child: Some(spawn_child("child_idle_producer", &[("NAME", name.to_string())]).into_child()),
        what: "the producer child".into(),
    };
    for seq in 0..IDLE_MESSAGES {
        let m = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("message {seq}: {e}"));
        assert_eq!(u64::from(m.tag()), seq);
    }
    let peer = rx.peer();
    assert!(
        matches!(peer, PeerState::Alive(_)),
        "peer() is {peer:?} while the producer idles"
    );
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = loop {
            match recv_step(&mut rx, how) {
                Ok(true) => break Err("a message after the last one".to_string()),
                Ok(false) => {}
                Err(Error::PeerDied) => break Ok(Instant::now()),
                Err(e) => break Err(e.to_string()),
            }
        };
        let _ = done_tx.send(r);
    });
    // Let the consumer settle into its wait, then kill the producer; do not reap it.
    std::thread::sleep(Duration::from_millis(150));
    if let Ok(r) = done_rx.try_recv() {
        panic!("the consumer stopped waiting before the kill: {r:?}");
    }
    child.kill();
    let killed = Instant::now();
    let r = done_rx.recv_timeout(Duration::from_secs(3));
    let noticed = match r {
        Ok(Ok(t)) => t.duration_since(killed),
        Ok(Err(e)) => panic!("{how:?}: expected PeerDied, got {e}"),
        Err(_) => {
            panic!("{how:?}: no PeerDied within 3 s of SIGKILLing the (unreaped) producer")
        }
    };
    assert!(
        noticed <= DEAD_WITHIN,
        "{how:?}: the killed, unreaped producer was noticed after {noticed:?} (contract: {DEAD_WITHIN:?})"
    );
    child.reap();
}

#[test]
fn unreaped_killed_producer_blocking_recv() {
    unreaped_producer_killed(Waiting::Blocking);
}

#[test]
fn unreaped_killed_producer_recv_timeout_loop() {
    unreaped_producer_killed(Waiting::ShortTimeouts);
}

#[test]
fn unreaped_killed_producer_try_recv_loop() {
    unreaped_producer_killed(Waiting::Polling);
}

/// Child: opens an MPMC sender, sends `IDLE_MESSAGES` messages tagged with its ID, then
/// idles until killed.
#[test]
fn child_idle_sender() {
    if !is_child("child_idle_sender") {
        return;
    }
    let tx = mpmc::Sender::open(&child_arg("NAME")).expect("open sender");
    let id: u32 = child_arg("ID").parse().unwrap();
    for _ in 0..IDLE_MESSAGES {
        tx.send_tagged(id, b"hello").expect("send");
    }
    std::thread::sleep(Duration::from_secs(60));
}

/// Starts `n` idle sender children on `name` and receives all their messages (so every
/// one has attached).
fn idle_senders(name: &str, rx: &mpmc::Receiver, n: u32) -> Vec<Proc> {
    let kids: Vec<Proc> = (0..n)
        .map(|id| Proc {
            child: Some(
                spawn_child(
                    "child_idle_sender",
                    &[("NAME", name.to_string()), ("ID", id.to_string())],
                )
                .into_child(),
            ),
            what: format!("sender child {id}"),
        })
        .collect();
    let mut per = vec![0u64; n as usize];
    for i in 0..u64::from(n) * IDLE_MESSAGES {
        let m = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("message {i} from the senders: {e}"));
        per[m.tag() as usize] += 1;
    }
    assert!(per.iter().all(|&c| c == IDLE_MESSAGES), "{per:?}");
    kids
}

#[test]
fn unreaped_killed_mpmc_senders_recv_timeout_loop() {
    let name = TestName::new("zombie-senders");
    let rx = mpmc::Receiver::create(&name, &Options::new().slots(64).max_message(64)).unwrap();
    let mut kids = idle_senders(&name, &rx, 3);
    let (done_tx, done_rx) = mpsc::channel();
    for r in 0..2 {
        let rx = rx.clone();
        let done_tx = done_tx.clone();
        std::thread::spawn(move || {
            let res = loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(m) => break Err(format!("an unexpected message, tag {}", m.tag())),
                    Err(Error::Timeout) => {}
                    Err(Error::PeerDied) => break Ok(Instant::now()),
                    Err(e) => break Err(e.to_string()),
                }
            };
            let _ = done_tx.send((r, res));
        });
    }
    drop(rx);
    std::thread::sleep(Duration::from_millis(150));
    let mut last_kill = Instant::now();
    for k in kids.iter_mut() {
        if let Ok((r, res)) = done_rx.try_recv() {
            panic!("receiver {r} stopped while a sender lived: {res:?}");
        }
        k.kill();
        last_kill = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
    }
    for _ in 0..2 {
        match done_rx.recv_timeout(Duration::from_secs(3)) {
            Ok((r, Ok(t))) => {
                assert!(
                    t >= last_kill,
                    "receiver {r} got Disconnected before the last sender was killed"
                );
                let noticed = t.duration_since(last_kill);
                assert!(
                    noticed <= DEAD_WITHIN,
                    "receiver {r} noticed the killed, unreaped senders after {noticed:?} (contract: {DEAD_WITHIN:?})"
                );
            }
            Ok((r, Err(e))) => panic!("receiver {r}: expected PeerDied, got {e}"),
            Err(_) => panic!(
                "a receiver got no PeerDied within 3 s of SIGKILLing the last (unreaped) sender"
            ),
        }
    }
    for k in kids.iter_mut() {
        k.reap();
    }
}

// ---------------------------------------------------------------------------------
// 5. `shmlane inspect` counts live senders, not registrations.

#[test]
fn inspect_counts_only_live_senders() {
    let name = TestName::new("inspect-live");
    let rx = mpmc::Receiver::create(&name, &Options::new().slots(64).max_message(64)).unwrap();
    let mut kids = idle_senders(&name, &rx, 3);
    for k in kids.iter_mut().take(2) {
        k.kill();
        k.reap();
    }
    // Give a lazily updated count a moment; the contract is what inspect says then.
    let start = Instant::now();
    let (live, alive_entries, text) = loop {
        let out = Command::new(shmlane_bin())
            .args(["inspect", &name, "--json"])
            .output()
            .expect("run shmlane inspect");
        assert!(out.status.success(), "inspect exited {}", out.status);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let v: serde_json::Value = serde_json::from_str(&text).expect("inspect --json");
        let live = v["mpmc_live_senders"].as_u64();
        let alive_entries = v["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .filter(|e| e["role"] == "sender" && e["liveness"] == "alive")
            .count();
        if live == Some(1) || start.elapsed() > Duration::from_secs(1) {
            break (live, alive_entries, text);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        alive_entries, 1,
        "endpoints listed as live senders (1 of 3 alive): {text}"
    );
    assert_eq!(
        live,
        Some(1),
        "mpmc_live_senders with 2 of 3 senders SIGKILLed: {text}"
    );
    // And the human-readable line says the same.
    let out = Command::new(shmlane_bin())
        .args(["inspect", &name])
        .output()
        .expect("run shmlane inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("senders 1,"),
        "inspect's `mpmc live` line with 1 of 3 senders alive: {text}"
    );
    drop(rx);
}
