//! Replays the fuzz corpora on stable: every file of `fuzz/corpus/<target>/` and of
//! `fuzz/regressions/<target>/` (crash inputs that were found and fixed) goes through the
//! same `shmlane_fuzz::<target>` function that `cargo fuzz run <target>` drives, so
//! `cargo test` and CI cover them without nightly or libFuzzer.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seeds` rewrites the hand-made seeds
//! (`seed-*` files) from real segments made by this build.

use std::path::{Path, PathBuf};
use std::time::Instant;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, f: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no corpus for {target} under {}",
        fuzz_dir().display()
    );
    let start = Instant::now();
    let mut failed = Vec::new();
    for path in &files {
        // A running fuzzer may remove files as it goes.
        let Ok(data) = std::fs::read(path) else {
            continue;
        };
        let r = std::panic::catch_unwind(|| f(&data));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{}: {msg}", path.display()));
        }
    }
    eprintln!("{target}: {} inputs in {:?}", files.len(), start.elapsed());
    assert!(
        failed.is_empty(),
        "{target}: failing inputs:\n{}",
        failed.join("\n")
    );
}

#[test]
fn open_header() {
    replay("open_header", shmlane_fuzz::open_header);
}

#[test]
fn validate_header() {
    replay("validate_header", shmlane_fuzz::validate_header);
}

#[test]
fn spsc_ops() {
    replay("spsc_ops", shmlane_fuzz::spsc_ops);
}

#[test]
fn broadcast_ops() {
    replay("broadcast_ops", shmlane_fuzz::broadcast_ops);
}

#[test]
fn broadcast_corrupt() {
    replay("broadcast_corrupt", shmlane_fuzz::broadcast_corrupt);
}

#[test]
fn mpmc_ops() {
    replay("mpmc_ops", shmlane_fuzz::mpmc_ops);
}

#[test]
fn corrupt_consume() {
    replay("corrupt_consume", shmlane_fuzz::corrupt_consume);
}

#[test]
fn corrupt_consume_mpmc() {
    replay("corrupt_consume_mpmc", shmlane_fuzz::corrupt_consume_mpmc);
}

/// Library bugs found by fuzzing and not fixed yet: `fuzz/regressions/<target>/known-bug-*`
/// replayed with the fuzz functions' work-arounds off (see
/// `shmlane_fuzz::work_around_known_bugs`), each in a child process since some abort.
/// Red while any still reproduces; once a bug is fixed, drop its work-around and rename
/// its files (without `known-bug-`) so the plain replays above keep them. Runs in every
/// `cargo test` (so in CI): a known bug is fixed or its input deleted, not left ignored.
#[test]
fn known_bugs() {
    const FILE: &str = "SHMLANE_FUZZ_KNOWN_BUG";
    if let Ok(path) = std::env::var(FILE) {
        // The child: replay one input, work-arounds off.
        shmlane_fuzz::work_around_known_bugs(false);
        let target = std::env::var("SHMLANE_FUZZ_TARGET").unwrap();
        let (_, f) = TARGETS.iter().find(|(t, _)| *t == target).unwrap();
        f(&std::fs::read(path).unwrap());
        return;
    }
    let mut open = Vec::new();
    for (target, _) in TARGETS {
        for path in inputs(target) {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if !file.starts_with("known-bug-") {
                continue;
            }
            let child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["known_bugs", "--exact", "--include-ignored", "--nocapture"])
                .env(FILE, &path)
                .env("SHMLANE_FUZZ_TARGET", target)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let pid = child.id();
            let out = child.wait_with_output().unwrap();
            // A child that aborted left its segments behind.
            for e in std::fs::read_dir("/dev/shm").unwrap().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("shmlane-fuzz-") && n.contains(&format!("-{pid}-")) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                let why = err
                    .lines()
                    .find(|l| l.contains("panicked") || l.contains("futex") || l.contains("error"))
                    .unwrap_or("");
                open.push(format!("{target}/{file}: {} {why}", out.status));
            }
        }
    }
    assert!(
        open.is_empty(),
        "known bugs still reproduce:\n{}",
        open.join("\n")
    );
}

/// A fuzz function.
type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 8] = [
    ("open_header", shmlane_fuzz::open_header),
    ("validate_header", shmlane_fuzz::validate_header),
    ("spsc_ops", shmlane_fuzz::spsc_ops),
    ("mpmc_ops", shmlane_fuzz::mpmc_ops),
    ("corrupt_consume", shmlane_fuzz::corrupt_consume),
    ("corrupt_consume_mpmc", shmlane_fuzz::corrupt_consume_mpmc),
    ("broadcast_ops", shmlane_fuzz::broadcast_ops),
    ("broadcast_corrupt", shmlane_fuzz::broadcast_corrupt),
];

/// The seeds copied from real segments still open with this build (after a change of
/// the header layout, rewrite them: see the top of this file).
#[test]
fn open_header_seeds_open() {
    let dir = fuzz_dir().join("corpus/open_header");
    for (seed, want) in [
        ("seed-spsc-fresh", [true, true, false, false]),
        ("seed-spsc-messages", [true, true, false, false]),
        ("seed-spsc-wrapped", [true, true, false, false]),
        ("seed-mpmc-fresh", [false, false, true, true]),
        ("seed-mpmc-messages", [false, false, true, true]),
        ("seed-header-only", [false; 4]),
    ] {
        let data = std::fs::read(dir.join(seed)).unwrap();
        assert_eq!(
            shmlane_fuzz::open_header_opened(&data),
            want,
            "{seed}: [Consumer, Producer, Receiver, Sender]::open; if the header layout \
             changed, run `cargo test --test fuzz_corpus -- --ignored write_seeds`"
        );
    }
}

/// The validator accepts the seeds of real segments as they are: `validate_header` starts
/// from headers that reach every check.
#[test]
fn validate_header_seeds_validate() {
    use shmlane::format::{validate, Kind, NameCheck, Snapshot};
    let dir = fuzz_dir().join("corpus/validate_header");
    for (seed, kind) in [
        ("seed-spsc-fresh", Some(Kind::Spsc)),
        ("seed-spsc-wrapped", Some(Kind::Spsc)),
        ("seed-mpmc-messages", Some(Kind::Mpmc)),
        ("seed-header-only", None),
    ] {
        let data = std::fs::read(dir.join(seed)).unwrap();
        let got = validate(
            &Snapshot::from_bytes(&data, data.len() as u64),
            "/x",
            None,
            NameCheck::Any,
        )
        .ok()
        .map(|g| g.kind);
        assert_eq!(got, kind, "{seed}");
    }
}

/// The replays leave nothing behind in `/dev/shm`.
#[test]
fn fuzz_functions_clean_up() {
    let mine = format!("shmlane-fuzz-oh-{}-", std::process::id());
    shmlane_fuzz::open_header(b"not a shmlane segment at all");
    shmlane_fuzz::spsc_ops(&[3, 200, 1, 0, 1, 10, 0, 5, 5]);
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&mine))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

// ---------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------

mod seeds {
    use memoffset::offset_of;
    use shmlane::format::Header;
    use shmlane::mpmc::{Receiver, Sender};
    use shmlane::spsc::{Consumer, Producer};
    use shmlane::Options;
    use shmlane_fuzz::NAME_PLACEHOLDER;

    /// xorshift64*, so the seeds are the same every time.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn write(target: &str, name: &str, data: &[u8]) {
        // The header images serve both the opener's target and the validator's.
        let targets: &[&str] = match target {
            "open_header" => &["open_header", "validate_header"],
            t => &[t][..],
        };
        for t in targets {
            let dir = super::fuzz_dir().join("corpus").join(t);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        }
    }

    /// The whole file of a real segment after `fill` used it and its endpoints closed,
    /// with the stored name replaced by the placeholder.
    fn snapshot(tag: &str, fill: impl FnOnce(&str)) -> Vec<u8> {
        let name = format!("/shmlane-fuzz-seed-{tag}-{}", std::process::id());
        fill(&name);
        let path = format!("/dev/shm{name}");
        let mut content = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let nl = offset_of!(Header, name_len);
        let n = offset_of!(Header, name);
        content[nl..nl + 4].copy_from_slice(&(NAME_PLACEHOLDER.len() as u32).to_ne_bytes());
        content[n..n + 256].fill(0);
        content[n..n + NAME_PLACEHOLDER.len()].copy_from_slice(NAME_PLACEHOLDER);
        // Who made it and when: zero, so that the seeds are the same every time.
        let cp = offset_of!(Header, creator_pid);
        content[cp..cp + 4].fill(0);
        let ct = offset_of!(Header, created_unix_ns);
        content[ct..ct + 8].fill(0);
        let ep = offset_of!(Header, endpoints);
        for i in 0..shmlane::format::MAX_ENDPOINTS {
            let at = ep + 16 * i;
            content[at + 4..at + 16].fill(0); // the pid half of the word, the start time
        }
        content
    }

    fn open_header_seeds() {
        let t = "open_header";
        let spsc = |cap: usize, max: usize, msgs: &[usize]| {
            let msgs = msgs.to_vec();
            move |name: &str| {
                let opts = Options::new().capacity(cap).max_message(max).persist(true);
                let mut tx = Producer::create(name, &opts).unwrap();
                let mut rx = Consumer::open(name).unwrap();
                for (i, &len) in msgs.iter().enumerate() {
                    if len == usize::MAX {
                        // Receive one.
                        drop(rx.try_recv().unwrap());
                        continue;
                    }
                    tx.send_tagged(i as u32, &vec![i as u8; len]).unwrap();
                }
            }
        };
        // max_message 512: its record is more than half of 1024 bytes, so the ring is 2048.
        let fresh = snapshot("spsc", spsc(1024, 512, &[]));
        write(t, "spsc-fresh", &fresh);
        write(
            t,
            "spsc-messages",
            &snapshot("spsc2", spsc(1024, 256, &[5, 100, 0, 256])),
        );
        // Wrapped: a padding record and a message at offset 0 are published.
        let mut wrapped = vec![200, usize::MAX, 200, usize::MAX, 200, usize::MAX];
        wrapped.extend([200, usize::MAX, 200]);
        write(
            t,
            "spsc-wrapped",
            &snapshot("spsc3", spsc(1024, 256, &wrapped)),
        );
        // The smallest ring, with the largest max_message that keeps it that small.
        write(t, "spsc-small", &snapshot("spsc4", spsc(64, 24, &[24])));
        let mpmc = |slots: usize, max: usize, msgs: usize| {
            move |name: &str| {
                let opts = Options::new().slots(slots).max_message(max).persist(true);
                let tx = Sender::create(name, &opts).unwrap();
                let rx = Receiver::open(name).unwrap();
                for i in 0..msgs {
                    tx.send_tagged(i as u32, &vec![i as u8; i % (max + 1)])
                        .unwrap();
                }
                drop(rx.try_recv().ok());
                drop(tx.try_reserve(1).ok()); // a cancelled slot
            }
        };
        write(t, "mpmc-fresh", &snapshot("mpmc", mpmc(8, 32, 0)));
        write(t, "mpmc-messages", &snapshot("mpmc2", mpmc(8, 32, 5)));
        write(t, "mpmc-one-slot", &snapshot("mpmc3", mpmc(1, 0, 0)));
        // Fixed bug: garbage in the header's semaphores (glibc's sem_t then) made
        // sem_post abort the process; here a count and waiters, data_waiters = 1.
        let mut bad_sem = fresh.clone();
        let dw = offset_of!(Header, data_waiters);
        bad_sem[dw..dw + 4].copy_from_slice(&1u32.to_ne_bytes());
        let ds = offset_of!(Header, data_sem);
        bad_sem[ds..ds + 8].copy_from_slice(&(1u64 << 32).to_ne_bytes());
        bad_sem[ds + 8..ds + 12].copy_from_slice(&0x7fff_0000u32.to_ne_bytes());
        let dir = super::fuzz_dir().join("regressions").join(t);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("fixed-garbage-semaphore-aborts"), &bad_sem).unwrap();
        // Fixed bug: a capacity whose sum with the header size overflows a u64 (validate
        // panicked with overflow checks on).
        let mut huge = fresh.clone();
        let c = offset_of!(Header, capacity);
        huge[c..c + 8].copy_from_slice(&(u64::MAX - 8).to_ne_bytes());
        std::fs::write(dir.join("fixed-capacity-overflow-panics"), &huge).unwrap();
        write(t, "header-only", &fresh[..4096]);
        write(t, "short", &fresh[..200]);
        write(
            t,
            "not-shmlane",
            b"this is not a shmlane segment, not at all",
        );
    }

    fn random_seeds(target: &str, rng: &mut Rng, heads: &[&[u8]], lens: &[usize]) {
        for (i, head) in heads.iter().enumerate() {
            let mut data = head.to_vec();
            data.extend(rng.bytes(lens[i % lens.len()]));
            write(target, &format!("random-{i}"), &data);
        }
    }

    #[test]
    #[ignore = "rewrites fuzz/corpus/*/seed-*; run by hand after a format change"]
    fn write_seeds() {
        open_header_seeds();
        let mut rng = Rng(0x5eed_0000_1234_5678);

        // spsc_ops: [capacity, max_message, wait] then ops (see shmlane_fuzz).
        // Fill a 64-byte ring with max-size messages, then drain it.
        write(
            "spsc_ops",
            "fill-drain",
            &[0, 0xff, 0, 0, 0, 0xfe, 0, 0, 0xfe, 0, 0, 0xfe, 5, 5, 5, 5],
        );
        // Sends of every size on a 256-byte ring, receives, a batch each way.
        let mut ops = vec![2, 0xff, 2];
        for len in 0..20u8 {
            ops.extend([0, len, len, 0]);
            if len % 3 == 0 {
                ops.extend([5]);
            }
        }
        ops.extend([8, 7, 4, 3, 0, 10, 0, 20, 0, 30, 0, 8, 0xff]);
        write("spsc_ops", "sizes-batches", &ops);
        // Endpoints leaving and coming back.
        write(
            "spsc_ops",
            "reopen",
            &[
                1, 0x80, 2, 0, 1, 8, 0, 11, 0, 5, 5, 11, 2, 0, 1, 8, 0, 11, 1, 0, 1, 8, 0, 11, 2,
                5, 5,
            ],
        );
        random_seeds(
            "spsc_ops",
            &mut rng,
            &[
                &[0, 0xff, 0],
                &[1, 100, 1],
                &[2, 0xff, 2],
                &[3, 70, 0],
                &[4, 10, 1],
            ],
            &[64, 300, 1000],
        );

        // mpmc_ops: [slots, max_message, wait] then ops.
        write(
            "mpmc_ops",
            "grants",
            &[
                2, 40, 0, 2, 4, 0x12, 4, 2, 5, 3, 0, 1, 0, 4, 1, 5, 1, 0x15, 1, 7, 0, 5, 0, 5, 0,
                11, 0,
            ],
        );
        write(
            "mpmc_ops",
            "fill-one-slot",
            &[
                0, 8, 1, 0, 1, 8, 0, 1, 8, 2, 0, 5, 1, 0x10, 2, 0, 7, 0, 9, 0, 10, 3, 0,
            ],
        );
        random_seeds(
            "mpmc_ops",
            &mut rng,
            &[
                &[0, 8, 0],
                &[1, 100, 1],
                &[2, 0, 2],
                &[3, 199, 0],
                &[4, 31, 1],
            ],
            &[64, 300, 1000],
        );

        // corrupt_consume: [capacity, max, rounds, (lens), messages, (lens), flags, ...].
        // No corruption at all (the window writes nothing).
        write(
            "corrupt_consume",
            "intact",
            &[
                0, 100, 3, 0, 10, 0xfe, 0, 20, 4, 0, 5, 0xfe, 0, 1, 0, 2, 0, 3, 0,
            ],
        );
        // Only the write position moves ahead by 8.
        write(
            "corrupt_consume",
            "write-pos",
            &[1, 200, 0, 3, 0, 8, 0, 8, 0, 8, 1, 1, 1, 0, 0, 0, 0],
        );
        // A record header overwritten with a huge length.
        write(
            "corrupt_consume",
            "record-len",
            &[
                0, 64, 2, 0, 40, 0, 40, 2, 0, 16, 0, 16, 0, 0, 0, 8, 0xff, 0xff, 0xff, 0x7f, 0, 0,
                0, 0,
            ],
        );
        random_seeds(
            "corrupt_consume",
            &mut rng,
            &[&[0, 100, 5], &[1, 255, 20], &[2, 30, 0], &[0, 128, 9]],
            &[40, 120, 300],
        );
        // corrupt_consume_mpmc: [slots, max, rounds, (lens), messages, (lens), flags, ...].
        write(
            "corrupt_consume_mpmc",
            "intact",
            &[3, 20, 2, 0, 5, 0, 6, 3, 0, 1, 0, 2, 0, 3, 0, 0, 0, 0],
        );
        write(
            "corrupt_consume_mpmc",
            "stamp",
            &[2, 20, 1, 0, 5, 2, 0, 1, 0, 2, 8, 1, 0, 1, 0, 3, 0, 0, 0],
        );
        random_seeds(
            "corrupt_consume_mpmc",
            &mut rng,
            &[&[0, 10, 3], &[1, 50, 0], &[2, 99, 7], &[3, 0, 1]],
            &[40, 120, 300],
        );
        broadcast_corrupt_seeds(&mut rng);
    }

    /// broadcast_corrupt: [capacity, max, mode, third, rounds, (lens), unread, (lens),
    /// flags, grant len, corruptions, (each), ops...] (see shmlane_fuzz::broadcast_corrupt;
    /// a length byte 0xfe is max_message).
    fn broadcast_corrupt_seeds(rng: &mut Rng) {
        let t = "broadcast_corrupt";
        // Reads for every subscriber, a send, reads again, the publisher leaves, reads.
        let ops: &[u8] = &[
            3, 0x13, 0x23, 0, 0xfe, 4, 0x14, 0x24, 5, 0x15, 0x87, 3, 0x13,
        ];
        let run = |head: &[u8], corrupt: &[u8]| {
            let mut d = head.to_vec();
            d.extend(corrupt);
            d.extend(ops);
            d
        };
        // Block, 256 bytes, max 60: 9 rounds (wraps: padding in play), 3 unread.
        let block: &[u8] = &[
            0, 60, 0x14, 0, 9, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe,
        ];
        let lap: &[u8] = &[
            1, 70, 0x13, 1, 12, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe,
            0xfe,
        ];
        let unread: &[u8] = &[3, 0xfe, 0xfe, 0xfe];
        let with = |mode: &[u8], flags: u8, n: u8, items: &[u8]| {
            let mut c = unread.to_vec();
            c.extend([flags, 0xfe, n]);
            c.extend(items);
            run(mode, &c)
        };
        write(t, "intact-block", &with(block, 0, 0, &[]));
        write(t, "intact-lap", &with(lap, 0, 0, &[]));
        // A grant held across, committed.
        write(t, "intact-grant", &with(block, 3, 0, &[]));
        // write_pos 16 ahead; frontier 32 ahead; tail 128 back.
        write(t, "write-pos", &with(block, 0, 1, &[0, 0, 1, 1, 0]));
        write(t, "frontier", &with(lap, 0, 1, &[0, 1, 1, 2, 0]));
        write(t, "tail", &with(lap, 0, 1, &[0, 2, 2, 8, 0]));
        // A cursor's position misaligned; cursor states EVICTED and LAPPED.
        write(t, "cursor-pos", &with(block, 0, 1, &[2, 0, 0, 3, 1]));
        write(
            t,
            "cursor-state",
            &with(block, 0, 2, &[2, 1, 2, 3, 2, 2, 2, 4]),
        );
        // A record header: length just over max_message; a padding flag; a wrong seq.
        write(
            t,
            "record-len",
            &with(block, 0, 1, &[5, 4, 0, 1, 1, 0, 0, 0, 0]),
        );
        write(t, "record-pad", &with(lap, 0, 1, &[5, 2, 0, 0, 0, 0, 3, 0]));
        write(
            t,
            "record-seq",
            &with(lap, 0, 1, &[5, 4, 0, 2, 0xfe, 1, 1, 0, 2]),
        );
        // The overflow mode flipped; a registry entry scribbled.
        write(t, "overflow", &with(block, 0, 1, &[1, 0, 2, 0, 0, 0]));
        write(t, "registry", &with(block, 0, 1, &[3, 2, 0, 7, 0, 0, 0]));
        let mut i = 0;
        for head in [block, lap] {
            for len in [40, 120, 300] {
                let mut d = head.to_vec();
                d.extend(rng.bytes(len));
                write(t, &format!("random-{i}"), &d);
                i += 1;
            }
        }
    }
}
