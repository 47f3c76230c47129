//! Broadcast rings overwritten behind the endpoints' backs. The fuzz target
//! `broadcast_corrupt` (shmlane-fuzz) explores this widely; the tests here pin down what
//! it found, deterministically.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::TestName;
use memoffset::offset_of;
use shmlane::broadcast::{Overflow, Publisher, StartAt, Subscriber};
use shmlane::format::broadcast::Control;
use shmlane::format::HEADER_SIZE;
use shmlane::{Error, Options, Wait};

/// The POSIX segment `name`'s file, to write behind the endpoints' backs.
fn segment_file(name: &str) -> std::fs::File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm{name}"))
        .unwrap()
}

/// A 256-byte ring of 16-byte messages with two cursor slots (the tests scribble on it).
fn small_ring(overflow: Overflow) -> Options {
    Options::new()
        .capacity(256)
        .max_message(16)
        .max_subscribers(2)
        .overflow(overflow)
        .wait(Wait::Block)
}

/// Found by fuzzing: a `write_pos` more than a ring ahead of `tail` (both aligned and in
/// order, so the subscriber's checks let them through) made `try_recv` spin forever: the
/// subscriber found itself more than a ring behind, rejoined at the tail with nothing
/// missed (it stood at the tail), and found itself more than a ring behind again (each
/// round a membarrier).
/// Now a rejoin retries such positions a bounded number of times, then `Corrupt`.
#[test]
fn write_pos_far_ahead_of_tail_is_corrupt_not_a_hang() {
    for overflow in [Overflow::Block, Overflow::Lap] {
        let name = TestName::new("bcc-far");
        let mut p = Publisher::create(&name, &small_ring(overflow)).unwrap();
        let mut s = Subscriber::open(&name, StartAt::Oldest).unwrap();
        p.send(b"one").unwrap();
        p.send(b"two").unwrap();
        // The subscriber stands at the tail (nothing read, nothing overwritten yet).
        let file = segment_file(&name);
        let off = (HEADER_SIZE + offset_of!(Control, write_pos)) as u64;
        let mut b = [0u8; 8];
        file.read_exact_at(&mut b, off).unwrap();
        let far = u64::from_ne_bytes(b) + 64 * 256;
        file.write_all_at(&far.to_ne_bytes(), off).unwrap();

        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let r = (0..4).find_map(|_| s.try_recv().err());
            let _ = tx.send(r);
        });
        let r = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{overflow:?}: try_recv hangs on a write_pos far ahead"));
        assert!(
            matches!(r, Some(Error::Corrupt { .. })),
            "{overflow:?}: {r:?}"
        );
        t.join().unwrap();
        drop(p);
    }
}

/// Writes `seq` as the message number of the record header at ring position `pos`.
fn scribble_seq(name: &str, max_subscribers: usize, pos: u64, seq: u64) {
    use shmlane::format::broadcast::ring_offset;
    let off = (HEADER_SIZE + ring_offset(max_subscribers)) as u64 + pos + 8;
    segment_file(name)
        .write_all_at(&seq.to_ne_bytes(), off)
        .unwrap();
}

/// Found by fuzzing (`broadcast_corrupt`, 2026-11-30): a record header numbered
/// `u64::MAX` at the oldest position made a joining subscriber take that number, and its
/// first read added one to it: a panic ("attempt to add with overflow") in a debug build,
/// a wrapped count in release. Now a message number that no ring can reach is `Corrupt`
/// where it is read from the segment.
#[test]
fn a_message_number_past_any_real_stream_is_corrupt_not_an_overflow() {
    for overflow in [Overflow::Block, Overflow::Lap] {
        let name = TestName::new("bcc-seq");
        // Persistent: the name outlives the first publisher, for the second one to open.
        let mut p = Publisher::create(&name, &small_ring(overflow).persist(true)).unwrap();
        p.send(b"one").unwrap();
        scribble_seq(&name, 2, 0, u64::MAX);
        // Joining at the oldest message reads its number.
        let r = Subscriber::open(&name, StartAt::Oldest).and_then(|mut s| s.try_recv().map(|_| ()));
        assert!(
            matches!(r, Err(Error::Corrupt { .. })),
            "{overflow:?}: {r:?}"
        );

        // A publisher that opens the ring takes the next number from the stub at
        // write_pos (record "one" is 32 bytes: the stub is at 32).
        drop(p);
        scribble_seq(&name, 2, 32, u64::MAX);
        let r = Publisher::open(&name).and_then(|mut p| p.send(b"two"));
        assert!(
            matches!(r, Err(Error::Corrupt { .. })),
            "{overflow:?}: {r:?}"
        );
    }
}
