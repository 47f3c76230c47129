//! The operator commands of the `shmlane` binary: `ls`, `inspect`, `rm`, `clean`, `cat`,
//! run as real processes against segments these tests make.

#[path = "../../shmlane/tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{child_arg, is_child, spawn_child, wait_child, Rng, TestName};
use serde_json::Value;
use shmlane::mpmc::Sender;
use shmlane::spsc::{Consumer, Producer};
use shmlane::{Backing, Options};

const BIN: &str = env!("CARGO_BIN_EXE_shmlane");
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `shmlane args...` to completion (bounded), stdin empty.
fn run(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shmlane");
    finish(child, LIMIT)
}

/// Collects a child's output, killing it (by pid) if it overruns `limit`.
fn finish(mut child: std::process::Child, limit: Duration) -> Output {
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        out.read_to_end(&mut v).map(|_| v)
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        err.read_to_end(&mut v).map(|_| v)
    });
    let status = wait_child(child, limit);
    Output {
        status,
        stdout: t_out.join().unwrap().unwrap(),
        stderr: t_err.join().unwrap().unwrap(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// The object of `shmlane ls --json` for `name`.
fn ls_entry(name: &str) -> Option<Value> {
    let o = run(&["ls", "--json"]);
    assert!(o.status.success(), "{}", show(&o));
    let all: Value = serde_json::from_slice(&o.stdout).expect("ls --json is JSON");
    all.as_array()
        .expect("an array")
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

fn dev_shm_path(name: &TestName) -> String {
    format!("/dev/shm{}", name.as_str())
}

fn my_pid() -> i64 {
    i64::from(std::process::id())
}

#[test]
fn ls_shows_posix_spsc_and_sysv_mpmc() {
    let spsc = TestName::new("cli-ls-spsc");
    let mut tx =
        Producer::create(&spsc, &Options::new().capacity(64 << 10).max_message(1000)).unwrap();
    let rx = Consumer::open(&spsc).unwrap();
    tx.send(&[7u8; 100]).unwrap();
    let mpmc = TestName::new("cli-ls-mpmc");
    let sender = Sender::create(
        &mpmc,
        &Options::new()
            .slots(16)
            .max_message(100)
            .backing(Backing::SysV),
    )
    .unwrap();
    sender.send(b"one").unwrap();
    sender.send(b"two").unwrap();

    let e = ls_entry(&spsc).expect("ls --json lists the SPSC segment");
    assert_eq!(e["backing"], "posix");
    assert_eq!(e["kind"], "spsc");
    assert_eq!(e["status"], "ok");
    assert_eq!(e["valid"], true);
    assert_eq!(e["capacity"], 64 << 10);
    assert_eq!(e["max_message"], 1000);
    assert_eq!(e["fill"]["unit"], "bytes");
    assert_eq!(e["fill"]["used"], 8 + 104, "one record of 100 bytes");
    assert_eq!(e["creator_pid"], my_pid());
    let eps = e["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2, "{e}");
    for (ep, role) in eps.iter().zip(["producer", "consumer"]) {
        assert_eq!(ep["role"], role);
        assert_eq!(ep["pid"], my_pid());
        assert_eq!(ep["state"], "attached");
        assert_eq!(ep["liveness"], "alive");
    }

    let e = ls_entry(&mpmc).expect("ls --json lists the System V MPMC segment");
    assert_eq!(e["backing"], "sysv");
    assert_eq!(e["kind"], "mpmc");
    assert_eq!(e["status"], "ok");
    assert_eq!(e["slot_count"], 16);
    assert_eq!(e["slot_size"], 192);
    assert_eq!(e["sysv_key"], shmlane::format::sysv_key(&mpmc));
    assert_eq!(e["fill"]["unit"], "slots");
    assert_eq!(e["fill"]["used"], 2);
    assert_eq!(e["mpmc_live_senders"], 1);
    let eps = e["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 1, "{e}");
    assert_eq!(eps[0]["role"], "sender");
    assert_eq!(eps[0]["pid"], my_pid());
    assert_eq!(eps[0]["liveness"], "alive");

    // The table: a header, and one aligned row per segment.
    let o = run(&["ls"]);
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    let header = out.lines().next().unwrap();
    assert!(header.starts_with("NAME"), "{out}");
    for col in [
        "BACKING",
        "KIND",
        "STATUS",
        "CAPACITY",
        "FILL",
        "CREATED",
        "ENDPOINTS",
    ] {
        assert!(header.contains(col), "{out}");
    }
    let kind_col = header.find("KIND").unwrap();
    let row = out
        .lines()
        .find(|l| l.starts_with(spsc.as_str()))
        .expect(&out);
    assert_eq!(&row[kind_col..kind_col + 4], "spsc", "{out}");
    assert!(row.contains("64 KiB"), "{row}");
    assert!(
        row.contains(&format!("producer {} alive", std::process::id())),
        "{row}"
    );
    assert!(row.contains(&format!("consumer {} alive", std::process::id())));
    let row = out
        .lines()
        .find(|l| l.starts_with(mpmc.as_str()))
        .expect(&out);
    // Slots of the message size asked for (each slot is 192 B: `inspect` shows it).
    assert!(
        row.contains("sysv") && row.contains("mpmc") && row.contains("16 x 100 B"),
        "{row}"
    );
    assert!(row.contains("2 slots (12.5%)"), "{row}");

    // Closed endpoints show as closed.
    drop(rx);
    let e = ls_entry(&spsc).unwrap();
    assert_eq!(e["endpoints"][1]["liveness"], "closed");
    // The creators leave with messages nobody read: the names stay for a reader.
    drop((tx, sender));
    let e = ls_entry(&spsc).expect("a handed-over ring keeps its name");
    assert_eq!(e["status"], "pending", "{e}");
    assert!(e["pending"].as_u64().unwrap() > 0, "{e}");
    let o = run(&["ls"]);
    assert!(text(&o.stdout).contains(" unread)"), "{}", show(&o));
    // A reader drains them and, nobody being left, removes the name.
    let mut rx = Consumer::open(&spsc).unwrap();
    while rx.try_recv().is_ok() {}
    drop(rx);
    assert!(
        ls_entry(&spsc).is_none(),
        "the reader removed the drained name"
    );
    let rx = shmlane::mpmc::Receiver::open(&mpmc).unwrap();
    while rx.try_recv().is_ok() {}
    drop(rx);
    assert!(
        ls_entry(&mpmc).is_none(),
        "the reader removed the drained name"
    );
}

#[test]
fn ls_leaves_out_foreign_segments_unless_all() {
    let name = TestName::new("cli-ls-foreign");
    std::fs::write(dev_shm_path(&name), b"not a shmlane segment, just bytes").unwrap();
    assert!(ls_entry(&name).is_none());
    let o = run(&["ls", "--all", "--json"]);
    assert!(o.status.success(), "{}", show(&o));
    let all: Value = serde_json::from_slice(&o.stdout).unwrap();
    let e = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name.as_str())
        .expect("ls --all lists the foreign file");
    assert_eq!(e["class"], "foreign");
    assert_eq!(e["status"], "foreign");
    assert_eq!(e["valid"], false);
}

#[test]
fn inspect_a_valid_segment() {
    let name = TestName::new("cli-inspect");
    let opts = Options::new().capacity(4096).max_message(1000);
    let mut tx = Producer::create(&name, &opts).unwrap();
    tx.send(b"hello").unwrap();
    let o = run(&["inspect", &name]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    for want in [
        "validation      valid",
        "magic           ok",
        "kind            spsc",
        "(matches this build)",
        "capacity        4096 bytes (4 KiB)",
        "positions       write 16, read 0",
        "in flight       16 B (0.4%)",
        "waiters         data 0, space 0",
        &format!("creator pid     {}", std::process::id()),
        "producer",
        "attached",
        "alive",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let o = run(&["inspect", "--json", &name]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["validation"], "valid");
    assert_eq!(v["magic_ok"], true);
    assert_eq!(v["layout_matches"], true);
    assert_eq!(v["write_pos"], 16);
    assert_eq!(v["read_pos"], 0);
    assert_eq!(v["stored_name"], name.as_str());
    assert_eq!(v["lost"], 0);
    assert_eq!(v["endpoints"][0]["role"], "producer");
}

/// `inspect` names a typed ring's message type, in text and in JSON.
#[test]
fn inspect_shows_a_typed_rings_type() {
    let name = TestName::new("cli-inspect-typed");
    let opts = Options::new().capacity(4096).schema(3);
    let _tx = shmlane::typed::Producer::<u64>::create(&name, &opts).unwrap();
    let o = run(&["inspect", &name]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("type") && l.contains("u64 (8 B, align 8, schema 3")),
        "{out}"
    );
    let o = run(&["inspect", "--json", &name]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["type_size"], 8);
    assert_eq!(v["type_schema"], 3);
}

#[test]
fn inspect_garbage_says_not_shmlane_and_exits_2() {
    let name = TestName::new("cli-inspect-garbage");
    let mut rng = Rng(0x5eed);
    let garbage: Vec<u8> = (0..5000).map(|_| rng.next() as u8).collect();
    std::fs::write(dev_shm_path(&name), &garbage).unwrap();
    let o = run(&["inspect", &name]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.contains("class           foreign"), "{out}");
    assert!(out.contains("not a shmlane segment"), "{out}");
    assert!(out.contains("size            5000 bytes"), "{out}");
    let o = run(&["inspect", "--json", &name]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["check"], "not-shmlane");

    // A file shorter than the magic, and an empty one: described, no crash.
    std::fs::write(dev_shm_path(&name), b"abc").unwrap();
    let o = run(&["inspect", &name]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(text(&o.stdout).contains("not a shmlane segment"));
    std::fs::write(dev_shm_path(&name), b"").unwrap();
    let o = run(&["inspect", &name]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(text(&o.stdout).contains("empty"));

    // A name that does not exist: an error, status 1.
    let missing = TestName::new("cli-inspect-missing");
    let o = run(&["inspect", &missing]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).starts_with("shmlane: no shared-memory segment named"));
}

#[test]
fn a_truncated_segment_is_described_not_trusted() {
    let name = TestName::new("cli-truncated");
    let opts = Options::new()
        .capacity(4096)
        .max_message(1000)
        .persist(true);
    drop(Producer::create(&name, &opts).unwrap());
    // Cut it inside the header, past the magic: another process resized it.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dev_shm_path(&name))
        .unwrap();
    file.set_len(100).unwrap();
    let o = run(&["inspect", &name]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.contains("magic           ok"), "{out}");
    assert!(
        out.contains("is truncated: it is 100 bytes, but needs 4096"),
        "{out}"
    );
    let version = format!("version         {}", shmlane::format::VERSION);
    assert!(out.contains(&version), "{out}");
    assert!(out.contains("positions       write -, read -"), "{out}");
    let e = ls_entry(&name).expect("a damaged shmlane segment is listed");
    assert_eq!(e["status"], "truncated");
    assert_eq!(e["len"], 100);
    let o = run(&["rm", &name]);
    assert!(o.status.success(), "{}", show(&o));
}

/// A segment its owner keeps shrinking and growing back while `inspect`, `ls` and `clean`
/// look at it: they never fault (a mapped file shrunk under a reader raises `SIGBUS`);
/// each run ends with an exit code and says what it saw.
#[test]
fn a_segment_shrinking_while_looked_at_never_faults() {
    use std::os::unix::fs::FileExt;
    let name = TestName::new("cli-shrinking");
    let opts = Options::new()
        .capacity(64 << 10)
        .max_message(1000)
        .persist(true);
    {
        let mut tx = Producer::create(&name, &opts).unwrap();
        for i in 0..2000u32 {
            // Small records: `inspect` walks them all to count what is unread.
            if tx.try_send_tagged(i, &[7u8; 8]).is_err() {
                break;
            }
        }
    }
    let path = dev_shm_path(&name);
    let whole = std::fs::read(&path).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let owner = {
        let (stop, path, whole) = (stop.clone(), path.clone(), whole.clone());
        std::thread::spawn(move || {
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                file.set_len(100).unwrap();
                file.set_len(whole.len() as u64).unwrap();
                file.write_all_at(&whole, 0).unwrap();
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut runs = 0;
    while Instant::now() < deadline || runs < 30 {
        for args in [
            &["inspect", name.as_str()][..],
            &["ls"][..],
            &["clean", "--dry-run"][..],
        ] {
            let o = run(args);
            assert!(
                o.status.code().is_some(),
                "shmlane {args:?} died by a signal: {}",
                show(&o)
            );
        }
        runs += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    owner.join().unwrap();
}

#[test]
fn rm_removes_shmlane_segments_and_refuses_foreign_ones() {
    let posix = TestName::new("cli-rm-posix");
    let sysv = TestName::new("cli-rm-sysv");
    for (name, backing) in [(&posix, Backing::Posix), (&sysv, Backing::SysV)] {
        let opts = Options::new().capacity(4096).backing(backing).persist(true);
        drop(Producer::create(name, &opts).unwrap());
    }
    assert!(ls_entry(&posix).is_some() && ls_entry(&sysv).is_some());
    let o = run(&["rm", &posix, &sysv]);
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!("removed {} (posix spsc)", posix.as_str())),
        "{out}"
    );
    assert!(
        out.contains(&format!("removed {} (sysv spsc, shmid", sysv.as_str())),
        "{out}"
    );
    assert!(ls_entry(&posix).is_none() && ls_entry(&sysv).is_none());
    assert!(!std::path::Path::new(&dev_shm_path(&posix)).exists());

    // Gone now: an error, status 1.
    let o = run(&["rm", &posix]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));

    // Another program's file is refused, and kept, unless --force.
    let foreign = TestName::new("cli-rm-foreign");
    std::fs::write(dev_shm_path(&foreign), b"somebody else's data").unwrap();
    let o = run(&["rm", &foreign]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(err.contains("is not a shmlane segment"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(std::path::Path::new(&dev_shm_path(&foreign)).exists());
    let o = run(&["rm", "--force", &foreign]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!std::path::Path::new(&dev_shm_path(&foreign)).exists());
}

/// Child: creates a persistent SPSC segment (POSIX) and MPMC segment (System V), sends a
/// message into each, and exits without closing them, as a crash would.
#[test]
fn child_leaves_segments_behind() {
    if !is_child("child_leaves_segments_behind") {
        return;
    }
    let mut tx = Producer::create(
        &child_arg("SPSC"),
        &Options::new().capacity(4096).persist(true),
    )
    .unwrap();
    tx.send(b"left behind").unwrap();
    let sender = Sender::create(
        &child_arg("MPMC"),
        &Options::new()
            .slots(4)
            .max_message(32)
            .backing(Backing::SysV)
            .persist(true),
    )
    .unwrap();
    sender.send(b"left behind").unwrap();
    std::mem::forget(tx);
    std::mem::forget(sender);
}

#[test]
fn clean_removes_segments_whose_endpoints_died() {
    let spsc = TestName::new("cli-clean-spsc");
    let mpmc = TestName::new("cli-clean-mpmc");
    let child = spawn_child(
        "child_leaves_segments_behind",
        &[("SPSC", spsc.to_string()), ("MPMC", mpmc.to_string())],
    );
    let child_pid = child.id();
    let status = wait_child(child, LIMIT);
    assert!(status.success(), "child failed: {status}");

    let e = ls_entry(&spsc).expect("the dead producer's segment is still there");
    assert_eq!(e["status"], "stale");
    assert_eq!(e["endpoints"][0]["pid"], child_pid);
    assert_eq!(e["endpoints"][0]["liveness"], "dead");
    assert_eq!(ls_entry(&mpmc).unwrap()["endpoints"][0]["liveness"], "dead");

    // A live segment next to them is never stale.
    let live = TestName::new("cli-clean-live");
    let _tx = Producer::create(&live, &Options::new().capacity(4096)).unwrap();

    // Both were made with persist(true): plain `clean` keeps them.
    let o = run(&["clean", "--dry-run", &spsc, &mpmc]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        text(&o.stdout).starts_with("no stale segments (persistent ones are kept"),
        "{}",
        show(&o)
    );

    // --dry-run over everything lists both and removes nothing.
    let o = run(&["clean", "--dry-run", "--include-persistent"]);
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("would remove {} ", spsc.as_str())))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains(&format!("producer {child_pid} dead")),
        "{line}"
    );
    assert!(
        out.contains(&format!("would remove {} (sysv mpmc", mpmc.as_str())),
        "{out}"
    );
    assert!(!out.contains(live.as_str()), "{out}");
    assert!(ls_entry(&spsc).is_some() && ls_entry(&mpmc).is_some());

    // Clean only ours (other tests may have stale segments of their own right now).
    let o = run(&["clean", "--include-persistent", &spsc, &mpmc, &live]);
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!("removed {} (posix spsc)", spsc.as_str())),
        "{out}"
    );
    assert!(
        out.contains(&format!("removed {} (sysv mpmc", mpmc.as_str())),
        "{out}"
    );
    assert!(ls_entry(&spsc).is_none() && ls_entry(&mpmc).is_none());
    assert!(ls_entry(&live).is_some());
    let o = run(&["clean", "--include-persistent", &live]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(text(&o.stdout).trim(), "no stale segments");
    // A NAME that does not exist is an error, not "nothing stale".
    let o = run(&["clean", &spsc]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).starts_with(&format!(
            "shmlane: no shared-memory segment named {}",
            spsc.as_str()
        )),
        "{}",
        show(&o)
    );
    assert!(!text(&o.stderr).contains("create it first"), "{}", show(&o));
}

/// `clean` run by one user never removes another user's stale segments, even ones it
/// may read.
#[test]
fn clean_leaves_other_users_segments_alone() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root to run clean as another user");
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        return;
    }
    let name = TestName::new("cli-clean-other-user");
    // A stale segment of root's that anyone may read: its producer closed, no reader.
    drop(
        Producer::create(
            &name,
            &Options::new().capacity(4096).mode(0o666).persist(true),
        )
        .unwrap(),
    );
    assert_eq!(ls_entry(&name).unwrap()["status"], "stale");
    let o = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", BIN])
        .args(["clean", "--include-persistent", name.as_str()])
        .output()
        .expect("setpriv");
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        text(&o.stdout).starts_with("no stale segments"),
        "{}",
        show(&o)
    );
    assert!(
        ls_entry(&name).is_some(),
        "nobody's clean removed root's segment"
    );
}

/// Starts `shmlane cat` with `args`, stdin and stdout piped.
fn spawn_cat(args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .arg("cat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shmlane cat")
}

/// Pipes `input` through `cat --to name extra...` into `cat --from name`; returns what
/// came out, after checking that both exited 0 and the name is gone.
fn through_cat(name: &TestName, to_args: &[&str], from_args: &[&str], input: Vec<u8>) -> Vec<u8> {
    let start = Instant::now();
    let mut to = spawn_cat(&[&["--to", name.as_str()], to_args].concat());
    let mut stdin = to.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&input).unwrap();
        // Dropping stdin is the EOF.
    });
    let from = spawn_cat(&[&["--from", name.as_str()], from_args].concat());
    let got = finish(from, LIMIT);
    writer.join().unwrap();
    let sent = finish(to, LIMIT);
    assert!(sent.status.success(), "cat --to: {}", show(&sent));
    assert!(got.status.success(), "cat --from: {}", text(&got.stderr));
    assert!(got.stderr.is_empty() && sent.stderr.is_empty());
    assert!(start.elapsed() < LIMIT);
    assert!(
        !std::path::Path::new(&dev_shm_path(name)).exists(),
        "the creator removes the name"
    );
    got.stdout
}

#[test]
fn cat_carries_a_mebibyte_of_random_bytes() {
    let name = TestName::new("cli-cat");
    let mut rng = Rng(0xc0ffee);
    let input: Vec<u8> = (0..1 << 20).map(|_| rng.next() as u8).collect();
    // A small ring, so it fills, wraps and waits many times.
    let got = through_cat(
        &name,
        &["--capacity", "16K", "--max-message", "4K"],
        &[],
        input.clone(),
    );
    assert_eq!(got.len(), input.len());
    assert!(got == input, "the bytes differ");
}

#[test]
fn cat_lines_sends_one_message_per_line() {
    let name = TestName::new("cli-cat-lines");
    let input = b"first line\nsecond\n\nlast, without a newline".to_vec();
    let got = through_cat(&name, &["--lines"], &["--lines"], input);
    assert_eq!(
        text(&got),
        "first line\nsecond\n\nlast, without a newline\n"
    );
}

#[test]
fn cat_from_gives_up_on_a_name_that_never_appears() {
    let name = TestName::new("cli-cat-missing");
    let o = run(&["cat", "--from", &name, "--wait-for", "0.2"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("shmlane: no shared-memory segment named"),
        "{err}"
    );
    assert!(err.contains("waited 0.2 s"), "{err}");
}

/// Operator-facing messages: a missing name is stated plainly (no advice meant for a
/// library user), `shmid:` names are answered as ids, bare names follow one rule, a ring
/// whose reader died while its writer lives says so, and a taken role names itself.
#[test]
fn operator_messages_and_statuses() {
    let missing = TestName::new("cli-missing");
    for cmd in ["rm", "inspect"] {
        let o = run(&[cmd, &missing]);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {}", show(&o));
        let err = text(&o.stderr);
        assert!(
            err.starts_with(&format!(
                "shmlane: no shared-memory segment named {}",
                missing.as_str()
            )),
            "{cmd}: {err}"
        );
        assert!(!err.contains("create it first"), "{cmd}: {err}");
    }
    let o = run(&["inspect", "shmid:2147483000"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(
        text(&o.stderr).trim(),
        "shmlane: no System V segment with id 2147483000 (see `ipcs -m`)"
    );

    // Bare names: `cat` takes them like `rm` and `inspect` do.
    let name = TestName::new("cli-bare");
    let bare = &name.as_str()[1..];
    let mut to = spawn_cat(&["--to", bare, "--lines"]);
    to.stdin.take().unwrap().write_all(b"one\ntwo\n").unwrap();
    let from = Command::new(BIN)
        .args(["cat", "--from", bare, "--lines"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = finish(from, LIMIT);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(text(&o.stdout), "one\ntwo\n");
    assert!(finish(to, LIMIT).status.success());

    // A live writer whose reader died: `peer dead`, not `ok`.
    let ring = TestName::new("cli-peer-dead");
    let _tx = Producer::create(&ring, &Options::new().capacity(4096)).unwrap();
    let child = spawn_child("child_consumer_dies", &[("NAME", ring.to_string())]);
    assert!(!wait_child(child, LIMIT).success());
    assert_eq!(ls_entry(&ring).unwrap()["status"], "peer dead");

    // RoleTaken names the role and the segment.
    let err = Producer::open(&ring).unwrap_err().to_string();
    assert!(
        err.contains("producer role of") && err.contains(ring.as_str()),
        "{err}"
    );
}

/// Child: attach as the consumer of NAME, then die without closing.
#[test]
fn child_consumer_dies() {
    if !is_child("child_consumer_dies") {
        return;
    }
    let rx = Consumer::open(&child_arg("NAME")).unwrap();
    std::mem::forget(rx);
    // SAFETY: kill takes plain integers; the process ends here.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

/// `cat --from` whose writer is killed prints what arrived and fails (status 1): a
/// crash is not the end of the stream.
#[test]
fn cat_from_reports_a_writer_that_died() {
    let name = TestName::new("cli-writer-died");
    let mut to = spawn_cat(&["--to", name.as_str(), "--lines"]);
    let mut stdin = to.stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    stdin.flush().unwrap();
    let from = Command::new(BIN)
        .args(["cat", "--from", name.as_str(), "--lines"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the reader attached (the writer keeps its stdin open: it is mid-stream).
    let start = Instant::now();
    while ls_entry(&name).map_or(true, |e| {
        e["endpoints"]
            .as_array()
            .map_or(true, |a| !a.iter().any(|x| x["role"] == "consumer"))
    }) {
        assert!(start.elapsed() < LIMIT, "the reader never attached");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = to.kill();
    let _ = to.wait();
    drop(stdin);
    let o = finish(from, LIMIT);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(text(&o.stdout), "first\n");
    assert!(
        text(&o.stderr).contains("died without finishing"),
        "{}",
        show(&o)
    );
}

/// Issue #13: `inspect` shows a broadcast ring's kind, its publisher and subscribers, and
/// each cursor (named or not) with its state and lag; `ls` lists the kind.
#[test]
fn inspect_shows_broadcast_cursors() {
    use shmlane::broadcast::{Publisher, StartAt, Subscriber};
    let name = TestName::new("cli-broadcast");
    let mut p = Publisher::create(&name, &Options::new().capacity(4096).max_message(64)).unwrap();
    let mut risk = Subscriber::open_named(&name, "risk", StartAt::Oldest).unwrap();
    let _tap = Subscriber::open(&name, StartAt::Oldest).unwrap();
    for i in 0..5u64 {
        p.send(&i.to_ne_bytes()).unwrap();
    }
    for _ in 0..2 {
        risk.recv().unwrap();
    }
    let o = run(&["inspect", &name]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.contains("broadcast"), "{out}");
    assert!(out.contains("publisher"), "{out}");
    assert!(out.contains("subscriber 0"), "{out}");
    assert!(out.contains("cursors"), "{out}");
    let risk_row = out
        .lines()
        .find(|l| l.contains("risk"))
        .unwrap_or_else(|| panic!("no risk cursor in {out}"));
    assert!(risk_row.contains("active"), "{risk_row}");
    // 3 of 5 records of 32 bytes unread; the named cursor's next message is #2.
    assert!(risk_row.contains(" 2 "), "{risk_row}");
    assert!(risk_row.contains("96 B"), "{risk_row}");
    let o = run(&["inspect", "--json", &name]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "broadcast");
    let cursors = v["cursors"].as_array().unwrap();
    assert_eq!(cursors.len(), 2);
    assert!(cursors
        .iter()
        .any(|c| c["name"] == "risk" && c["lag"] == 96));
    assert!(cursors
        .iter()
        .any(|c| c["name"].is_null() && c["lag"] == 160 && c["state"] == "active"));
    drop(risk);
    let o = run(&["inspect", "--json", &name]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["cursors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "risk" && c["state"] == "detached"));
    let e = ls_entry(&name).expect("listed");
    assert_eq!(e["kind"], "broadcast");
}

/// Issue #13: `cat --from` on a broadcast ring subscribes (two readers each get the whole
/// stream), and `cat --to --broadcast` publishes stdin on one.
#[test]
fn cat_taps_a_broadcast_ring() {
    use shmlane::broadcast::{Publisher, StartAt, Subscriber};
    let name = TestName::new("cli-cat-bc");
    let mut p = Publisher::create(&name, &Options::new().capacity(64 << 10)).unwrap();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(BIN)
                .args(["cat", "--from", &name, "--lines"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn shmlane cat")
        })
        .collect();
    let t0 = Instant::now();
    while p.subscribers() < 2 {
        assert!(t0.elapsed() < LIMIT, "the cat readers did not subscribe");
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 0..100 {
        p.send(format!("line {i}").as_bytes()).unwrap();
    }
    drop(p);
    let want: String = (0..100).map(|i| format!("line {i}\n")).collect();
    for r in readers {
        let o = finish(r, LIMIT);
        assert!(o.status.success(), "{}", show(&o));
        assert_eq!(text(&o.stdout), want);
    }

    // --to --broadcast: stdin, line by line, to a subscriber.
    let name = TestName::new("cli-cat-bc-to");
    let mut to = Command::new(BIN)
        .args(["cat", "--to", &name, "--broadcast", "--lines"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shmlane cat --to");
    let t0 = Instant::now();
    let mut s = loop {
        match Subscriber::open(&name, StartAt::Oldest) {
            Ok(s) => break s,
            Err(_) if t0.elapsed() < LIMIT => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("{e}"),
        }
    };
    let mut stdin = to.stdin.take().unwrap();
    stdin.write_all(b"alpha\nbeta\ngamma\n").unwrap();
    drop(stdin);
    for want in ["alpha", "beta", "gamma"] {
        assert_eq!(&s.recv().unwrap()[..], want.as_bytes());
    }
    assert!(matches!(
        s.recv_timeout(Duration::from_secs(10)),
        Err(shmlane::Error::Disconnected)
    ));
    let o = finish(to, LIMIT);
    assert!(o.status.success(), "{}", show(&o));
}
