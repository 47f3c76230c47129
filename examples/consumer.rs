//! The consumer half of the two-terminal demo (see `producer.rs`):
//!
//! ```text
//! cargo run --example consumer -- /demo
//! ```
//!
//! Waits for the channel to appear, prints every message with its tag, and exits when the
//! producer has gone and everything it sent has been read.

use std::time::{Duration, Instant};

use shmlane::spsc::Consumer;
use shmlane::Error;

fn main() -> Result<(), Error> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/demo".to_string());
    let start = Instant::now();
    let mut rx = loop {
        match Consumer::open(&name) {
            Ok(rx) => break rx,
            Err(Error::NotFound { .. }) if start.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    };
    println!("attached to {name}");
    loop {
        match rx.recv() {
            Ok(msg) => println!(
                "received tag={} {:?}",
                msg.tag(),
                String::from_utf8_lossy(&msg)
            ),
            Err(Error::Disconnected) => {
                println!("the producer has gone; all its messages were read");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}
