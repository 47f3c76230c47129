//! Typed messages: a producer sends `Tick` structs, a consumer reads them in place.
//!
//! ```text
//! cargo run --example typed                # both ends, in two processes
//! ```
//!
//! The parent creates the channel and sends; it re-runs itself as the consumer
//! (`typed consume`), which reads every tick in place and checks it.
//!
//! `Tick` derives zerocopy's traits through shmlane's re-export: no zerocopy dependency
//! of your own, and `#[zerocopy(crate = "shmlane::typed::zerocopy")]` tells the derives
//! where the crate is.

use std::time::{Duration, Instant};

use shmlane::typed::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
use shmlane::typed::{Consumer, Producer};
use shmlane::Options;

#[derive(Debug, Clone, Copy, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[zerocopy(crate = "shmlane::typed::zerocopy")]
#[repr(C)]
struct Tick {
    seq: u64,
    price: f64,
    qty: u32,
    side: u8,
    _pad: [u8; 3], // IntoBytes refuses hidden padding: name it
}

fn tick(seq: u64) -> Tick {
    Tick {
        seq,
        price: 100.0 + (seq % 100) as f64 * 0.25,
        qty: (seq % 1000) as u32,
        side: (seq % 2) as u8,
        _pad: [0; 3],
    }
}

const COUNT: u64 = 1_000_000;
const SCHEMA: u32 = 1;

fn main() -> shmlane::Result<()> {
    let name = format!("/shmlane-example-typed-{}", std::process::id());
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("consume") {
        let name = args.next().expect("name");
        return consume(&name);
    }

    let opts = Options::new().capacity(1 << 20).schema(SCHEMA);
    let tx = Producer::<Tick>::create(&name, &opts)?;
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["consume", &name])
        .spawn()
        .expect("spawn the consumer");
    let start = Instant::now();
    let sent = produce(tx);
    // Reap the consumer whatever happened (it sees Disconnected or PeerDied if we failed).
    let status = child.wait().expect("wait for the consumer");
    sent?;
    println!(
        "sent {COUNT} ticks + a slice of 100 in {:?}; consumer {status}",
        start.elapsed()
    );
    Ok(())
}

fn produce(mut tx: Producer<Tick>) -> shmlane::Result<()> {
    for seq in 0..COUNT {
        if seq % 2 == 0 {
            tx.send(&tick(seq))?;
        } else {
            // Zero-copy: write the struct straight into the ring.
            let mut g = tx.reserve()?;
            *g = tick(seq);
            g.commit();
        }
    }
    // A sample buffer: many ticks in one message.
    let batch: Vec<Tick> = (COUNT..COUNT + 100).map(tick).collect();
    tx.send_slice(&batch)?;
    Ok(()) // dropping tx: the consumer drains, then sees the end
}

fn consume(name: &str) -> shmlane::Result<()> {
    let mut rx = Consumer::<Tick>::open_timeout(name, SCHEMA, Duration::from_secs(5))?;
    for seq in 0..COUNT {
        let m = rx.recv()?; // &Tick in the ring, aligned to align_of::<Tick>()
        assert_eq!(*m, tick(seq));
    }
    let s = rx.recv_slice()?; // &[Tick] in the ring
    assert_eq!(s.len(), 100);
    assert!(s.iter().zip(COUNT..).all(|(t, seq)| *t == tick(seq)));
    drop(s);
    assert!(rx.recv_or_end()?.is_none());
    println!("consumer: {} ticks in order and intact", COUNT + 100);
    Ok(())
}
