//! `cargo +nightly fuzz run corrupt_consume_mpmc`: see `shmlane_fuzz::corrupt_consume_mpmc`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shmlane_fuzz::corrupt_consume_mpmc(data);
});
