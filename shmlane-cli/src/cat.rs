//! `shmlane cat`: carry stdin into a ring (`--to`) or a ring to stdout (`--from`).

use std::fs::File;
use std::io::{self, BufRead, BufWriter, ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use shmlane::format::SPSC_CONSUMER;
use shmlane::inspect::{self};
use shmlane::spsc::{Consumer, Producer};
use shmlane::{Error, Options, TryRecvError};

use clap::Parser;

use crate::util::*;

#[derive(Parser)]
#[command(group(clap::ArgGroup::new("direction").required(true).args(["to", "from"])))]
pub(crate) struct CatArgs {
    /// Send stdin into the ring NAME, creating it if it does not exist.
    #[arg(long, value_name = "NAME")]
    to: Option<String>,
    /// Read the ring NAME to stdout, waiting for it to appear.
    #[arg(long, value_name = "NAME")]
    from: Option<String>,
    /// One message per line: --to sends each line without its newline, --from writes each
    /// message followed by a newline. A line longer than the max message is an error.
    #[arg(long)]
    lines: bool,
    /// Ring capacity in bytes when --to creates it (default 1M; suffixes K, M, G are
    /// powers of 1024; rounded up to a power of two).
    #[arg(long, value_name = "BYTES", conflicts_with = "from", value_parser = crate::parse_size)]
    capacity: Option<usize>,
    /// Largest message when --to creates the ring (default: 64K or capacity / 2 - 8, at
    /// most capacity / 2; above capacity / 2 - 8 the ring gets twice the capacity): stdin
    /// goes in chunks of up to this many bytes.
    #[arg(long, value_name = "BYTES", conflicts_with = "from", value_parser = crate::parse_size)]
    max_message: Option<usize>,
    /// How long --from waits for NAME to appear, and --to for a reader to attach, in
    /// seconds (0: forever).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    wait_for: f64,
}

/// How `cat` ends when it does not succeed.
pub(crate) enum CatError {
    /// The other side went away: exit quietly, as a pipe's writer would.
    PeerGone,
    /// An error to print.
    Msg(String),
}

impl From<Error> for CatError {
    fn from(e: Error) -> CatError {
        match e {
            // The reader went away (closed, or died): like a pipe's writer, stop.
            Error::Disconnected => CatError::PeerGone,
            e => CatError::Msg(cli_message(&e)),
        }
    }
}

/// The writer died before finishing: not the normal end of the stream.
pub(crate) fn writer_died(name: &str) -> CatError {
    CatError::Msg(format!(
        "the writer of {name} died without finishing (killed or crashed); everything it sent is above"
    ))
}

pub(crate) fn cat(a: &CatArgs) -> ExitCode {
    let wait_for = match Duration::try_from_secs_f64(a.wait_for) {
        Ok(d) if d.is_zero() => None,
        Ok(d) => Some(d),
        Err(_) => return fail("--wait-for takes a number of seconds >= 0"),
    };
    // One rule for names on the command line: `/name` or `name`, as `ls` shows them.
    let r = match (&a.to, &a.from) {
        (Some(name), _) => cat_to(&normalize(name), a, wait_for),
        (None, Some(name)) => cat_from(&normalize(name), a.lines, wait_for),
        (None, None) => unreachable!("clap requires --to or --from"),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(CatError::PeerGone) => ExitCode::from(SIGPIPE_STATUS),
        Err(CatError::Msg(m)) => fail(m),
    }
}

/// Whether a reader (the consumer) has attached to the ring, looked up at most every
/// so often; and the deadline for one to come.
pub(crate) struct ReaderWatch<'a> {
    name: &'a str,
    start: Instant,
    limit: Option<Duration>,
    seen: bool,
}

impl ReaderWatch<'_> {
    /// Fails once the deadline has passed with no reader.
    fn check(&mut self) -> Result<(), CatError> {
        if !self.seen {
            self.seen = inspect::inspect(self.name)
                .map(|r| r.endpoints.iter().any(|e| e.index == SPSC_CONSUMER))
                .unwrap_or(false);
        }
        match self.limit {
            Some(limit) if !self.seen && self.start.elapsed() >= limit => {
                Err(CatError::Msg(format!(
                    "no reader attached to {} within {} s (`shmlane cat --from {}` reads it; --wait-for changes the limit)",
                    self.name,
                    limit.as_secs_f64(),
                    self.name
                )))
            }
            _ => Ok(()),
        }
    }

    fn wait_attached(&mut self) -> Result<(), CatError> {
        loop {
            self.check()?;
            if self.seen {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits until `len` bytes fit; while no reader has attached yet, only as long as the
/// deadline allows. (The probe's grant is dropped uncommitted, which sends nothing.)
pub(crate) fn wait_for_room(
    tx: &mut Producer,
    len: usize,
    reader: &mut ReaderWatch,
) -> Result<(), CatError> {
    if reader.seen {
        return Ok(());
    }
    loop {
        match tx.reserve_timeout(len, Duration::from_millis(100)) {
            Ok(_) => return Ok(()),
            Err(Error::Timeout) => reader.check()?,
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) fn stdin_error(e: io::Error) -> CatError {
    CatError::Msg(format!("reading stdin: {e}"))
}

/// Sends stdin in chunks of up to max_message bytes, read straight into the ring.
pub(crate) fn send_chunks(tx: &mut Producer, reader: &mut ReaderWatch) -> Result<(), CatError> {
    // A File on a duplicate of fd 0: reads go straight into the ring, no buffer between.
    let fd = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(stdin_error)?;
    let mut stdin = File::from(fd);
    let max = tx.max_message();
    loop {
        wait_for_room(tx, max, reader)?;
        let mut grant = tx.reserve(max)?;
        let n = loop {
            match stdin.read(&mut grant) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(stdin_error(e)),
            }
        };
        if n == 0 {
            return Ok(()); // EOF; the empty grant is dropped, sending nothing
        }
        grant.truncate(n);
        grant.commit();
    }
}

/// Sends each line of stdin as one message, without its newline.
pub(crate) fn send_lines(tx: &mut Producer, reader: &mut ReaderWatch) -> Result<(), CatError> {
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        if stdin.read_until(b'\n', &mut line).map_err(stdin_error)? == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let max = tx.max_message();
        if line.len() > max {
            return Err(CatError::Msg(format!(
                "a line of {} bytes is longer than this ring's max message of {max} bytes (--max-message raises it when the ring is created)",
                line.len()
            )));
        }
        wait_for_room(tx, line.len(), reader)?;
        tx.send(&line)?;
    }
}

pub(crate) fn cat_to(name: &str, a: &CatArgs, wait_for: Option<Duration>) -> Result<(), CatError> {
    let mut opts = Options::new().capacity(a.capacity.unwrap_or(shmlane::DEFAULT_CAPACITY));
    if let Some(m) = a.max_message {
        opts = opts.max_message(m);
    }
    let (mut tx, created) = match Producer::create(name, &opts) {
        Ok(p) => (p, true),
        Err(Error::AlreadyExists { .. }) => (Producer::open(name)?, false),
        Err(e) => return Err(e.into()),
    };
    let mut reader = ReaderWatch {
        name,
        start: Instant::now(),
        limit: wait_for,
        seen: false,
    };
    let sent = if a.lines {
        send_lines(&mut tx, &mut reader)
    } else {
        send_chunks(&mut tx, &mut reader)
    };
    if created && sent.is_ok() {
        // Like a FIFO's writer, wait for a reader before leaving (an empty stream
        // included), so the reader finds the name.
        reader.wait_attached()?;
    }
    // Publishes what is left and closes the producer: the reader drains the ring, then
    // sees Disconnected. The library removes the name (only this ring's) once nobody
    // needs it: now if the reader is attached, else after a reader drained it.
    drop(tx);
    sent
}

pub(crate) fn stdout_error(e: io::Error) -> CatError {
    if e.kind() == ErrorKind::BrokenPipe {
        CatError::PeerGone
    } else {
        CatError::Msg(format!("writing stdout: {e}"))
    }
}

pub(crate) fn cat_from(
    name: &str,
    lines: bool,
    wait_for: Option<Duration>,
) -> Result<(), CatError> {
    let start = Instant::now();
    let mut rx = loop {
        match Consumer::open(name) {
            Ok(c) => break c,
            Err(e @ (Error::NotFound { .. } | Error::NotReady { .. })) => {
                if let Some(limit) = wait_for.filter(|l| start.elapsed() >= *l) {
                    return Err(CatError::Msg(format!(
                        "{e} (waited {} s)",
                        limit.as_secs_f64()
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let fd = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(stdout_error)?;
    let mut out = BufWriter::with_capacity(64 << 10, File::from(fd));
    let emit = |out: &mut BufWriter<File>, msg: &[u8]| -> Result<(), CatError> {
        out.write_all(msg).map_err(stdout_error)?;
        if lines {
            out.write_all(b"\n").map_err(stdout_error)?;
        }
        Ok(())
    };
    loop {
        let why = match rx.try_recv() {
            Ok(m) => {
                emit(&mut out, &m)?;
                continue;
            }
            Err(why) => why,
        };
        match why {
            TryRecvError::Empty => {
                // About to wait: let what we have go out first.
                out.flush().map_err(stdout_error)?;
                match rx.recv() {
                    Ok(m) => emit(&mut out, &m)?,
                    Err(Error::Disconnected) => break,
                    Err(Error::PeerDied) => {
                        out.flush().map_err(stdout_error)?;
                        return Err(writer_died(name));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            TryRecvError::Disconnected => {
                if matches!(rx.peer(), shmlane::PeerState::Dead(_)) {
                    out.flush().map_err(stdout_error)?;
                    return Err(writer_died(name));
                }
                break;
            }
            e => return Err(Error::from(e).into()),
        }
    }
    out.flush().map_err(stdout_error)
}
