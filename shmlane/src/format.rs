//! The segment format and the few engine internals the tools beside the library need:
//! the `shmlane` CLI (`shmlane-cli`), the benchmark's baselines (`shmlane-bench`), the
//! fuzz harness (`shmlane-fuzz`) and the integration tests. Hidden from the docs and not
//! part of the stable API: a user of the library never needs it.
//!
//! - the header: [`Header`] (every field's offset via `memoffset::offset_of!`), its
//!   constants ([`MAGIC`], [`VERSION`], [`HEADER_SIZE`], ...), [`layout_hash`], the
//!   registry word helpers ([`split_word`], [`make_word`], `EP_*`, `ROLE_*`);
//! - validation: `Mapped`, `Invalid`, `Geometry`, the geometry checks;
//! - segments: [`Segment`] (create, open, read-only opens, removal), [`validate_name`],
//!   [`sysv_key`];
//! - record sizes: [`record_size`], [`RECORD_HEADER`], [`SLOT_HEADER`];
//! - process identity: [`process_alive`], [`self_start_time`], [`proc_stat`];
//! - [`copy_bytes`], the ring's payload copy (benchmarked by `benches/copy.rs`).

pub use crate::ring::copy::{copy_bytes, VECTOR_COPY_MIN};
pub use crate::ring::{record_size, RECORD_ALIGN, RECORD_HEADER, SLOT_ALIGN, SLOT_HEADER};
pub use crate::segment::header::*;
pub use crate::segment::{sysv_key, validate_name, Segment};
