//! [`Options`]: how a channel is created.

use crate::error::{Error, Result};
use crate::segment::Backing;
use crate::wait::Wait;

/// The default data capacity of a ring: 1 MiB.
pub const DEFAULT_CAPACITY: usize = 1 << 20;
/// The smallest data capacity a ring can have.
pub const MIN_CAPACITY: usize = 64;
/// The largest data capacity a ring can have (1 TiB).
pub const MAX_CAPACITY: usize = 1 << 40;
/// The default slot count of an MPMC ring.
pub const DEFAULT_SLOTS: usize = 1024;
/// The default slot size of an MPMC ring (header included): `max_message` defaults to this
/// minus the 32-byte slot header.
pub const DEFAULT_SLOT_SIZE: usize = 1024;
/// The largest slot count of an MPMC ring.
pub const MAX_SLOTS: usize = 1 << 30;
/// The largest `max_message` of an MPMC ring (16 MiB).
pub const MAX_MPMC_MESSAGE: usize = 16 << 20;
/// The largest `max_message` any ring accepts (record lengths keep their top bit as a flag).
pub const MAX_MESSAGE_LIMIT: usize = (1 << 31) - 1;

/// How to create a channel: capacity, message limit, backing, permissions and wait strategy.
///
/// ```
/// use shmlane::{Options, Backing, Wait};
/// let opts = Options::new()
///     .capacity(1 << 20)
///     .max_message(64 << 10)
///     .backing(Backing::Posix)
///     .wait(Wait::Block);
/// assert_eq!(opts.get_capacity(), 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    capacity: usize,
    max_message: Option<usize>,
    slots: Option<usize>,
    backing: Backing,
    mode: u32,
    wait: Wait,
    persist: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    /// Defaults: 1 MiB capacity, POSIX backing, mode 0o600, [`Wait::Block`], removed by the creator on drop.
    pub fn new() -> Options {
        Options {
            capacity: DEFAULT_CAPACITY,
            max_message: None,
            slots: None,
            backing: Backing::Posix,
            mode: 0o600,
            wait: Wait::Block,
            persist: false,
        }
    }

    /// Data bytes of the ring, rounded up to a power of two.
    pub fn capacity(mut self, bytes: usize) -> Options {
        self.capacity = bytes;
        self
    }

    /// The largest message, in bytes. For an SPSC ring it must be at most `capacity / 2`
    /// (default: the smaller of 64 KiB and `capacity / 2`). A record never wraps: one that
    /// does not fit before the end of the ring is preceded by padding, and with a message
    /// within 8 bytes of `capacity / 2` the producer may have to wait for the consumer to
    /// skip that padding even when the ring is otherwise empty.
    pub fn max_message(mut self, bytes: usize) -> Options {
        self.max_message = Some(bytes);
        self
    }

    /// The number of slots of an MPMC ring, rounded up to a power of two, at least 2
    /// (default 1024).
    /// An MPMC ring's `max_message` defaults to 992 bytes (1 KiB slots).
    pub fn slots(mut self, count: usize) -> Options {
        self.slots = Some(count);
        self
    }

    /// Where the segment lives: POSIX `shm_open` (default) or System V `shmget`.
    pub fn backing(mut self, backing: Backing) -> Options {
        self.backing = backing;
        self
    }

    /// Permission bits of the segment (default `0o600`: only the creating user).
    pub fn mode(mut self, mode: u32) -> Options {
        self.mode = mode;
        self
    }

    /// The wait strategy stored in the segment, used by both ends unless they override it
    /// with `set_wait`.
    pub fn wait(mut self, wait: Wait) -> Options {
        self.wait = wait;
        self
    }

    /// Keep the segment after the creator drops its endpoint (default `false`: the
    /// creator removes the name on drop; peers already attached keep working).
    pub fn persist(mut self, persist: bool) -> Options {
        self.persist = persist;
        self
    }

    /// The capacity as given (before rounding).
    pub fn get_capacity(&self) -> usize {
        self.capacity
    }

    /// The backing.
    pub fn get_backing(&self) -> Backing {
        self.backing
    }

    /// The permission bits.
    pub fn get_mode(&self) -> u32 {
        self.mode
    }

    /// The wait strategy.
    pub fn get_wait(&self) -> Wait {
        self.wait
    }

    /// Whether the segment outlives its creator.
    pub fn get_persist(&self) -> bool {
        self.persist
    }

    /// The requested slot count, if any.
    pub fn get_slots(&self) -> Option<usize> {
        self.slots
    }

    /// The requested max message, if any.
    pub fn get_max_message(&self) -> Option<usize> {
        self.max_message
    }

    /// Slot count, slot size and max message of an MPMC ring, checked.
    pub(crate) fn mpmc_geometry(&self) -> Result<(usize, usize, usize)> {
        use crate::ring::{SLOT_ALIGN, SLOT_HEADER};
        let slots = self.slots.unwrap_or(DEFAULT_SLOTS);
        if slots == 0 || slots > MAX_SLOTS {
            return Err(Error::InvalidOptions {
                reason: format!("slots {slots} is out of range (1 ..= {MAX_SLOTS})"),
            });
        }
        // At least two: with one slot, "published for position p" (stamp p + 1) and "free
        // for position p + 1" (stamp p + count) would be the same stamp.
        let slots = slots.next_power_of_two().max(2);
        let max_message = self.max_message.unwrap_or(DEFAULT_SLOT_SIZE - SLOT_HEADER);
        if max_message > MAX_MPMC_MESSAGE {
            return Err(Error::InvalidOptions {
                reason: format!(
                    "max_message {max_message} is over the MPMC limit of {MAX_MPMC_MESSAGE} bytes (every slot is that large; use an SPSC ring for big messages)"
                ),
            });
        }
        let slot_size = (SLOT_HEADER + max_message).div_ceil(SLOT_ALIGN) * SLOT_ALIGN;
        if slots.saturating_mul(slot_size) > MAX_CAPACITY {
            return Err(Error::InvalidOptions {
                reason: format!(
                    "{slots} slots of {slot_size} bytes are more than {MAX_CAPACITY} bytes"
                ),
            });
        }
        self.check_mode()?;
        Ok((slots, slot_size, max_message))
    }

    fn check_mode(&self) -> Result<()> {
        if self.mode & !0o777 != 0 {
            return Err(Error::InvalidOptions {
                reason: format!("mode {:#o} has bits other than 0o777", self.mode),
            });
        }
        Ok(())
    }

    /// Capacity and max message of an SPSC ring, checked: `(capacity, max_message)`.
    pub(crate) fn spsc_geometry(&self) -> Result<(usize, usize)> {
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(Error::InvalidOptions {
                reason: format!(
                    "capacity {} is out of range (1 ..= {MAX_CAPACITY} bytes)",
                    self.capacity
                ),
            });
        }
        let capacity = self.capacity.next_power_of_two().max(MIN_CAPACITY);
        let max_message = self
            .max_message
            .unwrap_or_else(|| (capacity / 2).min(64 << 10));
        if max_message > capacity / 2 {
            return Err(Error::InvalidOptions {
                reason: format!(
                    "max_message {max_message} is larger than capacity / 2 = {} (capacity {capacity}); raise the capacity or lower max_message",
                    capacity / 2
                ),
            });
        }
        if max_message > MAX_MESSAGE_LIMIT {
            return Err(Error::InvalidOptions {
                reason: format!("max_message {max_message} is over the limit {MAX_MESSAGE_LIMIT}"),
            });
        }
        self.check_mode()?;
        Ok((capacity, max_message))
    }
}
