//! `cargo +nightly fuzz run broadcast_ops`: see `shmlane_fuzz::broadcast_ops`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shmlane_fuzz::broadcast_ops(data);
});
