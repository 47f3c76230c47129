//! The benchmark's peer process for this crate's tests and criterion benches:
//! `shmlane-bench-peer __peer key=value ...` does what `shmlane __peer` does.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match args.first().map(String::as_str) {
        Some("__peer") => &args[1..],
        _ => {
            eprintln!("usage: shmlane-bench-peer __peer key=value ...");
            return ExitCode::from(2);
        }
    };
    match shmlane_bench::runner::peer_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmlane-bench-peer: {e}");
            ExitCode::FAILURE
        }
    }
}
