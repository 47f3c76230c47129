//! Asymmetric memory barriers with `membarrier(2)`.
//!
//! The wake protocol is a Dekker pattern: the waker stores its position then loads the
//! waiter count; the sleeper stores the count then loads the position. Each side needs a
//! StoreLoad barrier between the two, and on x86 a full fence right after a store to a
//! contended cache line stalls until that line arrives: the waker would pay a cross-core
//! round trip on every message. `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` lets the
//! rare side (the sleeper, about to make a system call anyway) pay for both: it forces a
//! full barrier on every CPU running a registered process, so the frequent side (the
//! waker) needs only a compiler barrier. Processes register once; where the kernel or a
//! seccomp filter refuses, both sides keep full fences.

use std::sync::atomic::{AtomicU8, Ordering};

const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

/// 0: not tried yet; 1: registered (light barriers allowed); 2: unavailable.
static STATE: AtomicU8 = AtomicU8::new(0);

fn membarrier(cmd: libc::c_int) -> bool {
    // SAFETY: membarrier takes plain integers and touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
}

/// Registers this process for expedited global barriers (once) and says whether its
/// wakers may use light barriers. `SHMLANE_NO_MEMBARRIER=1` turns this off.
pub(crate) fn register() -> bool {
    match STATE.load(Ordering::Acquire) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let ok = std::env::var_os("SHMLANE_NO_MEMBARRIER").is_none()
        && !cfg!(loom)
        && membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED);
    STATE.store(if ok { 1 } else { 2 }, Ordering::Release);
    ok
}

/// Whether this process's wakers use light barriers.
#[inline]
pub(crate) fn light() -> bool {
    STATE.load(Ordering::Relaxed) == 1
}

/// The sleeper's heavy barrier: a full barrier on every CPU that runs a registered
/// process. Returns false if the kernel refused (then light wakers cannot be trusted
/// and the caller must sleep only briefly).
pub(crate) fn heavy() -> bool {
    membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)
}
