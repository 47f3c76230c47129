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
#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![cfg(target_os = "linux")]

pub mod backend;
pub mod bench;
mod channel;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod inspect;
pub mod mpmc;
mod options;
pub mod ring;
pub mod segment;
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
