//! The benchmark behind `shmlane bench`: every way two processes on one Linux machine
//! can carry messages, behind one [`backend::Transport`] interface, measured side by side
//! by a cross-process [`runner`], with the machine's [`floor`] (what shared memory gives
//! with nothing in the way) as the reference.
//!
//! Not the library: users of `shmlane` never compile this crate. The `shmlane` binary
//! (crate `shmlane-cli`) drives it; `benches/` holds the criterion versions.
#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![cfg(target_os = "linux")]

pub mod backend;
pub mod floor;
pub mod runner;

pub use shmlane::{Error, Result};
