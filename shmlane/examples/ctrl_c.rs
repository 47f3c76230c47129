//! Ctrl-C (SIGINT) or SIGTERM without leaving segments behind.
//!
//! ```text
//! cargo run --example ctrl_c -- /ticker      # then press Ctrl-C
//! ```
//!
//! shmlane removes a segment's name when its creator is dropped. A signal's default
//! action kills the process without running any destructor, so a program stopped with
//! Ctrl-C would leave its segments in `/dev/shm` (`shmlane clean` finds them later). The
//! fix is the usual one for Rust programs: turn the signal into a flag
//! (`signal_hook::flag::register`), check it in the loop, and return normally, so that
//! every endpoint is dropped: each name it created is removed, or, when it holds messages
//! nobody has read yet, left `pending` for a reader, who removes it once drained
//! (`shmlane cat --from /ticker` does).
#![allow(clippy::disallowed_types)] // an application's own flag; the library's clippy.toml keeps std atomics out of its ring code

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shmlane::spsc::Producer;
use shmlane::{Error, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/ticker".to_string());
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let mut tx = Producer::create(&name, &Options::new().capacity(64 << 10))?;
    println!("created {name}; Ctrl-C to stop (`shmlane ls` shows it meanwhile)");
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        // A bounded wait, so the flag is looked at even while nobody reads.
        match tx.send_timeout(&n.to_le_bytes(), Duration::from_millis(100)) {
            Ok(()) => n += 1,
            Err(Error::Timeout) => {}
            Err(Error::Disconnected | Error::PeerDied) => break,
            Err(e) => return Err(e.into()),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("stopping after {n} messages");
    // `tx` drops here: the name is removed (or, with messages nobody has read, left for a
    // reader to drain, see the README).
    Ok(())
}
