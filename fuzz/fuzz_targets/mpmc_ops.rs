//! `cargo +nightly fuzz run mpmc_ops`: see `shmlane_fuzz::mpmc_ops`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shmlane_fuzz::mpmc_ops(data);
});
