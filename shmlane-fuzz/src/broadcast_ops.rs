//! `broadcast_ops`: a broadcast publisher and up to three subscribers (unnamed or named,
//! opened and dropped at any point) driven by the input, checked against the stream that
//! was published: every message a subscriber reads is the next one it has not accounted
//! for, byte for byte with its tag; a lap skips exactly what it says; `Empty` means caught
//! up; `Evicted` only in Block mode.

use super::*;
use shmlane::broadcast::{Overflow, Publisher, StartAt, Subscriber};

/// A subscriber and the next message number it must account for (`None` right after an
/// `Oldest` open: any message still in the ring, not before the last one it could have
/// missed).
struct Sub {
    s: Subscriber,
    next: Option<u64>,
    cursor: Option<u8>,
}

/// See the module docs.
pub fn broadcast_ops(data: &[u8]) {
    let mut inp = Bytes::new(data);
    let cap = 256usize << (inp.u8() % 3); // 256 ..= 1024
    let max = usize::from(inp.u8()) % (cap / 2 - 40);
    let lap = inp.u8() & 1 == 1;
    let wait = wait_of(inp.u8());
    let name = ShmName::new("bcast");
    let opts = Options::new()
        .capacity(cap)
        .max_message(max)
        .max_subscribers(3)
        .overflow(if lap { Overflow::Lap } else { Overflow::Block })
        .evict_after(Duration::from_millis(1))
        .wait(wait)
        .persist(true);
    let mut p =
        Publisher::create(&name, &opts).unwrap_or_else(|e| panic!("fuzz setup: create: {e}"));
    // Published so far: (len, tag) of message i.
    let mut sent: Vec<(usize, u32)> = Vec::new();
    // Where each named cursor stood when its subscriber left.
    let mut named_next: BTreeMap<u8, Option<u64>> = BTreeMap::new();
    let mut subs: Vec<Option<Sub>> = vec![None, None, None];
    let mut buf = vec![0u8; max + 8];
    while !inp.is_empty() {
        let op = inp.u8();
        let k = usize::from(op >> 6) % 3;
        match op % 6 {
            0 | 1 => {
                let len = inp.len(max);
                let tag = inp.tag();
                let seq = sent.len() as u64;
                let r = if op % 6 == 0 {
                    p.try_send_tagged(tag, &payload(seq, len))
                } else {
                    p.try_reserve(len).map(|mut g| {
                        g.copy_from_slice(&payload(seq, len));
                        g.set_tag(tag);
                        g.commit();
                    })
                };
                match r {
                    Ok(()) => sent.push((len, tag)),
                    Err(TrySendError::TooLarge { .. }) => assert!(len > max),
                    Err(TrySendError::Full) => assert!(!lap, "a Lap publisher is never full"),
                    Err(e) => panic!("send: {e}"),
                }
            }
            2 | 3 => {
                let Some(sub) = subs[k].as_mut() else {
                    continue;
                };
                // recv_into waits: only when something unread was published (then it
                // returns at once, with a message, a lap or an eviction).
                let into = op % 6 == 3 && sub.next.is_some_and(|n| n < sent.len() as u64);
                let r = if into {
                    sub.s
                        .recv_into(&mut buf)
                        .map(|(tag, len)| (buf[..len].to_vec(), tag, sub.s.next_position() - 1))
                } else {
                    sub.s
                        .try_recv()
                        .map(|m| (m.to_vec(), m.tag(), m.position()))
                };
                match r {
                    Ok((bytes, tag, pos)) => {
                        if let Some(n) = sub.next {
                            assert_eq!(pos, n, "subscriber {k} read out of order");
                        }
                        let (len, want_tag) = sent[pos as usize];
                        assert_eq!(tag, want_tag, "tag of message {pos}");
                        assert!(bytes == payload(pos, len), "message {pos} torn");
                        sub.next = Some(pos + 1);
                    }
                    Err(Error::Lapped { missed }) => {
                        assert!(missed > 0);
                        let now = sub.s.next_position();
                        if let Some(n) = sub.next {
                            assert_eq!(n + missed, now, "subscriber {k}: lap count inexact");
                        }
                        assert!(now <= sent.len() as u64);
                        sub.next = Some(now);
                    }
                    Err(Error::Empty) => {
                        if let Some(n) = sub.next {
                            assert_eq!(n, sent.len() as u64, "Empty while behind");
                        }
                    }
                    Err(Error::Evicted) => {
                        assert!(!lap, "evicted in Lap mode");
                        let gone = subs[k].take().unwrap();
                        if let Some(c) = gone.cursor {
                            named_next.insert(c, None);
                        }
                    }
                    Err(e) => panic!("recv: {e}"),
                }
            }
            4 => {
                // Open subscriber k (if its place is empty).
                if subs[k].is_some() {
                    continue;
                }
                let b = inp.u8();
                let cursor = (b & 1 == 1).then_some((b >> 1) % 2);
                let start = if b & 4 != 0 {
                    StartAt::Latest
                } else {
                    StartAt::Oldest
                };
                if cursor.is_some() && subs.iter().flatten().any(|s| s.cursor == cursor) {
                    continue;
                }
                let r = match cursor {
                    Some(c) => Subscriber::open_named(&name, &format!("c{c}"), start),
                    None => Subscriber::open(&name, start),
                };
                let s = match r {
                    Ok(s) => s,
                    Err(Error::TooManyEndpoints { .. }) => continue,
                    Err(e) => panic!("open: {e}"),
                };
                // A named cursor resumes where it stood (unless its slot was evicted and
                // reused meanwhile: then it starts afresh), so only unnamed starts are
                // predicted here; `named_cursor_resumes_*` tests pin resuming down.
                if cursor.is_none() && start == StartAt::Latest {
                    assert_eq!(
                        s.next_position(),
                        sent.len() as u64,
                        "Latest starts elsewhere"
                    );
                }
                assert!(s.next_position() <= sent.len() as u64);
                let _ = &named_next;
                subs[k] = Some(Sub {
                    next: Some(s.next_position()),
                    s,
                    cursor,
                });
            }
            _ => {
                if let Some(gone) = subs[k].take() {
                    if let Some(c) = gone.cursor {
                        named_next.insert(c, gone.next);
                    }
                }
            }
        }
    }
    drop(p);
    // Every subscriber drains what is left, then Disconnected.
    for sub in subs.iter_mut().flatten() {
        loop {
            match sub.s.try_recv() {
                Ok(m) => {
                    let pos = m.position();
                    if let Some(n) = sub.next {
                        assert_eq!(pos, n);
                    }
                    let (len, tag) = sent[pos as usize];
                    assert_eq!(m.tag(), tag);
                    assert!(m[..] == payload(pos, len)[..]);
                    sub.next = Some(pos + 1);
                }
                Err(Error::Lapped { .. }) => sub.next = Some(sub.s.next_position()),
                Err(Error::Disconnected) | Err(Error::Evicted) => break,
                Err(e) => panic!("drain: {e}"),
            }
        }
    }
}
