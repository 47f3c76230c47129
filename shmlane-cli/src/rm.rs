//! `shmlane rm`: remove segments by name, refusing foreign ones unless forced.

use std::process::ExitCode;

use shmlane::inspect::{self};
use shmlane::Error;

use clap::Parser;

use crate::util::*;

#[derive(Parser)]
pub(crate) struct RmArgs {
    /// The segments to remove: `/name` or `shmid:ID`.
    #[arg(required = true)]
    names: Vec<String>,
    /// Remove segments that are not shmlane's (or that cannot be read) too.
    #[arg(long, short)]
    force: bool,
}

pub(crate) fn rm(a: &RmArgs) -> ExitCode {
    let mut failed = false;
    for name in a.names.iter().map(|n| normalize(n)) {
        match inspect::remove(&name, a.force) {
            Ok(removed) => {
                for r in removed {
                    println!("removed {}", describe(&r.report));
                }
            }
            Err(
                e @ (Error::NotShmlane { .. }
                | Error::KeyCollision { .. }
                | Error::PermissionDenied { .. }),
            ) => {
                eprintln!("shmlane: {e} (`shmlane rm --force {name}` removes it anyway)");
                failed = true;
            }
            Err(e) => {
                eprintln!("shmlane: {}", cli_message(&e));
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
