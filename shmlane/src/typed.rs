//! Typed messages: send a struct, read it in place.
//!
//! The typed endpoints wrap the byte endpoints ([`Producer`]/[`Consumer`] over
//! [`spsc`], [`Sender`]/[`Receiver`] over [`mpmc`]) and carry
//! values of one type `T`. A [`ReadGuard<T>`](ReadGuard) derefs to a `&T` that lies in the
//! ring (no copy); [`Consumer::recv_copy`] copies it out instead.
//!
//! ```no_run
//! use shmlane::typed::{Consumer, Producer};
//! use shmlane::typed::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
//! use shmlane::Options;
//!
//! #[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
//! #[zerocopy(crate = "shmlane::typed::zerocopy")] // derive through shmlane's re-export
//! #[repr(C)]
//! struct Tick {
//!     seq: u64,
//!     price: f64,
//!     qty: u32,
//!     side: u8,
//!     _pad: [u8; 3], // IntoBytes: no hidden padding, so name it
//! }
//!
//! # fn main() -> shmlane::Result<()> {
//! let tick = Tick { seq: 1, price: 101.25, qty: 10, side: b'B', _pad: [0; 3] };
//! let mut tx = Producer::<Tick>::create("/ticks", &Options::new().capacity(1 << 20))?;
//! let mut rx = Consumer::<Tick>::open("/ticks")?; // usually in another process
//!
//! tx.send(&tick)?;                            // also try_send, send_timeout
//! let mut g = tx.reserve()?;                  // WriteGrant<Tick>: a &mut Tick in the ring
//! *g = tick;
//! g.seq = 2;
//! g.commit();
//! tx.send_slice(&[tick, tick, tick])?;        // one message of three Ticks
//!
//! let m = rx.recv()?;                         // ReadGuard<Tick>: a &Tick in the ring
//! assert_eq!(m.seq, 1);
//! drop(m);                                    // releases the space to the producer
//! let t: Tick = rx.recv_copy()?;              // also try_recv, recv_timeout
//! assert_eq!(t.seq, 2);
//! let s = rx.recv_slice()?;                   // ReadGuard<[Tick]>
//! assert_eq!(s.len(), 3);
//! # Ok(()) }
//! ```
//!
//! # Which types
//!
//! `T` must implement zerocopy 0.8's [`FromBytes`], [`IntoBytes`], [`Immutable`] and
//! [`KnownLayout`] (derive them; `#[repr(C)]` or `#[repr(transparent)]`), and be neither
//! zero-sized nor aligned to more than 4096 bytes (both refused at compile time).
//! [`FromBytes`] means every bit pattern is a valid `T`: a buggy or hostile peer can write
//! any bytes into shared memory, and with these bounds that can never make a `bool`,
//! `char`, enum or reference invalid (there are none in a `T`), so reading in place is
//! sound whatever the peer does. The bytes of a message you hold may still change under a
//! hostile peer (it shares the memory); copy it out ([`Consumer::recv_copy`]) when you
//! must check a value and then rely on it.
//!
//! # Deriving through the re-export
//!
//! [`zerocopy`] is re-exported here, so you need not depend on it yourself (and cannot
//! pick a version that clashes). zerocopy's derives name their own crate as `::zerocopy`;
//! tell them where it is with `#[zerocopy(crate = "shmlane::typed::zerocopy")]`, as above.
//! If your crate depends on `zerocopy = "0.8"` directly, the attribute is not needed.
//!
//! # Alignment
//!
//! **A `&T` (or `&[T]`) handed out is always aligned to `align_of::<T>()`.** SPSC records
//! start 8-aligned in a page-aligned data area, so for `align_of::<T>() <= 8` the payload
//! is the value itself (`size_of::<T>()` bytes, `n * size_of::<T>()` for a slice). For a
//! larger alignment each message is `align_of::<T>() - 8` bytes longer, and the value
//! starts at the first offset in the payload that is a multiple of `align_of::<T>()`
//! (mappings are page aligned, so both processes find the same offset). MPMC payloads
//! start 32 bytes into 64-byte aligned slots: the same rule with 32 for 8. Every read
//! checks the length and the alignment (zerocopy's `ref_from_bytes`) before it forms a
//! reference: a wrong length (not one `T`, or not a whole number of them for
//! [`Consumer::recv_slice`]) or a misplaced payload is [`Error::Corrupt`], never
//! undefined behaviour.
//!
//! # Type fingerprint
//!
//! The segment stores the type's fingerprint: a hash of `std::any::type_name::<T>()`,
//! `size_of`, `align_of` and the schema version of [`Options::schema`] (plus up to 128
//! bytes of the name, which `shmlane inspect` shows). Opening it with another type, size,
//! alignment or schema, or a typed channel with an untyped endpoint (or the other way
//! round), is [`Error::TypeMismatch`]. The type name includes the module path, and is not
//! promised to be the same across compiler versions: define the message types in one crate
//! that both programs use, and build them with the same compiler.

use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ops::{Deref, DerefMut, Range};
use std::time::Duration;

pub use zerocopy;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::error::{Error, Result, TryRecvError, TrySendError};
use crate::segment::header::{Fingerprint, PeerState};
use crate::wait::Wait;
use crate::{mpmc, spsc, Options};

/// Where an SPSC payload starts: records are 8-aligned in a page-aligned data area.
const SPSC_BASE: usize = crate::ring::RECORD_ALIGN;
/// Where an MPMC payload starts: `SLOT_HEADER` (32) into a slot of a multiple of
/// `SLOT_ALIGN` (64) bytes, in a page-aligned data area: 32-aligned.
const MPMC_BASE: usize = 1 << (crate::ring::SLOT_HEADER | crate::ring::SLOT_ALIGN).trailing_zeros();

/// Compile-time refusals, checked when an endpoint type is used.
struct Check<T>(PhantomData<T>);

impl<T> Check<T> {
    const OK: () = {
        assert!(
            size_of::<T>() > 0,
            "shmlane::typed: a zero-sized message type carries nothing"
        );
        assert!(
            align_of::<T>() <= 4096,
            "shmlane::typed: message types aligned to more than a page (4096) are not supported"
        );
        assert!(
            size_of::<T>() + align_of::<T>() <= crate::MAX_MESSAGE_LIMIT,
            "shmlane::typed: the message type is larger than any ring carries"
        );
    };
}

/// How values of `T` are laid out in a payload whose start is `base`-aligned. Size and
/// alignment are `T`'s, compile-time constants: the checks on every message divide by
/// them, which costs a shift or a multiply rather than a division.
struct Shape<T> {
    /// Bytes a message has beyond its values, so they can start `align`-aligned.
    extra: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Shape<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Shape<T> {}

impl<T> Shape<T> {
    const SIZE: usize = size_of::<T>();
    const ALIGN: usize = align_of::<T>();

    fn of(base: usize) -> Shape<T> {
        #[allow(clippy::let_unit_value)]
        let () = Check::<T>::OK;
        Shape {
            extra: Self::ALIGN.saturating_sub(base),
            _t: PhantomData,
        }
    }

    /// Payload bytes of a message of `n` values.
    #[inline]
    fn wire_len(&self, n: usize) -> Option<usize> {
        n.checked_mul(Self::SIZE)?.checked_add(self.extra)
    }

    /// The range of the values inside `payload`, a message of `payload.len()` bytes; `one`:
    /// exactly one value, else any whole number of them. The alignment is found from the
    /// payload's address (mappings are page aligned, so both sides agree).
    #[inline]
    fn locate(&self, payload: &[u8], one: bool) -> std::result::Result<Range<usize>, String> {
        match self.range_of(payload, one) {
            Some(r) => Ok(r),
            None => Err(self.why_not(payload, one)),
        }
    }

    /// [`locate`](Self::locate)'s check alone, without building a message: the hot path
    /// of every typed receive.
    #[inline(always)]
    fn range_of(&self, payload: &[u8], one: bool) -> Option<Range<usize>> {
        let len = payload.len();
        let values = len.checked_sub(self.extra)?;
        let whole = if one {
            values == Self::SIZE
        } else {
            values % Self::SIZE == 0
        };
        let skew = (Self::ALIGN - payload.as_ptr() as usize % Self::ALIGN) % Self::ALIGN;
        (whole && skew <= self.extra).then_some(skew..skew + values)
    }

    /// What is wrong with a payload [`range_of`](Self::range_of) refused, in words.
    #[cold]
    #[inline(never)]
    fn why_not(&self, payload: &[u8], one: bool) -> String {
        let len = payload.len();
        let whole = match len.checked_sub(self.extra) {
            Some(v) if one => v == Self::SIZE,
            Some(v) => v % Self::SIZE == 0,
            None => false,
        };
        if !whole {
            if one {
                format!(
                    "typed message of {len} bytes, expected {} (one value of {} bytes{})",
                    Self::SIZE + self.extra,
                    Self::SIZE,
                    self.extra_words()
                )
            } else {
                format!(
                    "typed message of {len} bytes is not a whole number of values of {} bytes{}",
                    Self::SIZE,
                    self.extra_words()
                )
            }
        } else {
            format!(
                "typed payload at a {}-byte boundary cannot hold a value aligned to {} (the ring's slots are misaligned)",
                1usize << (payload.as_ptr() as usize).trailing_zeros().min(12),
                Self::ALIGN
            )
        }
    }

    fn extra_words(&self) -> String {
        if self.extra == 0 {
            String::new()
        } else {
            format!(" plus {} bytes of alignment room", self.extra)
        }
    }

    /// The options of a typed create: `max_message` at least one value (with its
    /// alignment room), set to that when not given and the default is smaller.
    fn options(&self, opts: &Options, default_max: usize) -> Result<Options> {
        let need = Self::SIZE + self.extra;
        match opts.get_max_message() {
            Some(max) if max < need => Err(Error::InvalidOptions {
                reason: format!(
                    "max_message {max} cannot hold one message of {need} bytes ({} bytes of the type{})",
                    Self::SIZE,
                    self.extra_words()
                ),
            }),
            Some(_) => Ok(opts.clone()),
            None if default_max < need => Ok(opts.clone().max_message(need)),
            None => Ok(opts.clone()),
        }
    }
}

/// A typed value in a byte range of a payload: `U` is `T` or `[T]`.
#[inline]
fn view<'a, U: ?Sized + FromBytes + KnownLayout + Immutable>(
    bytes: &'a [u8],
    r: &Range<usize>,
) -> &'a U {
    match bytes.get(r.clone()).map(U::ref_from_bytes) {
        Some(Ok(v)) => v,
        // `locate` checked this very range of these very bytes (same address, same
        // length) when the guard was made.
        _ => unreachable!("typed payload checked when the guard was made"),
    }
}

fn view_mut<'a, T: FromBytes + IntoBytes + KnownLayout>(
    bytes: &'a mut [u8],
    r: &Range<usize>,
) -> &'a mut T {
    match bytes.get_mut(r.clone()).map(T::mut_from_bytes) {
        Some(Ok(v)) => v,
        _ => unreachable!("typed grant checked when it was reserved"),
    }
}

/// Checks that `r` of `bytes` is a valid `U` (alignment and size), as `Corrupt`.
#[inline]
fn verify<U: ?Sized + FromBytes + KnownLayout + Immutable>(
    bytes: &[u8],
    r: &Range<usize>,
) -> std::result::Result<(), String> {
    match bytes.get(r.clone()).map(U::ref_from_bytes) {
        Some(Ok(_)) => Ok(()),
        _ => Err(not_valid::<U>(bytes, r)),
    }
}

/// Whether `r` of `bytes` is a valid `U` (alignment and size): [`verify`] without its
/// message.
#[inline(always)]
fn checks<U: ?Sized + FromBytes + KnownLayout + Immutable>(bytes: &[u8], r: &Range<usize>) -> bool {
    matches!(bytes.get(r.clone()).map(U::ref_from_bytes), Some(Ok(_)))
}

/// A received message that is not a valid `U`: the error, with the guard given back (its
/// space released) off the hot path. Keeping the guard's drop and the message out of the
/// receive path measured 28 -> 60 M msg/s for 64-byte `u64` slices.
#[cold]
#[inline(never)]
fn reject<T, U: ?Sized + FromBytes + KnownLayout + Immutable>(
    held: Held<'_>,
    shape: &Shape<T>,
    one: bool,
) -> Error {
    let why = match shape.locate(held.bytes(), one) {
        Err(why) => why,
        Ok(range) => not_valid::<U>(held.bytes(), &range),
    };
    drop(held);
    Error::corrupt(why)
}

/// [`verify`]'s message, kept off the hot path.
#[cold]
#[inline(never)]
fn not_valid<U: ?Sized>(bytes: &[u8], r: &Range<usize>) -> String {
    format!(
        "typed payload bytes {}..{} of {} are not a valid {}",
        r.start,
        r.end,
        bytes.len(),
        std::any::type_name::<U>()
    )
}

enum Grant<'a> {
    Spsc(spsc::WriteGrant<'a>),
    Mpmc(mpmc::WriteGrant<'a>),
}

impl Grant<'_> {
    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            Grant::Spsc(g) => g,
            Grant::Mpmc(g) => g,
        }
    }

    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Grant::Spsc(g) => &mut *g,
            Grant::Mpmc(g) => &mut *g,
        }
    }

    #[inline]
    fn commit(self) {
        match self {
            Grant::Spsc(g) => g.commit(),
            Grant::Mpmc(g) => g.commit(),
        }
    }
}

/// Room for one `T` inside the ring, from [`Producer::reserve`] or [`Sender::reserve`]:
/// a `&mut T` in shared memory (aligned to `align_of::<T>()`). Write it, then
/// [`commit`](Self::commit); dropping it sends nothing. It starts with whatever bytes
/// the ring held there (a valid `T`, as every bit pattern is).
///
/// ```no_run
/// # use shmlane::typed::Producer;
/// # fn main() -> shmlane::Result<()> {
/// let mut tx = Producer::<[u64; 4]>::create("/grant", &shmlane::Options::new())?;
/// let mut g = tx.reserve()?;
/// *g = [1, 2, 3, 4];
/// g[0] = 7;
/// g.commit();
/// # Ok(()) }
/// ```
pub struct WriteGrant<'a, T> {
    grant: Grant<'a>,
    range: Range<usize>,
    _t: PhantomData<fn(T) -> T>,
}

impl<'a, T: FromBytes + IntoBytes + Immutable + KnownLayout> WriteGrant<'a, T> {
    #[inline]
    fn new(grant: Grant<'a>, shape: &Shape<T>) -> Result<WriteGrant<'a, T>> {
        let range = shape.locate(grant.bytes(), true).map_err(Error::corrupt)?;
        verify::<T>(grant.bytes(), &range).map_err(Error::corrupt)?;
        Ok(WriteGrant {
            grant,
            range,
            _t: PhantomData,
        })
    }

    /// Publishes the value: the reader can read it from now on.
    #[inline]
    pub fn commit(self) {
        self.grant.commit();
    }
}

impl<T: FromBytes + IntoBytes + Immutable + KnownLayout> Deref for WriteGrant<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        view(self.grant.bytes(), &self.range)
    }
}

impl<T: FromBytes + IntoBytes + Immutable + KnownLayout> DerefMut for WriteGrant<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        view_mut(self.grant.bytes_mut(), &self.range)
    }
}

impl<T> std::fmt::Debug for WriteGrant<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteGrant")
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

enum Held<'a> {
    Spsc(spsc::ReadGuard<'a>),
    Mpmc(mpmc::ReadGuard<'a>),
}

impl Held<'_> {
    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            Held::Spsc(g) => g,
            Held::Mpmc(g) => g,
        }
    }
}

/// A message in the ring, from [`Consumer::recv`] (`ReadGuard<T>`) or
/// [`Consumer::recv_slice`] (`ReadGuard<[T]>`), and their [`Receiver`] twins. Derefs to
/// the value in place, aligned to `align_of::<T>()`; the space goes back to the writer
/// when the guard drops.
///
/// ```no_run
/// # use shmlane::typed::Consumer;
/// # fn main() -> shmlane::Result<()> {
/// let mut rx = Consumer::<[u64; 4]>::open("/grant")?;
/// let m = rx.recv()?;
/// println!("{:?}", *m);
/// # Ok(()) }
/// ```
pub struct ReadGuard<'a, U: ?Sized> {
    held: Held<'a>,
    range: Range<usize>,
    _u: PhantomData<fn(&U)>,
}

impl<'a, U: ?Sized + FromBytes + KnownLayout + Immutable> ReadGuard<'a, U> {
    #[inline(always)]
    fn new<T>(held: Held<'a>, shape: &Shape<T>, one: bool) -> Result<ReadGuard<'a, U>> {
        match shape.range_of(held.bytes(), one) {
            Some(range) if checks::<U>(held.bytes(), &range) => Ok(ReadGuard {
                held,
                range,
                _u: PhantomData,
            }),
            _ => Err(reject::<T, U>(held, shape, one)),
        }
    }
}

impl<U: ?Sized + FromBytes + KnownLayout + Immutable> Deref for ReadGuard<'_, U> {
    type Target = U;
    #[inline]
    fn deref(&self) -> &U {
        view(self.held.bytes(), &self.range)
    }
}

impl<U: ?Sized> std::fmt::Debug for ReadGuard<'_, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadGuard")
            .field("type", &std::any::type_name::<U>())
            .field("bytes", &self.range.len())
            .finish()
    }
}

fn try_recv_err(e: Error) -> TryRecvError {
    match e {
        Error::Corrupt { what } => TryRecvError::Corrupt { what },
        // `ReadGuard::new` and `recv_copy` make nothing else.
        other => TryRecvError::Corrupt {
            what: other.to_string(),
        },
    }
}

fn try_send_err(e: Error) -> TrySendError {
    match e {
        Error::Corrupt { what } => TrySendError::Corrupt { what },
        other => TrySendError::Corrupt {
            what: other.to_string(),
        },
    }
}

/// Copies `src` into the grant's value range.
#[inline]
fn fill(grant: &mut Grant<'_>, range: &Range<usize>, src: &[u8]) {
    crate::ring::copy::copy_bytes(&mut grant.bytes_mut()[range.clone()], src);
}

/// The writing end of a typed SPSC channel of `T` (see the [module docs](self)).
///
/// ```no_run
/// use shmlane::typed::Producer;
/// # fn main() -> shmlane::Result<()> {
/// let opts = shmlane::Options::new().capacity(1 << 16).schema(3);
/// let mut tx = Producer::<[f64; 8]>::create("/samples", &opts)?;
/// tx.send(&[0.5; 8])?;
/// tx.send_slice(&[[1.0; 8], [2.0; 8]])?;
/// # Ok(()) }
/// ```
pub struct Producer<T> {
    inner: spsc::Producer,
    shape: Shape<T>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("type", &std::any::type_name::<T>())
            .field("inner", &self.inner)
            .finish()
    }
}

/// The reading end of a typed SPSC channel of `T` (see the [module docs](self)).
///
/// ```no_run
/// use shmlane::typed::Consumer;
/// # fn main() -> shmlane::Result<()> {
/// let mut rx = Consumer::<[f64; 8]>::open_schema("/samples", 3)?;
/// while let Some(m) = rx.recv_or_end()? {
///     println!("{}", m[0]);
/// }
/// # Ok(()) }
/// ```
pub struct Consumer<T> {
    inner: spsc::Consumer,
    shape: Shape<T>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("type", &std::any::type_name::<T>())
            .field("inner", &self.inner)
            .finish()
    }
}

/// The SPSC `max_message` `opts` give (what `Options` would choose), or `usize::MAX`
/// when they are invalid (so none is forced on them, and the create says why).
fn spsc_default_max(opts: &Options) -> usize {
    opts.spsc_geometry()
        .map(|(_, max)| max)
        .unwrap_or(usize::MAX)
}

macro_rules! spsc_constructors {
    ($ty:ident) => {
        impl<T: FromBytes + IntoBytes + Immutable + KnownLayout> $ty<T> {
            fn wrap(inner: spsc::$ty) -> $ty<T> {
                $ty {
                    inner,
                    shape: Shape::<T>::of(SPSC_BASE),
                    _t: PhantomData,
                }
            }

            /// Creates the channel `name` for values of `T`, storing `T`'s fingerprint
            /// and `opts`'s [schema](Options::schema). `max_message` (the largest
            /// [slice](Producer::send_slice), in bytes) defaults as for the byte ring,
            /// and to one value when that is larger; a `max_message` smaller than one
            /// value is [`Error::InvalidOptions`].
            pub fn create(name: &str, opts: &Options) -> Result<$ty<T>> {
                let shape = Shape::<T>::of(SPSC_BASE);
                let opts = shape.options(opts, spsc_default_max(opts))?;
                let fp = Fingerprint::of::<T>(opts.get_schema());
                Ok($ty::wrap(spsc::$ty::create_as(name, &opts, &fp)?))
            }

            /// Opens the existing channel `name`, which must carry `T` with schema 0
            /// (else [`Error::TypeMismatch`]).
            pub fn open(name: &str) -> Result<$ty<T>> {
                $ty::open_schema(name, 0)
            }

            /// Opens the existing channel `name`, which must carry `T` with schema
            /// `schema` (else [`Error::TypeMismatch`]).
            pub fn open_schema(name: &str, schema: u32) -> Result<$ty<T>> {
                let fp = Fingerprint::of::<T>(schema);
                Ok($ty::wrap(spsc::$ty::open_as(name, &fp)?))
            }

            /// Like [`open_schema`](Self::open_schema), waiting up to `timeout` for the
            /// channel to appear and be ready ([`Error::Timeout`] after that).
            pub fn open_timeout(name: &str, schema: u32, timeout: Duration) -> Result<$ty<T>> {
                let fp = Fingerprint::of::<T>(schema);
                Ok($ty::wrap(spsc::$ty::open_timeout_as(name, timeout, &fp)?))
            }

            /// Creates the channel, or opens it if it exists (then it must carry `T`
            /// with `opts`'s schema).
            pub fn create_or_open(name: &str, opts: &Options) -> Result<$ty<T>> {
                let shape = Shape::<T>::of(SPSC_BASE);
                let opts = shape.options(opts, spsc_default_max(opts))?;
                let fp = Fingerprint::of::<T>(opts.get_schema());
                Ok($ty::wrap(spsc::$ty::create_or_open_as(name, &opts, &fp)?))
            }

            /// The segment name.
            pub fn name(&self) -> &str {
                self.inner.name()
            }

            /// Data bytes of the ring.
            pub fn capacity(&self) -> usize {
                self.inner.capacity()
            }

            /// The most values one slice message carries.
            pub fn max_slice_len(&self) -> usize {
                (self.inner.max_message() - self.shape.extra) / size_of::<T>()
            }

            /// The wait strategy of this endpoint.
            pub fn wait(&self) -> Wait {
                self.inner.wait()
            }

            /// Changes the wait strategy of this endpoint only.
            pub fn set_wait(&mut self, wait: Wait) {
                self.inner.set_wait(wait)
            }

            /// What the segment says of the peer (asks the kernel).
            pub fn peer(&self) -> PeerState {
                self.inner.peer()
            }

            /// Whether the peer has gone (closed, or died). Asks the kernel.
            pub fn is_disconnected(&mut self) -> bool {
                self.inner.is_disconnected()
            }
        }
    };
}

spsc_constructors!(Producer);
spsc_constructors!(Consumer);

impl<T: FromBytes + IntoBytes + Immutable + KnownLayout> Producer<T> {
    #[inline]
    fn one_len(&self) -> usize {
        size_of::<T>() + self.shape.extra
    }

    /// Sends a copy of `msg`, waiting while the ring is full.
    ///
    /// Errors: [`Error::Disconnected`] / [`Error::PeerDied`] once the consumer is gone,
    /// [`Error::Corrupt`].
    #[inline]
    pub fn send(&mut self, msg: &T) -> Result<()> {
        let mut g = self.reserve()?;
        fill(&mut g.grant, &g.range, msg.as_bytes());
        g.commit();
        Ok(())
    }

    /// Sends a copy of `msg`, waiting at most `timeout` for room ([`Error::Timeout`]).
    #[inline]
    pub fn send_timeout(&mut self, msg: &T, timeout: Duration) -> Result<()> {
        let len = self.one_len();
        let g = Grant::Spsc(self.inner.reserve_timeout(len, timeout)?);
        let mut g = WriteGrant::<T>::new(g, &self.shape)?;
        fill(&mut g.grant, &g.range, msg.as_bytes());
        g.commit();
        Ok(())
    }

    /// Sends a copy of `msg` if there is room now; never waits.
    #[inline]
    pub fn try_send(&mut self, msg: &T) -> Result<(), TrySendError> {
        let mut g = self.try_reserve()?;
        fill(&mut g.grant, &g.range, msg.as_bytes());
        g.commit();
        Ok(())
    }

    /// Reserves room for one `T` in the ring, waiting while it is full: write it through
    /// the grant, then [`commit`](WriteGrant::commit).
    #[inline]
    pub fn reserve(&mut self) -> Result<WriteGrant<'_, T>> {
        let len = self.one_len();
        let shape = self.shape;
        WriteGrant::new(Grant::Spsc(self.inner.reserve(len)?), &shape)
    }

    /// Reserves room for one `T` if there is room now; never waits.
    #[inline]
    pub fn try_reserve(&mut self) -> Result<WriteGrant<'_, T>, TrySendError> {
        let len = self.one_len();
        let shape = self.shape;
        WriteGrant::new(Grant::Spsc(self.inner.try_reserve(len)?), &shape).map_err(try_send_err)
    }

    /// Sends `msgs` as one message (a sample buffer), waiting while the ring is full;
    /// read it with [`Consumer::recv_slice`]. At most
    /// [`max_slice_len`](Self::max_slice_len) values ([`Error::MessageTooLarge`]).
    #[inline]
    pub fn send_slice(&mut self, msgs: &[T]) -> Result<()> {
        let max = self.inner.max_message();
        let len = self
            .shape
            .wire_len(msgs.len())
            .ok_or(Error::MessageTooLarge {
                len: usize::MAX,
                max,
            })?;
        let mut g = self.inner.reserve(len)?;
        let range = self.shape.locate(&g[..], false).map_err(Error::corrupt)?;
        verify::<[T]>(&g[..], &range).map_err(Error::corrupt)?;
        crate::ring::copy::copy_bytes(&mut g[range], msgs.as_bytes());
        g.commit();
        Ok(())
    }
}

impl<T: FromBytes + IntoBytes + Immutable + KnownLayout> Consumer<T> {
    /// The next value, in place, waiting until one is published. After the producer has
    /// gone: what it published, then [`Error::Disconnected`] (or [`Error::PeerDied`]).
    /// A message that is not exactly one `T` is [`Error::Corrupt`].
    #[inline]
    pub fn recv(&mut self) -> Result<ReadGuard<'_, T>> {
        let shape = self.shape;
        ReadGuard::new(Held::Spsc(self.inner.recv()?), &shape, true)
    }

    /// Like [`recv`](Self::recv), waiting at most `timeout` ([`Error::Timeout`]).
    #[inline]
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<ReadGuard<'_, T>> {
        let shape = self.shape;
        ReadGuard::new(Held::Spsc(self.inner.recv_timeout(timeout)?), &shape, true)
    }

    /// The next value if one is published now; never waits.
    #[inline]
    pub fn try_recv(&mut self) -> Result<ReadGuard<'_, T>, TryRecvError> {
        let shape = self.shape;
        ReadGuard::new(Held::Spsc(self.inner.try_recv()?), &shape, true).map_err(try_recv_err)
    }

    /// The next value, or `Ok(None)` once the producer has closed its end and every
    /// message is read: `while let Some(m) = rx.recv_or_end()? { .. }`.
    pub fn recv_or_end(&mut self) -> Result<Option<ReadGuard<'_, T>>> {
        let shape = self.shape;
        match self.inner.recv_or_end()? {
            Some(g) => ReadGuard::new(Held::Spsc(g), &shape, true).map(Some),
            None => Ok(None),
        }
    }

    /// The next value, copied out of the ring (the space is released at once). Use it
    /// when you must check a value and then rely on it: a hostile peer cannot change a
    /// copy.
    #[inline]
    pub fn recv_copy(&mut self) -> Result<T> {
        let g = self.recv()?;
        T::read_from_bytes(&g.held.bytes()[g.range.clone()])
            .map_err(|_| Error::corrupt("typed payload changed size"))
    }

    /// The next message as a slice of values (from [`Producer::send_slice`]; a message
    /// sent with `send` is a slice of one), in place. A length that is not a whole number
    /// of values is [`Error::Corrupt`].
    #[inline(always)]
    pub fn recv_slice(&mut self) -> Result<ReadGuard<'_, [T]>> {
        let shape = self.shape;
        ReadGuard::new(Held::Spsc(self.inner.recv()?), &shape, false)
    }

    /// Like [`recv_slice`](Self::recv_slice), if a message is published now.
    #[inline]
    pub fn try_recv_slice(&mut self) -> Result<ReadGuard<'_, [T]>, TryRecvError> {
        let shape = self.shape;
        ReadGuard::new(Held::Spsc(self.inner.try_recv()?), &shape, false).map_err(try_recv_err)
    }
}

/// A sending handle of a typed MPMC channel of `T` (see the [module docs](self)). Clone
/// it freely: clones share one registration.
///
/// ```no_run
/// use shmlane::typed::{Receiver, Sender};
/// # fn main() -> shmlane::Result<()> {
/// // One T per slot unless max_message says more (for send_slice).
/// let tx = Sender::<[u32; 16]>::create("/jobs", &shmlane::Options::new().slots(256))?;
/// let rx = Receiver::<[u32; 16]>::open("/jobs")?;
/// tx.send(&[7; 16])?;
/// assert_eq!(rx.recv()?[0], 7);
/// # Ok(()) }
/// ```
pub struct Sender<T> {
    inner: mpmc::Sender,
    shape: Shape<T>,
    _t: PhantomData<fn(T) -> T>,
}

/// A receiving handle of a typed MPMC channel of `T` (see the [module docs](self)).
/// Clone it freely: clones share one registration.
///
/// ```no_run
/// use shmlane::typed::Receiver;
/// # fn main() -> shmlane::Result<()> {
/// let rx = Receiver::<[u32; 16]>::open("/jobs")?;
/// let job: [u32; 16] = rx.recv_copy()?;
/// # let _ = job; Ok(()) }
/// ```
pub struct Receiver<T> {
    inner: mpmc::Receiver,
    shape: Shape<T>,
    _t: PhantomData<fn(T) -> T>,
}

macro_rules! mpmc_constructors {
    ($ty:ident) => {
        impl<T> Clone for $ty<T> {
            fn clone(&self) -> Self {
                $ty {
                    inner: self.inner.clone(),
                    shape: self.shape,
                    _t: PhantomData,
                }
            }
        }

        impl<T> std::fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("type", &std::any::type_name::<T>())
                    .field("inner", &self.inner)
                    .finish()
            }
        }

        impl<T: FromBytes + IntoBytes + Immutable + KnownLayout> $ty<T> {
            fn wrap(inner: mpmc::$ty) -> $ty<T> {
                $ty {
                    inner,
                    shape: Shape::<T>::of(MPMC_BASE),
                    _t: PhantomData,
                }
            }

            /// Creates the channel `name` for values of `T`, storing `T`'s fingerprint
            /// and `opts`'s [schema](Options::schema). `max_message` defaults to one
            /// value (with its alignment room: slots are no larger than they must be);
            /// give a larger one for [slices](Sender::send_slice). A `max_message`
            /// smaller than one value is [`Error::InvalidOptions`].
            pub fn create(name: &str, opts: &Options) -> Result<$ty<T>> {
                let shape = Shape::<T>::of(MPMC_BASE);
                let opts = shape.options(opts, 0)?;
                let fp = Fingerprint::of::<T>(opts.get_schema());
                Ok($ty::wrap(mpmc::$ty::create_as(name, &opts, &fp)?))
            }

            /// Opens the existing channel `name`, which must carry `T` with schema 0
            /// (else [`Error::TypeMismatch`]).
            pub fn open(name: &str) -> Result<$ty<T>> {
                $ty::open_schema(name, 0)
            }

            /// Opens the existing channel `name`, which must carry `T` with schema
            /// `schema` (else [`Error::TypeMismatch`]).
            pub fn open_schema(name: &str, schema: u32) -> Result<$ty<T>> {
                let fp = Fingerprint::of::<T>(schema);
                Ok($ty::wrap(mpmc::$ty::open_as(name, &fp)?))
            }

            /// Like [`open_schema`](Self::open_schema), waiting up to `timeout` for the
            /// channel to appear and be ready ([`Error::Timeout`] after that).
            pub fn open_timeout(name: &str, schema: u32, timeout: Duration) -> Result<$ty<T>> {
                let fp = Fingerprint::of::<T>(schema);
                Ok($ty::wrap(mpmc::$ty::open_timeout_as(name, timeout, &fp)?))
            }

            /// The segment name.
            pub fn name(&self) -> &str {
                self.inner.name()
            }

            /// The number of slots.
            pub fn slots(&self) -> usize {
                self.inner.slots()
            }

            /// The most values one slice message carries.
            pub fn max_slice_len(&self) -> usize {
                (self.inner.max_message() - self.shape.extra) / size_of::<T>()
            }

            /// The wait strategy of this handle and its clones.
            pub fn wait(&self) -> Wait {
                self.inner.wait()
            }

            /// Changes the wait strategy of this handle and its clones.
            pub fn set_wait(&self, wait: Wait) {
                self.inner.set_wait(wait)
            }

            /// Messages published and not yet taken (approximate under contention).
            pub fn len(&self) -> usize {
                self.inner.len()
            }

            /// Whether no message is waiting (approximate under contention).
            pub fn is_empty(&self) -> bool {
                self.inner.is_empty()
            }

            /// Messages lost so far because a process died holding their slot.
            pub fn lost(&self) -> u64 {
                self.inner.lost()
            }

            /// Whether every endpoint of the other side has gone. Asks the kernel.
            pub fn is_disconnected(&self) -> bool {
                self.inner.is_disconnected()
            }
        }
    };
}

mpmc_constructors!(Sender);
mpmc_constructors!(Receiver);

impl<T: FromBytes + IntoBytes + Immutable + KnownLayout> Sender<T> {
    #[inline]
    fn one_len(&self) -> usize {
        size_of::<T>() + self.shape.extra
    }

    /// Sends a copy of `msg`, waiting while the ring is full.
    #[inline]
    pub fn send(&self, msg: &T) -> Result<()> {
        let mut g = self.reserve()?;
        fill(&mut g.grant, &g.range, msg.as_bytes());
        g.commit();
        Ok(())
    }

    /// Sends a copy of `msg`, waiting at most `timeout` for a free slot.
    #[inline]
    pub fn send_timeout(&self, msg: &T, timeout: Duration) -> Result<()> {
        let g = Grant::Mpmc(self.inner.reserve_timeout(self.one_len(), timeout)?);
        let mut g = WriteGrant::<T>::new(g, &self.shape)?;
        fill(&mut g.grant, &g.range, msg.as_bytes());
        g.commit();
        Ok(())
    }

    /// Sends a copy of `msg` if a slot is free now; never waits.
    #[inline]
    pub fn try_send(&self, msg: &T) -> Result<(), TrySendError> {
        let mut g = self.try_reserve()?;
        fill(&mut g.grant, &g.range, msg.as_bytes());
        g.commit();
        Ok(())
    }

    /// Claims a slot for one `T`, waiting while the ring is full: write it through the
    /// grant, then [`commit`](WriteGrant::commit).
    #[inline]
    pub fn reserve(&self) -> Result<WriteGrant<'_, T>> {
        WriteGrant::new(
            Grant::Mpmc(self.inner.reserve(self.one_len())?),
            &self.shape,
        )
    }

    /// Claims a slot for one `T` if one is free now; never waits.
    #[inline]
    pub fn try_reserve(&self) -> Result<WriteGrant<'_, T>, TrySendError> {
        WriteGrant::new(
            Grant::Mpmc(self.inner.try_reserve(self.one_len())?),
            &self.shape,
        )
        .map_err(try_send_err)
    }

    /// Sends `msgs` as one message, waiting while the ring is full; read it with
    /// [`Receiver::recv_slice`]. At most [`max_slice_len`](Self::max_slice_len) values
    /// ([`Error::MessageTooLarge`]; raise `max_message` at create for more).
    #[inline]
    pub fn send_slice(&self, msgs: &[T]) -> Result<()> {
        let max = self.inner.max_message();
        let len = self
            .shape
            .wire_len(msgs.len())
            .ok_or(Error::MessageTooLarge {
                len: usize::MAX,
                max,
            })?;
        let mut g = self.inner.reserve(len)?;
        let range = self.shape.locate(&g[..], false).map_err(Error::corrupt)?;
        verify::<[T]>(&g[..], &range).map_err(Error::corrupt)?;
        crate::ring::copy::copy_bytes(&mut g[range], msgs.as_bytes());
        g.commit();
        Ok(())
    }
}

impl<T: FromBytes + IntoBytes + Immutable + KnownLayout> Receiver<T> {
    /// The next value, in place, waiting until one is published. When every sender has
    /// gone: what they published, then [`Error::Disconnected`] (or [`Error::PeerDied`]).
    /// A message that is not exactly one `T` is [`Error::Corrupt`].
    #[inline]
    pub fn recv(&self) -> Result<ReadGuard<'_, T>> {
        ReadGuard::new(Held::Mpmc(self.inner.recv()?), &self.shape, true)
    }

    /// Like [`recv`](Self::recv), waiting at most `timeout` ([`Error::Timeout`]).
    #[inline]
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ReadGuard<'_, T>> {
        ReadGuard::new(
            Held::Mpmc(self.inner.recv_timeout(timeout)?),
            &self.shape,
            true,
        )
    }

    /// The next value if one is published now; never waits.
    #[inline]
    pub fn try_recv(&self) -> Result<ReadGuard<'_, T>, TryRecvError> {
        ReadGuard::new(Held::Mpmc(self.inner.try_recv()?), &self.shape, true).map_err(try_recv_err)
    }

    /// The next value, or `Ok(None)` once every sender has closed its end and every
    /// message is taken.
    pub fn recv_or_end(&self) -> Result<Option<ReadGuard<'_, T>>> {
        match self.inner.recv_or_end()? {
            Some(g) => ReadGuard::new(Held::Mpmc(g), &self.shape, true).map(Some),
            None => Ok(None),
        }
    }

    /// The next value, copied out of the ring (the slot is released at once).
    #[inline]
    pub fn recv_copy(&self) -> Result<T> {
        let g = self.recv()?;
        T::read_from_bytes(&g.held.bytes()[g.range.clone()])
            .map_err(|_| Error::corrupt("typed payload changed size"))
    }

    /// The next message as a slice of values (from [`Sender::send_slice`]), in place.
    #[inline]
    pub fn recv_slice(&self) -> Result<ReadGuard<'_, [T]>> {
        ReadGuard::new(Held::Mpmc(self.inner.recv()?), &self.shape, false)
    }

    /// Like [`recv_slice`](Self::recv_slice), if a message is published now.
    #[inline]
    pub fn try_recv_slice(&self) -> Result<ReadGuard<'_, [T]>, TryRecvError> {
        ReadGuard::new(Held::Mpmc(self.inner.try_recv()?), &self.shape, false).map_err(try_recv_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(MPMC_BASE, 32);
        assert_eq!(SPSC_BASE, 8);
        let s = Shape::<u64>::of(SPSC_BASE);
        assert_eq!(s.extra, 0);
        #[repr(C, align(64))]
        struct Big([u8; 64]);
        let s = Shape::<Big>::of(SPSC_BASE);
        assert_eq!(s.extra, 56);
        let s = Shape::<Big>::of(MPMC_BASE);
        assert_eq!(s.extra, 32);
        assert_eq!(s.wire_len(2), Some(160));
    }

    #[test]
    fn locate_checks_length_and_alignment() {
        let buf = vec![0u64; 64];
        let bytes = buf.as_bytes();
        let s = Shape::<u32>::of(SPSC_BASE);
        assert_eq!(s.locate(&bytes[..4], true), Ok(0..4));
        assert!(s.locate(&bytes[..8], true).is_err());
        assert!(s.locate(&bytes[..6], false).is_err());
        assert_eq!(s.locate(&bytes[..12], false), Ok(0..12));
        // A payload that does not start where the ring promises: no room to align.
        let s = Shape::<u64>::of(SPSC_BASE);
        assert!(s.locate(&bytes[4..12], true).is_err());
    }
}
