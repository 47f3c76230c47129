//! `broadcast_corrupt`: a live broadcast ring (a publisher and three subscribers: unnamed
//! and named cursors, Block or Lap) overwritten through its `/dev/shm` file, then used.
//!
//! The input scribbles over the data area's control block (`write_pos`, `frontier`,
//! `tail`, `attach_epoch`), its config block, the cursor slots (position, number, state,
//! name), the record ring (record headers, padding records, payload), the endpoint
//! registry and the header's waiter counts, with a write grant possibly held across it;
//! then the publisher and the subscribers go on (sends, reserves, `try_recv`,
//! `recv_timeout`, opens of new subscribers and publishers, drops) in a bounded loop.
//! Every call must return a value or a specific error (`Corrupt`, `Lapped`, `Evicted`,
//! `Empty`, `Timeout`, `Disconnected`, ...), never panic, fault or hang, and a message
//! handed out is at most `max_message` bytes. When nothing actually changed, `Corrupt`
//! is a failure and every message read must be the one published with that number.

use super::*;
use shmlane::broadcast::{Overflow, Publisher, StartAt, Subscriber};
use shmlane::format::broadcast::{
    ring_offset, Config, Control, CursorSlot, CONTROL_SIZE, CURSOR_NAME_CAP, CURSOR_SLOT,
};

/// Cursor slots (and subscriber places) of the fuzzed ring.
const SUBS: usize = 3;
/// `len` of a padding record (as in the SPSC ring).
const PAD: u32 = 1 << 31;

/// A new value for a shared position or message number: a small move of the current
/// one (often still 16-aligned), or any `u64`.
fn new_pos(inp: &mut Bytes<'_>, cur: u64) -> u64 {
    match inp.u8() % 5 {
        0 => inp.u64(),
        1 => cur.wrapping_add(u64::from(inp.u16()) * 16),
        2 => cur.wrapping_sub(u64::from(inp.u16()) * 16),
        3 => cur.wrapping_add(u64::from(inp.u8() % 4)),
        _ => cur.wrapping_add(i64::from(inp.u16() as i16) as u64),
    }
}

/// A subscriber place: the subscriber and the number of the next message it must read
/// if the ring is intact (`None`: unknown, e.g. after a lap or a resume).
struct Sub {
    s: Subscriber,
    next: Option<u64>,
}

/// What the harness knows of the stream: `(len, tag)` of message `seq`.
struct Stream {
    sent: BTreeMap<u64, (usize, u32)>,
    max: usize,
}

impl Stream {
    /// Publishes the next message (`len` bytes, tagged with its number) on an intact ring
    /// and records it; false if the ring is full (Block mode).
    fn send(&mut self, p: &mut Publisher, len: usize) -> bool {
        let seq = p.published();
        match p.try_send_tagged(seq as u32, &payload(seq, len)) {
            Ok(()) => {
                self.sent.insert(seq, (len, seq as u32));
                true
            }
            Err(TrySendError::Full) => false,
            Err(e) => panic!("fuzz setup: valid send: {e:?}"),
        }
    }

    /// A message a subscriber read.
    fn check(&self, who: usize, sub: &mut Sub, changed: bool, m: (&[u8], u32, u64)) {
        let (bytes, tag, pos) = m;
        assert!(
            bytes.len() <= self.max,
            "subscriber {who}: {} bytes, max_message {}",
            bytes.len(),
            self.max
        );
        let _ = touch(bytes);
        if changed {
            return;
        }
        if let Some(n) = sub.next {
            assert_eq!(pos, n, "subscriber {who}: intact ring read out of order");
        }
        let Some(&(len, want_tag)) = self.sent.get(&pos) else {
            panic!("subscriber {who}: message {pos} of an intact ring was never published");
        };
        assert_eq!(
            bytes.len(),
            len,
            "subscriber {who}: length of message {pos}"
        );
        assert_eq!(tag, want_tag, "subscriber {who}: tag of message {pos}");
        assert!(
            bytes == payload(pos, len),
            "subscriber {who}: message {pos} torn"
        );
        sub.next = Some(pos + 1);
    }
}

/// Opens a subscriber (`b`: named or not, which name, where it starts).
fn open_sub(name: &str, b: u8, changed: bool) -> Option<Sub> {
    let start = if b & 4 != 0 {
        StartAt::Latest
    } else {
        StartAt::Oldest
    };
    let r = if b & 1 != 0 {
        Subscriber::open_named(name, &format!("c{}", (b >> 1) & 1), start)
    } else {
        Subscriber::open(name, start)
    };
    match r {
        Ok(s) => Some(Sub { s, next: None }),
        Err(Error::TooManyEndpoints { .. } | Error::RoleTaken { .. }) => None,
        Err(e @ Error::Corrupt { .. }) => {
            assert!(changed, "Subscriber::open on an intact ring: {e:?}");
            None
        }
        Err(e) => panic!("Subscriber::open: unexpected error {e:?}"),
    }
}

/// A publisher's `try_*` result.
fn check_send(r: Result<(), TrySendError>, len: usize, max: usize, lap: bool, changed: bool) {
    match r {
        Ok(()) => {}
        Err(TrySendError::Full) => assert!(!lap || changed, "a Lap publisher is never full"),
        Err(TrySendError::TooLarge { .. }) => assert!(len > max),
        Err(e @ TrySendError::Corrupt { .. }) => {
            assert!(changed, "publisher: an intact ring is corrupt: {e:?}")
        }
        Err(e) => panic!("publisher: unexpected error {e:?}"),
    }
}

/// See the module docs.
pub fn broadcast_corrupt(data: &[u8]) {
    let mut inp = Bytes::new(data);
    let cap = 256usize << (inp.u8() % 3); // 256 ..= 1024
    let max = usize::from(inp.u8()) % (cap / 2 - 40);
    let mode = inp.u8();
    let lap = mode & 1 == 1;
    let wait = wait_of(mode >> 1);
    let evict_ms = 1 + u64::from(mode >> 4) % 3; // Options refuses under 1 ms
    let name = ShmName::new("bcc");
    let opts = Options::new()
        .capacity(cap)
        .max_message(max)
        .max_subscribers(SUBS)
        .overflow(if lap { Overflow::Lap } else { Overflow::Block })
        .evict_after(Duration::from_millis(evict_ms))
        .wait(wait)
        .persist(true);
    let mut p = Some(
        Publisher::create(&name, &opts)
            .unwrap_or_else(|e| panic!("fuzz setup: Publisher::create: {e}")),
    );
    let open = |b: u8| open_sub(&name, b, false).expect("fuzz setup: subscriber");
    // An unnamed Oldest, a named Oldest and an unnamed or named Latest subscriber.
    let third = if inp.u8() & 1 == 0 { 4 } else { 4 | 1 | 2 };
    let mut subs: Vec<Option<Sub>> = vec![Some(open(0)), Some(open(1)), Some(open(third))];
    for s in subs.iter_mut().flatten() {
        s.next = Some(0);
    }
    let file = name.open_file();
    let mut st = Stream {
        sent: BTreeMap::new(),
        max,
    };

    // Valid traffic first, so positions wrap and padding records are in play: each round
    // sends one message and lets every subscriber read what it can.
    let rounds = inp.u8() % 32;
    for _ in 0..rounds {
        let len = inp.len(max).min(max);
        if !st.send(p.as_mut().unwrap(), len) {
            // A subscriber of the round before was evicted or holds the ring.
            assert!(!lap);
        }
        for (k, place) in subs.iter_mut().enumerate() {
            let Some(sub) = place.as_mut() else { continue };
            for _ in 0..4 {
                match sub.s.try_recv() {
                    Ok(m) => {
                        let m = (m.to_vec(), m.tag(), m.position());
                        st.check(k, sub, false, (&m.0, m.1, m.2))
                    }
                    Err(Error::Empty) => break,
                    Err(Error::Lapped { .. }) => sub.next = Some(sub.s.next_position()),
                    Err(Error::Evicted) => {
                        *place = None;
                        break;
                    }
                    Err(e) => panic!("fuzz setup: valid recv: {e:?}"),
                }
            }
        }
    }
    // A few messages left unread.
    for _ in 0..inp.u8() % 8 {
        let len = inp.len(max).min(max);
        if !st.send(p.as_mut().unwrap(), len) {
            break;
        }
    }

    // The corruption, with a write grant possibly held across it.
    let data_at = HEADER_SIZE as u64;
    let ring_at = data_at + ring_offset(SUBS) as u64;
    let slot_at = |k: usize| data_at + (CONTROL_SIZE + k * CURSOR_SLOT) as u64;
    let flags = inp.u8();
    let grant_len = inp.len(max).min(max);
    let grant_seq = p.as_ref().unwrap().published();
    let mut grant = if flags & 1 != 0 {
        p.as_mut().unwrap().try_reserve(grant_len).ok()
    } else {
        None
    };
    let mut changed = false;
    for _ in 0..inp.u8() % 6 {
        let what = inp.u8();
        match what % 8 {
            0 => {
                // write_pos, frontier, tail, attach_epoch.
                let field = [
                    offset_of!(Control, write_pos),
                    offset_of!(Control, frontier),
                    offset_of!(Control, tail),
                    offset_of!(Control, attach_epoch),
                ][usize::from(inp.u8() % 4)];
                let off = data_at + field as u64;
                let v = new_pos(&mut inp, get_u64(&file, off));
                changed |= scribble(&file, off, &v.to_ne_bytes());
            }
            1 => {
                // The config: overflow, max_subscribers, evict_after_ns.
                let at = data_at + std::mem::size_of::<Control>() as u64;
                let off = |o: usize| at + o as u64;
                changed |= match inp.u8() % 3 {
                    0 => scribble(
                        &file,
                        off(offset_of!(Config, overflow)),
                        &(inp.u32() % 4).to_ne_bytes(),
                    ),
                    1 => scribble(
                        &file,
                        off(offset_of!(Config, max_subscribers)),
                        &inp.u32().to_ne_bytes(),
                    ),
                    _ => scribble(
                        &file,
                        off(offset_of!(Config, evict_after_ns)),
                        &inp.u64().to_ne_bytes(),
                    ),
                };
            }
            2 => {
                // A cursor slot: pos, seq, state, name_len, name.
                let at = slot_at(usize::from(inp.u8()) % SUBS);
                changed |= match inp.u8() % 5 {
                    f @ (0 | 1) => {
                        let field = if f == 0 {
                            offset_of!(CursorSlot, pos)
                        } else {
                            offset_of!(CursorSlot, seq)
                        };
                        let off = at + field as u64;
                        let v = new_pos(&mut inp, get_u64(&file, off));
                        scribble(&file, off, &v.to_ne_bytes())
                    }
                    2 => {
                        let b = inp.u8();
                        let v = if b & 0x80 != 0 {
                            inp.u32()
                        } else {
                            u32::from(b % 6)
                        };
                        scribble(
                            &file,
                            at + offset_of!(CursorSlot, state) as u64,
                            &v.to_ne_bytes(),
                        )
                    }
                    3 => {
                        let b = inp.u8();
                        let v = if b & 0x80 != 0 {
                            inp.u32()
                        } else {
                            u32::from(b) % (CURSOR_NAME_CAP as u32 + 4)
                        };
                        let o = offset_of!(CursorSlot, name_len) as u64;
                        scribble(&file, at + o, &v.to_ne_bytes())
                    }
                    _ => {
                        let n = usize::from(inp.u8()) % CURSOR_NAME_CAP;
                        let o = offset_of!(CursorSlot, name) as u64;
                        scribble(&file, at + o, inp.take(n))
                    }
                };
            }
            3 => {
                // A registry entry (publisher or a subscriber's): any word of it.
                let e = offset_of!(Header, endpoints) as u64 + 16 * u64::from(inp.u8() % 4);
                let off = e + 4 * u64::from(inp.u8() % 4);
                changed |= scribble(&file, off, &inp.u32().to_ne_bytes());
            }
            4 => {
                // Waiter counts (wake-ups, the light-waker barrier).
                let (off, v) = match inp.u8() % 3 {
                    0 => (offset_of!(Header, data_waiters), u32::from(inp.u8() % 3)),
                    1 => (offset_of!(Header, space_waiters), u32::from(inp.u8() % 3)),
                    _ => (offset_of!(Header, light_wakers), u32::from(inp.u8())),
                };
                changed |= scribble(&file, off as u64, &v.to_ne_bytes());
            }
            5 => {
                // A record header at a record boundary: len, tag and seq near the real
                // ones (a padding flag, a length just over max_message, a neighbour's
                // number), or anything.
                let off = (u64::from(inp.u16()) * 16) % cap as u64;
                let published = grant_seq;
                let len = match inp.u8() % 5 {
                    0 => PAD,
                    1 => (max + usize::from(inp.u8() % 3)) as u32,
                    2 => inp.len(max) as u32,
                    3 => (cap - off as usize) as u32,
                    _ => inp.u32(),
                };
                let seq = match inp.u8() % 3 {
                    0 => published.wrapping_sub(u64::from(inp.u8() % 8)),
                    1 => published.wrapping_add(u64::from(inp.u8() % 8)),
                    _ => inp.u64(),
                };
                let mut h = [0u8; 16];
                h[..4].copy_from_slice(&len.to_ne_bytes());
                h[4..8].copy_from_slice(&inp.tag().to_ne_bytes());
                h[8..].copy_from_slice(&seq.to_ne_bytes());
                let keep = usize::from(inp.u8() % 3);
                // All of it, or only the len/tag word, or only seq.
                let (from, to) = [(0, 16), (0, 8), (8, 16)][keep];
                changed |= scribble(&file, ring_at + off + from as u64, &h[from..to]);
            }
            6 => {
                // A window of the ring, at a record boundary or anywhere.
                let at = inp.u16();
                let off = if what & 0x80 != 0 {
                    u64::from(at) % cap as u64
                } else {
                    (u64::from(at) * 16) % cap as u64
                };
                let n = usize::from(inp.u8()).min(cap - off as usize);
                changed |= scribble(&file, ring_at + off, inp.take(n));
            }
            _ => {
                // A window of the control, config and cursor blocks.
                let area = ring_offset(SUBS) as u64;
                let off = u64::from(inp.u16()) % area;
                let n = usize::from(inp.u8()).min((area - off) as usize);
                changed |= scribble(&file, data_at + off, inp.take(n));
            }
        }
    }
    if let Some(mut g) = grant.take() {
        if flags & 2 != 0 {
            let seq = grant_seq;
            g.copy_from_slice(&payload(seq, grant_len));
            g.set_tag(seq as u32);
            g.commit();
            // Message number `seq` only if the ring still agreed with the harness.
            if !changed {
                st.sent.insert(seq, (grant_len, seq as u32));
            }
        }
    }

    // Everyone goes on, in a bounded loop.
    for _ in 0..64 {
        if inp.is_empty() {
            break;
        }
        let op = inp.u8();
        let k = usize::from(op >> 4) % SUBS;
        match op % 8 {
            0..=2 => {
                let Some(pb) = p.as_mut() else { continue };
                let len = inp.len(max);
                let seq = pb.published();
                let msg = payload(seq, len);
                let r = match op % 8 {
                    0 => pb.try_send_tagged(seq as u32, &msg),
                    1 => pb.try_reserve(len).map(|mut g| {
                        g.copy_from_slice(&msg);
                        g.set_tag(seq as u32);
                        g.commit();
                    }),
                    _ => match pb.send_tagged_timeout(seq as u32, &msg, short(op >> 3)) {
                        Ok(()) => Ok(()),
                        Err(Error::Timeout) => Err(TrySendError::Full),
                        Err(Error::MessageTooLarge { len, max }) => {
                            Err(TrySendError::TooLarge { len, max })
                        }
                        Err(Error::Corrupt { what }) => Err(TrySendError::Corrupt { what }),
                        Err(e) => panic!("send_tagged_timeout: unexpected error {e:?}"),
                    },
                };
                let ok = r.is_ok();
                check_send(r, len, max, lap, changed);
                if ok && !changed {
                    st.sent.insert(seq, (len, seq as u32));
                }
            }
            3 | 4 => {
                let Some(sub) = subs[k].as_mut() else {
                    continue;
                };
                let r = if op % 8 == 3 {
                    sub.s
                        .try_recv()
                        .map(|m| (m.to_vec(), m.tag(), m.position()))
                } else {
                    sub.s
                        .recv_timeout(short(op >> 3))
                        .map(|m| (m.to_vec(), m.tag(), m.position()))
                };
                match r {
                    Ok((bytes, tag, pos)) => st.check(k, sub, changed, (&bytes, tag, pos)),
                    Err(Error::Lapped { missed }) => {
                        assert!(missed > 0 || changed, "Lapped by 0 messages");
                        sub.next = Some(sub.s.next_position());
                    }
                    Err(Error::Evicted) => {
                        assert!(!lap || changed, "evicted in Lap mode");
                        subs[k] = None;
                    }
                    Err(e @ Error::Corrupt { .. }) => {
                        assert!(changed, "subscriber {k}: an intact ring is corrupt: {e:?}")
                    }
                    Err(Error::Empty | Error::Timeout | Error::Disconnected) => {}
                    Err(e) => panic!("subscriber {k}: unexpected error {e:?}"),
                }
            }
            5 => {
                // The non-blocking looks. (`recv_into` waits without a deadline: a
                // corrupt registry can make a dead publisher look alive, so it is left
                // to `broadcast_ops`.)
                let Some(sub) = subs[k].as_mut() else {
                    continue;
                };
                let _ = (sub.s.lag(), sub.s.next_position(), sub.s.cursor_name());
                let _ = sub.s.is_disconnected();
            }
            6 => {
                // A new subscriber in place k (the old one leaves first), or one leaves.
                let b = inp.u8();
                subs[k] = None;
                if b & 0x80 == 0 {
                    subs[k] = open_sub(&name, b, changed);
                }
            }
            _ => {
                // The publisher leaves, or one opens (RoleTaken while one is there).
                if let Some(pb) = p.as_ref() {
                    let n = pb.subscribers();
                    assert!(n <= SUBS || changed, "{n} subscribers of {SUBS} slots");
                    if op & 0x80 != 0 {
                        p = None;
                    }
                    continue;
                }
                match Publisher::open(&name) {
                    Ok(pb) => p = Some(pb),
                    Err(e @ Error::Corrupt { .. }) => {
                        assert!(changed, "Publisher::open on an intact ring: {e:?}")
                    }
                    Err(Error::RoleTaken { .. }) => {}
                    Err(e) => panic!("Publisher::open: unexpected error {e:?}"),
                }
            }
        }
    }
    drop(p);
    // Every subscriber reads what is left, in a bounded loop.
    for (k, place) in subs.iter_mut().enumerate() {
        let Some(sub) = place.as_mut() else { continue };
        for _ in 0..cap / 16 + 8 {
            match sub.s.try_recv() {
                Ok(m) => {
                    let m = (m.to_vec(), m.tag(), m.position());
                    st.check(k, sub, changed, (&m.0, m.1, m.2));
                }
                Err(Error::Lapped { .. }) => sub.next = Some(sub.s.next_position()),
                Err(e @ Error::Corrupt { .. }) => {
                    assert!(changed, "drain {k}: an intact ring is corrupt: {e:?}");
                    break;
                }
                Err(Error::Disconnected | Error::Evicted | Error::Empty) => break,
                Err(e) => panic!("drain {k}: unexpected error {e:?}"),
            }
        }
    }
}
