//! `cargo +nightly fuzz run validate_header`: see `shmlane_fuzz::validate_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shmlane_fuzz::validate_header(data);
});
