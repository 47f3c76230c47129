//! A two-terminal demo of a broadcast ring: one publisher, any number of subscribers.
//!
//! ```text
//! terminal 1:  cargo run --example broadcast -- pub /ticks          (Block mode)
//!              cargo run --example broadcast -- pub /ticks lap      (Lap mode)
//! terminal 2:  cargo run --example broadcast -- sub /ticks          (from the oldest)
//! terminal 3:  cargo run --example broadcast -- sub /ticks risk     (durable cursor "risk")
//! ```
//!
//! The publisher sends a numbered tick every 100 ms for a minute. Every subscriber prints
//! every tick; stop one with Ctrl-C and start it again with the same cursor name and it
//! goes on where it left off.

use std::time::Duration;

use shmlane::broadcast::{Overflow, Publisher, StartAt, Subscriber};
use shmlane::{Error, Options};

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = args.first().map(String::as_str).unwrap_or("pub");
    let name = args.get(1).map(String::as_str).unwrap_or("/ticks");
    match role {
        "pub" => {
            let overflow = match args.get(2).map(String::as_str) {
                Some("lap") => Overflow::Lap,
                _ => Overflow::Block,
            };
            let opts = Options::new()
                .capacity(64 << 10)
                .max_message(256)
                .overflow(overflow)
                .evict_after(Duration::from_secs(2));
            let mut p = Publisher::create(name, &opts)?;
            println!("publishing on {name} ({overflow:?}); start subscribers now");
            for i in 0..600u32 {
                p.send_tagged(i, format!("tick {i}").as_bytes())?;
                if i % 10 == 0 {
                    println!("sent {i}, {} subscribers", p.subscribers());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        }
        "sub" => {
            let mut s = match args.get(2) {
                Some(cursor) => Subscriber::open_named(name, cursor, StartAt::Oldest)?,
                None => Subscriber::open(name, StartAt::Oldest)?,
            };
            loop {
                match s.recv() {
                    Ok(m) => println!(
                        "#{} tag={} {}",
                        m.position(),
                        m.tag(),
                        String::from_utf8_lossy(&m)
                    ),
                    Err(Error::Lapped { missed }) => println!("lapped: missed {missed}"),
                    Err(Error::Disconnected) => {
                        println!("the publisher has gone; everything was read");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        other => {
            eprintln!(
                "usage: broadcast pub NAME [lap] | broadcast sub NAME [CURSOR] (not {other})"
            );
            std::process::exit(2);
        }
    }
}
