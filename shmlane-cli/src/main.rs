//! `shmlane`: benchmark the shared-memory ring against the kernel's IPC, look at and
//! remove segments like `ipcs` / `ipcrm`, and carry a byte stream between two shells.

use std::process::ExitCode;

mod bench;
mod cat;
mod clean;
mod inspect;
mod json;
mod ls;
mod rm;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shmlane",
    version,
    about = "Zero-copy shared-memory rings between processes, and the tools around them"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compare every backend across two processes: throughput and one-way latency.
    ///
    /// The peer is a second process (this executable, re-run). Each throughput figure
    /// counts only messages the peer received and verified by checksum; `vs pipe` is the
    /// ratio to the pipe measured in the same run.
    Bench(bench::BenchArgs),
    /// List shmlane segments (POSIX and System V): kind, capacity, fill, endpoints.
    ///
    /// Like `ipcs -m`, for shmlane. Each segment is opened read-only and nothing in it is
    /// changed. Segments of other programs, of another shmlane version or layout, empty or
    /// half-created ones, and System V segments already removed but still attached are
    /// left out unless --all. STATUS is `ok`, `stale` (every endpoint dead or closed:
    /// `shmlane clean` removes it), or what is wrong with it (see `shmlane inspect`).
    Ls(ls::LsArgs),
    /// Show everything about one segment: header, positions, waiters, endpoints, validity.
    ///
    /// NAME is `/name` (a POSIX segment first, then the System V segment keyed by the name,
    /// as `open` does) or `shmid:ID` (a System V segment by id, as in `ipcs -m`). Works on
    /// damaged and foreign segments too: it shows what it can read, read-only. Exit status:
    /// 0 if the segment is a valid shmlane segment, 2 if it was read but is not valid
    /// (foreign, damaged, another version, not initialised), 1 if it could not be read
    /// (not found, permission denied).
    Inspect(inspect::InspectArgs),
    /// Remove segments by name, like `ipcrm`.
    ///
    /// Removes the POSIX segment and the System V segment keyed by each NAME (or
    /// `shmid:ID`), whichever exist, if they are shmlane segments (any version, even
    /// damaged or half-created); another program's segment is refused unless --force.
    /// Processes still attached keep their mapping and go on working: only the name goes,
    /// so nobody new can open it. Exit status 1 if any NAME failed.
    Rm(rm::RmArgs),
    /// Remove your shmlane segments whose endpoints are all dead or closed.
    ///
    /// A segment is stale when every registered endpoint's process has died or closed it
    /// cleanly (the kernel's answer, as the library's), or when no endpoint ever registered
    /// and it is more than a minute old. Only segments of this shmlane version and layout,
    /// owned by the user running it, made without `persist(true)` (unless
    /// --include-persistent), and not `pending` (messages a creator left for a reader) are
    /// considered. Each is looked at again just before it is removed; a process attaching
    /// in between keeps its mapping. Exit status 1 if a removal failed or a NAME does not
    /// exist.
    Clean(clean::CleanArgs),
    /// Carry a byte stream through a shared-memory ring: a pipe between two shells.
    ///
    /// `cmd1 | shmlane cat --to /name` in one shell and `shmlane cat --from /name | cmd2`
    /// in another. --to creates the ring (or opens it if it exists) and sends stdin;
    /// --from waits for the name to appear, then writes what arrives to stdout and exits 0
    /// once the sender has finished and everything is read. The side that created the ring
    /// removes its name at the end, once a reader has attached. If the other side goes
    /// away (a reader's stdout closed, `| head`), the remaining side exits quietly with
    /// status 141, like a pipe writer killed by SIGPIPE. Errors are printed as
    /// `shmlane: <message>` with status 1.
    Cat(cat::CatArgs),
    /// Internal: the peer process of `bench`.
    #[command(hide = true, name = "__peer")]
    Peer {
        /// key=value words.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `4096`, `64K`, `1M`, `2G` (powers of 1024; `KiB`, `MiB`, `GiB` too).
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 4096, 64K, 1M)"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit (use K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Bench(a) => bench::run_bench(a),
        Cmd::Peer { args } => shmlane_bench::runner::peer_main(&args).map_err(|e| e.to_string()),
        Cmd::Ls(a) => return ls::ls(&a),
        Cmd::Inspect(a) => return inspect::inspect(&a),
        Cmd::Rm(a) => return rm::rm(&a),
        Cmd::Clean(a) => return clean::clean(&a),
        Cmd::Cat(a) => return cat::cat(&a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmlane: {e}");
            ExitCode::FAILURE
        }
    }
}
