//! The registry's liveness is the kernel's word, not a pid's: an entry that names a live
//! pid but whose holder is gone is dead, and one held by a live endpoint is alive, on
//! both backings.
#![allow(clippy::disallowed_types)] // a test writing a header field from outside, as a peer would

mod common;

use std::time::{Duration, Instant};

use common::TestName;
use memoffset::offset_of;
use shmlane::format::{
    self_start_time, Endpoint, Header, EP_ATTACHED, SPSC_CONSUMER, SPSC_PRODUCER,
};
use shmlane::spsc::{Consumer, Producer};
use shmlane::{Backing, Error, Options, PeerState};

fn entry_offset(i: usize) -> usize {
    offset_of!(Header, endpoints) + i * std::mem::size_of::<Endpoint>()
}

/// Writes `value` at byte `offset` of segment `name`, as a stray or stale writer would.
fn poke_u64(name: &str, offset: usize, value: u64) {
    let seg = shmlane::format::Segment::open(name).unwrap();
    assert!(offset + 8 <= seg.len() && offset % 8 == 0);
    // SAFETY: the offset is inside the mapping and 8-aligned; the word is an atomic in
    // the header, so an atomic store is how every process writes it.
    let cell = unsafe { &*(seg.as_ptr().add(offset) as *const std::sync::atomic::AtomicU64) };
    cell.store(value, std::sync::atomic::Ordering::SeqCst);
}

/// Registry word `pid << 32 | generation << 16 | role << 8 | state` (format version 2).
fn word(pid: u32, state: u32) -> u64 {
    (u64::from(pid) << 32) | (7 << 16) | u64::from(state)
}

/// A producer entry left "attached" by a process that is gone, whose pid (and start time)
/// now belong to a live process — this test process. A pid check says alive; the kernel
/// says nobody holds the entry: the consumer drains and is told, and a new producer may
/// take the role.
#[test]
fn a_stale_entry_whose_pid_now_runs_is_dead() {
    for backing in [Backing::Posix, Backing::SysV] {
        for state in [EP_ATTACHED, 1 /* "attaching" in format 1 */] {
            let name = TestName::new("stale-pid");
            let opts = Options::new().capacity(4096).backing(backing);
            let mut rx = Consumer::create(&name, &opts).unwrap();
            {
                let mut tx = Producer::open(&name).unwrap();
                tx.send(b"before").unwrap();
            }
            // The producer closed; now make its entry look attached by a live pid.
            let off = entry_offset(SPSC_PRODUCER);
            poke_u64(&name, off + 8, self_start_time());
            poke_u64(&name, off, word(std::process::id(), state));
            assert_eq!(
                rx.peer(),
                PeerState::Dead(std::process::id() as i32),
                "{backing:?} state {state}"
            );
            assert_eq!(&rx.recv().unwrap()[..], b"before");
            let t = Instant::now();
            match rx.recv() {
                Err(Error::PeerDied) => {}
                other => panic!("{backing:?}: expected PeerDied, got {other:?}"),
            }
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "{:?}",
                t.elapsed()
            );
            // The role is free: a new producer takes it over.
            let mut tx = Producer::open(&name).unwrap();
            tx.send(b"after").unwrap();
            assert!(
                matches!(Consumer::open(&name), Err(Error::RoleTaken { .. })),
                "the consumer role is held by a live endpoint"
            );
            assert_eq!(&rx.recv().unwrap()[..], b"after");
        }
    }
}

/// The other way round: a live endpoint is alive whatever its entry's pid says (here a
/// pid that does not exist, as a peer in another PID namespace may have written).
#[test]
fn a_live_holder_is_alive_whatever_pid_it_wrote() {
    for backing in [Backing::Posix, Backing::SysV] {
        let name = TestName::new("live-any-pid");
        let opts = Options::new().capacity(4096).backing(backing);
        let mut tx = Producer::create(&name, &opts).unwrap();
        let mut rx = Consumer::open(&name).unwrap();
        // Pid 0x7fff_fff0 cannot exist (pid_max is at most 2^22).
        poke_u64(
            &name,
            entry_offset(SPSC_CONSUMER),
            word(0x7fff_fff0, EP_ATTACHED),
        );
        poke_u64(&name, entry_offset(SPSC_CONSUMER) + 8, 0);
        assert_eq!(tx.peer(), PeerState::Alive(0x7fff_fff0), "{backing:?}");
        assert!(!tx.is_disconnected());
        tx.send(b"still there").unwrap();
        assert_eq!(&rx.recv().unwrap()[..], b"still there");
        // A second consumer is refused while the first lives.
        assert!(matches!(
            Consumer::open(&name),
            Err(Error::RoleTaken { .. })
        ));
        drop(rx);
        assert_eq!(tx.peer(), PeerState::Closed);
    }
}
