//! The segment format and the few engine internals the tools beside the library need:
//! the `shmlane` CLI (`shmlane-cli`), the benchmark's baselines (`shmlane-bench`), the
//! fuzz harness (`shmlane-fuzz`) and the integration tests. Hidden from the docs and not
//! part of the stable API: a user of the library never needs it.
//!
//! - the header: [`Header`] (every field's offset via `memoffset::offset_of!`), its
//!   constants ([`MAGIC`], [`VERSION`], [`HEADER_SIZE`], [`STATE_READY`],
//!   [`MAX_ENDPOINTS`]), [`layout_hash`], the registry ([`Endpoint`], [`EP_ATTACHED`],
//!   the SPSC roles [`SPSC_PRODUCER`], [`SPSC_CONSUMER`]);
//! - validation: [`validate`] of a [`Snapshot`] against a [`NameCheck`], the same
//!   function every opener runs;
//! - segments: [`Segment`] (create, open, read-only looks, removal), [`validate_name`],
//!   [`sysv_key`];
//! - record sizes: [`record_size`], [`RECORD_HEADER`], [`RECORD_ALIGN`], [`SLOT_HEADER`],
//!   [`SLOT_ALIGN`];
//! - process identity: [`process_alive`], [`self_start_time`];
//! - [`copy_bytes`], the ring's payload copy (benchmarked by `benches/copy.rs`);
//! - the broadcast data area's layout ([`broadcast`]: control block, cursor slots, the
//!   record ring), for the corrupt-segment fuzz target.

pub use crate::ring::copy::{copy_bytes, VECTOR_COPY_MIN};
pub use crate::segment::header::{
    layout_hash, process_alive, self_start_time, Endpoint, Header, EP_ATTACHED, HEADER_SIZE, MAGIC,
    MAX_ENDPOINTS, SPSC_CONSUMER, SPSC_PRODUCER, STATE_READY, VERSION,
};
pub use crate::segment::layout::{
    record_size, RECORD_ALIGN, RECORD_HEADER, SLOT_ALIGN, SLOT_HEADER,
};
pub use crate::segment::validate::{validate, NameCheck, Snapshot};
pub use crate::segment::{sysv_key, validate_name, Segment};
pub use crate::Kind;

/// The broadcast ring's data-area layout (see `ring::broadcast`'s module docs): the
/// control block (`write_pos`, `frontier`, `tail`, `attach_epoch`) at offset 0 of the data
/// area, the config block at 128, cursor slot `k` at `CONTROL_SIZE + k * CURSOR_SLOT`, the
/// record ring at `ring_offset(slot_count)`.
pub mod broadcast {
    pub use crate::ring::broadcast::{
        bc_record_size, ring_offset, Config, Control, CursorSlot, BC_ALIGN, BC_HEADER,
        CONTROL_SIZE, CURSOR_NAME_CAP, CURSOR_SLOT, C_ACTIVE, C_DETACHED, C_EVICTED, C_FREE,
        C_LAPPED, OVERFLOW_BLOCK, OVERFLOW_LAP,
    };
}

/// Under loom: waits on the model semaphores that end by a timeout first (see the loom
/// models in `tests/loom.rs`).
#[cfg(loom)]
pub use crate::sync::futex::SPURIOUS_TIMEOUTS;
