//! Corrupted shared memory: positions, record headers and header fields overwritten
//! behind the endpoints' backs (through the `/dev/shm` file, which *is* the shared
//! memory). Every case must end in `Error::Corrupt` / `TryRecvError::Corrupt` /
//! `TrySendError::Corrupt`: never a panic, never a hang, never garbage handed out.

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::{Rng, TestName};
use memoffset::offset_of;
use shmlane::format::{Header, HEADER_SIZE};
use shmlane::spsc::{Consumer, Producer};
use shmlane::{Error, Options, TryRecvError, TrySendError, Wait};

/// `len` of a padding record (the top bit).
const PAD_FLAG: u32 = 1 << 31;
const CAP: u64 = 4096;
const MAX: u32 = 256;
/// Start of the data area in the segment file.
const DATA: u64 = HEADER_SIZE as u64;
/// Every blocking call in here waits at most this long.
const T: Duration = Duration::from_millis(500);

fn write_pos_off() -> u64 {
    offset_of!(Header, write_pos) as u64
}

fn read_pos_off() -> u64 {
    offset_of!(Header, read_pos) as u64
}

/// A channel in this process, with its segment file open for scribbling.
struct Chan {
    tx: Option<Producer>,
    rx: Option<Consumer>,
    file: File,
    // Last, so the endpoints unmap before the name goes.
    name: TestName,
}

impl Chan {
    fn new(tag: &str) -> Chan {
        let name = TestName::new(tag);
        let opts = Options::new()
            .capacity(CAP as usize)
            .max_message(MAX as usize)
            .persist(true); // the producer role can be dropped and re-taken
        let tx = Producer::create(&name, &opts).unwrap();
        let rx = Consumer::open(&name).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/dev/shm{}", name.as_str()))
            .unwrap();
        Chan {
            tx: Some(tx),
            rx: Some(rx),
            file,
            name,
        }
    }

    fn tx(&mut self) -> &mut Producer {
        self.tx.as_mut().unwrap()
    }

    fn rx(&mut self) -> &mut Consumer {
        self.rx.as_mut().unwrap()
    }

    fn put_u32(&self, off: u64, v: u32) {
        self.file.write_all_at(&v.to_ne_bytes(), off).unwrap();
    }

    fn put_u64(&self, off: u64, v: u64) {
        self.file.write_all_at(&v.to_ne_bytes(), off).unwrap();
    }

    fn get_u64(&self, off: u64) -> u64 {
        let mut b = [0u8; 8];
        self.file.read_exact_at(&mut b, off).unwrap();
        u64::from_ne_bytes(b)
    }

    /// Sends and receives one message of `len` bytes, so the read position moves on.
    fn roundtrip(&mut self, len: usize) {
        self.tx().send(&vec![0x11; len]).unwrap();
        let m = self.rx().recv_timeout(T).unwrap();
        assert_eq!(m.len(), len);
        drop(m);
        // The consumer hands its position back lazily; finding the ring empty makes it
        // store the position now, so the tests below see it in shared memory.
        assert!(matches!(self.rx().try_recv(), Err(TryRecvError::Empty)));
    }

    /// The live consumer reports Corrupt from try_recv and (at once) from recv_timeout.
    fn assert_consumer_corrupt(&mut self, what: &str) {
        let r = self.rx().try_recv().map(|m| m.to_vec());
        assert!(
            matches!(r, Err(TryRecvError::Corrupt { .. })),
            "{what}: try_recv: {r:?}"
        );
        let start = Instant::now();
        let r = self.rx().recv_timeout(T).map(|m| m.to_vec());
        assert!(
            matches!(r, Err(Error::Corrupt { .. })),
            "{what}: recv_timeout: {r:?}"
        );
        assert!(
            start.elapsed() < T,
            "{what}: recv_timeout waited {:?} instead of failing",
            start.elapsed()
        );
        // It stays corrupt: asking again does not hand out anything.
        let r = self.rx().try_recv().map(|m| m.to_vec());
        assert!(
            matches!(r, Err(TryRecvError::Corrupt { .. })),
            "{what}: try_recv again: {r:?}"
        );
    }

    /// A fresh consumer (the old one dropped, so the role is free) refuses to attach.
    fn assert_fresh_consumer_corrupt(&mut self, what: &str) {
        drop(self.rx.take());
        let r = Consumer::open(&self.name);
        assert!(
            matches!(r, Err(Error::Corrupt { .. })),
            "{what}: fresh Consumer::open: {r:?}"
        );
        // The refused open did not keep the role: a later attempt is refused the same way.
        let r = Consumer::open(&self.name);
        assert!(
            matches!(r, Err(Error::Corrupt { .. })),
            "{what}: second fresh Consumer::open: {r:?}"
        );
    }

    /// A fresh producer (the old one dropped) refuses to attach.
    fn assert_fresh_producer_corrupt(&mut self, what: &str) {
        drop(self.tx.take());
        let r = Producer::open(&self.name);
        assert!(
            matches!(r, Err(Error::Corrupt { .. })),
            "{what}: fresh Producer::open: {r:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Record headers in the data area
// ---------------------------------------------------------------------------------------

#[test]
fn record_len_over_max_message() {
    for bad_len in [MAX + 1, MAX + 8, PAD_FLAG - 1] {
        let mut c = Chan::new("rec-max");
        c.tx().send_tagged(9, b"hello").unwrap();
        c.put_u32(DATA, bad_len);
        c.assert_consumer_corrupt(&format!("len {bad_len:#x}"));
        // A new consumer attaches (the positions are fine) and finds the same record.
        drop(c.rx.take());
        let mut rx = Consumer::open(&c.name).unwrap();
        let r = rx.recv_timeout(T).map(|m| m.to_vec());
        assert!(matches!(r, Err(Error::Corrupt { .. })), "fresh recv: {r:?}");
    }
}

#[test]
fn record_len_past_published_bytes() {
    let mut c = Chan::new("rec-past");
    c.roundtrip(40); // read and write now at 48
    c.tx().send(&[1u8; 8]).unwrap(); // one 16-byte record at offset 48
                                     // 200 <= max_message, but 208 bytes are not published.
    c.put_u32(DATA + 48, 200);
    c.assert_consumer_corrupt("len past published");
    // A new consumer attaches (the positions are fine) and finds the same record.
    drop(c.rx.take());
    let mut rx = Consumer::open(&c.name).unwrap();
    let r = rx.try_recv().map(|m| m.to_vec());
    assert!(
        matches!(r, Err(TryRecvError::Corrupt { .. })),
        "fresh try_recv: {r:?}"
    );
}

#[test]
fn record_len_past_ring_end() {
    // A record near the end of the ring whose length would run past the data area,
    // with enough bytes published that only the ring-end check can catch it.
    let mut c = Chan::new("rec-end");
    // Move both positions to 4096 - 64 = 4032.
    for _ in 0..(4032 / 112) {
        c.roundtrip(100); // 112-byte records: 36 of them = 4032
    }
    assert_eq!(c.get_u64(read_pos_off()), 4032);
    // The record at 4032 says 200 bytes (208 with its header) and 256 bytes are published:
    // enough bytes, but the record would run past the end of the data area (a real
    // producer pads instead).
    c.put_u32(DATA + 4032, 200);
    c.put_u64(write_pos_off(), 4032 + 256);
    c.assert_consumer_corrupt("record past ring end");
}

#[test]
fn padding_record_with_too_little_published() {
    let mut c = Chan::new("pad");
    c.roundtrip(8); // positions at 16: "the middle" of the ring
    c.tx().send(&[2u8; 8]).unwrap(); // 16 bytes published at offset 16
    c.put_u32(DATA + 16, PAD_FLAG); // claims the 4080 bytes to the end are padding
    c.assert_consumer_corrupt("padding in the middle");
}

#[test]
fn padding_record_with_extra_bits() {
    let mut c = Chan::new("pad-bits");
    // Go to offset 4032 and send a message that must wrap: a real padding record of 64
    // bytes is published, then the message at 0.
    for _ in 0..36 {
        c.roundtrip(100);
    }
    c.tx().send(&[3u8; 100]).unwrap();
    assert_eq!(c.get_u64(write_pos_off()), 4096 + 112);
    // Corrupt the padding length word: the flag plus other bits.
    c.put_u32(DATA + 4032, PAD_FLAG | 8);
    c.assert_consumer_corrupt("padding with extra bits");
    // Restored, the same ring reads fine again (nothing was consumed on the way).
    c.put_u32(DATA + 4032, PAD_FLAG);
    let m = c.rx().recv_timeout(T).unwrap();
    assert_eq!(&m[..], &[3u8; 100][..]);
}

// ---------------------------------------------------------------------------------------
// Shared positions
// ---------------------------------------------------------------------------------------

#[test]
fn write_pos_not_aligned() {
    let mut c = Chan::new("wp-align");
    c.roundtrip(8);
    let w = c.get_u64(write_pos_off());
    assert_eq!(w, 16);
    c.put_u64(write_pos_off(), w + 3);
    c.assert_consumer_corrupt("write_pos not 8-aligned");
    c.assert_fresh_consumer_corrupt("write_pos not 8-aligned");
    c.assert_fresh_producer_corrupt("write_pos not 8-aligned");
}

#[test]
fn write_pos_more_than_capacity_ahead() {
    for ahead in [CAP + 8, CAP * 2, (u64::MAX / 2) & !7] {
        let mut c = Chan::new("wp-ahead");
        c.roundtrip(8);
        let r = c.get_u64(read_pos_off());
        c.put_u64(write_pos_off(), r.wrapping_add(ahead));
        c.assert_consumer_corrupt(&format!("write_pos {ahead} ahead"));
        c.assert_fresh_consumer_corrupt(&format!("write_pos {ahead} ahead"));
        c.assert_fresh_producer_corrupt(&format!("write_pos {ahead} ahead"));
    }
}

#[test]
fn write_pos_behind_read_pos() {
    let mut c = Chan::new("wp-behind");
    c.roundtrip(8);
    c.roundtrip(8);
    let r = c.get_u64(read_pos_off());
    assert_eq!(r, 32);
    c.put_u64(write_pos_off(), r - 8);
    c.assert_consumer_corrupt("write_pos behind read_pos");
    c.assert_fresh_consumer_corrupt("write_pos behind read_pos");
}

#[test]
fn write_pos_exactly_capacity_ahead_with_garbage_records() {
    // Positions in range (a full ring) but the data is random (the len field is then a
    // padding flag with other bits, or over max_message). Each check alone:
    // `each_record_check_catches_its_case_alone`.
    let mut c = Chan::new("wp-full");
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let garbage: Vec<u8> = (0..CAP).map(|_| rng.next() as u8).collect();
    c.file.write_all_at(&garbage, DATA).unwrap();
    c.put_u64(write_pos_off(), CAP);
    c.assert_consumer_corrupt("full ring of garbage");
}

/// Each check a record header goes through before a slice is formed, hit on its own:
/// the other checks would pass, so the named one must catch it (a garbage ring whose
/// bytes all have the top bit set only ever reaches the padding check).
#[test]
fn each_record_check_catches_its_case_alone() {
    // (what, len field, record at the last 8 bytes of the ring, bytes published, the
    // check's words in the error)
    let cases: [(&str, u32, bool, u64, &str); 5] = [
        (
            "padding with other len bits",
            PAD_FLAG | 8,
            false,
            CAP,
            "bad padding record",
        ),
        (
            "padding past the published data",
            PAD_FLAG,
            false,
            8,
            "bad padding record",
        ),
        (
            "len over max_message",
            MAX + 1,
            false,
            CAP,
            "max_message is",
        ),
        (
            "record past the published data",
            MAX,
            false,
            16,
            "runs past",
        ),
        ("record past the ring end", 8, true, 64, "runs past"),
    ];
    for (what, len, at_end, published, words) in cases {
        let mut c = Chan::new("rec-check");
        if at_end {
            // Move to offset CAP - 8 with records that need no padding.
            for _ in 0..15 {
                c.roundtrip(248);
            }
            c.roundtrip(240);
        }
        let read = c.get_u64(read_pos_off());
        assert_eq!(read, if at_end { CAP - 8 } else { 0 }, "{what}");
        c.put_u32(DATA + (read % CAP), len);
        c.put_u32(DATA + (read % CAP) + 4, 7);
        c.put_u64(write_pos_off(), read + published);
        match c.rx().try_recv().map(|m| m.to_vec()) {
            Err(TryRecvError::Corrupt { what: msg }) => {
                assert!(
                    msg.contains(words),
                    "{what}: caught by another check: {msg}"
                )
            }
            other => panic!("{what}: try_recv: {other:?}"),
        }
        c.assert_consumer_corrupt(what);
    }
}

#[test]
fn read_pos_corrupt_is_seen_by_producer() {
    for bad in [3u64, CAP * 5, 1 << 63] {
        let mut c = Chan::new("rp");
        c.put_u64(read_pos_off(), bad);
        // The producer trusts its cached view until the ring looks full; then it reloads
        // the consumer's position and must notice.
        let mut sent = 0;
        let err = loop {
            match c.tx().try_send(&[5u8; 100]) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 1000, "read_pos {bad}: the ring never filled");
        };
        assert!(
            matches!(err, TrySendError::Corrupt { .. }),
            "read_pos {bad}: try_send: {err:?}"
        );
        let start = Instant::now();
        let r = c.tx().send_timeout(&[5u8; 100], T);
        assert!(
            matches!(r, Err(Error::Corrupt { .. })),
            "read_pos {bad}: send_timeout: {r:?}"
        );
        assert!(
            start.elapsed() < T,
            "send_timeout waited {:?}",
            start.elapsed()
        );
        let r = c.tx().send(&[5u8; 100]);
        assert!(
            matches!(r, Err(Error::Corrupt { .. })),
            "read_pos {bad}: send: {r:?}"
        );
        c.assert_fresh_consumer_corrupt(&format!("read_pos {bad}"));
        c.assert_fresh_producer_corrupt(&format!("read_pos {bad}"));
    }
}

// ---------------------------------------------------------------------------------------
// Header fields checked on open
// ---------------------------------------------------------------------------------------

#[test]
fn header_fields_out_of_range_on_open() {
    type Scribble = fn(&Chan);
    let cases: [(&str, Scribble); 9] = [
        ("unknown kind", |c| {
            c.put_u32(offset_of!(Header, kind) as u64, 7)
        }),
        ("capacity not a power of two", |c| {
            c.put_u64(offset_of!(Header, capacity) as u64, 3000)
        }),
        ("capacity below minimum", |c| {
            c.put_u64(offset_of!(Header, capacity) as u64, 32)
        }),
        ("capacity past the segment", |c| {
            c.put_u64(offset_of!(Header, capacity) as u64, CAP * 2)
        }),
        ("max_message > capacity / 2", |c| {
            c.put_u32(offset_of!(Header, max_message) as u64, CAP as u32)
        }),
        ("data_offset", |c| {
            c.put_u64(offset_of!(Header, data_offset) as u64, 0)
        }),
        ("name_len > NAME_CAP", |c| {
            c.put_u32(offset_of!(Header, name_len) as u64, 10_000)
        }),
        ("stored name differs (POSIX)", |c| {
            c.file
                .write_all_at(b"X", offset_of!(Header, name) as u64 + 3)
                .unwrap()
        }),
        ("segment_len smaller than header + capacity", |c| {
            c.put_u64(offset_of!(Header, segment_len) as u64, 100)
        }),
    ];
    for (what, scribble) in cases {
        let mut c = Chan::new("hdr");
        scribble(&c);
        // Validation comes before the role check, so the live consumer may stay.
        let r = Consumer::open(&c.name);
        assert!(
            matches!(r, Err(Error::Corrupt { .. })),
            "{what}: Consumer::open: {r:?}"
        );
        let r = Producer::open(&c.name);
        assert!(
            matches!(r, Err(Error::Corrupt { .. })),
            "{what}: Producer::open: {r:?}"
        );
        // The endpoints attached before the scribble keep working on their validated view.
        c.tx().send(b"x").unwrap();
        assert_eq!(&c.rx().recv_timeout(T).unwrap()[..], b"x");
    }
}

/// A `max_message` whose record is more than half the ring, as builds made them before
/// such a `max_message` doubled the capacity (they took up to `capacity / 2`). Such a ring
/// could report `Full` while empty (padding plus a record are more than the ring), so an
/// opener refuses it as `Corrupt`, and `inspect` says so; a record of exactly half the
/// ring is fine.
#[test]
fn max_message_record_over_half_the_ring_is_refused_on_open() {
    const HALF: u32 = CAP as u32 / 2;
    for (max, refused) in [
        (HALF, true),
        (HALF - 4, true),
        (HALF - 7, true),
        (HALF - 8, false),
        (MAX, false),
    ] {
        let mut c = Chan::new("oldgeo");
        c.put_u32(offset_of!(Header, max_message) as u64, max);
        let report = shmlane::inspect::inspect(&c.name).expect("inspect");
        if refused {
            for r in [
                Consumer::open(&c.name).map(|_| ()),
                Producer::open(&c.name).map(|_| ()),
            ] {
                match r {
                    Err(Error::Corrupt { what }) => assert!(
                        what.contains("more than half of capacity 4096"),
                        "max_message {max}: {what}"
                    ),
                    other => panic!("max_message {max}: open: {other:?}"),
                }
            }
            assert!(
                report
                    .validation
                    .contains("more than half of capacity 4096"),
                "max_message {max}: inspect: {}",
                report.validation
            );
        } else {
            assert_eq!(report.validation, "valid", "max_message {max}");
            drop(c.rx.take());
            let rx = Consumer::open(&c.name)
                .unwrap_or_else(|e| panic!("max_message {max}: Consumer::open: {e}"));
            assert_eq!(
                (rx.capacity(), rx.max_message()),
                (CAP as usize, max as usize)
            );
            c.rx = Some(rx);
        }
        // The endpoints attached before the scribble keep working on their validated view.
        c.tx().send(b"x").unwrap();
        assert_eq!(&c.rx().recv_timeout(T).unwrap()[..], b"x");
    }
}

/// A segment file grown (sparse) past the length its header gives: opening it still works,
/// and the opener's prefault touches only the part the header describes, so the holes
/// stay holes instead of filling `/dev/shm` with 64 MiB of zero pages.
#[test]
fn opening_a_grown_sparse_file_does_not_allocate_its_holes() {
    use std::os::unix::fs::MetadataExt;
    let mut c = Chan::new("sparse");
    let before = c.file.metadata().unwrap().blocks() * 512;
    c.file.set_len(64 << 20).unwrap();
    drop(c.rx.take());
    let rx = Consumer::open(&c.name).expect("Consumer::open of a grown file");
    c.rx = Some(rx);
    let after = c.file.metadata().unwrap().blocks() * 512;
    assert!(
        after <= before + (64 << 10),
        "opening allocated {after} bytes of the file (it had {before})"
    );
    c.tx().send(b"x").unwrap();
    assert_eq!(&c.rx().recv_timeout(T).unwrap()[..], b"x");
}

// ---------------------------------------------------------------------------------------
// Random corruption: never a panic, never a hang, never a slice outside the ring
// ---------------------------------------------------------------------------------------

/// Lays out a well-formed ring holding records of the given lengths, starting at
/// position `read`, as a real producer would (padding instead of wrapping). Returns the
/// data area and the write position.
fn well_formed(read: u64, lens: &[u32]) -> (Vec<u8>, u64) {
    let mut data = vec![0u8; CAP as usize];
    let mut w = read;
    for (i, &len) in lens.iter().enumerate() {
        let rec = 8 + ((u64::from(len) + 7) & !7);
        let off = w % CAP;
        if off + rec > CAP {
            data[off as usize..off as usize + 4].copy_from_slice(&PAD_FLAG.to_ne_bytes());
            w = w.wrapping_add(CAP - off);
        }
        let off = (w % CAP) as usize;
        data[off..off + 4].copy_from_slice(&len.to_ne_bytes());
        data[off + 4..off + 8].copy_from_slice(&(i as u32).to_ne_bytes());
        for b in &mut data[off + 8..off + 8 + len as usize] {
            *b = i as u8;
        }
        w = w.wrapping_add(rec);
    }
    (data, w)
}

#[test]
fn random_positions_and_records_never_panic() {
    let mut c = Chan::new("random");
    drop(c.rx.take());
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut outcomes = [0usize; 4]; // messages, empty, corrupt, disconnected
    let start = Instant::now();
    for round in 0..400 {
        // A well-formed ring at a random (aligned) position...
        let read = match rng.below(3) {
            0 => rng.below(1 << 20) * 8,
            1 => rng.next() & !7,
            _ => u64::MAX - rng.below(64) * 8 - 7,
        };
        let mut lens = Vec::new();
        let mut used = 0;
        loop {
            let len = rng.below(u64::from(MAX) + 1) as u32;
            // Leave room for a worst-case padding record before it.
            used += 8 + ((u64::from(len) + 7) & !7) + 264;
            if used > CAP || rng.below(10) == 0 {
                break;
            }
            lens.push(len);
        }
        let (mut data, mut write) = well_formed(read, &lens);
        assert!(write.wrapping_sub(read) <= CAP);
        // ... then, mostly, one or more corruptions of it.
        let mutations = rng.below(4);
        for _ in 0..mutations {
            match rng.below(5) {
                0 => {
                    let i = rng.below(CAP) as usize;
                    data[i] = rng.next() as u8;
                }
                1 => {
                    // A length word: near the limits or random.
                    let off = (rng.below(CAP / 8) * 8) as usize;
                    let len: u32 = match rng.below(4) {
                        0 => PAD_FLAG,
                        1 => MAX + 1 + rng.below(16) as u32,
                        2 => rng.below(u64::from(MAX) + 1) as u32,
                        _ => rng.next() as u32,
                    };
                    data[off..off + 4].copy_from_slice(&len.to_ne_bytes());
                }
                2 => write = write.wrapping_add(rng.below(CAP / 4) * 8),
                3 => write = write.wrapping_sub(rng.below(CAP / 4) * 8),
                _ => write ^= 1 << rng.below(64),
            }
        }
        c.file.write_all_at(&data, DATA).unwrap();
        c.put_u64(read_pos_off(), read);
        c.put_u64(write_pos_off(), write);
        let mut rx = match Consumer::open(&c.name) {
            Ok(rx) => rx,
            Err(Error::Corrupt { .. }) => {
                assert!(mutations > 0, "round {round}: a well-formed ring refused");
                outcomes[2] += 1;
                continue;
            }
            Err(e) => panic!("round {round}: open: {e:?}"),
        };
        let mut got = 0;
        for _ in 0..CAP / 8 + 2 {
            match rx.try_recv() {
                Ok(m) => {
                    assert!(m.len() <= MAX as usize, "round {round}: {} bytes", m.len());
                    if mutations == 0 {
                        assert_eq!(m.len() as u32, lens[got], "round {round}");
                        assert_eq!(m.tag(), got as u32, "round {round}");
                        assert!(m.iter().all(|&b| b == got as u8), "round {round}");
                    }
                    got += 1;
                    outcomes[0] += 1;
                }
                Err(TryRecvError::Empty) => {
                    outcomes[1] += 1;
                    break;
                }
                Err(TryRecvError::Corrupt { .. }) => {
                    assert!(
                        mutations > 0,
                        "round {round}: a well-formed ring is corrupt"
                    );
                    outcomes[2] += 1;
                    break;
                }
                Err(TryRecvError::Disconnected) => {
                    outcomes[3] += 1;
                    break;
                }
            }
        }
        if mutations == 0 {
            assert_eq!(got, lens.len(), "round {round}");
        }
        let r = rx.recv_timeout(Duration::from_millis(1)).map(|m| m.len());
        assert!(
            matches!(r, Ok(_) | Err(Error::Corrupt { .. }) | Err(Error::Timeout)),
            "round {round}: recv_timeout: {r:?}"
        );
    }
    eprintln!("outcomes (messages, empty, corrupt, disconnected): {outcomes:?}");
    assert!(
        outcomes[0] > 0 && outcomes[1] > 0 && outcomes[2] > 0,
        "{outcomes:?}"
    );
    assert_eq!(outcomes[3], 0, "the producer is alive");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

/// Garbage in the semaphores and waiter counts: waits wake up spuriously and re-check,
/// they do not abort (glibc's `sem_t` functions abort on a garbage semaphore) or hang.
#[test]
fn garbage_semaphores_and_waiter_counts_are_harmless() {
    let mut c = Chan::new("sem-garbage");
    for (field, v) in [
        (offset_of!(Header, data_sem), u32::MAX),
        (offset_of!(Header, space_sem), 0x8000_0001),
        (offset_of!(Header, data_waiters), u32::MAX),
        (offset_of!(Header, space_waiters), 7),
    ] {
        c.put_u32(field as u64, v);
    }
    c.rx().set_wait(Wait::Block);
    let t = Instant::now();
    let r = c
        .rx()
        .recv_timeout(Duration::from_millis(200))
        .map(|m| m.to_vec());
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2));
    // Sending still works, and wakes (or spuriously re-wakes) the consumer.
    c.tx().send(b"still fine").unwrap();
    assert_eq!(&c.rx().recv_timeout(T).unwrap()[..], b"still fine");
}
