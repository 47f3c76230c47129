//! Every backend in `BackendKind::ALL`, end to end:
//!
//! - the real cross-process benchmark (a spawned `shmlane __peer`, checksums verified) for
//!   throughput and ping-pong latency at 8 B, 64 B, 4 KiB and, where the machine allows,
//!   64 KiB;
//! - one process, two threads: 1000 messages of varied sizes (0 bytes included) keep their
//!   content and order, and the receiver then gets `Disconnected` once the sender dropped
//!   (with either side as the creator);
//! - a sender process that dies without dropping its end (SIGKILL): the receiver gets what
//!   was sent, then `Disconnected`, and does not hang; and a receiver process that dies:
//!   the sender gets `Disconnected` (every backend but `posix-mq`, which cannot tell and
//!   so has no such test).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shmlane::{Error, Wait};
use shmlane_bench::backend::{BackendKind, Config, RxEnd, Transport, TxEnd};
use shmlane_bench::runner::{self as bench, Setup};
use shmlane_bench::with_backend;

const CHILD_ENV: &str = "SHMLANE_BACKENDS_CRASH_CHILD";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name(tag: &str) -> String {
    format!(
        "/shmlane-bt-{}-{}-{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn kind(name: &str) -> BackendKind {
    name.parse().expect("a known backend")
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit` (a hang).
fn within<R: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (done, wait) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let r = f();
        let _ = done.send(());
        r
    });
    match wait.recv_timeout(limit) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} hung for more than {limit:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Cross-process benchmark runs.

fn bench_runs(kind: BackendKind) {
    let setup = Setup {
        peer_exe: env!("CARGO_BIN_EXE_shmlane-bench-peer").into(),
        config: Config {
            max_message: 64 << 10,
            capacity: 1 << 20,
            wait: Wait::Block,
        },
        pin: false,
    };
    for size in [8usize, 64, 4096, 65536] {
        if let Err(why) = kind.supports(size) {
            assert_eq!(size, 65536, "{kind} must carry {size}-byte messages: {why}");
            assert!(why.contains("limit"), "{kind}: unclear reason {why:?}");
            eprintln!("{kind} {size} B skipped: {why}");
            continue;
        }
        // What is checked: the peer checksums every byte of every message (bodies differ
        // from one message to the next in every byte, `bench::Payload`) against the
        // order-sensitive total the sender computed, and each echo is checked; any
        // difference is an error here. (The message counts are ours, not results.)
        let t = bench::throughput(kind, &setup, size, 20_000)
            .unwrap_or_else(|e| panic!("{kind} {size} B throughput: {e}"));
        let l = bench::latency(kind, &setup, size, 2_000)
            .unwrap_or_else(|e| panic!("{kind} {size} B latency: {e}"));
        eprintln!(
            "{kind} {size} B: {:.0} msg/s, p50 {} ns",
            t.msgs_per_sec(),
            l.quantile(0.5)
        );
    }
}

// ---------------------------------------------------------------------------------------
// One process, two threads.

const MESSAGES: u32 = 1000;
const MAX: usize = 4096;

fn small_config() -> Config {
    Config {
        max_message: MAX,
        capacity: 64 << 10,
        wait: Wait::Block,
    }
}

/// Message `i`: a size between 0 and MAX (0 and MAX included) and bytes derived from `i`.
fn message(i: u32) -> Vec<u8> {
    let len = match i {
        0 => 0,
        1 => MAX,
        _ => (i as usize * 131) % (MAX + 1),
    };
    (0..len)
        .map(|j| (j as u32).wrapping_mul(31).wrapping_add(i * 7) as u8)
        .collect()
}

/// [`message`] cut to a length the backend carries (`shm-spsc-typed` carries `u64`
/// slices: multiples of 8 bytes; every other backend carries any length up to `MAX`).
fn message_for<T: Transport>(i: u32) -> Vec<u8> {
    let mut m = message(i);
    while T::supports(m.len()).is_err() {
        m.pop();
    }
    m
}

fn send_all<T: Transport>(tx: &mut T::Tx) {
    for i in 0..MESSAGES {
        tx.send(&message_for::<T>(i))
            .unwrap_or_else(|e| panic!("{}: send {i}: {e}", T::NAME));
    }
    let too_big = vec![0u8; MAX + 8];
    assert!(
        matches!(tx.send(&too_big), Err(Error::MessageTooLarge { .. })),
        "{}: a message over max_message must be refused",
        T::NAME
    );
}

fn recv_all<T: Transport>(rx: &mut T::Rx) {
    for i in 0..MESSAGES {
        let want = message_for::<T>(i);
        let same = rx
            .recv_with(|m| m == &want[..])
            .unwrap_or_else(|e| panic!("{}: recv {i}: {e}", T::NAME));
        assert!(same, "{}: message {i} differs", T::NAME);
    }
    // The sender drops after its last send: from here on, `Disconnected`.
    match rx.recv_with(|m| m.len()) {
        Err(Error::Disconnected) => {}
        other => panic!("{}: expected Disconnected, got {other:?}", T::NAME),
    }
    assert!(matches!(rx.recv_with(|_| ()), Err(Error::Disconnected)));
}

/// Opens a channel another thread may not have created yet (as the benchmark's peer does:
/// some backends wait for the creator themselves, `shm-spsc` reports `NotFound` at once).
fn open_retry<X>(what: &str, mut open: impl FnMut() -> shmlane::Result<X>) -> X {
    let start = Instant::now();
    loop {
        match open() {
            Err(Error::NotFound { .. }) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return other.unwrap_or_else(|e| panic!("{what}: {e}")),
        }
    }
}

/// The sender creates the channel and drops as soon as it has sent everything (messages
/// still in flight must survive that).
fn same_process_tx_creates<T: Transport>() {
    let name = unique_name("tx");
    let cfg = small_config();
    let (n, c) = (name.clone(), cfg.clone());
    let sender = std::thread::spawn(move || {
        let mut tx = T::create_tx(&n, &c).unwrap_or_else(|e| panic!("{}: create_tx: {e}", T::NAME));
        send_all::<T>(&mut tx);
    });
    let mut rx = open_retry(&format!("{}: open_rx", T::NAME), || T::open_rx(&name, &cfg));
    recv_all::<T>(&mut rx);
    sender.join().expect("sender thread");
}

/// The receiver creates the channel; the sender opens it and drops when done.
fn same_process_rx_creates<T: Transport>() {
    let name = unique_name("rx");
    let cfg = small_config();
    let (n, c) = (name.clone(), cfg.clone());
    let sender = std::thread::spawn(move || {
        let mut tx = open_retry(&format!("{}: open_tx", T::NAME), || T::open_tx(&n, &c));
        send_all::<T>(&mut tx);
    });
    let mut rx =
        T::create_rx(&name, &cfg).unwrap_or_else(|e| panic!("{}: create_rx: {e}", T::NAME));
    recv_all::<T>(&mut rx);
    sender.join().expect("sender thread");
}

fn same_process(kind: BackendKind) {
    within(
        Duration::from_secs(20),
        "same-process (tx creates)",
        move || with_backend!(kind, T => same_process_tx_creates::<T>()),
    );
    within(
        Duration::from_secs(20),
        "same-process (rx creates)",
        move || with_backend!(kind, T => same_process_rx_creates::<T>()),
    );
}

// ---------------------------------------------------------------------------------------
// A peer process killed without dropping its end.

const CRASH_MESSAGES: u32 = 10;

/// The child half of the "killed" tests: opens the channel as the sender (`tx`: sends a
/// few messages) or the receiver (`rx`: reads one message), then SIGKILLs itself. Does
/// nothing in a normal test run.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut words = spec.split(' ');
    let (role, backend, name) = (
        words.next().expect("role"),
        words.next().expect("backend"),
        words.next().expect("name"),
    );
    with_backend!(kind(backend), T => {
        if role == "tx" {
            let mut tx = open_retry("open_tx in the child", || T::open_tx(name, &small_config()));
            for i in 0..CRASH_MESSAGES {
                // Through the trait: some senders also have an inherent `send(&self)`.
                TxEnd::send(&mut tx, &message_for::<T>(i)).expect("send in the child");
            }
            die(tx)
        } else {
            let mut rx = open_retry("open_rx in the child", || T::open_rx(name, &small_config()));
            rx.recv_with(|_| ()).expect("recv in the child");
            die(rx)
        }
    })
}

/// SIGKILLs this process while `endpoint` is still open (never dropped).
fn die<E>(endpoint: E) -> ! {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    drop(endpoint);
    unreachable!("SIGKILL")
}

fn spawn_child(role: &str, backend: &str, name: &str) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{role} {backend} {name}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the child")
}

/// Runs `parent` against a child that SIGKILLs itself, and reaps the child.
fn with_child(role: &str, backend: &str, name: &str, parent: impl FnOnce()) {
    let mut child = spawn_child(role, backend, name);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(parent));
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for the child");
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the child should have killed itself ({status})"
    );
}

/// shmlane's own rings tell a peer that died (`PeerDied`) from one that closed
/// (`Disconnected`); the kernel-IPC baselines and the mutex queue cannot.
fn tells_death(backend: &str) -> bool {
    matches!(
        backend,
        "shm-spsc" | "shm-spsc-typed" | "shm-mpmc" | "shm-spsc-async"
    )
}

fn sender_killed_with<T: Transport>() {
    let name = unique_name("crash");
    with_child("tx", T::NAME, &name, || {
        let mut rx = T::create_rx(&name, &small_config())
            .unwrap_or_else(|e| panic!("{}: create_rx: {e}", T::NAME));
        for i in 0..CRASH_MESSAGES {
            let want = message_for::<T>(i);
            let same = rx
                .recv_with(|m| m == &want[..])
                .unwrap_or_else(|e| panic!("{}: recv {i}: {e}", T::NAME));
            assert!(same, "{}: message {i} differs", T::NAME);
        }
        let t = Instant::now();
        match rx.recv_with(|m| m.len()) {
            Err(Error::PeerDied) if tells_death(T::NAME) => {}
            Err(Error::Disconnected) if !tells_death(T::NAME) => {}
            other => panic!("{}: expected the death reported, got {other:?}", T::NAME),
        }
        eprintln!("{}: dead sender noticed in {:?}", T::NAME, t.elapsed());
    });
}

/// The receiver process dies after one message: the sender, which keeps sending into a
/// queue that fills up, must get `Disconnected` instead of blocking forever.
fn receiver_killed_with<T: Transport>() {
    let name = unique_name("rxcrash");
    with_child("rx", T::NAME, &name, || {
        let mut tx = T::create_tx(&name, &small_config())
            .unwrap_or_else(|e| panic!("{}: create_tx: {e}", T::NAME));
        let t = Instant::now();
        let mut sent = 0u32;
        loop {
            match tx.send(&message_for::<T>(sent % MESSAGES)) {
                Ok(()) => sent += 1,
                Err(Error::PeerDied) if tells_death(T::NAME) => break,
                Err(Error::Disconnected) if !tells_death(T::NAME) => break,
                Err(e) => panic!("{}: send {sent}: {e}", T::NAME),
            }
        }
        eprintln!(
            "{}: dead receiver noticed after {sent} messages, {:?}",
            T::NAME,
            t.elapsed()
        );
    });
}

fn sender_killed(kind: BackendKind) {
    within(
        Duration::from_secs(20),
        "dead-sender test",
        move || with_backend!(kind, T => sender_killed_with::<T>()),
    );
}

fn receiver_killed(kind: BackendKind) {
    // Documented limitation: a POSIX queue cannot tell its sender that a receiver was
    // killed (only that one closed, by unlinking the name), so posix-mq has no such test
    // (see `backend_tests!`), rather than one that passes without looking.
    assert_ne!(
        kind,
        BackendKind::PosixMq,
        "posix-mq cannot notice a killed receiver"
    );
    within(
        Duration::from_secs(20),
        "dead-receiver test",
        move || with_backend!(kind, T => receiver_killed_with::<T>()),
    );
}

// ---------------------------------------------------------------------------------------

macro_rules! backend_tests {
    ($($module:ident => $name:literal $(, $killed_receiver:ident)?);* $(;)?) => {
        $(
            mod $module {
                use super::*;

                $(
                    #[test]
                    fn $killed_receiver() {
                        receiver_killed(kind($name));
                    }
                )?

                #[test]
                fn cross_process_bench() {
                    bench_runs(kind($name));
                }

                #[test]
                fn same_process_order_and_disconnect() {
                    same_process(kind($name));
                }

                #[test]
                fn killed_sender_is_noticed() {
                    sender_killed(kind($name));
                }

            }
        )*

        #[test]
        fn every_backend_is_tested() {
            let tested = [$($name),*];
            for b in BackendKind::ALL {
                assert!(tested.contains(&b.name()), "{b} has no tests in tests/backends.rs");
            }
        }
    };
}

backend_tests! {
    shm_spsc => "shm-spsc", killed_receiver_is_noticed;
    shm_spsc_typed => "shm-spsc-typed", killed_receiver_is_noticed;
    shm_mpmc => "shm-mpmc", killed_receiver_is_noticed;
    shm_mutex => "shm-mutex", killed_receiver_is_noticed;
    pipe => "pipe", killed_receiver_is_noticed;
    unix_socket => "unix-socket", killed_receiver_is_noticed;
    sysv_msgq => "sysv-msgq", killed_receiver_is_noticed;
    // A killed receiver is not detected (documented in src/backend/posix_mq.rs): no test.
    posix_mq => "posix-mq";
    shm_spsc_async => "shm-spsc-async", killed_receiver_is_noticed;
    tokio_unix => "tokio-unix", killed_receiver_is_noticed;
    tokio_pipe => "tokio-pipe", killed_receiver_is_noticed;
}
