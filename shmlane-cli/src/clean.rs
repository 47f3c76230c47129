//! `shmlane clean`: remove your stale segments.

use std::process::ExitCode;

use shmlane::inspect::{self, Outcome, Report};

use clap::Parser;

use crate::util::*;

#[derive(Parser)]
pub(crate) struct CleanArgs {
    /// Only list what would be removed.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Also remove stale segments made with `persist(true)` (kept by default: their
    /// creator asked for them to outlive it).
    #[arg(long)]
    include_persistent: bool,
    /// Only consider these segments (`/name`, `name` or `shmid:ID`; default: all of
    /// yours). A NAME that does not exist is an error.
    names: Vec<String>,
}

pub(crate) fn clean(a: &CleanArgs) -> ExitCode {
    let names: Vec<String> = a.names.iter().map(|n| normalize(n)).collect();
    for n in &names {
        if let Err(e) = inspect::inspect(n) {
            return fail_err(&e);
        }
    }
    let me = nix::unistd::geteuid().as_raw();
    let wanted = |r: &Report| {
        let named = names.is_empty()
            || names
                .iter()
                .any(|n| *n == r.name || r.sysv_id.is_some_and(|id| *n == format!("shmid:{id}")));
        named && r.uid == Some(me) && (a.include_persistent || !r.persistent())
    };
    let stale = match inspect::clean_matching(a.dry_run, wanted) {
        Ok(s) => s,
        Err(e) => return fail_err(&e),
    };
    if stale.is_empty() {
        println!(
            "no stale segments{}",
            if a.include_persistent {
                ""
            } else {
                " (persistent ones are kept unless --include-persistent)"
            }
        );
    }
    let mut failed = false;
    for s in &stale {
        let what = describe(&s.report);
        match &s.outcome {
            Outcome::WouldRemove => println!("would remove {what}: {}", s.reason),
            Outcome::Removed => println!("removed {what}: {}", s.reason),
            Outcome::NoLongerStale => {
                println!("kept {what}: an endpoint attached again")
            }
            Outcome::Failed(e) => {
                eprintln!("shmlane: could not remove {}: {e}", s.report.name);
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
