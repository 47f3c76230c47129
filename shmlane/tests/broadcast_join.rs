//! Broadcast subscribers joining a running ring (the loom models `broadcast_join_*` in
//! `tests/loom.rs` cover the races; this is the sequential case).

mod common;

use common::TestName;
use shmlane::broadcast::{Overflow, Publisher, StartAt, Subscriber};
use shmlane::{Error, Options, TrySendError, Wait};

/// A Block-mode subscriber that joins a full ring at `Oldest` while the publisher has
/// cached "no cursor holds me" holds it back from the next send on. Found by
/// `broadcast_corrupt`: the publisher skipped its scan (`lo <= slowest`), stored
/// `frontier` past the joiner's cursor, then saw `attach_epoch` changed, found the joiner
/// below `frontier`, marked it `LAPPED` and overwrote the oldest message (`try_send`
/// succeeded, the joiner's first `try_recv` was `Lapped { missed: 1 }`). Fixed on main by
/// the check of `attach_epoch` before `frontier` moves; the race of a join *during* that
/// move is the loom models' `broadcast_join_block_*`.
#[test]
fn block_oldest_joiner_holds_the_publisher_back() {
    let name = TestName::new("bc-join-oldest");
    let opts = Options::new()
        .capacity(256)
        .max_message(16)
        .max_subscribers(2)
        .overflow(Overflow::Block)
        .wait(Wait::Block);
    let mut p = Publisher::create(&name, &opts).unwrap();
    // 32-byte records: seven fit beside the stub; ten wrap the ring with nobody reading.
    for i in 0..10u8 {
        p.send_tagged(u32::from(i), &[i; 16]).unwrap();
    }
    let mut s = Subscriber::open(&name, StartAt::Oldest).unwrap();
    let first = s.next_position();
    assert!(first > 0 && first < 10, "oldest is message {first}");
    // The ring is full and the joiner has read nothing: Block mode must wait for it.
    assert_eq!(p.try_send_tagged(10, &[10; 16]), Err(TrySendError::Full));
    for i in first..10 {
        match s.try_recv() {
            Ok(m) => assert_eq!(
                (m.position(), m.tag(), &m[..]),
                (i, i as u32, &[i as u8; 16][..])
            ),
            Err(Error::Lapped { missed }) => {
                panic!("Block mode: lapped by {missed} at message {i}")
            }
            Err(e) => panic!("message {i}: {e}"),
        }
    }
}
