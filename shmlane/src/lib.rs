//! # shmlane
//!
//! Zero-copy, lock-free ring buffers in shared memory, carrying messages between
//! processes on one Linux machine, much faster than a pipe or a socket.
//!
//! A channel is a named shared-memory segment (POSIX `shm_open` or System V `shmget`)
//! holding a header and a ring. Atomics guard the ring; a process-shared semaphore in the
//! header (a count and a futex) wakes a peer only when it actually sleeps, so under load no
//! system call is made per message.
//!
//! ```no_run
//! use std::time::Duration;
//! use shmlane::{Options, Backing, Wait, Error};
//! use shmlane::spsc::{Producer, Consumer, WriteGrant, ReadGuard};
//! # fn main() -> Result<(), Error> {
//! let opts = Options::new()            // defaults: 1 MiB capacity, Posix, 0o600, Wait::Block
//!     .capacity(1 << 20)               // data bytes, rounded up to a power of two
//!     .max_message(64 << 10)           // <= capacity / 2 (over capacity / 2 - 8 doubles it)
//!     .backing(Backing::Posix)         // or Backing::SysV
//!     .wait(Wait::Block);
//! let mut tx = Producer::create("/demo", &opts)?;
//! let mut rx = Consumer::open("/demo")?;           // usually another process
//! tx.send(b"hello")?;
//! tx.send_tagged(7, b"hello")?;
//! let mut g: WriteGrant = tx.reserve(4096)?;        // zero-copy: &mut [u8] inside the ring
//! g.copy_from_slice(&[0u8; 4096]); g.set_tag(3); g.commit();
//! let m: ReadGuard = rx.recv()?;                    // Deref<Target = [u8]>, released on drop
//! assert_eq!(&m[..], b"hello");
//! drop(m);
//! let m = rx.recv_timeout(Duration::from_millis(5))?;
//! assert_eq!(m.tag(), 7);
//! # Ok(()) }
//! ```
//!
//! Shared memory is untrusted input: every value read from a segment is range-checked
//! before it is used, and a bad one is [`Error::Corrupt`], never undefined behaviour.
//!
//! ## What a reader may rely on when a peer misbehaves
//!
//! - **Positions, lengths, tags, stamps and header fields** are read once, checked, and
//!   only then used: a `ReadGuard` always covers bytes inside the segment, of a length
//!   within `max_message`, so no peer can make a reader touch memory outside the ring.
//! - **Payload bytes are the ring's.** A `ReadGuard`'s `&[u8]` (and a `WriteGrant`'s
//!   `&mut [u8]`) points into shared memory that a buggy or hostile process mapping the
//!   same segment can write at any time: two reads of the same byte may differ. Readers
//!   that do not trust their peers copy the message out first with
//!   [`spsc::Consumer::recv_into`] / [`mpmc::Receiver::recv_into`], or parse it once.
//! - **A POSIX segment can be shrunk** (`ftruncate`) by any process allowed to write it;
//!   touching the pages past the new end raises `SIGBUS` in every process that maps it.
//!   Only segments made by processes you trust, with a mode that keeps others out
//!   (`Options::mode`, default `0o600`), are safe from that. `shmlane ls`, `inspect` and
//!   `clean` never map a POSIX segment (they read a copy of its header and the file with
//!   `pread`), so a file truncated before or while they look is described, not trusted,
//!   and cannot make them fault.
#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![cfg(target_os = "linux")]

mod channel;
mod error;
#[doc(hidden)]
pub mod format;
pub mod inspect;
pub mod mpmc;
mod options;
pub(crate) mod ring;
pub(crate) mod segment;
pub mod spsc;
mod sync;
#[doc(hidden)]
pub mod testing;
pub mod typed;
pub mod wait;

pub use error::{Error, Result, Role, TryRecvError, TrySendError};
pub use options::{Options, DEFAULT_CAPACITY, MAX_MESSAGE_LIMIT, MIN_CAPACITY};
pub use segment::header::{Kind, PeerState};
pub use segment::Backing;
pub use wait::Wait;
