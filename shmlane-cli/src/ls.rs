//! `shmlane ls`: every segment, shmlane's or not, a line each.

use std::process::ExitCode;

use shmlane::inspect::{self, Class, Report};

use clap::Parser;

use crate::util::*;

#[derive(Parser)]
pub(crate) struct LsArgs {
    /// Print a JSON array of objects (every header field) instead of a table.
    #[arg(long)]
    json: bool,
    /// Also list foreign, incompatible, uninitialised, unreadable and removed segments.
    #[arg(long, short)]
    all: bool,
}

pub(crate) fn ls(a: &LsArgs) -> ExitCode {
    let reports = match inspect::list() {
        Ok(r) => r,
        Err(e) => return fail_err(&e),
    };
    let shown: Vec<&Report> = reports
        .iter()
        .filter(|r| a.all || (r.class == Class::Shmlane && !r.sysv_removed))
        .collect();
    if a.json {
        let arr: Vec<serde_json::Value> = shown.iter().map(|r| crate::json::report(r)).collect();
        println!("{}", serde_json::to_string_pretty(&arr).expect("json"));
        return ExitCode::SUCCESS;
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.backing.to_string(),
                kind_text(r),
                status_text(r),
                capacity_text(r),
                fill_text(r),
                created_text(r),
                endpoints_text(r),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME",
            "BACKING",
            "KIND",
            "STATUS",
            "CAPACITY",
            "FILL",
            "CREATED",
            "ENDPOINTS",
        ],
        &rows,
    );
    ExitCode::SUCCESS
}
