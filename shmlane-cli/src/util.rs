//! What the operator commands share: name normalisation, error wording, report cells.

use std::process::ExitCode;

use shmlane::inspect::{self, human_bytes, utc_text, Class, Report};
use shmlane::{Error, Kind};

/// The status of a process killed by SIGPIPE: what `cat` exits with when its peer goes.
pub(crate) const SIGPIPE_STATUS: u8 = 141;

/// `/name` and `shmid:ID` as given; a bare `name` (as listed in /dev/shm) is `/name`.
pub(crate) fn normalize(name: &str) -> String {
    if name.starts_with('/') || name.starts_with("shmid:") || name.is_empty() {
        name.to_string()
    } else {
        format!("/{name}")
    }
}

pub(crate) fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("shmlane: {e}");
    ExitCode::FAILURE
}

/// A library error in an operator's words: names the command's flags, not the
/// library's `Options` methods, and gives no advice meant for a program.
pub(crate) fn cli_message(e: &Error) -> String {
    match e {
        Error::NotFound { name, key } => {
            if let Some(id) = name.strip_prefix("shmid:") {
                format!("no System V segment with id {id} (see `ipcs -m`)")
            } else {
                format!(
                    "no shared-memory segment named {name} (neither {}{name} nor a System V segment with key {key:#010x}; `shmlane ls` lists them)",
                    inspect::DEV_SHM
                )
            }
        }
        Error::MessageTooLarge { len, max } => format!(
            "a message of {len} bytes is larger than this ring's max message of {max} bytes (--max-message sets it when `cat --to` creates the ring)"
        ),
        Error::PermissionDenied { name } => format!(
            "permission denied for shared-memory segment {name}: it belongs to another user or its mode does not allow it"
        ),
        Error::InvalidOptions { reason } => format!(
            "invalid ring size: {}",
            reason
                .replace("max_message", "--max-message")
                .replace("capacity", "--capacity")
        ),
        e => e.to_string(),
    }
}

pub(crate) fn fail_err(e: &Error) -> ExitCode {
    fail(cli_message(e))
}

pub(crate) fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

pub(crate) fn status_text(r: &Report) -> String {
    match r.pending() {
        Some(n) => format!("pending ({n} unread)"),
        None => r.status().to_string(),
    }
}

pub(crate) fn kind_text(r: &Report) -> String {
    r.kind().map_or_else(|| "-".into(), |k| k.as_str().into())
}

pub(crate) fn capacity_text(r: &Report) -> String {
    let f = &r.fields;
    match r.kind() {
        Some(Kind::Spsc) => f.capacity.map_or_else(|| "-".into(), human_bytes),
        // Slots of up to max_message bytes each (the slot itself is 32 bytes more,
        // rounded up to 64: `inspect` shows it).
        Some(Kind::Mpmc) => match (f.slot_count, f.max_message) {
            (Some(n), Some(m)) => format!("{n} x {}", human_bytes(u64::from(m))),
            _ => "-".into(),
        },
        None => "-".into(),
    }
}

pub(crate) fn fill_text(r: &Report) -> String {
    match r.fill() {
        Some(f) if f.slots => format!(
            "{} slot{} ({:.1}%)",
            f.used,
            if f.used == 1 { "" } else { "s" },
            f.percent()
        ),
        Some(f) => format!("{} ({:.1}%)", human_bytes(f.used), f.percent()),
        None if r.fields.write_pos.is_some() && r.kind().is_some() => {
            "? (positions out of range)".into()
        }
        None => "-".into(),
    }
}

pub(crate) fn endpoints_text(r: &Report) -> String {
    if r.endpoints.is_empty() {
        return "-".into();
    }
    r.endpoints
        .iter()
        .map(|e| format!("{} {} {}", e.role, e.pid, e.liveness.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn created_text(r: &Report) -> String {
    r.created().map_or_else(|| "-".into(), utc_text)
}

/// Prints rows as columns, each as wide as its widest cell; the last is not padded.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `/name (posix spsc)`, and who is still attached.
pub(crate) fn describe(r: &Report) -> String {
    let what = match (r.class, r.kind()) {
        (Class::Shmlane, Some(k)) => k.as_str().to_string(),
        (class, _) => class.as_str().to_string(),
    };
    let id = r
        .sysv_id
        .map_or(String::new(), |id| format!(", shmid {id}"));
    let mut s = format!("{} ({} {what}{id})", r.name, r.backing);
    let alive: Vec<String> = r
        .endpoints
        .iter()
        .filter(|e| e.liveness == inspect::Liveness::Alive)
        .map(|e| format!("{} {}", e.role, e.pid))
        .collect();
    if !alive.is_empty() {
        s.push_str(&format!(
            "; still attached: {} (they keep their mapping)",
            alive.join(", ")
        ));
    } else if let Some(n @ 1..) = r.sysv_nattch {
        s.push_str(&format!(
            "; {n} process(es) still attached keep their mapping"
        ));
    }
    s
}
