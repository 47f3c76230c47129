//! A few rounds of the soak (`examples/soak`) under `cargo test`: the same engine, with
//! this test binary re-running its `soak_child` test as the child processes (examples
//! are not built for tests, and a test cannot find an example's executable reliably).
//! The long run is `cargo run --release --example soak -- --rounds 1000`.

#[path = "../examples/soak/engine.rs"]
mod engine;

use std::process::Command;

/// Tells this binary's `soak_child` test which child to be.
const CHILD_ENV: &str = "SHMLANE_SOAK_CHILD";

/// Child: runs the soak engine's child role given in `SHMLANE_SOAK_CHILD`.
#[test]
fn soak_child() {
    if let Ok(words) = std::env::var(CHILD_ENV) {
        let words: Vec<String> = words.split(' ').map(str::to_string).collect();
        engine::child_main(&words);
    }
}

#[test]
fn soak_a_few_rounds() {
    let exe = std::env::current_exe().unwrap();
    let launch = move |words: &[String]| {
        let mut c = Command::new(&exe);
        c.args(["soak_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, words.join(" "));
        c
    };
    let cfg = engine::Config {
        rounds: 12,
        seed: 0x50a6,
        progress_every: 4,
        ..engine::Config::default()
    };
    let t = engine::run(&cfg, &launch);
    eprint!("{}", t.table());
    assert!(t.ok(), "{}; {:#?}", t.line(), t.notes);
    assert!(t.kills > 0, "no round killed anything mid-stream");
}
