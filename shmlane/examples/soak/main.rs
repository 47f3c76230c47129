//! Soak test of the crash promises: rounds of SIGKILLed endpoints (an SPSC producer
//! mid-stream, an SPSC consumer with or without a held message and a new consumer taking
//! over, an MPMC sender mid-stream, an MPMC receiver holding a message), every message
//! checked for being torn, duplicated or lost, every side for hanging.
//!
//! ```text
//! cargo run --release --example soak -- --rounds 1000 [--seed N] [--kinds spsc,mpmc]
//!     [--deadline-secs 10] [--every 50]
//! ```
//!
//! Kinds: `spsc`, `mpmc`, or any of `spsc-producer`, `spsc-consumer`, `mpmc-sender`,
//! `mpmc-receiver`, comma-separated. The child processes are this executable re-run as
//! `soak __child key=value...`. Prints a progress line to stderr every `--every` rounds
//! and a table at the end; exits 1 if anything was torn, duplicated, hung or lost
//! without explanation (2 on bad arguments). Every segment it makes is removed at the
//! end of its round. The engine is `engine.rs`, shared with `tests/soak.rs`.

mod engine;

use std::process::{Command, ExitCode};
use std::time::Duration;

fn usage(why: &str) -> ExitCode {
    eprintln!("soak: {why}");
    eprintln!(
        "usage: soak [--rounds N] [--seed N] [--kinds spsc,mpmc,...] [--deadline-secs S] [--every N]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__child") {
        engine::child_main(&args[1..]);
    }
    let mut cfg = engine::Config::default();
    let mut every = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(v) = it.next() else {
            return usage(&format!("{a} needs a value"));
        };
        let num = || {
            v.parse::<u64>()
                .map_err(|_| format!("{a}: {v:?} is not a number"))
        };
        let r = match a.as_str() {
            "--rounds" => num().map(|n| cfg.rounds = n),
            "--seed" => num().map(|n| cfg.seed = n),
            "--deadline-secs" => num().map(|n| cfg.deadline = Duration::from_secs(n.max(1))),
            "--every" => num().map(|n| every = Some(n)),
            "--kinds" => engine::Scenario::parse_kinds(v).map(|k| cfg.kinds = k),
            _ => Err(format!("unknown argument {a}")),
        };
        if let Err(e) = r {
            return usage(&e);
        }
    }
    cfg.progress_every = every.unwrap_or((cfg.rounds / 10).clamp(1, 100));
    let exe = std::env::current_exe().expect("this executable's path");
    let launch = move |words: &[String]| {
        let mut c = Command::new(&exe);
        c.arg("__child").args(words);
        c
    };
    eprintln!(
        "soak: {} rounds, seed {}, kinds {}",
        cfg.rounds,
        cfg.seed,
        cfg.kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    let t = engine::run(&cfg, &launch);
    for n in &t.notes {
        eprintln!("soak: {n}");
    }
    print!("{}", t.table());
    if t.ok() {
        ExitCode::SUCCESS
    } else {
        eprintln!("soak: FAILED: {}", t.line());
        ExitCode::FAILURE
    }
}
