//! Copying payloads into the ring without glibc's slow case.
//!
//! glibc's `memcpy` uses `rep movsb` for large copies, and on some AMD EPYC parts that
//! runs at ~3 GB/s instead of ~80 GB/s when `dst - src` is a small non-zero value modulo
//! 4096 (measured here: 3.3 GB/s at 8 bytes apart, 4 KiB copies). A ring's record offsets
//! move by `len + 8` per message, so every distance comes up. For large payloads this
//! module copies with 32-byte AVX2 loads and stores instead, which run at full speed at
//! every distance; small payloads and machines without AVX2 use `memcpy`.

#[allow(clippy::disallowed_types)] // a process-local cache of a CPU feature
use std::sync::atomic::{AtomicU8, Ordering};

/// Payloads of at least this many bytes take the vector loop.
pub const VECTOR_COPY_MIN: usize = 1024;

/// 0 unknown, 1 AVX2 available, 2 not.
#[allow(clippy::disallowed_types)] // process-local
static AVX2: AtomicU8 = AtomicU8::new(0);

#[inline]
fn has_avx2() -> bool {
    match AVX2.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            #[cfg(target_arch = "x86_64")]
            let yes = std::arch::is_x86_feature_detected!("avx2");
            #[cfg(not(target_arch = "x86_64"))]
            let yes = false;
            AVX2.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Copies `src` into `dst` (same length), fast at every relative alignment.
///
/// # Panics
/// If the lengths differ (like `copy_from_slice`).
#[inline]
pub fn copy_bytes(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_bytes: lengths differ");
    // SAFETY: both slices are valid for `src.len()` bytes and cannot overlap (one is
    // borrowed mutably).
    unsafe { copy_raw(src.as_ptr(), dst.as_mut_ptr(), src.len()) }
}

/// [`copy_bytes`] from a raw source: for a broadcast subscriber, whose source bytes the
/// publisher may be overwriting meanwhile (the copy is validated afterwards and thrown
/// away if so, so no reference to those bytes may exist).
///
/// # Safety
/// `src` valid for reads and `dst` for writes of `len` bytes; they do not overlap.
#[inline]
pub(crate) unsafe fn copy_raw(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if len >= VECTOR_COPY_MIN && has_avx2() {
        // SAFETY: AVX2 is available (checked above); the pointers are valid and do not
        // overlap (the caller's contract).
        unsafe { copy_avx2(dst, src, len) };
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
}

/// # Safety
/// AVX2 must be available; `dst` and `src` valid for `len` bytes, not overlapping.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_avx2(dst: *mut u8, src: *const u8, len: usize) {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_storeu_si256};
    let mut i = 0;
    while i + 128 <= len {
        // SAFETY: i + 128 <= len, so every 32-byte access is in bounds; loadu/storeu take
        // unaligned addresses.
        unsafe {
            let a = _mm256_loadu_si256(src.add(i).cast::<__m256i>());
            let b = _mm256_loadu_si256(src.add(i + 32).cast::<__m256i>());
            let c = _mm256_loadu_si256(src.add(i + 64).cast::<__m256i>());
            let d = _mm256_loadu_si256(src.add(i + 96).cast::<__m256i>());
            _mm256_storeu_si256(dst.add(i).cast::<__m256i>(), a);
            _mm256_storeu_si256(dst.add(i + 32).cast::<__m256i>(), b);
            _mm256_storeu_si256(dst.add(i + 64).cast::<__m256i>(), c);
            _mm256_storeu_si256(dst.add(i + 96).cast::<__m256i>(), d);
        }
        i += 128;
    }
    while i + 32 <= len {
        // SAFETY: as above, for one 32-byte block.
        unsafe {
            let a = _mm256_loadu_si256(src.add(i).cast::<__m256i>());
            _mm256_storeu_si256(dst.add(i).cast::<__m256i>(), a);
        }
        i += 32;
    }
    // SAFETY: the remaining `len - i < 32` bytes are in bounds of both buffers.
    unsafe { std::ptr::copy_nonoverlapping(src.add(i), dst.add(i), len - i) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_length_and_alignment() {
        let src: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [
            0, 1, 31, 32, 33, 127, 128, 129, 1023, 1024, 1025, 4096, 4099,
        ] {
            for off in [0, 1, 8, 17] {
                let mut dst = vec![0u8; len + 64];
                copy_bytes(&mut dst[off..off + len], &src[3..3 + len]);
                assert_eq!(
                    &dst[off..off + len],
                    &src[3..3 + len],
                    "len {len} off {off}"
                );
                assert!(dst[..off].iter().all(|&b| b == 0));
                assert!(dst[off + len..].iter().all(|&b| b == 0));
            }
        }
    }
}
