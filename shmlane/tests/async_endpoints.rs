//! Async endpoints (issue #14): awaited from tokio (current-thread and multi-thread)
//! against blocking peers in child processes; cancel safety under `timeout`; 200 rings
//! awaited at once (more than one `futex_waitv` call); a SIGKILLed peer; MPMC both ways;
//! the readiness fd; idle CPU; the fallback without `futex_waitv`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{check, child_arg, fill, finish_child, is_child, spawn_child, spawn_child_env};
use common::{Rng, TestName};
use shmlane::mpmc;
use shmlane::spsc::{Consumer, Producer};
use shmlane::{Error, Options, Wait};

/// Cross-process tests share two cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const MAX_MESSAGE: usize = 256;

fn sizes(seed: u64) -> impl Iterator<Item = usize> {
    let mut rng = Rng(seed);
    std::iter::repeat_with(move || rng.below(MAX_MESSAGE as u64 + 1) as usize)
}

fn spsc_opts() -> Options {
    Options::new()
        .capacity(16 << 10)
        .max_message(MAX_MESSAGE)
        .wait(Wait::Block)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Child: opens the SPSC channel NAME as producer and sends COUNT messages of random sizes
/// (seed SEED), tag = sequence number, pausing PAUSE_US every PAUSE_EVERY messages so the
/// consumer runs dry and has to wait.
#[test]
fn child_spsc_producer() {
    if !is_child("child_spsc_producer") {
        return;
    }
    let name = child_arg("NAME");
    let count: u64 = child_arg("COUNT").parse().unwrap();
    let seed: u64 = child_arg("SEED").parse().unwrap();
    let pause_every: u64 = child_arg("PAUSE_EVERY").parse().unwrap();
    let pause = Duration::from_micros(child_arg("PAUSE_US").parse().unwrap());
    let mut tx = Producer::open_timeout(&name, Duration::from_secs(10)).expect("open");
    let mut buf = vec![0u8; MAX_MESSAGE];
    for (seq, len) in (0..count).zip(sizes(seed)) {
        fill(&mut buf[..len], seq);
        tx.send_tagged(seq as u32, &buf[..len]).expect("send");
        if seq % pause_every == pause_every - 1 {
            std::thread::sleep(pause);
        }
    }
}

fn spawn_producer(
    name: &str,
    count: u64,
    seed: u64,
    pause_every: u64,
    pause_us: u64,
) -> common::TestChild {
    spawn_child(
        "child_spsc_producer",
        &[
            ("NAME", name.to_string()),
            ("COUNT", count.to_string()),
            ("SEED", seed.to_string()),
            ("PAUSE_EVERY", pause_every.to_string()),
            ("PAUSE_US", pause_us.to_string()),
        ],
    )
}

const COUNT: u64 = 100_000;

/// Waits that found their message only when their liveness tick woke them: each is a
/// post that did not wake its task (a lost wake-up, hidden by the tick). A post can race a
/// tick, rarely: allow two.
fn assert_no_lost_wakeups(before: u64) {
    let lost = shmlane::wait::stats::async_tick_found() - before;
    assert!(
        lost <= 2,
        "{lost} waits were ended by their tick, not by the post"
    );
}

/// Receives COUNT messages with `recv().await`, each intact and in order, then
/// `Disconnected` once the child has closed.
fn spsc_from_child(rt: tokio::runtime::Runtime, seed: u64) {
    let _s = serial();
    let name = TestName::new("async-spsc");
    let rx = Consumer::create(&name, &spsc_opts()).expect("create");
    let mut rx = rx.into_async().expect("into_async");
    let child = spawn_producer(&name, COUNT, seed, 5_000, 2_000);
    let sleeps_before = shmlane::wait::stats::sleeps();
    let ticks_before = shmlane::wait::stats::async_tick_found();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            let mut lens = sizes(seed);
            for seq in 0..COUNT {
                let m = rx
                    .recv()
                    .await
                    .unwrap_or_else(|e| panic!("recv {seq}: {e}"));
                let len = lens.next().unwrap();
                assert_eq!(m.tag(), seq as u32, "message {seq} out of order");
                assert_eq!(m.len(), len, "message {seq} has the wrong length");
                assert!(check(&m, seq), "message {seq} corrupt");
            }
            match rx.recv().await {
                Err(Error::Disconnected) => {}
                other => panic!("after the last message: {:?}", other.map(|m| m.len())),
            }
        })
        .await
        .expect("stuck: not every message arrived within 60 s")
    });
    println!(
        "waits {}, found by a tick {}",
        shmlane::wait::stats::sleeps() - sleeps_before,
        shmlane::wait::stats::async_tick_found() - ticks_before
    );
    assert_no_lost_wakeups(ticks_before);
    // The child paused 20 times: the consumer must have waited through the helper.
    assert!(
        shmlane::wait::stats::sleeps() > sleeps_before,
        "the async consumer never waited: the test did not exercise the helper thread"
    );
    finish_child(child, Duration::from_secs(60));
}

#[test]
fn spsc_100k_from_child_current_thread() {
    spsc_from_child(current_thread(), 1);
}

#[test]
fn spsc_100k_from_child_multi_thread() {
    let rt = multi_thread();
    spsc_from_child(rt, 2);
}

/// `timeout(1 ms, rx.recv())` around every receive: futures dropped mid-wait lose and
/// duplicate nothing.
fn spsc_timeouts(rt: tokio::runtime::Runtime, seed: u64) {
    let _s = serial();
    let name = TestName::new("async-timeout");
    let mut rx = Consumer::create(&name, &spsc_opts())
        .unwrap()
        .into_async()
        .unwrap();
    // Pauses of 3 ms every 500 messages: 200 of them, each longer than the timeout.
    let child = spawn_producer(&name, COUNT, seed, 500, 3_000);
    let ticks_before = shmlane::wait::stats::async_tick_found();
    let timeouts = rt.block_on(async {
        let mut lens = sizes(seed);
        let mut timeouts = 0u64;
        let mut seq = 0u64;
        while seq < COUNT {
            match tokio::time::timeout(Duration::from_millis(1), rx.recv()).await {
                Err(_elapsed) => timeouts += 1,
                Ok(r) => {
                    let m = r.unwrap_or_else(|e| panic!("recv {seq}: {e}"));
                    assert_eq!(m.tag(), seq as u32, "message {seq}: lost or duplicated");
                    assert_eq!(m.len(), lens.next().unwrap());
                    assert!(check(&m, seq), "message {seq} corrupt");
                    seq += 1;
                }
            }
        }
        loop {
            match tokio::time::timeout(Duration::from_millis(1), rx.recv()).await {
                Err(_) => timeouts += 1,
                Ok(Err(Error::Disconnected)) => break,
                Ok(other) => panic!("after the last message: {:?}", other.map(|m| m.tag())),
            }
        }
        timeouts
    });
    // Every cancelled wait gave back its unit of the waiter count.
    let waiters = shmlane::inspect::inspect(&name)
        .unwrap()
        .fields
        .data_waiters;
    assert_eq!(waiters, Some(0), "the waiter count is unbalanced");
    assert!(
        timeouts > 10,
        "only {timeouts} timeouts: cancellation was not exercised"
    );
    assert_no_lost_wakeups(ticks_before);
    finish_child(child, Duration::from_secs(60));
}

#[test]
fn spsc_recv_under_timeout_current_thread() {
    spsc_timeouts(current_thread(), 3);
}

#[test]
fn spsc_recv_under_timeout_multi_thread() {
    spsc_timeouts(multi_thread(), 4);
}

/// Child: feeds the SPSC rings NAME_0 .. NAME_{N-1}: PER_RING messages each, round
/// robin, with a pause between rounds, after waiting START_MS (so that every ring is being
/// awaited when the first message comes).
#[test]
fn child_many_rings_producer() {
    if !is_child("child_many_rings_producer") {
        return;
    }
    let names: Vec<String> = child_arg("NAMES").split(',').map(String::from).collect();
    let per_ring: u64 = child_arg("PER_RING").parse().unwrap();
    let mut txs: Vec<Producer> = names
        .iter()
        .map(|n| Producer::open_timeout(n, Duration::from_secs(10)).expect("open"))
        .collect();
    println!("OPEN");
    std::thread::sleep(Duration::from_millis(300));
    let mut buf = [0u8; 64];
    for seq in 0..per_ring {
        for (i, tx) in txs.iter_mut().enumerate() {
            let len = (seq as usize + i) % 64;
            fill(&mut buf[..len], seq);
            tx.send_tagged(seq as u32, &buf[..len]).expect("send");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// 200 rings awaited at once by 200 tasks (more than one `futex_waitv` call takes), fed
/// by four children: every message arrives, in order, on every ring.
#[test]
fn two_hundred_rings_at_once() {
    let _s = serial();
    const RINGS: usize = 200;
    const CHILDREN: usize = 4;
    const PER_RING: u64 = 50;
    let names: Vec<TestName> = (0..RINGS).map(|_| TestName::new("async-many")).collect();
    let opts = Options::new().capacity(4096).max_message(64);
    let rxs: Vec<_> = names
        .iter()
        .map(|n| Consumer::create(n, &opts).unwrap().into_async().unwrap())
        .collect();
    let rt = multi_thread();
    let mut children = Vec::new();
    for c in 0..CHILDREN {
        let mine: Vec<&str> = names
            .iter()
            .skip(c)
            .step_by(CHILDREN)
            .map(|n| n.as_str())
            .collect();
        children.push(spawn_child(
            "child_many_rings_producer",
            &[
                ("NAMES", mine.join(",")),
                ("PER_RING", PER_RING.to_string()),
            ],
        ));
    }
    rt.block_on(async {
        let mut tasks = Vec::new();
        for (i, mut rx) in rxs.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                for seq in 0..PER_RING {
                    let m = rx
                        .recv()
                        .await
                        .unwrap_or_else(|e| panic!("ring {i} msg {seq}: {e}"));
                    assert_eq!(m.tag(), seq as u32, "ring {i}: out of order");
                    assert_eq!(m.len(), (seq as usize + i / CHILDREN) % 64, "ring {i}");
                    assert!(check(&m, seq), "ring {i} message {seq} corrupt");
                }
                i
            }));
        }
        let all = tokio::time::timeout(Duration::from_secs(60), async {
            let mut done = 0;
            for t in tasks {
                t.await.expect("a ring's task panicked");
                done += 1;
            }
            done
        })
        .await
        .expect("some rings starved: not every task finished within 60 s");
        assert_eq!(all, RINGS);
    });
    let threads = shmlane::wait::stats::async_helper_threads();
    if shmlane::wait::stats::async_uses_futex_waitv() {
        assert!(
            threads >= 2,
            "200 waits need two futex_waitv helpers; {threads} started"
        );
    }
    for c in children {
        finish_child(c, Duration::from_secs(30));
    }
}

/// Child: sends HOW_MANY messages to NAME, prints SENT, then sleeps until killed.
#[test]
fn child_producer_then_hang() {
    if !is_child("child_producer_then_hang") {
        return;
    }
    let mut tx = Producer::open_timeout(&child_arg("NAME"), Duration::from_secs(10)).unwrap();
    for i in 0..10u32 {
        tx.send_tagged(i, b"before the kill").unwrap();
    }
    println!("SENT");
    std::thread::sleep(Duration::from_secs(60));
}

/// The producer is SIGKILLed while the consumer's `recv().await` waits: `PeerDied`
/// within 500 ms, after every message it sent.
#[test]
fn sigkilled_producer_ends_the_wait() {
    let _s = serial();
    let name = TestName::new("async-kill");
    let mut rx = Consumer::create(&name, &spsc_opts())
        .unwrap()
        .into_async()
        .unwrap();
    let mut child = spawn_child("child_producer_then_hang", &[("NAME", name.to_string())]);
    child.expect_line("SENT", Duration::from_secs(20));
    let rt = current_thread();
    rt.block_on(async {
        for i in 0..10u32 {
            assert_eq!(rx.recv().await.unwrap().tag(), i);
        }
        // Wait a while first, so the kill lands in the middle of a registered wait.
        assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err());
        let recv = tokio::spawn(async move {
            let r = rx.recv().await.map(|m| m.len());
            (r, Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        child.kill().expect("SIGKILL the child");
        let killed = Instant::now();
        let (r, at) = tokio::time::timeout(Duration::from_secs(5), recv)
            .await
            .expect("no answer within 5 s of SIGKILL")
            .unwrap();
        assert!(matches!(r, Err(Error::PeerDied)), "got {r:?}");
        let took = at.duration_since(killed);
        assert!(
            took < Duration::from_millis(500),
            "PeerDied {took:?} after the kill (the contract: within 500 ms)"
        );
    });
    let _ = child.wait();
}

/// Child: a blocking MPMC sender: COUNT messages, tag = index, 4-byte index body.
#[test]
fn child_mpmc_sender() {
    if !is_child("child_mpmc_sender") {
        return;
    }
    let tx = mpmc::Sender::open_timeout(&child_arg("NAME"), Duration::from_secs(10)).unwrap();
    let base: u32 = child_arg("BASE").parse().unwrap();
    let count: u32 = child_arg("COUNT").parse().unwrap();
    for i in base..base + count {
        tx.send_tagged(i, &i.to_le_bytes()).unwrap();
        if i % 1000 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Child: a blocking MPMC receiver: takes messages until Disconnected and prints how many
/// and the sum of their indices.
#[test]
fn child_mpmc_receiver() {
    if !is_child("child_mpmc_receiver") {
        return;
    }
    let rx = mpmc::Receiver::open_timeout(&child_arg("NAME"), Duration::from_secs(10)).unwrap();
    println!("OPEN");
    let (mut n, mut sum) = (0u64, 0u64);
    loop {
        match rx.recv() {
            Ok(m) => {
                let i = u32::from_le_bytes(m[..4].try_into().unwrap());
                assert_eq!(i, m.tag());
                n += 1;
                sum += u64::from(i);
                if n % 2000 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Err(Error::Disconnected) => break,
            Err(e) => panic!("recv: {e}"),
        }
    }
    println!("GOT {n} {sum}");
}

/// Two child senders, one async receiver shared by four tasks: every message once.
#[test]
fn mpmc_async_receiver_from_children() {
    let _s = serial();
    let name = TestName::new("async-mpmc-rx");
    let opts = Options::new().slots(64).max_message(16);
    let rx = Arc::new(
        mpmc::Receiver::create(&name, &opts)
            .unwrap()
            .into_async()
            .unwrap(),
    );
    const PER: u32 = 20_000;
    let kids: Vec<_> = (0..2u32)
        .map(|k| {
            spawn_child(
                "child_mpmc_sender",
                &[
                    ("NAME", name.to_string()),
                    ("BASE", (k * PER).to_string()),
                    ("COUNT", PER.to_string()),
                ],
            )
        })
        .collect();
    let rt = multi_thread();
    let ticks_before = shmlane::wait::stats::async_tick_found();
    let seen = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let rx = rx.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    match rx.recv().await {
                        Ok(m) => {
                            let i = u32::from_le_bytes(m[..4].try_into().unwrap());
                            assert_eq!(i, m.tag());
                            got.push(i);
                        }
                        Err(Error::Disconnected) => return got,
                        Err(e) => panic!("recv: {e}"),
                    }
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(
                tokio::time::timeout(Duration::from_secs(60), t)
                    .await
                    .expect("receivers stuck")
                    .unwrap(),
            );
        }
        all
    });
    let mut seen = seen;
    seen.sort_unstable();
    assert_eq!(seen.len(), 2 * PER as usize, "lost or duplicated messages");
    assert!(seen.iter().enumerate().all(|(i, &v)| v == i as u32));
    assert_no_lost_wakeups(ticks_before);
    for k in kids {
        finish_child(k, Duration::from_secs(30));
    }
}

/// An async sender shared by three tasks feeds a child's blocking receiver through a
/// small ring (the senders wait for slots): everything arrives once.
#[test]
fn mpmc_async_sender_to_child() {
    let _s = serial();
    let name = TestName::new("async-mpmc-tx");
    let opts = Options::new().slots(16).max_message(16);
    let tx = Arc::new(
        mpmc::Sender::create(&name, &opts)
            .unwrap()
            .into_async()
            .unwrap(),
    );
    let mut child = spawn_child("child_mpmc_receiver", &[("NAME", name.to_string())]);
    child.expect_line("OPEN", Duration::from_secs(20));
    const PER: u32 = 10_000;
    let rt = current_thread();
    let ticks_before = shmlane::wait::stats::async_tick_found();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for k in 0..3u32 {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                for i in k * PER..(k + 1) * PER {
                    tx.send_tagged(i, &i.to_le_bytes()).await.unwrap();
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("senders stuck")
                .unwrap();
        }
    });
    assert_no_lost_wakeups(ticks_before);
    drop(tx);
    let n = 3 * u64::from(PER);
    let line = child.expect_line("GOT", Duration::from_secs(30));
    assert_eq!(line, format!("GOT {n} {}", n * (n - 1) / 2));
    finish_child(child, Duration::from_secs(30));
}

/// `timeout(1 ms, tx.send(..))` in a loop against a slow consumer: a dropped send future
/// has sent nothing, a completed one sent its message once.
#[test]
fn spsc_send_under_timeout() {
    let _s = serial();
    let name = TestName::new("async-send-timeout");
    let rx = Consumer::create(&name, &Options::new().capacity(4096).max_message(64)).unwrap();
    let mut tx = Producer::open(&name).unwrap().into_async().unwrap();
    const N: u32 = 20_000;
    let reader = std::thread::spawn(move || {
        let mut rx = rx;
        for i in 0..N {
            let m = rx.recv().unwrap();
            assert_eq!(m.tag(), i, "lost or duplicated");
            assert_eq!(&m[..], &i.to_le_bytes());
            if i % 1000 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        assert!(matches!(rx.recv(), Err(Error::Disconnected)));
    });
    let timeouts = current_thread().block_on(async {
        let mut timeouts = 0;
        let mut i = 0;
        while i < N {
            match tokio::time::timeout(
                Duration::from_millis(1),
                tx.send_tagged(i, &i.to_le_bytes()),
            )
            .await
            {
                Err(_) => timeouts += 1,
                Ok(r) => {
                    r.unwrap();
                    i += 1;
                }
            }
        }
        timeouts
    });
    let waiters = shmlane::inspect::inspect(&name)
        .unwrap()
        .fields
        .space_waiters;
    drop(tx);
    reader.join().unwrap();
    assert_eq!(waiters, Some(0), "the waiter count is unbalanced");
    assert!(timeouts > 0, "the sender never waited past its timeout");
}

/// The readiness fd: not readable while nothing is there, readable once the producer
/// publishes after a `try_recv` found nothing.
#[test]
fn readiness_fd_for_poll_loops() {
    use std::os::fd::AsRawFd;
    let _s = serial();
    let name = TestName::new("async-fd");
    let mut rx = Consumer::create(&name, &spsc_opts())
        .unwrap()
        .into_async()
        .unwrap();
    let mut tx = Producer::open(&name).unwrap();
    let readable = |fd: i32, ms: i32| -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    };
    let fd = rx.readiness_fd().as_raw_fd();
    assert!(matches!(rx.try_recv(), Err(shmlane::TryRecvError::Empty)));
    rx.clear_readiness();
    assert!(!readable(fd, 20), "readable with nothing published");
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        tx.send(b"ping").unwrap();
        tx
    });
    // The epoll user's loop: wait for the fd, clear it, try again (a liveness tick also
    // makes it readable, so a wake-up may find nothing yet).
    let deadline = Instant::now() + Duration::from_secs(5);
    let next = |rx: &mut shmlane::spsc::AsyncConsumer| -> Result<Vec<u8>, shmlane::TryRecvError> {
        loop {
            match rx.try_recv() {
                Err(shmlane::TryRecvError::Empty) => {}
                other => return other.map(|m| m.to_vec()),
            }
            assert!(Instant::now() < deadline, "no progress within 5 s");
            assert!(readable(fd, 5_000), "the fd did not become readable");
            rx.clear_readiness();
        }
    };
    assert_eq!(next(&mut rx).unwrap(), b"ping");
    let tx = sender.join().unwrap();
    drop(tx);
    assert!(matches!(
        next(&mut rx),
        Err(shmlane::TryRecvError::Disconnected)
    ));
    // Back to the blocking endpoint.
    let c: Consumer = rx.into_inner();
    drop(c);
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills one rusage we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// 100 rings awaited while idle for 2 s: the process uses almost no CPU (no polling; one
/// liveness look per ring per tick). Measured in CPU time, not speed.
#[test]
fn hundred_idle_rings_use_no_cpu() {
    let _s = serial();
    let names: Vec<TestName> = (0..100).map(|_| TestName::new("async-idle")).collect();
    let opts = Options::new().capacity(4096).max_message(64);
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for n in &names {
        rxs.push(Consumer::create(n, &opts).unwrap().into_async().unwrap());
        txs.push(Producer::open(n).unwrap());
    }
    let rt = multi_thread();
    let used = rt.block_on(async {
        let tasks: Vec<_> = rxs
            .into_iter()
            .map(|mut rx| {
                tokio::spawn(async move {
                    let tag = rx.recv().await.unwrap().tag();
                    assert_eq!(tag, 9);
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = cpu_time();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let used = cpu_time() - before;
        for tx in &mut txs {
            tx.send_tagged(9, b"wake").unwrap();
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("a ring was not woken")
                .unwrap();
        }
        used
    });
    println!("100 idle rings, 2 s: {used:?} of CPU");
    // Polling would burn most of a core (2 s); the ticks cost a few ms.
    assert!(
        used < Duration::from_millis(200),
        "100 idle awaited rings used {used:?} of CPU in 2 s"
    );
}

/// Child: the fallback without `futex_waitv` (one helper thread per waiting future):
/// receives from a thread, with waits, and checks the mode.
#[test]
fn child_fallback_mode() {
    if !is_child("child_fallback_mode") {
        return;
    }
    let name = TestName::new("async-fallback");
    let mut rx = Consumer::create(&name, &spsc_opts())
        .unwrap()
        .into_async()
        .unwrap();
    let mut tx = Producer::open(&name).unwrap();
    let t = std::thread::spawn(move || {
        for i in 0..5_000u32 {
            tx.send_tagged(i, &i.to_le_bytes()).unwrap();
            if i % 250 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    let ticks_before = shmlane::wait::stats::async_tick_found();
    current_thread().block_on(async {
        for i in 0..5_000u32 {
            let m = rx.recv().await.unwrap();
            assert_eq!(m.tag(), i);
        }
        assert!(matches!(rx.recv().await, Err(Error::Disconnected)));
    });
    t.join().unwrap();
    assert_no_lost_wakeups(ticks_before);
    assert!(!shmlane::wait::stats::async_uses_futex_waitv());
    assert!(shmlane::wait::stats::async_helper_threads() >= 1);
}

#[test]
fn fallback_without_futex_waitv() {
    let _s = serial();
    let child = spawn_child_env(
        "child_fallback_mode",
        &[],
        &[("SHMLANE_NO_FUTEX_WAITV", "1")],
    );
    finish_child(child, Duration::from_secs(60));
}

/// A broadcast subscriber awaited while a publisher thread sends in bursts (pausing 3 ms
/// every 1000): every message once, in order and intact, then `Disconnected` after the
/// publisher closes, and the waiter count balanced. `with_timeouts`: `timeout(1 ms,
/// s.recv())` around every receive (cancelled futures take nothing); without, every pause
/// is a wait that the publisher's post must end (not the liveness tick).
fn broadcast_subscriber(with_timeouts: bool) {
    use shmlane::broadcast::{Overflow, Publisher, StartAt, Subscriber};
    let _s = serial();
    let name = TestName::new("async-bcast");
    let opts = Options::new()
        .capacity(64 << 10)
        .max_message(1024)
        .overflow(Overflow::Block)
        .evict_after(Duration::from_secs(30))
        .wait(Wait::Block);
    let mut tx = Publisher::create(&name, &opts).unwrap();
    let mut s = Subscriber::open(&name, StartAt::Oldest)
        .unwrap()
        .into_async()
        .unwrap();
    const N: u64 = 20_000;
    let publisher = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1024];
        for (seq, len) in (0..N).zip(sizes(7)) {
            let len = len.min(1024);
            fill(&mut buf[..len], seq);
            tx.send_tagged(seq as u32, &buf[..len]).unwrap();
            if seq % 1000 == 999 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
    });
    let ticks_before = shmlane::wait::stats::async_tick_found();
    let sleeps_before = shmlane::wait::stats::sleeps();
    let limit = if with_timeouts {
        Duration::from_millis(1)
    } else {
        Duration::from_secs(60)
    };
    let timeouts = current_thread().block_on(async {
        let mut lens = sizes(7);
        let (mut seq, mut timeouts) = (0u64, 0u64);
        while seq < N {
            match tokio::time::timeout(limit, s.recv()).await {
                Err(_elapsed) => timeouts += 1,
                Ok(r) => {
                    let m = r.unwrap_or_else(|e| panic!("recv {seq}: {e}"));
                    assert_eq!(m.tag(), seq as u32, "message {seq}: lost or duplicated");
                    assert_eq!(m.position(), seq);
                    assert_eq!(m.len(), lens.next().unwrap().min(1024));
                    assert!(check(&m, seq), "message {seq} corrupt");
                    seq += 1;
                }
            }
        }
        match tokio::time::timeout(Duration::from_secs(5), s.recv()).await {
            Err(_) => panic!("no Disconnected within 5 s of the publisher's close"),
            Ok(Err(Error::Disconnected)) => {}
            Ok(other) => panic!("after the last message: {:?}", other.map(|m| m.tag())),
        }
        timeouts
    });
    publisher.join().unwrap();
    let waiters = shmlane::inspect::inspect(&name)
        .map(|r| r.fields.data_waiters)
        .unwrap_or(Some(0));
    assert_eq!(waiters, Some(0), "the waiter count is unbalanced");
    if with_timeouts {
        assert!(
            timeouts > 5,
            "only {timeouts} timeouts: cancellation was not exercised"
        );
    } else {
        assert_eq!(timeouts, 0, "a recv took over 60 s");
        assert!(
            shmlane::wait::stats::sleeps() > sleeps_before,
            "the subscriber never waited: the helper thread was not exercised"
        );
    }
    assert_no_lost_wakeups(ticks_before);
    let s: Subscriber = s.into_inner();
    drop(s);
}

#[test]
fn broadcast_subscriber_awaits_each_message() {
    broadcast_subscriber(false);
}

#[test]
fn broadcast_subscriber_under_timeout() {
    broadcast_subscriber(true);
}
