//! `corrupt_consume` and `corrupt_consume_mpmc`: valid rings overwritten through their
//! `/dev/shm` file, then used.

use super::*;

/// A new value for a shared position: a small move of the current one (often still
/// aligned), or any `u64`.
fn new_pos(inp: &mut Bytes<'_>, cur: u64) -> u64 {
    match inp.u8() % 4 {
        0 => inp.u64(),
        1 => cur.wrapping_add(u64::from(inp.u16()) * 8),
        2 => cur.wrapping_sub(u64::from(inp.u16()) * 8),
        _ => cur.wrapping_add(i64::from(inp.u16() as i16) as u64),
    }
}

/// Creates a real SPSC ring, sends (and partly receives) a few valid messages, then
/// overwrites, from `data`, the shared positions, a window of the data area (record
/// headers and payload) and a few other header fields through the `/dev/shm` file,
/// and consumes in a bounded loop (`try_recv`, `recv_timeout`, and a consumer opened
/// afresh): every result must be a message of at most `max_message` bytes or a
/// specific error. When nothing actually changed, the messages must come out intact.
pub fn corrupt_consume(data: &[u8]) {
    let mut inp = Bytes::new(data);
    let asked = 256usize << (inp.u8() % 3); // 256 ..= 1024
    let max = usize::from(inp.u8()) % (asked / 2 + 1);
    let name = ShmName::new("cc");
    let opts = Options::new()
        .capacity(asked)
        .max_message(max)
        .wait(Wait::Spin)
        .persist(true);
    let mut tx = Some(
        Producer::create(&name, &opts)
            .unwrap_or_else(|e| panic!("fuzz setup: Producer::create: {e}")),
    );
    let mut rx =
        Some(Consumer::open(&name).unwrap_or_else(|e| panic!("fuzz setup: Consumer::open: {e}")));
    let file = name.open_file();
    let cap = tx.as_ref().unwrap().capacity() as u64; // rounded up

    // A few valid round trips to move the positions (so padding is in play), then a few
    // messages left in the ring.
    let rounds = inp.u8() % 24;
    for _ in 0..rounds {
        let len = inp.len(max).min(max);
        let (p, c) = (tx.as_mut().unwrap(), rx.as_mut().unwrap());
        // The ring is empty (the last receive found it so and handed everything back):
        // the record fits, padding or not.
        p.try_send(&payload(0, len))
            .unwrap_or_else(|e| panic!("round trip send of {len} bytes: {e:?}"));
        let g = c
            .try_recv()
            .unwrap_or_else(|e| panic!("round trip recv: {e:?}"));
        assert_eq!(g.len(), len);
        drop(g);
        // Finding the ring empty hands everything back at once.
        assert_eq!(c.try_recv().map(|g| g.len()), Err(TryRecvError::Empty));
    }
    let mut sent: VecDeque<(usize, u32, u64)> = VecDeque::new();
    for i in 0..inp.u8() % 8 {
        let len = inp.len(max).min(max);
        let seq = 1000 + u64::from(i);
        match tx
            .as_mut()
            .unwrap()
            .try_send_tagged(seq as u32, &payload(seq, len))
        {
            Ok(()) => sent.push_back((len, seq as u32, seq)),
            Err(TrySendError::Full) => break,
            Err(e) => panic!("valid send: {e:?}"),
        }
    }

    // The corruption.
    let wp_off = offset_of!(Header, write_pos) as u64;
    let rp_off = offset_of!(Header, read_pos) as u64;
    let flags = inp.u8();
    let mut changed = false;
    if flags & 1 != 0 {
        let v = new_pos(&mut inp, get_u64(&file, wp_off));
        changed |= scribble(&file, wp_off, &v.to_ne_bytes());
    }
    if flags & 2 != 0 {
        let v = new_pos(&mut inp, get_u64(&file, rp_off));
        changed |= scribble(&file, rp_off, &v.to_ne_bytes());
    }
    if flags & 4 != 0 {
        // Waiter counts and the endpoint registry: wake-ups, eager release, peers.
        let which = inp.u8() % 4;
        let (off, v) = match which {
            0 => (offset_of!(Header, data_waiters), inp.u8() as u32 % 3),
            1 => (offset_of!(Header, space_waiters), inp.u8() as u32 % 3),
            2 => (offset_of!(Header, light_wakers), inp.u8() as u32),
            _ => (
                offset_of!(Header, endpoints) + 16 * usize::from(inp.u8() % 2),
                inp.u32(),
            ),
        };
        changed |= scribble(&file, off as u64, &v.to_ne_bytes());
    }
    // A window of the data area, at an 8-aligned offset (where record headers live)
    // or anywhere.
    let window_at = inp.u16();
    let off = if flags & 8 != 0 {
        u64::from(window_at) % cap
    } else {
        (u64::from(window_at) * 8) % cap
    };
    let want_len = usize::from(inp.u8());
    let bytes = inp.take(want_len.min((cap - off) as usize));
    changed |= scribble(&file, HEADER_SIZE as u64 + off, bytes);

    if flags & 0x10 != 0 {
        // A new consumer starts from the (possibly corrupt) read_pos.
        drop(rx.take());
        match Consumer::open(&name) {
            Ok(c) => rx = Some(c),
            Err(e) => {
                assert!(changed, "fresh consumer refused an intact ring: {e:?}");
                assert!(
                    matches!(e, Error::Corrupt { .. } | Error::RoleTaken { .. }),
                    "Consumer::open: {e:?}"
                );
            }
        }
    }
    if flags & 0x20 != 0 {
        drop(tx.take());
        if flags & 0x40 != 0 {
            match Producer::open(&name) {
                Ok(p) => tx = Some(p),
                Err(e) => {
                    assert!(changed, "fresh producer refused an intact ring: {e:?}");
                    assert!(
                        matches!(e, Error::Corrupt { .. } | Error::RoleTaken { .. }),
                        "Producer::open: {e:?}"
                    );
                }
            }
        }
    }

    if let Some(c) = rx.as_mut() {
        let mut got = 0;
        let mut corrupt = false;
        for i in 0..cap / 8 + 8 {
            let r = if i % 4 == 3 {
                c.recv_timeout(Duration::ZERO)
                    .map(|g| (g.len(), g.tag(), g.to_vec()))
            } else {
                c.try_recv()
                    .map(|g| (g.len(), g.tag(), g.to_vec()))
                    .map_err(Error::from)
            };
            match r {
                Ok((len, tag, bytes)) => {
                    assert!(len <= max, "received {len} bytes, max_message is {max}");
                    assert!(!corrupt, "a message after Corrupt");
                    if !changed {
                        let want = sent.pop_front();
                        check_msg("intact ring", (&bytes, tag), want);
                    }
                    got += 1;
                }
                Err(Error::Corrupt { .. }) => {
                    assert!(changed, "an intact ring is corrupt");
                    corrupt = true;
                }
                Err(e @ (Error::Empty | Error::Timeout | Error::Disconnected)) => {
                    assert!(!corrupt, "{e:?} after Corrupt");
                    if !changed {
                        assert!(sent.is_empty(), "{e:?} with {} messages left", sent.len());
                    }
                    break;
                }
                Err(e) => panic!("consumer: unexpected error {e:?}"),
            }
        }
        let _ = got;
    }
    if let Some(p) = tx.as_mut() {
        // The producer reloads the consumer position only when the ring looks full.
        for _ in 0..cap / 8 + 4 {
            match p.try_send(&payload(7, max.min(24))) {
                Ok(()) => {}
                Err(TrySendError::Corrupt { .. }) => {
                    assert!(changed, "producer: an intact ring is corrupt");
                    break;
                }
                Err(TrySendError::Full | TrySendError::Disconnected) => break,
                Err(e) => panic!("producer: unexpected error {e:?}"),
            }
        }
    }
}

/// The MPMC counterpart of [`corrupt_consume`]: overwrites the shared positions and a
/// window of the slots (stamps, claim words, lengths, tags, payload) and consumes and
/// sends in a bounded loop.
pub fn corrupt_consume_mpmc(data: &[u8]) {
    let mut inp = Bytes::new(data);
    let asked = 1usize << (inp.u8() % 4); // 1 ..= 8 slots
    let max = usize::from(inp.u8()) % 100;
    let name = ShmName::new("ccm");
    let opts = Options::new()
        .slots(asked)
        .max_message(max)
        .wait(Wait::Spin)
        .persist(true);
    let tx =
        Sender::create(&name, &opts).unwrap_or_else(|e| panic!("fuzz setup: Sender::create: {e}"));
    let rx = Receiver::open(&name).unwrap_or_else(|e| panic!("fuzz setup: Receiver::open: {e}"));
    let file = name.open_file();
    let count = tx.slots() as u64; // rounded up
    let mut b = [0u8; 4];
    file.read_exact_at(&mut b, offset_of!(Header, slot_size) as u64)
        .unwrap_or_else(|e| panic!("fuzz setup: read segment file: {e}"));
    let slot_size = u32::from_ne_bytes(b) as usize;

    let rounds = inp.u8() % 20;
    for _ in 0..rounds {
        let len = inp.len(max).min(max);
        tx.try_send(&payload(0, len))
            .unwrap_or_else(|e| panic!("round trip send: {e:?}"));
        let g = rx
            .try_recv()
            .unwrap_or_else(|e| panic!("round trip recv: {e:?}"));
        assert_eq!(g.len(), len);
    }
    let mut sent: VecDeque<(usize, u32, u64)> = VecDeque::new();
    let mut grant = None;
    let mut guard = None;
    let n = inp.u8() % 10;
    for i in 0..n {
        let len = inp.len(max).min(max);
        let seq = 2000 + u64::from(i);
        match tx.try_send_tagged(seq as u32, &payload(seq, len)) {
            Ok(()) => sent.push_back((len, seq as u32, seq)),
            Err(TrySendError::Full) => break,
            Err(e) => panic!("valid send: {e:?}"),
        }
    }
    let flags = inp.u8();
    if flags & 0x40 != 0 {
        // A grant held across the corruption (claimed, unpublished slot).
        grant = tx.try_reserve(max.min(5)).ok();
    }

    let wp_off = offset_of!(Header, write_pos) as u64;
    let rp_off = offset_of!(Header, read_pos) as u64;
    let mut changed = false;
    if flags & 1 != 0 {
        let v = new_pos(&mut inp, get_u64(&file, wp_off));
        changed |= scribble(&file, wp_off, &v.to_ne_bytes());
    }
    if flags & 2 != 0 {
        let v = new_pos(&mut inp, get_u64(&file, rp_off));
        changed |= scribble(&file, rp_off, &v.to_ne_bytes());
    }
    if flags & 4 != 0 {
        let which = inp.u8() % 4;
        let (off, v) = match which {
            0 => (offset_of!(Header, mpmc_live), inp.u32() % 3),
            1 => (offset_of!(Header, mpmc_ever), inp.u32() % 4),
            2 => (offset_of!(Header, space_waiters), inp.u32() % 3),
            _ => (offset_of!(Header, data_waiters), inp.u32() % 3),
        };
        changed |= scribble(&file, off as u64, &v.to_ne_bytes());
    }
    let data_len = count * slot_size as u64;
    // One slot field (stamp, claims, len/tag) with a value near the positions, or a raw
    // window anywhere in the slots.
    if flags & 8 != 0 {
        let slot = u64::from(inp.u8()) % count;
        let field = u64::from(inp.u8() % 4) * 8;
        let base = get_u64(&file, if inp.u8() & 1 != 0 { wp_off } else { rp_off });
        let v = match inp.u8() % 3 {
            0 => base.wrapping_add(u64::from(inp.u8())).wrapping_sub(16),
            1 => u64::from(inp.u32()) | (u64::from(std::process::id()) << 32),
            _ => inp.u64(),
        };
        let at = HEADER_SIZE as u64 + slot * slot_size as u64 + field;
        changed |= scribble(&file, at, &v.to_ne_bytes());
    }
    let off = u64::from(inp.u16()) % data_len;
    let want_len = usize::from(inp.u8());
    let bytes = inp.take(want_len.min((data_len - off) as usize));
    changed |= scribble(&file, HEADER_SIZE as u64 + off, bytes);

    if flags & 0x10 != 0 {
        // A receiver that holds a message across what follows.
        if let Ok(g) = rx.try_recv() {
            assert!(g.len() <= max);
            if !changed {
                check_msg("mpmc intact ring (held)", (&g, g.tag()), sent.pop_front());
            }
            guard = Some(g);
        }
    }
    let rx2 = Receiver::open(&name);
    if let Err(e) = &rx2 {
        assert!(
            matches!(e, Error::Corrupt { .. } | Error::TooManyEndpoints { .. }),
            "Receiver::open: {e:?}"
        );
    }
    let mut corrupt = false;
    for i in 0..2 * count + 6 {
        let r = match (i % 3, rx2.as_ref()) {
            (2, Ok(r2)) => r2
                .try_recv()
                .map(|g| (g.tag(), g.to_vec()))
                .map_err(Error::from),
            (1, _) => rx
                .recv_timeout(Duration::ZERO)
                .map(|g| (g.tag(), g.to_vec())),
            _ => rx
                .try_recv()
                .map(|g| (g.tag(), g.to_vec()))
                .map_err(Error::from),
        };
        match r {
            Ok((tag, bytes)) => {
                assert!(
                    bytes.len() <= max,
                    "received {} bytes, max {max}",
                    bytes.len()
                );
                if !changed {
                    check_msg("mpmc intact ring", (&bytes, tag), sent.pop_front());
                }
            }
            Err(Error::Corrupt { .. }) => {
                assert!(changed, "an intact MPMC ring is corrupt");
                corrupt = true;
            }
            Err(e @ (Error::Empty | Error::Timeout | Error::Disconnected)) => {
                // A held grant claims a slot after every sent message, and a held guard
                // took the first of them: neither keeps the others from coming out.
                if !changed {
                    assert!(sent.is_empty(), "{e:?} with {} messages left", sent.len());
                }
                if !corrupt {
                    break;
                }
            }
            Err(e) => panic!("receiver: unexpected error {e:?}"),
        }
    }
    drop(guard);
    drop(grant);
    for _ in 0..2 * count + 2 {
        match tx.try_send(&payload(9, max.min(16))) {
            Ok(()) => {}
            Err(TrySendError::Corrupt { .. }) => {
                assert!(changed, "sender: an intact MPMC ring is corrupt");
                break;
            }
            Err(TrySendError::Full | TrySendError::Disconnected) => break,
            Err(e) => panic!("sender: unexpected error {e:?}"),
        }
    }
}
