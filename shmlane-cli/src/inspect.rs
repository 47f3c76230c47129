//! `shmlane inspect`: one segment's header, fields, registry and verdict.

use std::process::ExitCode;
use std::time::SystemTime;

use shmlane::format::{layout_hash, MAGIC, STATE_READY, VERSION};
use shmlane::inspect::{self, human_bytes, human_duration, utc_text, Report, DEV_SHM};
use shmlane::Backing;
use shmlane::Kind;

use clap::Parser;

use crate::util::*;

#[derive(Parser)]
pub(crate) struct InspectArgs {
    /// The segment: `/name` (or `name`, as in /dev/shm) or `shmid:ID`.
    name: String,
    /// Print a JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn inspect(a: &InspectArgs) -> ExitCode {
    let r = match inspect::inspect(&normalize(&a.name)) {
        Ok(r) => r,
        Err(e) => return fail_err(&e),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&crate::json::report(&r)).expect("json")
        );
    } else {
        print_report(&r);
    }
    if r.valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

pub(crate) fn print_report(r: &Report) {
    let f = &r.fields;
    let line = |k: &str, v: String| println!("{k:<16}{v}");
    line("name", r.name.clone());
    line(
        "backing",
        match r.backing {
            Backing::Posix => format!("posix ({DEV_SHM}{})", r.name),
            Backing::SysV => format!(
                "sysv (key {}, shmid {}, {} process(es) attached{})",
                r.sysv_key
                    .map_or_else(|| "-".into(), |k| format!("{k:#010x}")),
                or_dash(r.sysv_id),
                or_dash(r.sysv_nattch),
                if r.sysv_removed {
                    "; already removed, kept by those attached"
                } else {
                    ""
                }
            ),
        },
    );
    line("class", r.class.as_str().into());
    line("validation", r.validation.clone());
    line("size", format!("{} bytes", r.len));
    match r.magic {
        None => line("magic", "- (shorter than 8 bytes)".into()),
        Some(m) if m == MAGIC => line("magic", "ok (\"SHMLANE\\0\")".into()),
        Some([0, 0, 0, 0, 0, 0, 0, 0]) => line("magic", "none yet (all zero)".into()),
        Some(m) => line(
            "magic",
            format!(
                "not shmlane's: {:02x?} {:?}",
                m,
                String::from_utf8_lossy(&m)
            ),
        ),
    }
    if r.magic != Some(MAGIC) {
        return;
    }
    if r.layout_matches() == Some(false) || f.version.is_some_and(|v| v != VERSION) {
        println!("(another version or layout: the fields below are read with this build's layout and may be wrong)");
    }
    line(
        "version",
        format!("{} (this build: {VERSION})", or_dash(f.version)),
    );
    line(
        "kind",
        match (r.kind(), f.kind) {
            (Some(k), _) => k.as_str().into(),
            (None, Some(raw)) => format!("unknown ({raw})"),
            (None, None) => "-".into(),
        },
    );
    line(
        "layout hash",
        match f.layout_hash {
            Some(h) if h == layout_hash() => format!("{h:#018x} (matches this build)"),
            Some(h) => format!("{h:#018x} (this build: {:#018x})", layout_hash()),
            None => "-".into(),
        },
    );
    line(
        "state",
        match f.state {
            Some(STATE_READY) => "ready".into(),
            Some(0) => "initialising (0)".into(),
            other => format!("unknown ({})", or_dash(other)),
        },
    );
    line("segment_len", or_dash(f.segment_len));
    line("data_offset", or_dash(f.data_offset));
    line(
        "capacity",
        f.capacity
            .map_or_else(|| "-".into(), |c| format!("{c} bytes ({})", human_bytes(c))),
    );
    line("max_message", or_dash(f.max_message));
    line("type", r.message_type().unwrap_or_else(|| "-".into()));
    line(
        "slots",
        match r.kind() {
            Some(Kind::Spsc) => "- (spsc: variable-length records)".into(),
            _ => format!("{} x {} bytes", or_dash(f.slot_count), or_dash(f.slot_size)),
        },
    );
    line("wait", or_dash(r.wait()));
    line(
        "created",
        match r.created() {
            Some(t) => format!(
                "{} ({} ago)",
                utc_text(t),
                human_duration(SystemTime::now().duration_since(t).unwrap_or_default())
            ),
            None => "-".into(),
        },
    );
    line("creator pid", or_dash(f.creator_pid));
    line(
        "stored name",
        f.stored_name
            .as_ref()
            .map_or_else(|| "-".into(), |n| format!("{n:?}")),
    );
    line(
        "positions",
        format!(
            "write {}, read {}",
            or_dash(f.write_pos),
            or_dash(f.read_pos)
        ),
    );
    line("in flight", fill_text(r));
    line(
        "waiters",
        format!(
            "data {}, space {}",
            or_dash(f.data_waiters),
            or_dash(f.space_waiters)
        ),
    );
    line("light_wakers", or_dash(f.light_wakers));
    line("lost", or_dash(f.lost));
    line(
        "unread",
        match (r.unread, r.pending()) {
            (_, Some(n)) => format!("{n} messages, left by the creator for a reader (pending)"),
            (Some(n), None) => format!("{n} messages"),
            (None, None) => "-".into(),
        },
    );
    line(
        "persistent",
        if r.persistent() { "yes" } else { "no" }.into(),
    );
    if r.kind() == Some(Kind::Mpmc) {
        let ever = f.mpmc_ever.unwrap_or(0);
        line(
            "mpmc live",
            format!(
                "senders {}, receivers {} (registered and not closed: {}, {}; ever attached: senders {}, receivers {})",
                r.alive("sender"),
                r.alive("receiver"),
                or_dash(f.mpmc_live[0]),
                or_dash(f.mpmc_live[1]),
                if ever & 1 != 0 { "yes" } else { "no" },
                if ever & 2 != 0 { "yes" } else { "no" },
            ),
        );
    }
    if r.endpoints.is_empty() {
        line("endpoints", "none registered".into());
    } else {
        println!("endpoints");
        let rows: Vec<Vec<String>> = r
            .endpoints
            .iter()
            .map(|e| {
                vec![
                    format!("  #{}", e.index),
                    e.role.clone(),
                    e.pid.to_string(),
                    e.state.clone(),
                    e.liveness.as_str().into(),
                ]
            })
            .collect();
        print_table(&["  SLOT", "ROLE", "PID", "STATE", "LIVENESS"], &rows);
    }
}
