//! No message is lost to the channel's lifecycle: a creator that sends and exits before
//! its reader attaches leaves the name (and the messages) for the reader, who removes it
//! once it has drained them; a creator only ever removes its own segment; `open_timeout`
//! waits for a name to appear.
#![allow(clippy::disallowed_types)] // a test's own stop flag

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{child_arg, is_child, spawn_child, wait_child, TestName};
use shmlane::mpmc::{Receiver, Sender};
use shmlane::spsc::{Consumer, Producer};
use shmlane::{Backing, Error, Options};

const MESSAGES: u32 = 10;

fn backing_of(s: &str) -> Backing {
    if s == "sysv" {
        Backing::SysV
    } else {
        Backing::Posix
    }
}

fn name_exists(name: &str) -> bool {
    shmlane::inspect::inspect(name).is_ok()
}

/// Child: create the channel, send MESSAGES tagged messages, exit (dropping the creator).
#[test]
fn child_send_and_exit() {
    if !is_child("child_send_and_exit") {
        return;
    }
    let name = child_arg("NAME");
    let opts = Options::new()
        .capacity(4096)
        .backing(backing_of(&child_arg("BACKING")));
    if child_arg("KIND") == "mpmc" {
        let tx = Sender::create(&name, &opts.slots(16).max_message(64)).unwrap();
        for i in 0..MESSAGES {
            tx.send_tagged(i, &i.to_le_bytes()).unwrap();
        }
    } else {
        let mut tx = Producer::create(&name, &opts).unwrap();
        for i in 0..MESSAGES {
            tx.send_tagged(i, &i.to_le_bytes()).unwrap();
        }
    }
}

/// Reads until the end; returns the tags received.
fn drain(kind: &str, name: &str) -> Vec<u32> {
    let mut got = Vec::new();
    let wait = Duration::from_secs(10);
    if kind == "mpmc" {
        let rx = Receiver::open_timeout(name, wait).unwrap();
        loop {
            match rx.recv_timeout(wait) {
                Ok(m) => {
                    assert_eq!(&m[..], &m.tag().to_le_bytes());
                    got.push(m.tag());
                }
                Err(Error::Disconnected) => break,
                Err(e) => panic!("recv: {e}"),
            }
        }
    } else {
        let mut rx = Consumer::open_timeout(name, wait).unwrap();
        loop {
            match rx.recv_timeout(wait) {
                Ok(m) => {
                    assert_eq!(&m[..], &m.tag().to_le_bytes());
                    got.push(m.tag());
                }
                Err(Error::Disconnected) => break,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }
    got
}

fn run(kind: &str, backing: &str, reader_first: bool, runs: usize) {
    let want: Vec<u32> = (0..MESSAGES).collect();
    for run in 0..runs {
        let name = TestName::new("handover");
        let args = [
            ("NAME", name.0.clone()),
            ("KIND", kind.to_string()),
            ("BACKING", backing.to_string()),
        ];
        let got = if reader_first {
            // The reader waits for the name; the writer comes, sends and leaves.
            let child = spawn_child("child_send_and_exit", &args);
            let got = drain(kind, &name);
            assert!(wait_child(child, Duration::from_secs(20)).success());
            got
        } else {
            // The writer is gone before the reader even starts.
            let child = spawn_child("child_send_and_exit", &args);
            assert!(wait_child(child, Duration::from_secs(20)).success());
            assert!(
                name_exists(&name),
                "{kind}/{backing} run {run}: the creator removed the name with unread messages"
            );
            drain(kind, &name)
        };
        assert_eq!(
            got, want,
            "{kind}/{backing} reader_first={reader_first} run {run}"
        );
        // The reader drained it and nobody is left: the name is gone.
        assert!(
            !name_exists(&name),
            "{kind}/{backing} run {run}: the drained, handed-over name was left behind"
        );
    }
}

#[test]
fn spsc_writer_exits_before_the_reader_opens() {
    run("spsc", "posix", false, 100);
    run("spsc", "sysv", false, 10);
}

#[test]
fn spsc_reader_waiting_for_a_writer_that_exits() {
    run("spsc", "posix", true, 100);
    run("spsc", "sysv", true, 10);
}

#[test]
fn mpmc_writer_exits_before_the_reader_opens() {
    run("mpmc", "posix", false, 30);
    run("mpmc", "sysv", false, 10);
}

#[test]
fn mpmc_reader_waiting_for_a_writer_that_exits() {
    run("mpmc", "posix", true, 30);
}

/// A consumer that leaves with messages unread keeps them for the next one.
#[test]
fn a_consumer_that_leaves_early_leaves_the_rest_for_the_next() {
    let name = TestName::new("handover-partial");
    {
        let mut tx = Producer::create(&name, &Options::new().capacity(4096)).unwrap();
        let mut rx = Consumer::open(&name).unwrap();
        for i in 0..4u32 {
            tx.send_tagged(i, b"m").unwrap();
        }
        assert_eq!(rx.recv().unwrap().tag(), 0);
        drop(rx); // closed with 3 unread
    } // the creator leaves: handed over
    let mut rx = Consumer::open(&name).unwrap();
    for i in 1..4u32 {
        assert_eq!(rx.recv().unwrap().tag(), i);
    }
    assert!(matches!(rx.recv(), Err(Error::Disconnected)));
    drop(rx);
    assert!(!name_exists(&name));
}

/// With nothing unread (or a live reader), the creator removes the name as before.
#[test]
fn a_creator_with_nothing_unread_removes_the_name() {
    let name = TestName::new("handover-none");
    drop(Producer::create(&name, &Options::new().capacity(4096)).unwrap());
    assert!(!name_exists(&name));
    let tx = Producer::create(&name, &Options::new().capacity(4096)).unwrap();
    let rx = Consumer::open(&name).unwrap();
    drop(tx);
    assert!(!name_exists(&name), "a live reader has its mapping already");
    drop(rx);
}

/// A creator removes only the segment it created: after `shmlane rm` and a new segment
/// under the same name, the old creator's exit leaves the new one alone.
#[test]
fn a_creator_never_removes_a_newer_segment_of_its_name() {
    for backing in [Backing::Posix, Backing::SysV] {
        let name = TestName::new("inode");
        let opts = Options::new().capacity(4096).backing(backing);
        let a = Producer::create(&name, &opts).unwrap();
        shmlane::format::Segment::remove(&name).unwrap();
        let b = Producer::create(&name, &opts).unwrap();
        drop(a);
        assert!(name_exists(&name), "{backing:?}: A removed B's segment");
        let mut rx = Consumer::open(&name).unwrap();
        let mut b = b;
        b.send(b"from b").unwrap();
        assert_eq!(&rx.recv().unwrap()[..], b"from b");
    }
}

#[test]
fn open_timeout_waits_for_the_name_then_times_out() {
    let name = TestName::new("open-timeout");
    let t = Instant::now();
    assert!(matches!(
        Consumer::open_timeout(&name, Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert!(matches!(
        Receiver::open_timeout(&name, Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    // Created while we wait.
    let n2 = name.0.clone();
    let creator = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let mut tx = Producer::create(&n2, &Options::new().capacity(4096)).unwrap();
        tx.send(b"hi").unwrap();
        tx
    });
    let mut rx = Consumer::open_timeout(&name, Duration::from_secs(10)).unwrap();
    assert_eq!(&rx.recv().unwrap()[..], b"hi");
    let tx = creator.join().unwrap();
    // Errors other than "not there yet" come at once.
    let t = Instant::now();
    assert!(matches!(
        Sender::open_timeout(&name, Duration::from_secs(10)),
        Err(Error::KindMismatch { .. })
    ));
    assert!(matches!(
        Producer::open_timeout(&name, Duration::from_secs(10)),
        Err(Error::RoleTaken { .. })
    ));
    assert!(t.elapsed() < Duration::from_secs(5));
    drop((tx, rx));
    assert!(!Path::new(&format!("/dev/shm{}", name.0)).exists());
}

/// Child: open the channel as a writer, send 3 messages, then die without closing.
#[test]
fn child_send_and_die() {
    if !is_child("child_send_and_die") {
        return;
    }
    let name = child_arg("NAME");
    if child_arg("KIND") == "mpmc" {
        let tx = Sender::open(&name).unwrap();
        for i in 0..3u32 {
            tx.send_tagged(i, b"x").unwrap();
        }
        std::mem::forget(tx);
    } else {
        let mut tx = Producer::open(&name).unwrap();
        for i in 0..3u32 {
            tx.send_tagged(i, b"x").unwrap();
        }
        std::mem::forget(tx);
    }
    // SAFETY: kill takes plain integers; the process ends here.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

/// `recv_or_end` ends a loop with `Ok(None)` on a clean close, and a crash is
/// `PeerDied` after everything the dead writer published: the two never look alike.
#[test]
fn recv_or_end_tells_a_clean_end_from_a_crash() {
    // SPSC, clean.
    let name = TestName::new("end-clean");
    let mut rx = Consumer::create(&name, &Options::new().capacity(4096)).unwrap();
    let mut tx = Producer::open(&name).unwrap();
    for i in 0..3u32 {
        tx.send_tagged(i, b"x").unwrap();
    }
    drop(tx);
    let mut tags = Vec::new();
    while let Some(m) = rx.recv_or_end().unwrap() {
        tags.push(m.tag());
    }
    assert_eq!(tags, [0, 1, 2]);
    // SPSC, killed.
    let name = TestName::new("end-died");
    let mut rx = Consumer::create(&name, &Options::new().capacity(4096)).unwrap();
    let child = spawn_child(
        "child_send_and_die",
        &[("NAME", name.0.clone()), ("KIND", "spsc".into())],
    );
    let mut tags = Vec::new();
    let end = loop {
        match rx.recv_or_end() {
            Ok(Some(m)) => tags.push(m.tag()),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(matches!(end, Err(Error::PeerDied)), "{end:?}");
    assert_eq!(tags, [0, 1, 2]);
    assert!(!wait_child(child, Duration::from_secs(10)).success());
    // MPMC, clean then killed.
    let name = TestName::new("end-mpmc");
    let opts = Options::new().slots(16).max_message(64);
    let rx = Receiver::create(&name, &opts).unwrap();
    let tx = Sender::open(&name).unwrap();
    tx.send(b"a").unwrap();
    drop(tx);
    assert_eq!(&rx.recv_or_end().unwrap().unwrap()[..], b"a");
    assert!(rx.recv_or_end().unwrap().is_none());
    let name = TestName::new("end-mpmc-died");
    let rx = Receiver::create(&name, &opts).unwrap();
    let child = spawn_child(
        "child_send_and_die",
        &[("NAME", name.0.clone()), ("KIND", "mpmc".into())],
    );
    let mut n = 0;
    let end = loop {
        match rx.recv_or_end() {
            Ok(Some(_)) => n += 1,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(matches!(end, Err(Error::PeerDied)), "{end:?}");
    assert_eq!(n, 3);
    assert!(!wait_child(child, Duration::from_secs(10)).success());
}

/// `create_or_open` never reports `NotFound`: when the name it found vanishes before its
/// `open` (its creator left), it creates the channel instead. A churning creator in
/// another thread makes that window likely.
#[test]
fn create_or_open_never_says_not_found() {
    let name = TestName::new("create-or-open");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (name, stop) = (name.0.clone(), stop.clone());
        std::thread::spawn(move || {
            let opts = Options::new().capacity(4096);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Create and drop at once: the name exists only for a moment.
                let _ = Producer::create(&name, &opts);
            }
        })
    };
    let opts = Options::new().capacity(4096);
    for i in 0..10_000 {
        match Consumer::create_or_open(&name, &opts) {
            Ok(c) => drop(c),
            // The churning producer's ring was opened as it was dropped: fine.
            Err(Error::RoleTaken { .. } | Error::NotReady { .. }) => {}
            Err(e @ Error::NotFound { .. }) => {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                panic!("attempt {i}: {e}");
            }
            Err(e) => panic!("attempt {i}: {e}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
}

/// `recv_into` copies a message out for a reader that does not trust its peer; a buffer
/// too small is an error that loses nothing.
#[test]
fn recv_into_copies_out_and_loses_nothing() {
    let name = TestName::new("recv-into");
    let mut tx = Producer::create(&name, &Options::new().capacity(4096)).unwrap();
    let mut rx = Consumer::open(&name).unwrap();
    tx.send_tagged(5, b"hello, world").unwrap();
    let mut small = [0u8; 4];
    assert!(matches!(
        rx.recv_into(&mut small),
        Err(Error::MessageTooLarge { len: 12, max: 4 })
    ));
    let mut buf = [0u8; 64];
    assert_eq!(rx.recv_into(&mut buf).unwrap(), (5, 12));
    assert_eq!(&buf[..12], b"hello, world");
    drop(tx);
    assert!(matches!(rx.recv_into(&mut buf), Err(Error::Disconnected)));

    let name = TestName::new("recv-into-mpmc");
    let rx = Receiver::create(&name, &Options::new().slots(4).max_message(32)).unwrap();
    let tx = Sender::open(&name).unwrap();
    tx.send_tagged(9, b"job").unwrap();
    let mut small = [0u8; 8];
    assert!(matches!(
        rx.recv_into(&mut small),
        Err(Error::MessageTooLarge { len: 32, max: 8 })
    ));
    let mut buf = [0u8; 32];
    assert_eq!(rx.recv_into(&mut buf).unwrap(), (9, 3));
    assert_eq!(&buf[..3], b"job");
}
