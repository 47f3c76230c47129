//! `mpmc_ops`: three senders and three receivers driven by the input, against a model
//! of the stamped slots.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Claimed by a grant not committed yet.
    Claimed,
    /// Committed, not taken.
    Published { len: usize, tag: u32, seq: u64 },
    /// Dropped grant: receivers skip it.
    Cancelled,
    /// Taken by a receiver whose guard lives.
    Held,
}

/// Vyukov's bounded queue as docs/ARCHITECTURE.md describes it: position `p` can be
/// claimed once position `p - slots` is released; a receiver at position `p` waits while `p` is
/// claimed and not published. Positions not in `states` are released.
#[derive(Debug)]
struct MpmcModel {
    count: u64,
    w: u64,
    r: u64,
    states: BTreeMap<u64, SlotState>,
}

impl MpmcModel {
    fn can_claim(&self) -> bool {
        self.w < self.count || !self.states.contains_key(&(self.w - self.count))
    }

    fn claim(&mut self) -> u64 {
        let p = self.w;
        self.states.insert(p, SlotState::Claimed);
        self.w += 1;
        p
    }

    /// The next message a receiver gets (skipping cancelled slots), now held.
    fn recv(&mut self) -> Option<(u64, usize, u32, u64)> {
        loop {
            if self.r == self.w {
                return None;
            }
            match self.states.get(&self.r).copied() {
                Some(SlotState::Claimed) => return None,
                Some(SlotState::Cancelled) => {
                    self.states.remove(&self.r);
                    self.r += 1;
                }
                Some(SlotState::Published { len, tag, seq }) => {
                    let p = self.r;
                    self.states.insert(p, SlotState::Held);
                    self.r += 1;
                    return Some((p, len, tag, seq));
                }
                other => panic!("model: position {} is {other:?} at the read end", self.r),
            }
        }
    }

    fn published(&self) -> usize {
        self.states
            .values()
            .filter(|s| matches!(s, SlotState::Published { .. }))
            .count()
    }
}

/// Drives three `Sender`s (the creator, a clone, and one opened separately) and three
/// `Receiver`s of one small MPMC ring through the operations encoded in `data`, holding
/// grants and read guards across operations, committing or dropping (cancelling) grants
/// in any order, checked against a model (`MpmcModel`).
pub fn mpmc_ops(data: &[u8]) {
    let mut inp = Bytes::new(data);
    let asked = 1u64 << (inp.u8() % 5); // 1 ..= 16 slots
    let max = usize::from(inp.u8()) % 200;
    let wait = wait_of(inp.u8());
    let name = ShmName::new("mpmc");
    let opts = Options::new()
        .slots(asked as usize)
        .max_message(max)
        .wait(wait)
        .persist(true);
    let s0 =
        Sender::create(&name, &opts).unwrap_or_else(|e| panic!("fuzz setup: Sender::create: {e}"));
    let s2 = Sender::open(&name).unwrap_or_else(|e| panic!("fuzz setup: Sender::open: {e}"));
    let r0 = Receiver::open(&name).unwrap_or_else(|e| panic!("fuzz setup: Receiver::open: {e}"));
    let r2 = Receiver::open(&name).unwrap_or_else(|e| panic!("fuzz setup: Receiver::open: {e}"));
    let senders = [s0.clone(), s0, s2];
    let receivers = [r0.clone(), r0, r2];
    // The slot count is rounded up (to a power of two, and a minimum).
    let count = senders[0].slots() as u64;
    assert!(
        count.is_power_of_two() && count >= asked,
        "{count} slots for {asked}"
    );
    assert_eq!(receivers[2].max_message(), max);

    let mut m = MpmcModel {
        count,
        w: 0,
        r: 0,
        states: BTreeMap::new(),
    };
    let mut grants = Vec::new();
    let mut held = Vec::new();
    let mut seq = 0u64;
    let mut steps = 0;
    while !inp.is_empty() && steps < 2000 {
        steps += 1;
        let op = inp.u8();
        let who = usize::from(op >> 4) % 3;
        match op % 12 {
            // try_send_tagged
            0 | 1 => {
                let (tag, len) = (inp.tag(), inp.len(max));
                seq += 1;
                let r = senders[who].try_send_tagged(tag, &payload(seq, len));
                if len > max {
                    assert_eq!(r, Err(TrySendError::TooLarge { len, max }));
                } else if m.can_claim() {
                    assert_eq!(r, Ok(()), "model: a slot is free ({m:?})");
                    let p = m.claim();
                    m.states.insert(p, SlotState::Published { len, tag, seq });
                } else {
                    assert_eq!(r, Err(TrySendError::Full), "model: full ({m:?})");
                }
            }
            // try_reserve and keep the grant
            2 => {
                let len = inp.len(max);
                let r = senders[who].try_reserve(len);
                match r {
                    Ok(g) => {
                        assert!(len <= max && m.can_claim(), "try_reserve: model {m:?}");
                        assert_eq!(g.len(), len);
                        let p = m.claim();
                        grants.push((g, p));
                    }
                    Err(e) => {
                        let want = if len > max {
                            TrySendError::TooLarge { len, max }
                        } else {
                            assert!(!m.can_claim(), "try_reserve: {e:?}, model {m:?}");
                            TrySendError::Full
                        };
                        assert_eq!(e, want);
                    }
                }
            }
            // commit a held grant (maybe truncated, tagged)
            3 => {
                let (i, tag, cut) = (usize::from(inp.u8()), inp.tag(), inp.u8());
                if grants.is_empty() {
                    continue;
                }
                let (mut g, p) = grants.remove(i % grants.len());
                seq += 1;
                let len = g.len();
                g.copy_from(&payload(seq, len));
                g.set_tag(tag);
                let len = if cut & 1 != 0 {
                    let t = usize::from(cut >> 1) % (len + 1);
                    g.truncate(t);
                    t
                } else {
                    len
                };
                g.commit();
                assert_eq!(m.states.get(&p), Some(&SlotState::Claimed));
                m.states.insert(p, SlotState::Published { len, tag, seq });
            }
            // drop a held grant: cancelled
            4 => {
                let i = usize::from(inp.u8());
                if grants.is_empty() {
                    continue;
                }
                let (g, p) = grants.remove(i % grants.len());
                drop(g);
                assert_eq!(m.states.get(&p), Some(&SlotState::Claimed));
                m.states.insert(p, SlotState::Cancelled);
            }
            // try_recv, keeping the guard or not
            5 | 6 => {
                let keep = inp.u8() & 1 != 0;
                let want = m.recv();
                match receivers[who].try_recv() {
                    Ok(g) => {
                        let Some((p, len, tag, s)) = want else {
                            panic!("try_recv: {} bytes the model says were never sent", g.len());
                        };
                        check_msg("mpmc try_recv", (&g, g.tag()), Some((len, tag, s)));
                        if keep {
                            held.push((g, p));
                        } else {
                            drop(g);
                            m.states.remove(&p);
                        }
                    }
                    Err(e) => {
                        assert!(want.is_none(), "try_recv: {e:?}, model has {want:?}");
                        assert_eq!(e, TryRecvError::Empty);
                    }
                }
            }
            // drop a held read guard: the slot is free again
            7 => {
                let i = usize::from(inp.u8());
                if held.is_empty() {
                    continue;
                }
                let (g, p) = held.remove(i % held.len());
                drop(g);
                assert_eq!(m.states.remove(&p), Some(SlotState::Held));
            }
            // a clone sends, and goes
            8 => {
                let (tag, len) = (inp.tag(), inp.len(max).min(max));
                let c = senders[who].clone();
                seq += 1;
                let r = c.try_send_tagged(tag, &payload(seq, len));
                drop(c);
                if m.can_claim() {
                    assert_eq!(r, Ok(()), "clone: model {m:?}");
                    let p = m.claim();
                    m.states.insert(p, SlotState::Published { len, tag, seq });
                } else {
                    assert_eq!(r, Err(TrySendError::Full), "clone: model {m:?}");
                }
            }
            // recv_timeout (short), through a clone half the time
            9 => {
                let b = inp.u8();
                let recv = |rx: &Receiver| {
                    rx.recv_timeout(short(b >> 1))
                        .map(|g| (g.tag(), g.to_vec()))
                };
                let want = m.recv();
                let r = if b & 1 != 0 {
                    recv(&receivers[who].clone())
                } else {
                    recv(&receivers[who])
                };
                match r {
                    Ok((tag, bytes)) => {
                        let Some((p, len, t, s)) = want else {
                            panic!("recv_timeout: a message the model says was never sent");
                        };
                        check_msg("mpmc recv_timeout", (&bytes, tag), Some((len, t, s)));
                        m.states.remove(&p);
                    }
                    Err(e) => {
                        assert!(want.is_none(), "recv_timeout: {e:?}, model has {want:?}");
                        assert!(matches!(e, Error::Timeout), "recv_timeout: {e:?}");
                    }
                }
            }
            // send_timeout (short)
            10 => {
                let (len, t) = (inp.len(max).min(max), short(inp.u8()));
                seq += 1;
                let r = senders[who].send_timeout(&payload(seq, len), t);
                if m.can_claim() {
                    assert!(r.is_ok(), "send_timeout: {r:?}, model {m:?}");
                    let p = m.claim();
                    m.states
                        .insert(p, SlotState::Published { len, tag: 0, seq });
                } else {
                    assert!(matches!(r, Err(Error::Timeout)), "send_timeout: {r:?}");
                }
            }
            // wait strategy, len, is_empty
            _ => {
                let b = inp.u8();
                senders[who].set_wait(wait_of(b));
                receivers[who].set_wait(wait_of(b >> 2));
                assert_eq!(senders[who].wait(), wait_of(b));
                if who < 2 {
                    assert_eq!(senders[1 - who].wait(), wait_of(b), "clones share the wait");
                }
                let want = (m.w - m.r).min(count) as usize;
                assert_eq!(receivers[who].len(), want, "len, model {m:?}");
                assert_eq!(senders[who].is_empty(), want == 0);
            }
        }
    }

    // Grants left are cancelled, guards released; then exactly the published messages
    // come out, in order.
    for (g, p) in grants.drain(..).rev() {
        drop(g);
        m.states.insert(p, SlotState::Cancelled);
    }
    for (g, p) in held.drain(..) {
        drop(g);
        assert_eq!(m.states.remove(&p), Some(SlotState::Held));
    }
    loop {
        let want = m.recv();
        match receivers[0].try_recv() {
            Ok(g) => {
                let Some((p, len, tag, s)) = want else {
                    panic!("drain: a message the model says was never sent");
                };
                check_msg("mpmc drain", (&g, g.tag()), Some((len, tag, s)));
                drop(g);
                m.states.remove(&p);
            }
            Err(e) => {
                assert!(want.is_none(), "drain: {e:?}, model has {want:?}");
                assert_eq!(e, TryRecvError::Empty);
                break;
            }
        }
    }
    assert_eq!(m.published(), 0);
    assert!(m.states.is_empty(), "model: {m:?}");
}
