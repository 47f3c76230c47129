//! The consumer half of the two-terminal demo (see `producer.rs`):
//!
//! ```text
//! cargo run --example consumer -- /demo
//! ```
//!
//! Waits for the channel to appear (it may be started before the producer, or after the
//! producer has already finished: the producer's messages wait for it), prints every
//! message with its tag, and exits when the producer has finished and everything it sent
//! has been read. A producer that crashed is reported as an error, not a normal end.

use std::time::Duration;

use shmlane::spsc::Consumer;
use shmlane::Error;

fn main() -> Result<(), Error> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/demo".to_string());
    let mut rx = Consumer::open_timeout(&name, Duration::from_secs(30))?;
    println!("attached to {name}");
    while let Some(msg) = rx.recv_or_end()? {
        println!(
            "received tag={} {:?}",
            msg.tag(),
            String::from_utf8_lossy(&msg)
        );
    }
    println!("the producer has finished; all its messages were read");
    Ok(())
}
