//! `cargo +nightly fuzz run corrupt_consume`: see `shmlane_fuzz::corrupt_consume`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shmlane_fuzz::corrupt_consume(data);
});
