//! # shmlane-zenoh
//!
//! A bridge that carries a [shmlane] ring to another host and back over
//! [zenoh](https://zenoh.io): [`Out`] drains a local ring and publishes each message on a
//! zenoh key; [`In`] subscribes to the key on the far side and feeds a local ring. The
//! tags, the order, the back-pressure and the end of stream cross:
//!
//! - every message goes out as one zenoh sample with its tag, the sending `out`'s epoch
//!   and a sequence number in the attachment ([`wire`]);
//! - congestion control is `Block` by default: a slow far side slows `out`, which stops
//!   draining its ring, which holds the local producer back; nothing is lost.
//!   [`Out::drop_when_congested`] chooses zenoh's lossy mode instead, and `in` counts the
//!   holes;
//! - `out` publishes nothing before a subscriber matches the key (a sample published
//!   before that would go nowhere), and holds its ring while none does;
//! - when the local ring's producer finishes, `out` publishes an end marker; `in` then
//!   drops its producer, so the far consumer drains its ring and gets `Disconnected`.
//!   `in` acknowledges the end marker by undeclaring its subscriber, which `out` sees as
//!   "no longer matching" before it returns;
//! - a gap in the sequence (lossy mode, a broken link, a restarted `out`) is counted in
//!   [`InStats`] and reported ([`Gap`]), never hidden.
//!
//! Both builders take a [`zenoh::Session`] the caller already has, so an application can
//! embed the bridge; the `shmlane-zenoh` binary wraps them with a session from
//! [`config`] (peer mode, multicast scouting off, listening only where asked).
//!
//! ```no_run
//! use zenoh::Wait;
//! # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // Host A: drain the ring /a onto the key `shmlane/demo`, listening for the far side.
//! let cfg = shmlane_zenoh::config(&["tcp/127.0.0.1:7447".into()], &[])?;
//! let session = zenoh::open(cfg).wait()?;
//! let sent = shmlane_zenoh::Out::new(&session, "/a", "shmlane/demo").run()?;
//! println!("{} messages", sent.messages);
//! # Ok(()) }
//! ```
//!
//! ```no_run
//! use zenoh::Wait;
//! # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // Host B: feed the ring /b from the key, connecting to host A.
//! let cfg = shmlane_zenoh::config(&[], &["tcp/127.0.0.1:7447".into()])?;
//! let session = zenoh::open(cfg).wait()?;
//! let got = shmlane_zenoh::In::new(&session, "/b", "shmlane/demo")
//!     .capacity(4 << 20)
//!     .run()?;
//! println!("{} messages, {} gaps", got.messages, got.gaps);
//! # Ok(()) }
//! ```
#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]
#![cfg(target_os = "linux")]

mod track;
pub mod wire;

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shmlane::spsc::{Consumer, Producer};
use shmlane::{mpmc, Options};
use zenoh::qos::CongestionControl;
use zenoh::sample::Sample;
use zenoh::{Session, Wait};

pub use track::Gap;
use track::Tracker;
use wire::{Header, Kind};

/// What can stop a bridge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local ring failed (could not be opened or created, its peer died, ...).
    #[error("ring {ring}: {source}")]
    Ring {
        /// The ring's name.
        ring: String,
        /// What the ring said.
        source: shmlane::Error,
    },
    /// `out` waited as long as it was told for the ring to appear.
    #[error("ring {ring} did not appear within {} s", waited.as_secs_f64())]
    RingTimeout {
        /// The ring's name.
        ring: String,
        /// How long it waited.
        waited: Duration,
    },
    /// zenoh refused something (a bad key or endpoint, a closed session, ...).
    #[error("zenoh: {0}")]
    Zenoh(String),
    /// A message from the far side is larger than the local ring's max message.
    #[error("a message of {len} bytes is larger than ring {ring}'s max message of {max} bytes (create it with a larger capacity or max message)")]
    TooLarge {
        /// The ring's name.
        ring: String,
        /// The message's length.
        len: usize,
        /// The ring's max message.
        max: usize,
    },
    /// The producer of the far ring died instead of finishing; `in` ended its ring after
    /// everything that arrived.
    #[error("the producer of the far ring died (the far `out` sent a `died` end marker); everything it published before was delivered")]
    FarProducerDied,
}

fn zerr(e: impl fmt::Display) -> Error {
    Error::Zenoh(e.to_string())
}

/// A zenoh configuration for a bridge: peer mode, multicast scouting **off**, listening
/// on exactly `listen` (no wildcard default) and connecting to `connect` (retrying until
/// the far side is up, so either side may start first). A `Block` publication waits for
/// the far side as long as it takes instead of closing the link after zenoh's default
/// 5 s: the far reader may be slow for longer than that; a dead peer is still found by
/// zenoh's lease (10 s).
///
/// ```
/// let cfg = shmlane_zenoh::config(&["tcp/127.0.0.1:7447".into()], &[]).unwrap();
/// assert!(shmlane_zenoh::config(&["not an endpoint".into()], &[]).is_err());
/// # drop(cfg);
/// ```
pub fn config(listen: &[String], connect: &[String]) -> Result<zenoh::Config, Error> {
    let mut c = zenoh::Config::default();
    let list = |eps: &[String]| -> Result<String, Error> {
        for e in eps {
            e.parse::<zenoh::config::EndPoint>()
                .map_err(|err| Error::Zenoh(format!("endpoint {e:?}: {err}")))?;
        }
        serde_json::to_string(eps).map_err(zerr)
    };
    for (k, v) in [
        ("mode", "\"peer\"".to_string()),
        ("scouting/multicast/enabled", "false".into()),
        ("listen/endpoints", list(listen)?),
        ("connect/endpoints", list(connect)?),
        ("connect/exit_on_failure", "false".into()),
        (
            "transport/link/tx/queue/congestion_control/block/wait_before_close",
            // µs: a day.
            "86400000000".into(),
        ),
    ] {
        c.insert_json5(k, &v)
            .map_err(|e| Error::Zenoh(format!("config {k} = {v}: {e}")))?;
    }
    Ok(c)
}

/// A random epoch for one `out`: distinct across restarts.
fn new_epoch() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a subscriber matches the publisher's key, kept up to date by zenoh's matching
/// listener.
#[derive(Debug, Default)]
struct Matching {
    now: AtomicBool,
    lock: Mutex<bool>,
    cv: Condvar,
}

impl Matching {
    fn set(&self, m: bool) {
        let mut g = lock(&self.lock);
        *g = m;
        self.now.store(m, Ordering::Release);
        self.cv.notify_all();
    }

    /// Waits until the status is `want`, at most `limit`; returns whether it is.
    fn wait_for(&self, want: bool, limit: Option<Duration>) -> bool {
        if self.now.load(Ordering::Acquire) == want {
            return true;
        }
        let start = Instant::now();
        let mut g = lock(&self.lock);
        while *g != want {
            let slice = match limit {
                None => Duration::from_secs(1),
                Some(l) => match l.checked_sub(start.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return false,
                },
            };
            g = self
                .cv
                .wait_timeout(g, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// The local ring `out` drains.
enum Source {
    Spsc(Consumer),
    Mpmc(mpmc::Receiver),
}

/// One thing taken from the ring.
enum Next {
    /// Its tag and bytes (the `Vec` zenoh takes as the payload: one allocation).
    Msg(u32, Vec<u8>),
    End {
        died: bool,
    },
}

impl Source {
    /// Opens `name` as whatever ring it is, waiting for it to appear.
    fn open(name: &str, limit: Option<Duration>) -> Result<Source, Error> {
        let start = Instant::now();
        let ring_err = |source| Error::Ring {
            ring: name.to_string(),
            source,
        };
        loop {
            match Consumer::open(name) {
                Ok(c) => return Ok(Source::Spsc(c)),
                Err(shmlane::Error::KindMismatch { .. }) => {
                    return mpmc::Receiver::open(name)
                        .map(Source::Mpmc)
                        .map_err(ring_err)
                }
                Err(shmlane::Error::NotFound { .. } | shmlane::Error::NotReady { .. }) => {
                    if let Some(l) = limit.filter(|l| start.elapsed() >= *l) {
                        return Err(Error::RingTimeout {
                            ring: name.to_string(),
                            waited: l,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(ring_err(e)),
            }
        }
    }

    /// The next message, copied out of the ring (its room is released before it is
    /// published: an `out` killed in between loses that one message, it never sends it
    /// twice), and its tag; or the end.
    fn next(&mut self) -> Result<Next, shmlane::Error> {
        let r = match self {
            Source::Spsc(c) => c.recv().map(|m| (m.tag(), m.to_vec())),
            Source::Mpmc(r) => r.recv().map(|m| (m.tag(), m.to_vec())),
        };
        match r {
            Ok((tag, msg)) => Ok(Next::Msg(tag, msg)),
            Err(shmlane::Error::Disconnected) => Ok(Next::End { died: false }),
            Err(shmlane::Error::PeerDied) => Ok(Next::End { died: true }),
            Err(e) => Err(e),
        }
    }
}

/// The sending half: drains a local ring onto a zenoh key.
///
/// ```no_run
/// use std::time::Duration;
/// use zenoh::Wait;
/// # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let session = zenoh::open(shmlane_zenoh::config(&[], &["tcp/10.0.0.2:7447".into()])?).wait()?;
/// let stats = shmlane_zenoh::Out::new(&session, "/a", "shmlane/demo")
///     .ring_timeout(Some(Duration::from_secs(30)))   // default: wait forever
///     .drop_when_congested(false)                    // default: Block, nothing lost
///     .run()?;                                       // until /a's producer finishes
/// assert!(stats.end_acknowledged);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Out {
    session: Session,
    ring: String,
    key: String,
    congestion: CongestionControl,
    ring_timeout: Option<Duration>,
    ack_timeout: Duration,
}

/// What an [`Out`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutStats {
    /// This `out`'s epoch (in every sample's attachment).
    pub epoch: u64,
    /// Data messages published.
    pub messages: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Whether the ring's producer died instead of finishing (the end marker says so).
    pub producer_died: bool,
    /// Whether the far `in` acknowledged the end marker (its subscriber went away) within
    /// [`Out::end_ack_timeout`].
    pub end_acknowledged: bool,
}

impl Out {
    /// A bridge from the ring `ring` (SPSC or MPMC, opened as its consumer / a receiver)
    /// to the zenoh key `key`, on a session the caller owns (it is cloned: zenoh sessions
    /// are shared handles).
    pub fn new(session: &Session, ring: &str, key: &str) -> Out {
        Out {
            session: session.clone(),
            ring: ring.to_string(),
            key: key.to_string(),
            congestion: CongestionControl::Block,
            ring_timeout: None,
            ack_timeout: Duration::from_secs(10),
        }
    }

    /// `true`: zenoh's lossy mode (`CongestionControl::Drop`): when the far side is slow,
    /// samples are dropped instead of holding the local producer back; `in` counts the
    /// holes. Default `false` (`Block`). The end marker is always sent with `Block`.
    pub fn drop_when_congested(mut self, drop: bool) -> Out {
        self.congestion = if drop {
            CongestionControl::Drop
        } else {
            CongestionControl::Block
        };
        self
    }

    /// How long to wait for the ring to appear; `None` (the default): forever.
    pub fn ring_timeout(mut self, limit: Option<Duration>) -> Out {
        self.ring_timeout = limit;
        self
    }

    /// How long to wait, after the end marker, for `in` to acknowledge it. Default 10 s.
    pub fn end_ack_timeout(mut self, limit: Duration) -> Out {
        self.ack_timeout = limit;
        self
    }

    /// Runs the bridge until the ring's producer has finished (or died) and the end
    /// marker is out. Blocks; run it on a thread of its own.
    pub fn run(self) -> Result<OutStats, Error> {
        let mut src = Source::open(&self.ring, self.ring_timeout)?;
        let publisher = self
            .session
            .declare_publisher(self.key.clone())
            .congestion_control(self.congestion)
            .wait()
            .map_err(zerr)?;
        let matching = Arc::new(Matching::default());
        let m2 = Arc::clone(&matching);
        let _listener = publisher
            .matching_listener()
            .callback(move |s| m2.set(s.matching()))
            .wait()
            .map_err(zerr)?;
        // The listener reports changes; start from the status now.
        if publisher.matching_status().wait().map_err(zerr)?.matching() {
            matching.set(true);
        }
        let mut stats = OutStats {
            epoch: new_epoch(),
            messages: 0,
            bytes: 0,
            producer_died: false,
            end_acknowledged: false,
        };
        loop {
            let next = src.next().map_err(|source| Error::Ring {
                ring: self.ring.clone(),
                source,
            })?;
            // Nothing goes out while nobody listens: zenoh would drop it.
            matching.wait_for(true, None);
            match next {
                Next::Msg(tag, payload) => {
                    let h = Header {
                        kind: Kind::Data { tag },
                        epoch: stats.epoch,
                        seq: stats.messages,
                    };
                    stats.bytes += payload.len() as u64;
                    // The attachment as an array: zenoh keeps it without a `Vec` of its own.
                    publisher
                        .put(payload)
                        .attachment(h.encode())
                        .wait()
                        .map_err(zerr)?;
                    stats.messages += 1;
                }
                Next::End { died } => {
                    stats.producer_died = died;
                    let h = Header {
                        kind: Kind::End { died },
                        epoch: stats.epoch,
                        seq: stats.messages,
                    };
                    self.session
                        .put(self.key.clone(), Vec::<u8>::new())
                        .congestion_control(CongestionControl::Block)
                        .attachment(h.encode())
                        .wait()
                        .map_err(zerr)?;
                    stats.end_acknowledged = matching.wait_for(false, Some(self.ack_timeout));
                    return Ok(stats);
                }
            }
        }
    }
}

/// The receiving half: feeds a local ring from a zenoh key.
///
/// ```no_run
/// use zenoh::Wait;
/// # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let session = zenoh::open(shmlane_zenoh::config(&["tcp/10.0.0.2:7447".into()], &[])?).wait()?;
/// let stats = shmlane_zenoh::In::new(&session, "/b", "shmlane/demo")
///     .capacity(4 << 20)                              // when it creates /b
///     .on_gap(|g| eprintln!("bridge: {g}"))           // default: to stderr
///     .run()?;                                        // until the end marker
/// println!("{} messages, {} gaps, {} known missing", stats.messages, stats.gaps, stats.missing);
/// # Ok(()) }
/// ```
pub struct In {
    session: Session,
    ring: String,
    key: String,
    options: Options,
    on_gap: Box<dyn FnMut(&Gap) + Send>,
}

impl fmt::Debug for In {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("In")
            .field("ring", &self.ring)
            .field("key", &self.key)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What an [`In`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InStats {
    /// Messages sent into the ring.
    pub messages: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Gaps in the sequence ([`Gap::Missing`] and [`Gap::Restart`]).
    pub gaps: u64,
    /// Messages known to be missing (a restart adds what it cannot count to `gaps` only).
    pub missing: u64,
    /// `out` restarts seen without an end marker ([`Gap::Restart`]).
    pub restarts: u64,
    /// Stale samples dropped ([`Gap::Stale`]).
    pub stale: u64,
    /// Samples without a valid attachment, dropped ([`Gap::Malformed`]).
    pub malformed: u64,
}

impl InStats {
    /// Counts a gap. Saturating: the numbers in a gap come from the network (a forged
    /// sample can claim nearly 2^64 missing), and counting them must not panic.
    fn count(&mut self, g: &Gap) {
        let one = |n: &mut u64| *n = n.saturating_add(1);
        match g {
            Gap::Missing { .. } => one(&mut self.gaps),
            Gap::Restart { .. } => {
                one(&mut self.gaps);
                one(&mut self.restarts);
            }
            Gap::Stale { .. } => one(&mut self.stale),
            Gap::Malformed(_) => one(&mut self.malformed),
        }
        self.missing = self.missing.saturating_add(g.missing());
    }
}

/// What the subscriber callback shares with [`In::run`].
struct InState {
    producer: Option<Producer>,
    ring: String,
    tracker: Tracker,
    stats: InStats,
    on_gap: Box<dyn FnMut(&Gap) + Send>,
    /// Set once: how the stream ended.
    outcome: Option<Result<(), Error>>,
    done: mpsc::Sender<()>,
}

impl InState {
    fn gap(&mut self, g: Gap) {
        self.stats.count(&g);
        (self.on_gap)(&g);
    }

    fn finish(&mut self, r: Result<(), Error>) {
        self.outcome = Some(r);
        // The ring ends now: the far consumer drains it and sees Disconnected.
        self.producer = None;
        let _ = self.done.send(());
    }

    fn on_sample(&mut self, sample: &Sample) {
        if self.outcome.is_some() {
            return;
        }
        let h = match sample.attachment().map(|a| a.to_bytes()) {
            None => Err("a sample without an attachment (not from a shmlane-zenoh `out`?)".into()),
            Some(a) => Header::decode(&a),
        };
        let h = match h {
            Ok(h) => h,
            Err(why) => return self.gap(Gap::Malformed(why)),
        };
        match h.kind {
            Kind::End { died } => {
                let (gap, ends) = self.tracker.end(h.epoch, h.seq);
                if let Some(g) = gap {
                    self.gap(g);
                }
                if ends {
                    self.finish(if died {
                        Err(Error::FarProducerDied)
                    } else {
                        Ok(())
                    });
                }
            }
            Kind::Data { tag } => {
                let v = self.tracker.data(h.epoch, h.seq);
                if let Some(g) = v.gap {
                    self.gap(g);
                }
                if v.deliver {
                    if let Err(e) = self.deliver(tag, sample.payload()) {
                        self.finish(Err(e));
                    }
                }
            }
        }
    }

    /// Copies the payload into the ring, waiting for room (that wait is the
    /// back-pressure: zenoh stops reading, the link fills, the far `out` blocks).
    fn deliver(&mut self, tag: u32, payload: &zenoh::bytes::ZBytes) -> Result<(), Error> {
        let Some(tx) = self.producer.as_mut() else {
            return Ok(());
        };
        let len = payload.len();
        if len > tx.max_message() {
            return Err(Error::TooLarge {
                ring: self.ring.clone(),
                len,
                max: tx.max_message(),
            });
        }
        let mut grant = tx.reserve(len).map_err(|source| Error::Ring {
            ring: self.ring.clone(),
            source,
        })?;
        let mut at = 0;
        for s in payload.slices() {
            grant[at..at + s.len()].copy_from_slice(s);
            at += s.len();
        }
        grant.set_tag(tag);
        grant.commit();
        self.stats.messages += 1;
        self.stats.bytes += len as u64;
        Ok(())
    }
}

impl In {
    /// A bridge from the zenoh key `key` into the ring `ring`, which it creates (or opens,
    /// if it exists) as the SPSC producer, on a session the caller owns.
    pub fn new(session: &Session, ring: &str, key: &str) -> In {
        In {
            session: session.clone(),
            ring: ring.to_string(),
            key: key.to_string(),
            options: Options::new(),
            on_gap: Box::new(move |g| eprintln!("shmlane-zenoh in: {g}")),
        }
    }

    /// The ring's capacity in bytes when `in` creates it (default 1 MiB; see
    /// [`Options::capacity`]).
    pub fn capacity(mut self, bytes: usize) -> In {
        self.options = self.options.capacity(bytes);
        self
    }

    /// The ring's largest message when `in` creates it (see [`Options::max_message`]); it
    /// must hold the largest message the far ring carries.
    pub fn max_message(mut self, bytes: usize) -> In {
        self.options = self.options.max_message(bytes);
        self
    }

    /// All the options `in` creates the ring with.
    pub fn options(mut self, options: Options) -> In {
        self.options = options;
        self
    }

    /// Called with every [`Gap`] as it is found (from zenoh's receiving thread). Default:
    /// a line on stderr.
    pub fn on_gap(mut self, f: impl FnMut(&Gap) + Send + 'static) -> In {
        self.on_gap = Box::new(f);
        self
    }

    /// Runs the bridge until an end marker arrives, then drops the ring's producer (its
    /// consumer drains the ring and sees `Disconnected`) and acknowledges the marker by
    /// undeclaring the subscriber. Blocks.
    ///
    /// Messages are written into the ring from zenoh's receiving thread; while the ring is
    /// full that thread waits, which is how back-pressure reaches the far `out`.
    pub fn run(self) -> Result<InStats, Error> {
        let producer =
            Producer::create_or_open(&self.ring, &self.options).map_err(|source| Error::Ring {
                ring: self.ring.clone(),
                source,
            })?;
        let (done_tx, done_rx) = mpsc::channel();
        let state = Arc::new(Mutex::new(InState {
            producer: Some(producer),
            ring: self.ring.clone(),
            tracker: Tracker::default(),
            stats: InStats::default(),
            on_gap: self.on_gap,
            outcome: None,
            done: done_tx,
        }));
        let s2 = Arc::clone(&state);
        let subscriber = self
            .session
            .declare_subscriber(self.key.clone())
            .callback(move |sample| lock(&s2).on_sample(&sample))
            .wait()
            .map_err(zerr)?;
        let _ = done_rx.recv();
        subscriber.undeclare().wait().map_err(zerr)?;
        let mut st = lock(&state);
        st.producer = None;
        let stats = st.stats.clone();
        match st.outcome.take() {
            Some(Err(e)) => Err(e),
            _ => Ok(stats),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gaps with numbers from a forged sample: counted, saturating, never a panic (the
    /// sum overflowed in `in`'s zenoh callback before).
    #[test]
    fn hostile_gap_counts_saturate() {
        let mut s = InStats::default();
        s.count(&Gap::Missing {
            epoch: 1,
            expected: 0,
            got: u64::MAX - 1,
        });
        s.count(&Gap::Restart {
            old_epoch: 1,
            received: u64::MAX,
            new_epoch: 2,
            first_seq: 5,
        });
        s.count(&Gap::Stale { epoch: 1, seq: 0 });
        s.count(&Gap::Malformed("x".into()));
        assert_eq!(
            (s.gaps, s.missing, s.restarts, s.stale, s.malformed),
            (2, u64::MAX, 1, 1, 1)
        );
    }
}
