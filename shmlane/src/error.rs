//! The one error type of shmlane, and the small error types of the `try_*` calls.

use std::fmt;
use std::io;

/// Which side of a channel an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The side that writes messages (`Producer`, `Sender`).
    Producer,
    /// The side that reads messages (`Consumer`, `Receiver`).
    Consumer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        })
    }
}

/// Everything that can go wrong in shmlane.
///
/// Each variant names one thing a user can act on, and its message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `create` was asked for a name that already exists.
    #[error("shared-memory segment {name} already exists; open it with `open`, use `create_or_open` (SPSC), or remove it (`shmlane rm {name}`)")]
    AlreadyExists {
        /// The segment name.
        name: String,
    },
    /// `open` was asked for a name that does not exist (under either backing).
    #[error("no shared-memory segment named {name} (looked for a POSIX segment in /dev/shm and a System V segment with key {key:#010x}); create it first")]
    NotFound {
        /// The segment name.
        name: String,
        /// The System V key derived from the name.
        key: i32,
    },
    /// The operating system refused access to the segment.
    #[error("permission denied for shared-memory segment {name}: it belongs to another user or its mode does not allow it (see `Options::mode`)")]
    PermissionDenied {
        /// The segment name.
        name: String,
    },
    /// There is not enough shared memory to create the segment.
    #[error("not enough shared memory to create {name}: it needs {needed} bytes ({what}); free space in /dev/shm, raise the limit, or ask for a smaller capacity")]
    NoSpace {
        /// The segment name.
        name: String,
        /// The bytes the segment needs.
        needed: u64,
        /// What ran out (a tmpfs, the System V limits, ...).
        what: String,
    },
    /// The name does not follow the rules.
    #[error("invalid segment name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The options are inconsistent.
    #[error("invalid options: {reason}")]
    InvalidOptions {
        /// What is wrong with them.
        reason: String,
    },
    /// The segment exists but was not made by shmlane (bad magic).
    #[error("{name} is not a shmlane segment (its first bytes are not the shmlane magic); it belongs to another program, leave it alone")]
    NotShmlane {
        /// The segment name.
        name: String,
    },
    /// The segment is shorter than its header says (or than a header).
    #[error("segment {name} is truncated: it is {len} bytes, but needs {expected}; it was damaged or resized by another process, remove and recreate it")]
    Truncated {
        /// The segment name.
        name: String,
        /// The size found.
        len: u64,
        /// The size needed.
        expected: u64,
    },
    /// The segment was made by another version of the format.
    #[error("segment {name} has format version {found}, this build of shmlane speaks version {expected}; use the same shmlane version on both sides")]
    VersionMismatch {
        /// The segment name.
        name: String,
        /// The version found in the segment.
        found: u32,
        /// The version this build speaks.
        expected: u32,
    },
    /// The segment was made by a build with another header layout.
    #[error("segment {name} was made by a shmlane build with another memory layout (layout hash {found:#x}, expected {expected:#x}); build both sides from the same shmlane version and target")]
    LayoutMismatch {
        /// The segment name.
        name: String,
        /// The hash found in the segment.
        found: u64,
        /// This build's hash.
        expected: u64,
    },
    /// The segment holds another kind of ring.
    #[error(
        "segment {name} holds a {found} ring, not a {expected} ring; open it with the matching API"
    )]
    KindMismatch {
        /// The segment name.
        name: String,
        /// The kind found.
        found: &'static str,
        /// The kind asked for.
        expected: &'static str,
    },
    /// The channel carries another message type than the endpoint asks for: another type,
    /// size, alignment or schema version, or a typed channel opened by an untyped
    /// endpoint (or the other way round). See `shmlane::typed`.
    #[error("the channel carries {stored}, but this endpoint asks for {asked}; open it with the type (and `Options::schema`) it was created with")]
    TypeMismatch {
        /// What the segment stores, in words (`"my::Tick (24 B, align 8, schema 1)"`, or
        /// `"untyped bytes"`).
        stored: String,
        /// What the endpoint asked for, in the same words.
        asked: String,
    },
    /// The System V key derived from the name belongs to a segment with another name.
    #[error("the System V key {key:#010x} derived from {name} is used by a shmlane segment named {other}; pick another name")]
    KeyCollision {
        /// The name asked for.
        name: String,
        /// The key.
        key: i32,
        /// The name stored in the segment with that key.
        other: String,
    },
    /// The creator has not finished initialising the segment in time.
    #[error("segment {name} is not initialised: its creator did not finish within {waited_ms} ms (it may have crashed while creating it; remove it with `shmlane rm {name}`)")]
    NotReady {
        /// The segment name.
        name: String,
        /// How long we waited.
        waited_ms: u64,
    },
    /// Another live endpoint already holds this role of the channel.
    #[error("the {role} role of {name} is already held by a live process (pid {pid} in its own PID namespace); a channel has one producer and one consumer at a time")]
    RoleTaken {
        /// The pid the holder registered (as its own PID namespace sees it).
        pid: i32,
        /// The segment name.
        name: String,
        /// The role asked for.
        role: Role,
    },
    /// Every endpoint slot of an MPMC segment's registry is held by a live process.
    #[error("all {max} endpoint slots of this channel are held by live processes; close some senders or receivers first")]
    TooManyEndpoints {
        /// The number of slots.
        max: usize,
    },
    /// A message is larger than the segment's `max_message`.
    #[error("message of {len} bytes is larger than this channel's max_message of {max} bytes (set with Options::max_message)")]
    MessageTooLarge {
        /// The message length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The other side closed its end cleanly (dropped it), and nothing more can arrive or
    /// be read: the normal end of a stream.
    #[error("the peer has disconnected (it closed its end)")]
    Disconnected,
    /// The other side's process died without closing its end (killed, crashed): on the
    /// reading side, returned once everything it published has been read; on the writing
    /// side, at once. Not a normal end: the peer may have meant to send more.
    #[error(
        "the peer's process died without closing its end (everything it published has been read)"
    )]
    PeerDied,
    /// A `*_timeout` call ran out of time.
    #[error("timed out")]
    Timeout,
    /// The ring is full (from a `try_*` call).
    #[error("the ring is full; try again later or use a blocking send")]
    Full,
    /// The ring is empty (from a `try_*` call).
    #[error("the ring is empty; try again later or use a blocking recv")]
    Empty,
    /// A value read from shared memory is out of range: the peer is buggy or hostile, or the memory was overwritten.
    #[error("shared memory is corrupt: {what}; the channel cannot be used any more, recreate it")]
    Corrupt {
        /// What was wrong.
        what: String,
    },
    /// An operating-system call failed in a way not covered above.
    #[error("{op} failed: {source}")]
    Io {
        /// The call that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// An [`Error::Corrupt`] saying `what` is wrong.
    pub fn corrupt(what: impl Into<String>) -> Error {
        Error::Corrupt { what: what.into() }
    }

    /// An [`Error::Io`] for the system call `op`.
    pub fn io(op: &'static str, source: impl Into<io::Error>) -> Error {
        Error::Io {
            op,
            source: source.into(),
        }
    }

    /// An [`Error::Io`] for the system call `op` with the thread's last OS error (`errno`).
    pub fn last_os(op: &'static str) -> Error {
        Error::io(op, io::Error::last_os_error())
    }
}

/// A specialised `Result` for shmlane.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a `try_send` / `try_reserve` did not send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError {
    /// There is no room right now.
    #[error("the ring is full")]
    Full,
    /// The consumer has gone: closed, or its process died (`peer()` tells which).
    #[error("the peer has disconnected")]
    Disconnected,
    /// The message is larger than `max_message`.
    #[error("message of {len} bytes is larger than max_message {max}")]
    TooLarge {
        /// The message length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value read from shared memory is out of range.
    #[error("shared memory is corrupt: {what}")]
    Corrupt {
        /// What was wrong.
        what: String,
    },
}

/// Why a `try_recv` returned no message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Nothing is published right now.
    #[error("the ring is empty")]
    Empty,
    /// The producer has gone (closed, or its process died: `peer()` tells which) and
    /// everything it published has been read.
    #[error("the peer has disconnected")]
    Disconnected,
    /// A value read from shared memory is out of range.
    #[error("shared memory is corrupt: {what}")]
    Corrupt {
        /// What was wrong.
        what: String,
    },
}

impl From<TrySendError> for Error {
    fn from(e: TrySendError) -> Error {
        match e {
            TrySendError::Full => Error::Full,
            TrySendError::Disconnected => Error::Disconnected,
            TrySendError::TooLarge { len, max } => Error::MessageTooLarge { len, max },
            TrySendError::Corrupt { what } => Error::Corrupt { what },
        }
    }
}

impl From<TryRecvError> for Error {
    fn from(e: TryRecvError) -> Error {
        match e {
            TryRecvError::Empty => Error::Empty,
            TryRecvError::Disconnected => Error::Disconnected,
            TryRecvError::Corrupt { what } => Error::Corrupt { what },
        }
    }
}
