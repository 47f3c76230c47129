//! The producer half of a two-terminal demo. Run the consumer in another terminal:
//!
//! ```text
//! cargo run --example producer -- /demo 10
//! cargo run --example consumer -- /demo
//! ```
//!
//! Creates the channel `/demo`, sends N tagged text messages (default 10), one every
//! 200 ms, and removes the channel when it exits (the consumer still reads what was sent).

use std::time::Duration;

use shmlane::spsc::Producer;
use shmlane::{Error, Options};

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "/demo".to_string());
    let count: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);

    let mut tx = Producer::create(&name, &Options::new().capacity(64 << 10))?;
    println!("created {name}; sending {count} messages (start the consumer now)");
    for i in 0..count {
        let text = format!("hello #{i} from pid {}", std::process::id());
        // Zero-copy: write the message straight into the ring, then publish it.
        let mut grant = tx.reserve(text.len())?;
        grant.copy_from_slice(text.as_bytes());
        grant.set_tag(i);
        grant.commit();
        println!("sent    tag={i} {text:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("done; the consumer sees Disconnected after the last message");
    Ok(())
}
