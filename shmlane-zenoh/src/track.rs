//! The receiving side's bookkeeping: which sample is next, what is missing, what is stale.

use std::fmt;

/// Something `in` saw that is not the next message in order. Each is counted in
/// [`InStats`](crate::InStats) and reported (by default on stderr), never hidden.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gap {
    /// Sequence numbers `expected..got` of `epoch` never arrived (zenoh dropped them in
    /// `--drop` mode, or a link broke). The messages after them are delivered.
    Missing {
        /// The sending `out`'s epoch.
        epoch: u64,
        /// The sequence number that was due.
        expected: u64,
        /// The one that came.
        got: u64,
    },
    /// A new `out` (another epoch) started sending before the old one sent its end marker:
    /// the old one was killed or lost its link. Whatever it had taken from its ring and
    /// not delivered is lost, and this side cannot count it: only `received` (how many of
    /// the old epoch arrived) is known. When the new epoch's first sample is not number 0,
    /// that many more are missing, as in [`Gap::Missing`].
    Restart {
        /// The old epoch.
        old_epoch: u64,
        /// How many of its messages arrived.
        received: u64,
        /// The new epoch.
        new_epoch: u64,
        /// The new epoch's first sequence number seen.
        first_seq: u64,
    },
    /// A sample that was already due before (a lower sequence number, or an epoch that
    /// ended): dropped, not delivered twice or out of order.
    Stale {
        /// Its epoch.
        epoch: u64,
        /// Its sequence number.
        seq: u64,
    },
    /// A sample without a valid bridge attachment (someone else publishes on the key):
    /// dropped.
    Malformed(String),
}

impl Gap {
    /// How many messages this gap is known to have lost.
    pub fn missing(&self) -> u64 {
        match *self {
            Gap::Missing { expected, got, .. } => got - expected,
            Gap::Restart { first_seq, .. } => first_seq,
            Gap::Stale { .. } | Gap::Malformed(_) => 0,
        }
    }
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gap::Missing {
                epoch,
                expected,
                got,
            } => write!(
                f,
                "gap: {} message(s) missing in epoch {epoch:016x} (sequence {expected} expected, {got} came)",
                got - expected
            ),
            Gap::Restart {
                old_epoch,
                received,
                new_epoch,
                first_seq,
            } => {
                write!(
                    f,
                    "gap: `out` restarted (epoch {old_epoch:016x} -> {new_epoch:016x}) without an end marker after {received} message(s) of the old epoch; what the old `out` had not delivered is lost (this side cannot count it)"
                )?;
                if *first_seq > 0 {
                    write!(f, ", and the new epoch starts at sequence {first_seq} ({first_seq} missing)")?;
                }
                Ok(())
            }
            Gap::Stale { epoch, seq } => write!(
                f,
                "stale sample dropped (epoch {epoch:016x}, sequence {seq}: already past it)"
            ),
            Gap::Malformed(why) => write!(f, "sample dropped: {why}"),
        }
    }
}

/// What to do with a data sample.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub deliver: bool,
    pub gap: Option<Gap>,
}

/// The sequence state of the stream `in` receives.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// The current epoch and the next sequence number due in it.
    cur: Option<(u64, u64)>,
    /// Epochs that were replaced (most recent last, a bounded list): their samples are stale.
    past: Vec<u64>,
}

const PAST_EPOCHS: usize = 64;

impl Tracker {
    /// A data sample `seq` of `epoch` arrived.
    pub fn data(&mut self, epoch: u64, seq: u64) -> Verdict {
        let gap = match self.cur {
            Some((e, next)) if e == epoch => {
                if seq < next {
                    return Verdict {
                        deliver: false,
                        gap: Some(Gap::Stale { epoch, seq }),
                    };
                }
                (seq > next).then_some(Gap::Missing {
                    epoch,
                    expected: next,
                    got: seq,
                })
            }
            _ if self.past.contains(&epoch) => {
                return Verdict {
                    deliver: false,
                    gap: Some(Gap::Stale { epoch, seq }),
                }
            }
            Some((old, received)) => {
                self.retire(old);
                Some(Gap::Restart {
                    old_epoch: old,
                    received,
                    new_epoch: epoch,
                    first_seq: seq,
                })
            }
            None => (seq > 0).then_some(Gap::Missing {
                epoch,
                expected: 0,
                got: seq,
            }),
        };
        self.cur = Some((epoch, seq + 1));
        Verdict { deliver: true, gap }
    }

    /// The end marker of `epoch`, which sent `sent` data messages, arrived. Returns the gap
    /// before it, if any, and whether it ends the stream (a stale end marker does not).
    pub fn end(&mut self, epoch: u64, sent: u64) -> (Option<Gap>, bool) {
        match self.cur {
            Some((e, next)) if e == epoch => {
                let gap = (sent > next).then_some(Gap::Missing {
                    epoch,
                    expected: next,
                    got: sent,
                });
                (gap, true)
            }
            _ if self.past.contains(&epoch) => (Some(Gap::Stale { epoch, seq: sent }), false),
            Some((old, received)) => {
                self.retire(old);
                let gap = Gap::Restart {
                    old_epoch: old,
                    received,
                    new_epoch: epoch,
                    first_seq: sent,
                };
                (Some(gap), true)
            }
            None => {
                let gap = (sent > 0).then_some(Gap::Missing {
                    epoch,
                    expected: 0,
                    got: sent,
                });
                (gap, true)
            }
        }
    }

    fn retire(&mut self, epoch: u64) {
        if self.past.len() == PAST_EPOCHS {
            self.past.remove(0);
        }
        self.past.push(epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Verdict {
        Verdict {
            deliver: true,
            gap: None,
        }
    }

    #[test]
    fn in_order_then_a_hole_then_a_stale_one() {
        let mut t = Tracker::default();
        assert_eq!(t.data(7, 0), ok());
        assert_eq!(t.data(7, 1), ok());
        let v = t.data(7, 4);
        assert!(v.deliver);
        assert_eq!(v.gap.as_ref().map(Gap::missing), Some(2));
        assert_eq!(t.data(7, 5), ok());
        assert_eq!(
            t.data(7, 3),
            Verdict {
                deliver: false,
                gap: Some(Gap::Stale { epoch: 7, seq: 3 })
            }
        );
        assert_eq!(t.end(7, 6), (None, true));
    }

    #[test]
    fn a_restart_is_a_gap_and_the_old_epoch_is_stale_after_it() {
        let mut t = Tracker::default();
        t.data(1, 0);
        t.data(1, 1);
        let v = t.data(2, 0);
        assert!(v.deliver);
        assert_eq!(
            v.gap,
            Some(Gap::Restart {
                old_epoch: 1,
                received: 2,
                new_epoch: 2,
                first_seq: 0
            })
        );
        assert!(!t.data(1, 2).deliver);
        assert!(!t.end(1, 3).1);
        assert_eq!(t.data(2, 1), ok());
        // An end marker that says more were sent than arrived.
        let (gap, done) = t.end(2, 5);
        assert!(done);
        assert_eq!(gap.map(|g| g.missing()), Some(3));
    }

    #[test]
    fn joining_late_counts_what_was_before() {
        let mut t = Tracker::default();
        assert_eq!(t.data(3, 10).gap.map(|g| g.missing()), Some(10));
        let mut t = Tracker::default();
        assert_eq!(t.end(3, 0), (None, true));
    }
}
