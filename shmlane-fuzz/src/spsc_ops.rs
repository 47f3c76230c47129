//! `spsc_ops`: an SPSC producer and consumer driven by the input, against a byte-exact
//! model of the ring.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpscRec {
    /// A padding record running to the end of the data area.
    Pad,
    /// A message.
    Msg { len: usize, tag: u32, seq: u64 },
}

/// The SPSC ring as docs/ARCHITECTURE.md describes it, byte for byte: free-running
/// positions, records never wrapping (padding instead). The consumer may hand space back to the
/// producer lazily: the model reads the released position from shared memory and checks
/// it against what must have been handed back (everything, once the consumer found the
/// ring empty, finished a batch or left) and what was consumed.
#[derive(Debug, Clone)]
struct SpscModel {
    cap: u64,
    /// Producer position (everything committed is published at the points we look).
    w: u64,
    /// Consumer position.
    r: u64,
    /// What the consumer has handed back to the producer (`read_pos`, as last synced).
    rel: u64,
    /// What it must have handed back by now.
    rel_min: u64,
    /// Published records not yet consumed, with their sizes in bytes.
    q: VecDeque<(u64, SpscRec)>,
}

impl SpscModel {
    fn free(&self) -> u64 {
        self.cap - (self.w - self.rel)
    }

    /// `try_reserve(len)`: whether a record of `len` bytes fits now. Publishes a padding
    /// record first when the record does not fit before the end and the padding does.
    fn reserve(&mut self, len: usize) -> bool {
        let rec = record_bytes(len);
        let off = self.w % self.cap;
        let to_end = self.cap - off;
        if rec <= to_end {
            return self.free() >= rec;
        }
        if self.free() < to_end {
            return false;
        }
        self.q.push_back((to_end, SpscRec::Pad));
        self.w += to_end;
        self.free() >= rec
    }

    fn commit(&mut self, len: usize, tag: u32, seq: u64) {
        self.q
            .push_back((record_bytes(len), SpscRec::Msg { len, tag, seq }));
        self.w += record_bytes(len);
    }

    /// Takes `read_pos` from shared memory: between what must have been handed back
    /// and what was consumed.
    fn sync(&mut self, read_pos: u64) {
        assert!(
            self.rel_min <= read_pos && read_pos <= self.r && read_pos % 8 == 0,
            "read_pos {read_pos} out of what the consumer did: {self:?}"
        );
        self.rel = read_pos;
    }

    /// Everything consumed is handed back now.
    fn released_all(&mut self) {
        self.rel_min = self.r;
        self.rel = self.r;
    }

    /// The consumer looks for the next message: skips padding; finding nothing, it
    /// hands everything back.
    fn peek(&mut self) -> Option<(usize, u32, u64)> {
        loop {
            match self.q.front().copied() {
                None => {
                    self.released_all();
                    return None;
                }
                Some((size, SpscRec::Pad)) => {
                    self.q.pop_front();
                    self.r += size;
                }
                Some((_, SpscRec::Msg { len, tag, seq })) => return Some((len, tag, seq)),
            }
        }
    }

    /// Consumes the message `peek` returned, without handing it back.
    fn consume(&mut self) {
        let (size, rec) = self.q.pop_front().expect("model: consume after peek");
        debug_assert!(matches!(rec, SpscRec::Msg { .. }));
        self.r += size;
    }

    fn messages(&self) -> usize {
        self.q
            .iter()
            .filter(|(_, r)| matches!(r, SpscRec::Msg { .. }))
            .count()
    }

    /// No message pending, and everything consumed handed back to the producer.
    fn is_empty(&self) -> bool {
        self.messages() == 0 && self.rel == self.r
    }

    /// Whether every message of `lens` fits now, one after the other.
    fn batch_fits(&self, lens: &[usize]) -> bool {
        let mut m = self.clone();
        lens.iter().all(|&len| {
            let ok = m.reserve(len);
            m.commit(len, 0, 0);
            ok
        })
    }
}

/// Drives one SPSC `Producer` and one `Consumer` (in this process, on a small ring whose
/// capacity and `max_message` come from the first bytes) through the operations encoded
/// in `data`, checked against a model (`SpscModel`): every message received is the model's
/// next one (bytes and tag), `Full` comes exactly when the model has no room, `Empty`
/// exactly when it has no message.
pub fn spsc_ops(data: &[u8]) {
    let mut inp = Bytes::new(data);
    let asked = 64u64 << (inp.u8() % 5); // 64 ..= 1024
    let half = asked as usize / 2;
    let max = match inp.u8() {
        b @ 0..=63 => usize::from(b) % (half + 1),
        b @ 64..=127 => half.saturating_sub(usize::from(b) % 16),
        b => usize::from(b) * half / 255,
    };
    let wait = wait_of(inp.u8());
    let name = ShmName::new("spsc");
    let opts = Options::new()
        .capacity(asked as usize)
        .max_message(max)
        .wait(wait)
        .persist(true);
    let mut tx = Some(
        Producer::create(&name, &opts)
            .unwrap_or_else(|e| panic!("fuzz setup: Producer::create: {e}")),
    );
    let mut rx =
        Some(Consumer::open(&name).unwrap_or_else(|e| panic!("fuzz setup: Consumer::open: {e}")));
    // The capacity asked for is a power of two; it doubles when a record of max_message
    // bytes is more than half of it (so that padding plus a record fit an empty ring).
    let cap = tx.as_ref().unwrap().capacity() as u64;
    let want = if 2 * record_bytes(max) > asked {
        2 * asked
    } else {
        asked
    };
    assert_eq!(cap, want, "capacity for {asked} with max_message {max}");
    let file = name.open_file();
    let read_pos = || get_u64(&file, offset_of!(Header, read_pos) as u64);
    assert_eq!(rx.as_ref().unwrap().max_message(), max);

    let mut m = SpscModel {
        cap,
        w: 0,
        r: 0,
        rel: 0,
        rel_min: 0,
        q: VecDeque::new(),
    };
    let mut seq = 0u64;
    let mut steps = 0;
    while !inp.is_empty() && steps < 2000 {
        steps += 1;
        m.sync(read_pos());
        match inp.u8() % 12 {
            // try_send_tagged
            0 | 1 => {
                let (tag, len) = (inp.tag(), inp.len(max));
                let Some(p) = tx.as_mut() else { continue };
                seq += 1;
                let msg = payload(seq, len);
                let r = p.try_send_tagged(tag, &msg);
                if len > max {
                    assert_eq!(r, Err(TrySendError::TooLarge { len, max }));
                } else if rx.is_none() {
                    assert_eq!(r, Err(TrySendError::Disconnected), "no consumer");
                } else if m.reserve(len) {
                    assert_eq!(r, Ok(()), "model: {len} bytes fit ({m:?})");
                    m.commit(len, tag, seq);
                } else {
                    assert_eq!(r, Err(TrySendError::Full), "model: no room ({m:?})");
                    // The ring is full only while a message is pending or the consumer
                    // has not handed everything back: never when it is empty.
                    assert!(
                        !m.is_empty(),
                        "try_send({len}) Full on an empty ring: {m:?}"
                    );
                }
            }
            // try_reserve, write, maybe truncate, commit
            2 => {
                let (tag, len, cut) = (inp.tag(), inp.len(max), inp.u8());
                let Some(p) = tx.as_mut() else { continue };
                seq += 1;
                let r = p.try_reserve(len);
                let fits = len <= max && rx.is_some() && m.reserve(len);
                match r {
                    Ok(mut g) => {
                        assert!(fits, "try_reserve({len}) succeeded, model: {m:?}");
                        assert_eq!(g.len(), len);
                        g.copy_from(&payload(seq, len));
                        g.set_tag(tag);
                        let len = if cut & 1 != 0 {
                            let t = usize::from(cut >> 1) % (len + 1);
                            g.truncate(t);
                            t
                        } else {
                            len
                        };
                        assert_eq!(g.len(), len);
                        g.commit();
                        m.commit(len, tag, seq);
                    }
                    Err(e) => {
                        assert!(!fits, "try_reserve({len}) failed: {e:?}, model: {m:?}");
                        let want = if len > max {
                            TrySendError::TooLarge { len, max }
                        } else if rx.is_none() {
                            TrySendError::Disconnected
                        } else {
                            assert!(
                                !m.is_empty(),
                                "try_reserve({len}) Full on an empty ring: {m:?}"
                            );
                            TrySendError::Full
                        };
                        assert_eq!(e, want);
                    }
                }
            }
            // try_reserve, then drop the grant: sends nothing (padding may be published)
            3 => {
                let len = inp.len(max);
                let Some(p) = tx.as_mut() else { continue };
                let r = p.try_reserve(len).map(|mut g| g.fill(0xee));
                let fits = len <= max && rx.is_some() && m.reserve(len);
                assert_eq!(r.is_ok(), fits, "dropped grant of {len}: {r:?}, {m:?}");
                if r == Err(TrySendError::Full) {
                    assert!(
                        !m.is_empty(),
                        "try_reserve({len}) Full on an empty ring: {m:?}"
                    );
                }
            }
            // send_batch, only when it surely fits (it would wait otherwise)
            4 => {
                let n = usize::from(inp.u8() % 6);
                let lens: Vec<usize> = (0..n).map(|_| inp.len(max).min(max)).collect();
                let Some(p) = tx.as_mut() else { continue };
                if rx.is_none() || !m.batch_fits(&lens) {
                    continue;
                }
                let msgs: Vec<(u64, Vec<u8>)> = lens
                    .iter()
                    .map(|&len| {
                        seq += 1;
                        (seq, payload(seq, len))
                    })
                    .collect();
                let r = p.send_batch(msgs.iter().map(|(_, v)| &v[..]));
                assert_eq!(r.ok(), Some(n), "send_batch of {lens:?}");
                for (s, v) in &msgs {
                    assert!(m.reserve(v.len()));
                    m.commit(v.len(), 0, *s);
                }
            }
            // try_recv, dropping the guard at once
            5 | 6 => {
                let Some(c) = rx.as_mut() else { continue };
                let want = m.peek();
                match c.try_recv() {
                    Ok(g) => {
                        check_msg("try_recv", (&g, g.tag()), want);
                        drop(g);
                        m.consume();
                    }
                    Err(e) => {
                        assert!(want.is_none(), "try_recv: {e:?}, model has {want:?}");
                        let expect = if tx.is_some() {
                            TryRecvError::Empty
                        } else {
                            TryRecvError::Disconnected
                        };
                        assert_eq!(e, expect);
                    }
                }
            }
            // recv_timeout (short)
            7 => {
                let t = short(inp.u8());
                let Some(c) = rx.as_mut() else { continue };
                let want = m.peek();
                match c.recv_timeout(t) {
                    Ok(g) => {
                        check_msg("recv_timeout", (&g, g.tag()), want);
                        drop(g);
                        m.consume();
                    }
                    Err(e) => {
                        assert!(want.is_none(), "recv_timeout: {e:?}, model has {want:?}");
                        if tx.is_some() {
                            assert!(matches!(e, Error::Timeout), "recv_timeout: {e:?}");
                        } else {
                            assert!(matches!(e, Error::Disconnected), "recv_timeout: {e:?}");
                        }
                    }
                }
            }
            // recv_batch, only when a message is there (it would wait otherwise)
            8 => {
                let maxn = usize::from(inp.u8() % 8);
                let Some(c) = rx.as_mut() else { continue };
                if m.messages() == 0 {
                    continue;
                }
                let mut got: Vec<(u32, Vec<u8>)> = Vec::new();
                let r = c.recv_batch(maxn, |tag, bytes| got.push((tag, bytes.to_vec())));
                let n = r.unwrap_or_else(|e| panic!("recv_batch: {e:?}"));
                assert_eq!(n, got.len());
                assert_eq!(n, maxn.min(m.messages()), "recv_batch({maxn})");
                for (tag, bytes) in &got {
                    let want = m.peek();
                    check_msg("recv_batch", (bytes, *tag), want);
                    m.consume();
                }
                if n < maxn {
                    // It looked once more, stepping over trailing padding.
                    assert_eq!(m.peek(), None);
                }
                if maxn > 0 {
                    // Everything consumed is handed back at the end.
                    m.released_all();
                }
            }
            // wait strategies
            9 => {
                let b = inp.u8();
                if let Some(p) = tx.as_mut() {
                    p.set_wait(wait_of(b));
                    assert_eq!(p.wait(), wait_of(b));
                }
                if let Some(c) = rx.as_mut() {
                    c.set_wait(wait_of(b >> 2));
                    assert_eq!(c.wait(), wait_of(b >> 2));
                }
            }
            // send_timeout (short)
            10 => {
                let (len, t) = (inp.len(max).min(max), short(inp.u8()));
                let Some(p) = tx.as_mut() else { continue };
                seq += 1;
                let r = p.send_timeout(&payload(seq, len), t);
                if rx.is_none() {
                    assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
                } else if m.reserve(len) {
                    assert!(r.is_ok(), "send_timeout({len}): {r:?}, {m:?}");
                    m.commit(len, 0, seq);
                } else {
                    assert!(
                        matches!(r, Err(Error::Timeout)),
                        "send_timeout({len}): {r:?}, model: no room ({m:?})"
                    );
                }
            }
            // an endpoint leaves, or comes back
            _ => match inp.u8() % 4 {
                0 if tx.is_some() => tx = None,
                1 if rx.is_some() => {
                    rx = None;
                    m.released_all();
                }
                _ => {
                    if tx.is_none() {
                        tx = Some(
                            Producer::open(&name)
                                .unwrap_or_else(|e| panic!("Producer::open again: {e:?}")),
                        );
                    }
                    if rx.is_none() {
                        rx = Some(
                            Consumer::open(&name)
                                .unwrap_or_else(|e| panic!("Consumer::open again: {e:?}")),
                        );
                    }
                }
            },
        }
    }

    // Everything sent comes out, in order, and nothing else.
    if rx.is_none() {
        rx = Some(Consumer::open(&name).unwrap_or_else(|e| panic!("Consumer::open: {e:?}")));
    }
    let c = rx.as_mut().unwrap();
    loop {
        let want = m.peek();
        match c.try_recv() {
            Ok(g) => {
                check_msg("drain", (&g, g.tag()), want);
                drop(g);
                m.consume();
            }
            Err(e) => {
                assert!(want.is_none(), "drain: {e:?}, model has {want:?}");
                // Drained: the ring is empty (or its producer has left); never Corrupt.
                assert!(
                    matches!(e, TryRecvError::Empty | TryRecvError::Disconnected),
                    "drain: {e:?} after the last message"
                );
                break;
            }
        }
    }
    assert_eq!(m.messages(), 0);
}
