//! `cargo +nightly fuzz run broadcast_corrupt`: see `shmlane_fuzz::broadcast_corrupt`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shmlane_fuzz::broadcast_corrupt(data);
});
