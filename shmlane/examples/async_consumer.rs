//! An async consumer on tokio: one task per channel, no thread parked per ring.
//!
//! ```text
//! cargo run --example producer -- /demo          # in one terminal (the blocking producer)
//! cargo run --example async_consumer -- /demo    # in another
//! ```
//!
//! Give several names to await several channels at once from one runtime thread:
//! `cargo run --example async_consumer -- /a /b /c`. Each task prints what arrives on its
//! channel and ends when that producer has finished and everything it sent was read.

use std::time::Duration;

use shmlane::spsc::Consumer;
use shmlane::Error;

async fn consume(name: String) -> Result<u64, Error> {
    // Opening waits (blocking) for the producer to create the channel: do it off the
    // runtime's thread.
    let n = name.clone();
    let rx =
        tokio::task::spawn_blocking(move || Consumer::open_timeout(&n, Duration::from_secs(30)))
            .await
            .expect("open task")?;
    let mut rx = rx.into_async()?;
    println!("{name}: attached");
    let mut count = 0;
    while let Some(msg) = rx.recv_or_end().await? {
        println!(
            "{name}: tag={} {:?}",
            msg.tag(),
            String::from_utf8_lossy(&msg)
        );
        count += 1;
    }
    println!("{name}: the producer has finished; {count} messages read");
    Ok(count)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() {
        names.push("/demo".to_string());
    }
    let tasks: Vec<_> = names
        .into_iter()
        .map(|n| tokio::spawn(consume(n)))
        .collect();
    for t in tasks {
        t.await.expect("consumer task")?;
    }
    Ok(())
}
