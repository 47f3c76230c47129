//! `cargo +nightly fuzz run open_header`: see `shmlane_fuzz::open_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shmlane_fuzz::open_header(data);
});
