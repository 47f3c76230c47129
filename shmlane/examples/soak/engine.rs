//! The soak engine: rounds of SIGKILLed endpoints, each message checked for being torn,
//! duplicated or lost, each side for hanging. Shared by `examples/soak/main.rs` (the
//! `soak` example) and `tests/soak.rs` (a few rounds under `cargo test`); each of them
//! says how to start a child process of this engine (see [`Launch`]), the example by
//! re-running itself with `__child`, the test by re-running one test of its binary.
//!
//! Every message is stamped with the sender's id, its sequence number, its own length and
//! a checksum of all of it (lengths are random), so the checking side tells:
//! - **torn**: length or checksum wrong;
//! - **duplicated**: a `(sender, seq)` seen twice, except the one message a killed SPSC
//!   consumer held (at-least-once across a consumer crash), counted as **redelivered**
//!   (at most one per killed consumer; more are duplicates);
//! - **hung**: a side that did not finish within the round's deadline (it is killed);
//! - **lost**: a gap in a sender's sequence. SPSC: none allowed (what a killed producer
//!   never published comes after the last message seen, so it is no gap). MPMC: a killed
//!   sender loses at most the message it had claimed, and a killed receiver the one it
//!   held; the segment's `lost()` counter counts those. Counted as allowed when there is at
//!   most one per kill and `lost()` accounts for it, else unexplained.
#![allow(clippy::disallowed_types)] // the soak's own counters (the library's clippy.toml is for its ring code)
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shmlane::mpmc;
use shmlane::spsc::{Consumer, Producer};
use shmlane::{Error, Options, Wait};

/// Builds the command that runs [`child_main`] with these words.
pub type Launch<'a> = &'a dyn Fn(&[String]) -> Command;

/// The scenarios, one picked at random per round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// An SPSC producer (child) SIGKILLed mid-stream; the consumer (here) drains.
    SpscProducer,
    /// An SPSC consumer (child) SIGKILLed, holding a message or not; a new consumer (here)
    /// takes over and reads the rest.
    SpscConsumer,
    /// One of 2-3 MPMC senders (children) SIGKILLed mid-stream; 2 receivers here.
    MpmcSender,
    /// An MPMC receiver (child) SIGKILLed holding a message; a sender and a receiver here.
    MpmcReceiver,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::SpscProducer,
        Scenario::SpscConsumer,
        Scenario::MpmcSender,
        Scenario::MpmcReceiver,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::SpscProducer => "spsc-producer",
            Scenario::SpscConsumer => "spsc-consumer",
            Scenario::MpmcSender => "mpmc-sender",
            Scenario::MpmcReceiver => "mpmc-receiver",
        }
    }

    /// `spsc` (both SPSC scenarios), `mpmc` (both MPMC ones), or a scenario's name.
    pub fn parse_kinds(s: &str) -> Result<Vec<Scenario>, String> {
        let mut out = Vec::new();
        for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "spsc" => out.extend([Scenario::SpscProducer, Scenario::SpscConsumer]),
                "mpmc" => out.extend([Scenario::MpmcSender, Scenario::MpmcReceiver]),
                _ => out.push(
                    *Scenario::ALL
                        .iter()
                        .find(|k| k.name() == w)
                        .ok_or_else(|| format!("unknown kind {w:?}"))?,
                ),
            }
        }
        if out.is_empty() {
            return Err("no kinds given".into());
        }
        out.dedup();
        Ok(out)
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub rounds: u64,
    pub seed: u64,
    pub kinds: Vec<Scenario>,
    /// A side not finished this long after its round started is hung.
    pub deadline: Duration,
    /// A progress line to stderr every this many rounds (0: never).
    pub progress_every: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            rounds: 100,
            seed: 1,
            kinds: Scenario::ALL.to_vec(),
            deadline: Duration::from_secs(10),
            progress_every: 10,
        }
    }
}

/// The counts.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub rounds: u64,
    pub per_kind: HashMap<&'static str, u64>,
    pub kills: u64,
    pub messages: u64,
    pub torn: u64,
    pub duplicated: u64,
    pub redelivered: u64,
    pub hung: u64,
    pub lost_allowed: u64,
    pub lost_unexplained: u64,
    /// One line per problem found (round, scenario, what).
    pub notes: Vec<String>,
}

impl Tally {
    /// Nothing torn, duplicated, hung or lost without explanation.
    pub fn ok(&self) -> bool {
        self.torn == 0 && self.duplicated == 0 && self.hung == 0 && self.lost_unexplained == 0
    }

    pub fn line(&self) -> String {
        format!(
            "rounds {}, kills {}, messages {}, torn {}, duplicated {}, redelivered {}, hung {}, lost {} allowed / {} unexplained",
            self.rounds,
            self.kills,
            self.messages,
            self.torn,
            self.duplicated,
            self.redelivered,
            self.hung,
            self.lost_allowed,
            self.lost_unexplained
        )
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let rows: Vec<(&str, String)> = vec![
            ("rounds", self.rounds.to_string()),
            ("kills", self.kills.to_string()),
            ("messages checked", self.messages.to_string()),
            ("torn", self.torn.to_string()),
            ("duplicated", self.duplicated.to_string()),
            ("redelivered", self.redelivered.to_string()),
            ("hung", self.hung.to_string()),
            ("lost (allowed)", self.lost_allowed.to_string()),
            ("lost (unexplained)", self.lost_unexplained.to_string()),
        ];
        for (k, v) in rows {
            s.push_str(&format!("{k:<20} {v:>10}\n"));
        }
        let mut kinds: Vec<_> = self.per_kind.iter().collect();
        kinds.sort();
        for (k, n) in kinds {
            s.push_str(&format!("  {k:<18} {n:>10} rounds\n"));
        }
        s
    }

    fn note(&mut self, round: u64, kind: Scenario, what: String) {
        self.notes
            .push(format!("round {round} ({}): {what}", kind.name()));
    }
}

/// xorshift64*: small, deterministic.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// In `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }

    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }
}

// ---------------------------------------------------------------------------------
// Messages: id u32, len u32, seq u64, checksum u64, then len - 24 bytes.

const HEAD: usize = 24;
const MAX_MESSAGE: usize = 256;

fn checksum(id: u32, len: u32, seq: u64, body: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    id.to_le_bytes().into_iter().for_each(&mut eat);
    len.to_le_bytes().into_iter().for_each(&mut eat);
    seq.to_le_bytes().into_iter().for_each(&mut eat);
    body.iter().copied().for_each(eat);
    h
}

/// Writes message `(id, seq)` of a random length into `buf`; returns the length.
fn stamp(buf: &mut [u8; MAX_MESSAGE], id: u32, seq: u64, seed: u64) -> usize {
    let mut rng = Rng::new(seed ^ (u64::from(id) << 48) ^ seq.wrapping_mul(0x1234_5679));
    let len = rng.range(HEAD as u64, MAX_MESSAGE as u64 + 1) as usize;
    for b in &mut buf[HEAD..len] {
        *b = rng.next() as u8;
    }
    let c = checksum(id, len as u32, seq, &buf[HEAD..len]);
    buf[0..4].copy_from_slice(&id.to_le_bytes());
    buf[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    buf[16..24].copy_from_slice(&c.to_le_bytes());
    len
}

/// `(id, seq)` of an intact message, or why it is torn.
fn unstamp(m: &[u8]) -> Result<(u32, u64), String> {
    if m.len() < HEAD {
        return Err(format!("{} bytes, shorter than the stamp", m.len()));
    }
    let id = u32::from_le_bytes(m[0..4].try_into().unwrap());
    let len = u32::from_le_bytes(m[4..8].try_into().unwrap());
    let seq = u64::from_le_bytes(m[8..16].try_into().unwrap());
    let c = u64::from_le_bytes(m[16..24].try_into().unwrap());
    if len as usize != m.len() {
        return Err(format!("stamped length {len}, received {}", m.len()));
    }
    if checksum(id, len, seq, &m[HEAD..]) != c {
        return Err(format!("checksum mismatch (id {id}, seq {seq})"));
    }
    Ok((id, seq))
}

// ---------------------------------------------------------------------------------
// Children.

/// The marker in front of every protocol line a child prints (other output, like a test
/// harness's, is ignored).
const MARK: &str = "@soak ";

fn say(what: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARK}{what}");
    let _ = out.flush();
}

/// A child's main: `role=... name=... [id=..] [count=..] [seed=..] [hold=..]`. Exits the
/// process when done (status 0; 3 after an unexpected error, printed to stderr).
pub fn child_main(words: &[String]) -> ! {
    let kv: HashMap<&str, &str> = words.iter().filter_map(|w| w.split_once('=')).collect();
    let get = |k: &str| -> &str { kv.get(k).unwrap_or_else(|| panic!("missing {k}=")) };
    let num = |k: &str| -> u64 { get(k).parse().unwrap_or_else(|_| panic!("bad {k}=")) };
    let name = get("name");
    let fail = |what: String| -> ! {
        eprintln!("soak child {}: {what}", get("role"));
        std::process::exit(3)
    };
    match get("role") {
        "spsc-prod" => {
            let mut tx = Producer::open(name).unwrap_or_else(|e| fail(format!("open: {e}")));
            say("ready");
            let (id, seed) = (num("id") as u32, num("seed"));
            let mut buf = [0u8; MAX_MESSAGE];
            for seq in 0..num("count") {
                let len = stamp(&mut buf, id, seq, seed);
                if let Err(e) = tx.send(&buf[..len]) {
                    fail(format!("send {seq}: {e}"));
                }
            }
            drop(tx);
            say("done");
        }
        "mpmc-send" => {
            let tx = mpmc::Sender::open(name).unwrap_or_else(|e| fail(format!("open: {e}")));
            say("ready");
            let (id, seed) = (num("id") as u32, num("seed"));
            let mut buf = [0u8; MAX_MESSAGE];
            for seq in 0..num("count") {
                let len = stamp(&mut buf, id, seq, seed);
                if let Err(e) = tx.send(&buf[..len]) {
                    fail(format!("send {seq}: {e}"));
                }
            }
            drop(tx);
            say("done");
        }
        "spsc-cons" => {
            let mut rx = Consumer::open(name).unwrap_or_else(|e| fail(format!("open: {e}")));
            say("ready");
            let hold = num("hold");
            let mut n = 0u64;
            loop {
                let m = match rx.recv() {
                    Ok(m) => m,
                    Err(Error::Disconnected | Error::PeerDied) => break,
                    Err(e) => fail(format!("recv: {e}")),
                };
                report(&m, n == hold);
                n += 1;
                drop(m);
            }
            say("done");
        }
        "mpmc-recv" => {
            let rx = mpmc::Receiver::open(name).unwrap_or_else(|e| fail(format!("open: {e}")));
            say("ready");
            let hold = num("hold");
            let mut n = 0u64;
            loop {
                let m = match rx.recv() {
                    Ok(m) => m,
                    Err(Error::Disconnected | Error::PeerDied) => break,
                    Err(e) => fail(format!("recv: {e}")),
                };
                report(&m, n == hold);
                n += 1;
                drop(m);
            }
            say("done");
        }
        other => fail(format!("unknown role {other}")),
    }
    std::process::exit(0)
}

/// A receiving child reports each message before releasing it (so whatever it released
/// was reported); holding, it says so and waits to be killed.
fn report(m: &[u8], hold: bool) {
    match unstamp(m) {
        Ok((id, seq)) => say(&format!("r {id} {seq}")),
        Err(why) => say(&format!("torn {why}")),
    }
    if hold {
        say("holding");
        std::thread::sleep(Duration::from_secs(120));
    }
}

/// A child process and its protocol lines; SIGKILLed (by pid) and reaped on drop.
struct Kid {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Kid {
    fn spawn(launch: Launch, words: &[String]) -> Kid {
        let mut cmd = launch(words);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("start a soak child");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find(MARK) {
                    if tx.send(line[i + MARK.len()..].to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        Kid {
            child: Some(child),
            lines,
            seen: Vec::new(),
            reader: Some(reader),
        }
    }

    /// Waits for a line for which `want` holds, until `deadline`; false if none came (the
    /// child ended, or the deadline passed). Lines read on the way are kept.
    fn wait_for(&mut self, deadline: Instant, want: impl Fn(&str) -> bool) -> bool {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = want(&l);
                    self.seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
    }

    fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Whether it exited by itself with status 0 (after a kill: false unless it had
    /// already finished). Reaps it.
    fn finished_ok(&mut self, deadline: Instant) -> Option<bool> {
        let c = self.child.as_mut()?;
        loop {
            if let Some(s) = c.try_wait().ok().flatten() {
                self.child = None;
                return Some(s.success());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Every protocol line, once the child is dead (its stdout closed).
    fn all_lines(&mut self, deadline: Instant) -> Vec<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => break,
            }
        }
        if let Some(r) = self.reader.take() {
            if r.is_finished() {
                let _ = r.join();
            }
        }
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        self.kill();
        self.reap();
    }
}

/// A segment name removed at the end of the round, whatever happens.
struct SegName(String);

impl Drop for SegName {
    fn drop(&mut self) {
        let _ = shmlane::format::Segment::remove(&self.0);
    }
}

fn words(list: &[(&str, String)]) -> Vec<String> {
    list.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// `(id, seq)` pairs reported by a receiving child, and its torn reports.
fn parse_reports(lines: &[String]) -> (Vec<(u32, u64)>, Vec<String>) {
    let mut got = Vec::new();
    let mut torn = Vec::new();
    for l in lines {
        let mut w = l.split(' ');
        match w.next() {
            Some("r") => {
                let id = w.next().and_then(|s| s.parse().ok());
                let seq = w.next().and_then(|s| s.parse().ok());
                if let (Some(id), Some(seq)) = (id, seq) {
                    got.push((id, seq));
                }
            }
            Some("torn") => torn.push(l.clone()),
            _ => {}
        }
    }
    (got, torn)
}

// ---------------------------------------------------------------------------------
// Rounds.

/// Runs the rounds; prints progress to stderr.
pub fn run(cfg: &Config, launch: Launch) -> Tally {
    let mut t = Tally::default();
    let mut rng = Rng::new(cfg.seed);
    for round in 0..cfg.rounds {
        let kind = cfg.kinds[rng.range(0, cfg.kinds.len() as u64) as usize];
        let name = SegName(format!("/shmlane-soak-{}-{round}", std::process::id()));
        let seed = rng.next();
        let mut r = Rng::new(seed);
        let deadline = Instant::now() + cfg.deadline;
        match kind {
            Scenario::SpscProducer => {
                spsc_producer(&mut t, round, &name.0, &mut r, deadline, launch)
            }
            Scenario::SpscConsumer => {
                spsc_consumer(&mut t, round, &name.0, &mut r, deadline, launch)
            }
            Scenario::MpmcSender => mpmc_sender(&mut t, round, &name.0, &mut r, deadline, launch),
            Scenario::MpmcReceiver => {
                mpmc_receiver(&mut t, round, &name.0, &mut r, deadline, launch)
            }
        }
        drop(name);
        t.rounds += 1;
        *t.per_kind.entry(kind.name()).or_default() += 1;
        if cfg.progress_every > 0 && t.rounds % cfg.progress_every == 0 {
            eprintln!("soak: {}/{}: {}", t.rounds, cfg.rounds, t.line());
        }
    }
    t
}

/// Polls `cond` until it holds or `deadline` passes.
fn wait_until(deadline: Instant, cond: impl Fn() -> bool) {
    while !cond() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Receives from an SPSC consumer until `Disconnected` (true) or the deadline (false),
/// handing each intact `(id, seq)` or torn description to `f`.
fn drain_spsc(
    rx: &mut Consumer,
    deadline: Instant,
    mut f: impl FnMut(Result<(u32, u64), String>),
) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(m) => f(unstamp(&m)),
            Err(Error::Disconnected | Error::PeerDied) => return true,
            Err(Error::Timeout) => return false,
            Err(e) => {
                f(Err(format!("recv: {e}")));
                return true;
            }
        }
    }
}

/// Checks a run of one sender's seqs that must be consecutive from `next`: counts
/// duplicates (a seq not above the last) and gaps. Returns the next expected seq.
fn consecutive(
    t: &mut Tally,
    round: u64,
    kind: Scenario,
    mut next: u64,
    seqs: impl IntoIterator<Item = u64>,
) -> u64 {
    for s in seqs {
        t.messages += 1;
        if s < next {
            t.duplicated += 1;
            t.note(round, kind, format!("seq {s} again (expected {next})"));
        } else {
            if s > next {
                t.lost_unexplained += s - next;
                t.note(round, kind, format!("seqs {next}..{s} missing"));
            }
            next = s + 1;
        }
    }
    next
}

fn spsc_producer(
    t: &mut Tally,
    round: u64,
    name: &str,
    r: &mut Rng,
    deadline: Instant,
    launch: Launch,
) {
    let kind = Scenario::SpscProducer;
    let opts = Options::new()
        .capacity(16 << 10)
        .max_message(MAX_MESSAGE)
        .wait(Wait::Block);
    let mut rx = Consumer::create(name, &opts).expect("create the consumer");
    let count = r.range(2000, 5000);
    let mut kid = Kid::spawn(
        launch,
        &words(&[
            ("role", "spsc-prod".into()),
            ("name", name.into()),
            ("id", "0".into()),
            ("count", count.to_string()),
            ("seed", r.next().to_string()),
        ]),
    );
    if !kid.wait_for(deadline, |l| l == "ready") {
        t.hung += 1;
        t.note(round, kind, "the producer never got ready".into());
        return;
    }
    let kill_at = r.range(0, count);
    let reap_late = r.chance(1, 2);
    let received = AtomicU64::new(0);
    let mut seqs = Vec::new();
    let mut torn = Vec::new();
    let finished = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            drain_spsc(&mut rx, deadline, |m| {
                received.fetch_add(1, Ordering::Relaxed);
                match m {
                    Ok((_, seq)) => seqs.push(seq),
                    Err(why) => torn.push(why),
                }
            })
        });
        wait_until(deadline, || received.load(Ordering::Relaxed) >= kill_at);
        kid.kill();
        if !reap_late {
            kid.reap();
        }
        reader.join().unwrap()
    });
    kid.reap();
    if !kid.all_lines(Instant::now()).iter().any(|l| l == "done") {
        t.kills += 1;
    }
    if !finished {
        t.hung += 1;
        t.note(
            round,
            kind,
            format!("no Disconnected after {} messages", seqs.len()),
        );
    }
    for why in torn {
        t.torn += 1;
        t.note(round, kind, why);
    }
    consecutive(t, round, kind, 0, seqs);
}

fn spsc_consumer(
    t: &mut Tally,
    round: u64,
    name: &str,
    r: &mut Rng,
    deadline: Instant,
    launch: Launch,
) {
    let kind = Scenario::SpscConsumer;
    let opts = Options::new()
        .capacity(8 << 10)
        .max_message(MAX_MESSAGE)
        .wait(Wait::Block)
        .persist(true);
    let mut tx = Producer::create(name, &opts).expect("create the producer");
    let count = r.range(2000, 5000);
    let hold = if r.chance(1, 2) {
        r.range(0, 1500)
    } else {
        u64::MAX
    };
    let mut kid = Kid::spawn(
        launch,
        &words(&[
            ("role", "spsc-cons".into()),
            ("name", name.into()),
            ("hold", hold.to_string()),
        ]),
    );
    if !kid.wait_for(deadline, |l| l == "ready") {
        t.hung += 1;
        t.note(round, kind, "the consumer never got ready".into());
        return;
    }
    let seed = r.next();
    let kill_at = r.range(0, count);
    let reap_late = r.chance(1, 2);
    let (sent_all, new_seqs, new_torn, new_done, lines) = std::thread::scope(|s| {
        // The producer sends everything, going on after the consumer's death once the
        // new consumer has attached.
        let sender = s.spawn(move || {
            let mut buf = [0u8; MAX_MESSAGE];
            let mut seq = 0;
            while seq < count {
                let len = stamp(&mut buf, 0, seq, seed);
                let left = deadline.saturating_duration_since(Instant::now());
                match tx.send_timeout(&buf[..len], left) {
                    Ok(()) => seq += 1,
                    Err(Error::Disconnected | Error::PeerDied) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => return false,
                }
            }
            true // dropping tx closes the producer: the new consumer drains, then ends
        });
        if hold != u64::MAX {
            kid.wait_for(deadline, |l| l == "holding" || l == "done");
        } else {
            let n = std::cell::Cell::new(0u64);
            kid.wait_for(deadline, |l| {
                n.set(n.get() + u64::from(l.starts_with("r ")));
                n.get() >= kill_at || l == "done"
            });
        }
        kid.kill();
        if !reap_late {
            kid.reap();
        }
        let lines = kid.all_lines(deadline);
        // Take over: the dead consumer's role is free once it is seen dead.
        let mut rx = loop {
            match Consumer::open(name) {
                Ok(rx) => break Some(rx),
                Err(Error::RoleTaken { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(_) => break None,
            }
        };
        let mut seqs = Vec::new();
        let mut torn = Vec::new();
        let done = match rx.as_mut() {
            Some(rx) => drain_spsc(rx, deadline, |m| match m {
                Ok((_, seq)) => seqs.push(seq),
                Err(why) => torn.push(why),
            }),
            None => false,
        };
        (sender.join().unwrap(), seqs, torn, done, lines)
    });
    kid.reap();
    if !lines.iter().any(|l| l == "done") {
        t.kills += 1;
    }
    if !sent_all {
        t.hung += 1;
        t.note(round, kind, "the producer could not send everything".into());
    }
    if !new_done {
        t.hung += 1;
        t.note(
            round,
            kind,
            format!(
                "the new consumer did not finish ({} messages)",
                new_seqs.len()
            ),
        );
    }
    let (old, old_torn) = parse_reports(&lines);
    for why in old_torn.into_iter().chain(new_torn) {
        t.torn += 1;
        t.note(round, kind, why);
    }
    // The killed consumer: consecutive from 0. The new one: starts at most one message
    // before where the old one stopped (the message it held, or had not released).
    let after_old = consecutive(t, round, kind, 0, old.iter().map(|m| m.1));
    let mut next = after_old;
    let mut new = new_seqs.into_iter().peekable();
    if let Some(&first) = new.peek() {
        if first < after_old {
            let again = after_old - first;
            t.redelivered += again.min(1);
            if again > 1 {
                t.duplicated += again - 1;
                t.note(
                    round,
                    kind,
                    format!("the new consumer starts at {first}, {again} before {after_old}"),
                );
            }
            t.messages += again;
            next = after_old;
            for _ in 0..again {
                new.next();
            }
        }
    }
    let end = consecutive(t, round, kind, next, new);
    if new_done && sent_all && end < count {
        t.lost_unexplained += count - end;
        t.note(round, kind, format!("seqs {end}..{count} never arrived"));
    }
}

/// Per-sender bookkeeping for the MPMC scenarios.
struct Seen {
    got: Vec<Vec<u32>>, // per sender, per seq: times seen
}

impl Seen {
    fn new(counts: &[u64]) -> Seen {
        Seen {
            got: counts.iter().map(|&c| vec![0; c as usize]).collect(),
        }
    }

    fn add(&mut self, t: &mut Tally, round: u64, kind: Scenario, id: u32, seq: u64) {
        t.messages += 1;
        match self
            .got
            .get_mut(id as usize)
            .and_then(|v| v.get_mut(seq as usize))
        {
            Some(n) => {
                *n += 1;
                if *n > 1 {
                    t.duplicated += 1;
                    t.note(round, kind, format!("({id}, {seq}) seen {} times", *n));
                }
            }
            None => {
                t.torn += 1;
                t.note(round, kind, format!("({id}, {seq}) was never sent"));
            }
        }
    }

    /// Messages of sender `id` below `end` never seen.
    fn missing(&self, id: usize, end: u64) -> u64 {
        self.got[id][..end as usize]
            .iter()
            .filter(|&&n| n == 0)
            .count() as u64
    }

    /// One past the highest seq of `id` seen (0 if none).
    fn end(&self, id: usize) -> u64 {
        self.got[id]
            .iter()
            .rposition(|&n| n > 0)
            .map_or(0, |i| i as u64 + 1)
    }
}

/// MPMC accounting: `missing` messages not seen that should have been, `lost` the
/// segment's counter, `budget` one per kill. Allowed when `missing <= lost <= budget`.
fn mpmc_lost(t: &mut Tally, round: u64, kind: Scenario, missing: u64, lost: u64, budget: u64) {
    let explained = lost.min(budget);
    t.lost_allowed += explained;
    let unexplained = missing.saturating_sub(explained) + lost.saturating_sub(budget);
    if unexplained > 0 {
        t.lost_unexplained += unexplained;
        t.note(
            round,
            kind,
            format!("{missing} missing, lost() {lost}, {budget} kill(s)"),
        );
    }
}

/// Receives on an MPMC receiver until `Disconnected` (true) or the deadline (false).
fn drain_mpmc(
    rx: &mpmc::Receiver,
    deadline: Instant,
    mut f: impl FnMut(Result<(u32, u64), String>),
) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(m) => f(unstamp(&m)),
            Err(Error::Disconnected | Error::PeerDied) => return true,
            Err(Error::Timeout) => return false,
            Err(e) => {
                f(Err(format!("recv: {e}")));
                return true;
            }
        }
    }
}

type Received = (bool, Vec<(u32, u64)>, Vec<String>);

fn mpmc_sender(
    t: &mut Tally,
    round: u64,
    name: &str,
    r: &mut Rng,
    deadline: Instant,
    launch: Launch,
) {
    let kind = Scenario::MpmcSender;
    let opts = Options::new()
        .slots(64)
        .max_message(MAX_MESSAGE)
        .wait(Wait::Block);
    let rx = mpmc::Receiver::create(name, &opts).expect("create the receiver");
    let senders = r.range(2, 4) as usize;
    let counts: Vec<u64> = (0..senders).map(|_| r.range(1000, 3000)).collect();
    let mut kids: Vec<Kid> = counts
        .iter()
        .enumerate()
        .map(|(id, &count)| {
            Kid::spawn(
                launch,
                &words(&[
                    ("role", "mpmc-send".into()),
                    ("name", name.into()),
                    ("id", id.to_string()),
                    ("count", count.to_string()),
                    ("seed", r.next().to_string()),
                ]),
            )
        })
        .collect();
    for k in kids.iter_mut() {
        if !k.wait_for(deadline, |l| l == "ready") {
            t.hung += 1;
            t.note(round, kind, "a sender never got ready".into());
            return;
        }
    }
    let victim = r.range(0, senders as u64) as usize;
    let kill_at = r.range(0, counts[victim]);
    let from_victim = AtomicU64::new(0);
    let reap_late = r.chance(1, 2);
    let results: Vec<Received> = std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let rx = rx.clone();
                let from_victim = &from_victim;
                s.spawn(move || {
                    let mut got = Vec::new();
                    let mut torn = Vec::new();
                    let done = drain_mpmc(&rx, deadline, |m| match m {
                        Ok(x) => {
                            if x.0 as usize == victim {
                                from_victim.fetch_add(1, Ordering::Relaxed);
                            }
                            got.push(x)
                        }
                        Err(why) => torn.push(why),
                    });
                    (done, got, torn)
                })
            })
            .collect();
        wait_until(deadline, || from_victim.load(Ordering::Relaxed) >= kill_at);
        kids[victim].kill();
        if !reap_late {
            kids[victim].reap();
        }
        readers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = Seen::new(&counts);
    for (done, got, torn) in &results {
        if !done {
            t.hung += 1;
            t.note(round, kind, "a receiver got no Disconnected".into());
        }
        for why in torn {
            t.torn += 1;
            t.note(round, kind, why.clone());
        }
        for &(id, seq) in got {
            seen.add(t, round, kind, id, seq);
        }
    }
    // The survivors must have sent everything; the victim, everything up to its last
    // message seen (unless it finished before the kill).
    let mut missing = 0;
    for (id, k) in kids.iter_mut().enumerate() {
        let lines = k.all_lines(Instant::now() + Duration::from_millis(100));
        let completed = lines.iter().any(|l| l == "done");
        if id == victim && !completed {
            t.kills += 1;
        }
        let end = if id == victim && !completed {
            seen.end(id)
        } else {
            counts[id]
        };
        missing += seen.missing(id, end);
        k.kill();
        k.reap();
    }
    mpmc_lost(t, round, kind, missing, rx.lost(), 1);
}

fn mpmc_receiver(
    t: &mut Tally,
    round: u64,
    name: &str,
    r: &mut Rng,
    deadline: Instant,
    launch: Launch,
) {
    let kind = Scenario::MpmcReceiver;
    let opts = Options::new()
        .slots(16)
        .max_message(MAX_MESSAGE)
        .wait(Wait::Block);
    let tx = mpmc::Sender::create(name, &opts).expect("create the sender");
    let rx = mpmc::Receiver::open(name).expect("open a receiver");
    let count = r.range(2000, 5000);
    let hold = r.range(0, 300);
    let mut kid = Kid::spawn(
        launch,
        &words(&[
            ("role", "mpmc-recv".into()),
            ("name", name.into()),
            ("hold", hold.to_string()),
        ]),
    );
    if !kid.wait_for(deadline, |l| l == "ready") {
        t.hung += 1;
        t.note(round, kind, "the receiver never got ready".into());
        return;
    }
    let seed = r.next();
    let reap_late = r.chance(1, 2);
    let (sent_all, mine, lines) = std::thread::scope(|s| {
        let sender = s.spawn(move || {
            let mut buf = [0u8; MAX_MESSAGE];
            for seq in 0..count {
                let len = stamp(&mut buf, 0, seq, seed);
                let left = deadline.saturating_duration_since(Instant::now());
                if tx.send_timeout(&buf[..len], left).is_err() {
                    return false;
                }
            }
            true // dropping tx: the receivers drain, then get Disconnected
        });
        let reader = s.spawn(|| {
            let mut got = Vec::new();
            let mut torn = Vec::new();
            let done = drain_mpmc(&rx, deadline, |m| match m {
                Ok(x) => got.push(x),
                Err(why) => torn.push(why),
            });
            (done, got, torn)
        });
        kid.wait_for(deadline, |l| l == "holding" || l == "done");
        kid.kill();
        if !reap_late {
            kid.reap();
        }
        let lines = kid.all_lines(deadline);
        (sender.join().unwrap(), reader.join().unwrap(), lines)
    });
    kid.reap();
    if !lines.iter().any(|l| l == "done") {
        t.kills += 1;
    }
    if !sent_all {
        t.hung += 1;
        t.note(round, kind, "the sender could not send everything".into());
    }
    let (done, got, torn) = mine;
    if !done {
        t.hung += 1;
        t.note(round, kind, "the receiver got no Disconnected".into());
    }
    let (theirs, their_torn) = parse_reports(&lines);
    for why in torn.into_iter().chain(their_torn) {
        t.torn += 1;
        t.note(round, kind, why);
    }
    let mut seen = Seen::new(&[count]);
    for (id, seq) in got.into_iter().chain(theirs) {
        seen.add(t, round, kind, id, seq);
    }
    let missing = if sent_all { seen.missing(0, count) } else { 0 };
    mpmc_lost(t, round, kind, missing, rx.lost(), 1);
}
