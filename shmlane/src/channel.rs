//! Creating and opening a channel's segment, and the endpoint registry bookkeeping that
//! every endpoint type shares.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::segment::header::{
    self, Fingerprint, Geometry, Invalid, Kind, Mapped, PeerState, HEADER_SIZE,
};
use crate::segment::Segment;
use crate::sync::Ordering;
use crate::wait::Gone;
use crate::Options;

/// How long `open` waits for a creator that has not finished initialising the segment.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_millis(2000);

/// Creates and initialises a segment of the given geometry (`segment_len` is filled in)
/// carrying messages of `fingerprint` (untyped: all zero).
pub(crate) fn create(
    name: &str,
    opts: &Options,
    mut geometry: Geometry,
    fingerprint: &Fingerprint,
) -> Result<Mapped> {
    if !fingerprint.is_typed() && opts.get_schema() != 0 {
        return Err(Error::InvalidOptions {
            reason: format!(
                "schema {} is for typed channels (shmlane::typed); an untyped channel has none",
                opts.get_schema()
            ),
        });
    }
    let len = HEADER_SIZE
        .checked_add(geometry.capacity)
        .ok_or_else(|| Error::InvalidOptions {
            reason: "capacity overflows the address space".into(),
        })?;
    geometry.segment_len = len;
    let mut seg = Segment::create(name, len, opts.get_backing(), opts.get_mode())?;
    seg.set_remove_on_drop(!opts.get_persist());
    Mapped::init(seg, geometry, fingerprint, |m| {
        if m.geometry().kind == Kind::Mpmc {
            crate::ring::mpmc::init_stamps(m);
        }
    })
}

/// Under loom: a channel on heap memory, shared by the endpoints of one model.
#[cfg(loom)]
pub(crate) fn model(name: &str, geometry: Geometry) -> std::sync::Arc<Mapped> {
    std::sync::Arc::new(Mapped::model(name, geometry, |m| {
        if m.geometry().kind == Kind::Mpmc {
            crate::ring::mpmc::init_stamps(m);
        }
    }))
}

/// Opens and validates a segment of the given kind carrying messages of `fingerprint`
/// (untyped: all zero; another one is [`Error::TypeMismatch`]), waiting up to
/// [`READY_TIMEOUT`] for a creator that is still initialising it.
pub(crate) fn open(name: &str, kind: Kind, fingerprint: &Fingerprint) -> Result<Mapped> {
    open_until(name, kind, fingerprint, None)
}

/// Opens and validates a segment, waiting until `deadline` for the name to appear and
/// for its creator to finish initialising it; [`Error::Timeout`] after. Any other error
/// (a foreign segment, a wrong kind, permissions) is returned at once.
pub(crate) fn open_timeout(
    name: &str,
    kind: Kind,
    fingerprint: &Fingerprint,
    timeout: Duration,
) -> Result<Mapped> {
    open_until(name, kind, fingerprint, Some(Instant::now() + timeout))
}

fn open_until(
    name: &str,
    kind: Kind,
    fingerprint: &Fingerprint,
    deadline: Option<Instant>,
) -> Result<Mapped> {
    let start = Instant::now();
    let pause = |deadline: Option<Instant>| -> bool {
        // Polls every 2 ms at first, then every 10 ms; false once the deadline is past.
        let now = Instant::now();
        let step = if now.duration_since(start) < Duration::from_millis(20) {
            Duration::from_millis(2)
        } else {
            Duration::from_millis(10)
        };
        match deadline {
            Some(d) if now >= d => false,
            Some(d) => {
                std::thread::sleep(step.min(d - now));
                true
            }
            None => {
                std::thread::sleep(step);
                true
            }
        }
    };
    loop {
        let seg = match Segment::open(name) {
            Ok(seg) => seg,
            // Not there yet (or removed between the look-up and the map): wait for it.
            Err(Error::NotFound { .. }) if deadline.is_some() => {
                if !pause(deadline) {
                    return Err(Error::Timeout);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        match Mapped::validate(seg, Some(kind)) {
            Ok(m) => {
                let stored = m.fingerprint();
                if !stored.matches(fingerprint) {
                    return Err(stored.mismatch(fingerprint));
                }
                // Only the part the validated header describes: the file may be longer.
                m.segment().prefault(m.geometry().segment_len);
                return Ok(m);
            }
            Err(Invalid::Err(Error::NotFound { .. })) if deadline.is_some() => {
                if !pause(deadline) {
                    return Err(Error::Timeout);
                }
            }
            Err(Invalid::Err(e)) => return Err(e),
            Err(Invalid::NotYet(_)) => {
                if deadline.is_none() && start.elapsed() >= READY_TIMEOUT {
                    return Err(Error::NotReady {
                        name: name.to_string(),
                        waited_ms: READY_TIMEOUT.as_millis() as u64,
                    });
                }
                if !pause(deadline) {
                    return Err(Error::Timeout);
                }
            }
        }
    }
}

/// `create`, or `open` if the name exists: retried when the name vanishes between the two
/// (its creator left), so the result is never `NotFound`.
pub(crate) fn create_or_open<T>(
    name: &str,
    create: impl Fn() -> Result<T>,
    open: impl Fn() -> Result<T>,
) -> Result<T> {
    for _ in 0..100 {
        match create() {
            Err(Error::AlreadyExists { .. }) => match open() {
                Err(Error::NotFound { .. }) => continue,
                other => return other,
            },
            other => return other,
        }
    }
    Err(Error::AlreadyExists {
        name: name.to_string(),
    })
}

/// This process's identity in the endpoint registry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Me {
    pub pid: i32,
    pub start_time: u64,
}

impl Me {
    pub(crate) fn get() -> Me {
        Me {
            pid: std::process::id() as i32,
            start_time: header::self_start_time(),
        }
    }
}

/// The creator of a channel is leaving. If messages it published are waiting for a reader
/// that never attached or closed its end (not one that crashed: its messages would wait
/// for nobody, and a crash is not a hand-over), the name stays for the reader that comes,
/// like a FIFO keeps what was written: ownership of the name passes to whoever leaves the
/// ring empty with nobody on the other side ([`finish_hand_over`]).
pub(crate) fn hand_over_if_unread(m: &Mapped, unread: bool, readers_closed_or_never: bool) {
    if unread && readers_closed_or_never && m.segment().removes_on_drop() {
        m.header()
            .flags
            .fetch_or(header::FLAG_HANDED_OVER, Ordering::SeqCst);
        m.segment().keep_name();
    }
}

/// The ring of a handed-over channel is empty and nobody is on the other side: remove
/// the name (once, whoever gets here first; only if it still names this segment).
pub(crate) fn finish_hand_over(m: &Mapped) {
    let flags = &m.header().flags;
    if flags.load(Ordering::Acquire) & header::FLAG_HANDED_OVER != 0
        && flags.fetch_and(!header::FLAG_HANDED_OVER, Ordering::AcqRel) & header::FLAG_HANDED_OVER
            != 0
    {
        let _ = m.segment().unlink();
    }
}

/// Whether every published message has been released (positions equal; for MPMC, every
/// claimed position taken).
pub(crate) fn ring_empty(m: &Mapped) -> bool {
    let h = m.header();
    h.write_pos.load(Ordering::Acquire) == h.read_pos.load(Ordering::Acquire)
}

/// Whether registry entry `index` says its holder closed cleanly (one load).
#[inline]
pub(crate) fn peer_closed(m: &Mapped, index: usize) -> bool {
    header::split_word(m.entry_word(index)).1 == header::EP_CLOSED
}

/// How often an endpoint asks the kernel whether its peer lives while it waits or polls
/// (one system call each time). The state is the endpoint's, not one call's: a caller that
/// waits in slices of any length (`recv_timeout(10 ms)` in a loop, `try_recv`) asks as
/// often as one long `recv` would, so a dead peer is noticed within about this interval
/// plus one wait slice.
pub(crate) const LIVENESS_INTERVAL: Duration = Duration::from_millis(20);

/// A rate limit for liveness checks, kept by an endpoint across calls.
#[derive(Debug, Default)]
pub(crate) struct RateLimit {
    last: Option<Instant>,
}

impl RateLimit {
    /// Whether a check is due now; if so, the next one is due an interval from now.
    pub(crate) fn due(&mut self) -> bool {
        if cfg!(loom) {
            // Models have no clock: a wall-clock rate limit would make an execution depend
            // on how fast the machine ran it (loom: "is the model fully deterministic?").
            return true;
        }
        let now = Instant::now();
        match self.last {
            Some(t) if now.saturating_duration_since(t) < LIVENESS_INTERVAL => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

/// Watches the peer's registry entry: the closed flag on every call (one load), and
/// whether its process lives (one system call) at most once per [`LIVENESS_INTERVAL`].
pub(crate) struct PeerWatch {
    index: usize,
    limit: RateLimit,
}

impl PeerWatch {
    pub(crate) fn new(index: usize) -> PeerWatch {
        PeerWatch {
            index,
            limit: RateLimit::default(),
        }
    }

    /// Whether the peer is gone, and how: closed or dead (asks the kernel now).
    pub(crate) fn gone(&mut self, m: &Mapped) -> Option<Gone> {
        match m.entry_state(self.index) {
            PeerState::Closed => Some(Gone::Closed),
            PeerState::Dead(_) => Some(Gone::Died),
            PeerState::Never | PeerState::Alive(_) => None,
        }
    }

    /// Like [`gone`](Self::gone), but asks the kernel at most once per
    /// [`LIVENESS_INTERVAL`]; between those it only looks at the closed flag.
    pub(crate) fn gone_rate_limited(&mut self, m: &Mapped) -> Option<Gone> {
        if peer_closed(m, self.index) {
            return Some(Gone::Closed);
        }
        if self.limit.due() {
            self.gone(m)
        } else {
            None
        }
    }
}
