//! `cargo +nightly fuzz run spsc_ops`: see `shmlane_fuzz::spsc_ops`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shmlane_fuzz::spsc_ops(data);
});
