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
    /// not delivered is lost, and this side cannot count it: only `received` (how far the
    /// old epoch's numbering got) is known. When the new epoch's first sample is not number 0,
    /// that many more are missing, as in [`Gap::Missing`].
    Restart {
        /// The old epoch.
        old_epoch: u64,
        /// How far the old epoch's numbering got: its messages that arrived, plus those of
        /// it already counted missing.
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
        // The last number has no next one; no `out` gets there (2^64 messages), so such a
        // sample is damaged or forged: dropped and said, before it changes anything.
        let Some(after) = seq.checked_add(1) else {
            return Verdict {
                deliver: false,
                gap: Some(Gap::Malformed(format!(
                    "a data sample numbered {seq} in epoch {epoch:016x}, past any real stream"
                ))),
            };
        };
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
        self.cur = Some((epoch, after));
        Verdict { deliver: true, gap }
    }

    /// The end marker of `epoch`, which sent `sent` data messages, arrived. Returns the gap
    /// before it, if any, and whether it ends the stream (a stale end marker does not).
    ///
    /// The marker's epoch becomes the current one, numbered up to `sent`: a replaced epoch
    /// stays stale, and a late sample of this one below `sent` is stale too.
    pub fn end(&mut self, epoch: u64, sent: u64) -> (Option<Gap>, bool) {
        let (gap, reached) = match self.cur {
            Some((e, next)) if e == epoch => {
                let gap = (sent > next).then_some(Gap::Missing {
                    epoch,
                    expected: next,
                    got: sent,
                });
                (gap, next.max(sent))
            }
            _ if self.past.contains(&epoch) => {
                return (Some(Gap::Stale { epoch, seq: sent }), false)
            }
            Some((old, received)) => {
                self.retire(old);
                let gap = Gap::Restart {
                    old_epoch: old,
                    received,
                    new_epoch: epoch,
                    first_seq: sent,
                };
                (Some(gap), sent)
            }
            None => {
                let gap = (sent > 0).then_some(Gap::Missing {
                    epoch,
                    expected: 0,
                    got: sent,
                });
                (gap, sent)
            }
        };
        self.cur = Some((epoch, reached));
        (gap, true)
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

    /// What the network may deliver: data or end markers of a few epochs, sequence numbers
    /// small, out of order, or at the ends of the range (a peer is not trusted).
    #[derive(Clone, Debug)]
    enum Event {
        Data(u64, u64),
        End(u64, u64),
    }

    fn seq() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        prop_oneof![8 => 0u64..12, 1 => Just(u64::MAX), 1 => Just(u64::MAX - 1)]
    }

    fn event() -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0u64..4, seq()).prop_map(|(e, s)| Event::Data(e, s)),
            1 => (0u64..4, seq()).prop_map(|(e, s)| Event::End(e, s)),
        ]
    }

    proptest::proptest! {
        /// Whatever arrives: no panic; nothing delivered twice or out of order within an
        /// epoch; an epoch that was replaced delivers nothing more; and for the current
        /// epoch, what was delivered plus what was counted missing is exactly how far its
        /// numbering went.
        #[test]
        fn hostile_sequences_are_counted_never_delivered_twice(
            events in proptest::collection::vec(event(), 1..60)
        ) {
            use std::collections::{HashMap, HashSet};
            let mut t = Tracker::default();
            let mut last: HashMap<u64, u64> = HashMap::new();
            let mut retired: HashSet<u64> = HashSet::new();
            // The current epoch and its delivered + missing count.
            let mut cur: Option<(u64, u64)> = None;
            for ev in events {
                match ev {
                    Event::Data(e, s) => {
                        let v = t.data(e, s);
                        if let Some(Gap::Restart { old_epoch, new_epoch, .. }) = &v.gap {
                            proptest::prop_assert_eq!(*new_epoch, e);
                            retired.insert(*old_epoch);
                            cur = None;
                        }
                        if !v.deliver {
                            continue;
                        }
                        proptest::prop_assert!(!retired.contains(&e), "a retired epoch delivered");
                        if let Some(&prev) = last.get(&e) {
                            proptest::prop_assert!(s > prev, "{} delivered after {}", s, prev);
                        }
                        last.insert(e, s);
                        let counted = match cur {
                            Some((ce, n)) if ce == e => n,
                            _ => 0,
                        };
                        let missing = v.gap.as_ref().map_or(0, Gap::missing);
                        cur = Some((e, counted + missing + 1));
                        // Delivered + missing == the next number due.
                        proptest::prop_assert_eq!(counted + missing + 1, s + 1);
                    }
                    Event::End(e, n) => {
                        let was_retired = retired.contains(&e);
                        let (gap, ends) = t.end(e, n);
                        if let Some(Gap::Restart { old_epoch, .. }) = &gap {
                            retired.insert(*old_epoch);
                        }
                        // A replaced epoch's end marker is stale; any other ends the stream.
                        proptest::prop_assert_eq!(ends, !was_retired);
                        if ends {
                            let counted = match cur {
                                Some((ce, c)) if ce == e => c,
                                _ => 0,
                            };
                            cur = Some((e, counted.max(n)));
                        }
                    }
                }
            }
        }
    }

    /// Found by the model above: `seq + 1` overflowed (a panic in `in`'s zenoh callback in
    /// a debug build; in release the count wrapped to 0 and the epoch's earlier numbers
    /// were delivered again).
    #[test]
    fn a_sample_numbered_u64_max_is_dropped_as_malformed() {
        let mut t = Tracker::default();
        assert_eq!(t.data(1, 0), ok());
        let v = t.data(1, u64::MAX);
        assert!(!v.deliver);
        assert!(
            matches!(v.gap, Some(Gap::Malformed(ref why)) if why.contains("past any real stream"))
        );
        assert_eq!(t.data(1, 1), ok());
        assert!(!t.data(1, 0).deliver);
    }

    /// Found by the model above: an end marker from a new epoch retired the old one but
    /// left it current, so a late sample of the old epoch was still delivered (`in` stops
    /// at an end marker, so it never delivered one; the tracker's own rule is kept now).
    #[test]
    fn an_end_marker_of_a_new_epoch_leaves_the_old_one_stale() {
        let mut t = Tracker::default();
        assert_eq!(t.data(3, 0), ok());
        let (gap, ends) = t.end(9, 0);
        assert!(ends);
        assert!(matches!(
            gap,
            Some(Gap::Restart {
                old_epoch: 3,
                new_epoch: 9,
                ..
            })
        ));
        assert!(!t.data(3, 1).deliver);
    }

    #[test]
    fn joining_late_counts_what_was_before() {
        let mut t = Tracker::default();
        assert_eq!(t.data(3, 10).gap.map(|g| g.missing()), Some(10));
        let mut t = Tracker::default();
        assert_eq!(t.end(3, 0), (None, true));
    }
}
