//! [`Options`]: how a channel is created.

use crate::error::{Error, Result};
use crate::ring::RECORD_HEADER;
use crate::segment::Backing;
use crate::wait::Wait;

/// The default data capacity of a ring: 1 MiB.
pub const DEFAULT_CAPACITY: usize = 1 << 20;
pub use crate::segment::layout::{MAX_MESSAGE_LIMIT, MIN_CAPACITY};
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
    schema: u32,
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
            schema: 0,
        }
    }

    /// Data bytes of the ring, rounded up to a power of two (at least [`MIN_CAPACITY`]).
    ///
    /// An SPSC ring may get twice that: when a record of `max_message` bytes (an 8-byte
    /// header plus the payload rounded up to 8) takes more than half the ring, the
    /// capacity is doubled, so that the padding before a record that does not fit before
    /// the end of the ring and the record itself always fit in an empty ring (see
    /// [`max_message`](Options::max_message)). `capacity()` of the endpoints reports the
    /// ring's real size.
    pub fn capacity(mut self, bytes: usize) -> Options {
        self.capacity = bytes;
        self
    }

    /// The largest message, in bytes.
    ///
    /// For an SPSC ring it must be at most `capacity / 2` (the capacity after rounding up
    /// to a power of two); the default is the smaller of 64 KiB and `capacity / 2 - 8`.
    /// A record (an 8-byte header plus the payload rounded up to 8 bytes) never wraps: one
    /// that does not fit before the end of the ring is preceded by padding that runs to
    /// the end, and starts again at the beginning. That padding is shorter than the
    /// record, so padding plus a record always fit in an empty ring when a record of
    /// `max_message` bytes takes at most half of it. When it takes more (a `max_message`
    /// above `capacity / 2 - 8`), the capacity is doubled rather than letting `try_send`
    /// report [`Full`](crate::TrySendError::Full) on an empty ring until the consumer has
    /// skipped the padding; ask for at most `capacity / 2 - 8` to keep the capacity you
    /// asked for.
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

    /// The schema version of a typed channel ([`crate::typed`]; default 0), stored in the
    /// segment beside the message type's name, size and alignment. Raise it when the
    /// meaning of a type changes without its name or shape changing: an endpoint that
    /// asks for another schema gets [`Error::TypeMismatch`]. Openers say which schema
    /// they expect with `open_schema`. Untyped channels have none: a non-zero schema
    /// given to an untyped `create` is [`Error::InvalidOptions`].
    pub fn schema(mut self, version: u32) -> Options {
        self.schema = version;
        self
    }

    /// The schema version.
    pub fn get_schema(&self) -> u32 {
        self.schema
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
    ///
    /// The capacity is the one asked for rounded up to a power of two (at least
    /// [`MIN_CAPACITY`]), doubled when a record of `max_message` bytes is more than half
    /// of it: then padding plus a record always fit in an empty ring, which
    /// `Mapped::validate` checks of every SPSC segment it opens.
    pub fn spsc_geometry(&self) -> Result<(usize, usize)> {
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(Error::InvalidOptions {
                reason: format!(
                    "capacity {} is out of range (1 ..= {MAX_CAPACITY} bytes)",
                    self.capacity
                ),
            });
        }
        let capacity = self.capacity.next_power_of_two().max(MIN_CAPACITY);
        // Never more than capacity / 2 - 8, so that the default never doubles the ring.
        let max_message = self
            .max_message
            .unwrap_or_else(|| (capacity / 2 - RECORD_HEADER).min(64 << 10));
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
        let capacity = spsc_capacity_for(capacity, max_message)?;
        self.check_mode()?;
        Ok((capacity, max_message))
    }
}

/// The capacity of an SPSC ring of (power-of-two) `capacity` bytes that carries records of
/// up to `max_message` bytes: `capacity`, or twice that when a record of `max_message`
/// bytes is more than half of it. A record that does not fit before the end of the ring
/// is preceded by padding shorter than itself, so with `2 * record_size(max_message) <=
/// capacity` the padding and the record always fit in an empty ring; otherwise
/// `try_send` could report `Full` on an empty ring until the consumer skipped the padding.
///
/// Only a `max_message` of `capacity / 2 - 7 ..= capacity / 2` needs the doubling, so
/// through [`Options`] (with `max_message <= MAX_MESSAGE_LIMIT`) it never reaches
/// [`MAX_CAPACITY`]; the check is there should those limits change.
fn spsc_capacity_for(capacity: usize, max_message: usize) -> Result<usize> {
    debug_assert!(capacity.is_power_of_two());
    let record = crate::ring::record_size(max_message);
    if record <= capacity / 2 {
        return Ok(capacity);
    }
    match capacity.checked_mul(2) {
        Some(doubled) if doubled <= MAX_CAPACITY => Ok(doubled),
        _ => Err(Error::InvalidOptions {
            reason: format!(
                "a record of max_message {max_message} bytes ({record} with its header and padding) is more than half of capacity {capacity}, and twice that capacity is over the limit of {MAX_CAPACITY} bytes; lower max_message to at most {}",
                capacity / 2 - RECORD_HEADER
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::record_size;

    fn spsc(capacity: usize, max_message: Option<usize>) -> Result<(usize, usize)> {
        let mut o = Options::new().capacity(capacity);
        if let Some(m) = max_message {
            o = o.max_message(m);
        }
        o.spsc_geometry()
    }

    fn invalid(r: Result<(usize, usize)>) -> String {
        match r {
            Err(Error::InvalidOptions { reason }) => reason,
            other => panic!("expected InvalidOptions, got {other:?}"),
        }
    }

    #[test]
    fn default_max_message_never_doubles_the_capacity() {
        assert_eq!(spsc(DEFAULT_CAPACITY, None).unwrap(), (1 << 20, 64 << 10));
        assert_eq!(spsc(4 << 20, None).unwrap(), (4 << 20, 64 << 10));
        // 64 KiB + 8 would be more than half of 128 KiB: the default stays below.
        assert_eq!(spsc(128 << 10, None).unwrap(), (128 << 10, (64 << 10) - 8));
        assert_eq!(spsc(256 << 10, None).unwrap(), (256 << 10, 64 << 10));
        assert_eq!(spsc(4096, None).unwrap(), (4096, 2040));
        assert_eq!(spsc(3000, None).unwrap(), (4096, 2040));
        assert_eq!(spsc(1, None).unwrap(), (MIN_CAPACITY, 24));
        for shift in 0..=40 {
            let (cap, max) = spsc(1 << shift, None).unwrap();
            assert_eq!(
                cap,
                (1usize << shift).max(MIN_CAPACITY),
                "capacity 1 << {shift}"
            );
            assert!(2 * record_size(max) <= cap, "capacity 1 << {shift}");
        }
    }

    #[test]
    fn max_message_of_more_than_half_a_record_doubles_the_capacity() {
        // A record of max_message bytes is exactly half the ring: no doubling.
        assert_eq!(spsc(256, Some(120)).unwrap(), (256, 120));
        assert_eq!(spsc(256, Some(113)).unwrap(), (256, 113));
        // More than half (padding and record could exceed the ring): doubled.
        for max in 121..=128 {
            assert_eq!(spsc(256, Some(max)).unwrap(), (512, max), "max {max}");
        }
        assert_eq!(spsc(200, Some(128)).unwrap(), (512, 128));
        assert_eq!(spsc(64, Some(32)).unwrap(), (128, 32));
        assert_eq!(spsc(4096, Some(2048)).unwrap(), (8192, 2048));
        assert_eq!(spsc(4096, Some(2040)).unwrap(), (4096, 2040));
        assert_eq!(
            spsc(128 << 10, Some(64 << 10)).unwrap(),
            (256 << 10, 64 << 10)
        );
        // The largest message any ring takes.
        assert_eq!(
            spsc(1 << 32, Some(MAX_MESSAGE_LIMIT)).unwrap(),
            (1 << 33, MAX_MESSAGE_LIMIT)
        );
        // Every accepted geometry: padding plus a record fit in the ring.
        for cap in [64usize, 128, 256, 4096] {
            for max in 0..=cap / 2 {
                let (c, m) = spsc(cap, Some(max)).unwrap();
                assert_eq!(m, max);
                assert!(c == cap || c == 2 * cap, "{cap}/{max}: {c}");
                assert!(2 * record_size(m) <= c, "{cap}/{max}: {c}");
                assert_eq!(c == 2 * cap, 2 * record_size(max) > cap, "{cap}/{max}");
            }
        }
    }

    #[test]
    fn max_message_over_half_the_capacity_stays_an_error() {
        let why = invalid(spsc(256, Some(129)));
        assert!(why.contains("larger than capacity / 2 = 128"), "{why}");
        invalid(spsc(4096, Some(2049)));
        invalid(spsc(3000, Some(2049)));
        invalid(spsc(1 << 40, Some(MAX_MESSAGE_LIMIT + 1)));
        invalid(spsc(0, None));
        invalid(spsc(MAX_CAPACITY + 1, None));
    }

    #[test]
    fn doubling_past_max_capacity_is_an_error() {
        assert_eq!(
            spsc_capacity_for(MAX_CAPACITY, MAX_CAPACITY / 2 - 8).unwrap(),
            MAX_CAPACITY
        );
        assert_eq!(
            spsc_capacity_for(MAX_CAPACITY / 2, MAX_CAPACITY / 4).unwrap(),
            MAX_CAPACITY
        );
        let why = invalid(spsc_capacity_for(MAX_CAPACITY, MAX_CAPACITY / 2).map(|c| (c, 0)));
        assert!(why.contains("over the limit"), "{why}");
        assert!(
            why.contains(&format!("at most {}", MAX_CAPACITY / 2 - 8)),
            "{why}"
        );
        invalid(spsc_capacity_for(1 << 63, 1 << 62).map(|c| (c, 0)));
    }
}
