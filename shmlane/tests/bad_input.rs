//! Bad input: every way `create` / `open` / `send` can be refused, each checked for its
//! specific `Error` variant. Segments are named with `TestName`, so nothing is left behind.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{child_arg, finish_child, is_child, skip, spawn_child, wait_child, Rng, TestName};
use memoffset::offset_of;
use shmlane::format::{sysv_key, Segment};
use shmlane::format::{Header, HEADER_SIZE};
use shmlane::spsc::{Consumer, Producer};
use shmlane::{Backing, Error, Options, TryRecvError, TrySendError, Wait};

/// The file behind a POSIX segment: it *is* the shared memory.
fn shm_path(name: &str) -> String {
    format!("/dev/shm{name}")
}

fn write_at(name: &str, off: usize, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .expect("open the segment file");
    f.write_all_at(bytes, off as u64)
        .expect("write into the segment file");
}

fn small() -> Options {
    Options::new().capacity(4096).max_message(100)
}

/// Whether a System V segment exists for `name`'s key.
fn sysv_exists(name: &str) -> bool {
    // SAFETY: shmget takes plain integers; flags 0 only looks the key up.
    unsafe { libc::shmget(sysv_key(name), 0, 0) >= 0 }
}

// ---------------------------------------------------------------------------------------
// 1. Names
// ---------------------------------------------------------------------------------------

#[test]
fn invalid_names_are_refused_everywhere() {
    let long = format!("/{}", "a".repeat(299));
    assert_eq!(long.len(), 300);
    let bad: &[&str] = &["", "noslash", "/", "/a/b", &long, "/a\0b", "/.", "/.."];
    for &name in bad {
        for backing in [Backing::Posix, Backing::SysV] {
            let opts = small().backing(backing);
            let r = Producer::create(name, &opts);
            assert!(
                matches!(r, Err(Error::InvalidName { .. })),
                "Producer::create({name:?}, {backing}): {r:?}"
            );
            let r = Consumer::create(name, &opts);
            assert!(
                matches!(r, Err(Error::InvalidName { .. })),
                "Consumer::create({name:?}, {backing}): {r:?}"
            );
            let r = Producer::create_or_open(name, &opts);
            assert!(
                matches!(r, Err(Error::InvalidName { .. })),
                "Producer::create_or_open({name:?}, {backing}): {r:?}"
            );
            let r = Segment::create(name, 8192, backing, 0o600);
            assert!(
                matches!(r, Err(Error::InvalidName { .. })),
                "Segment::create({name:?}, {backing}): {r:?}"
            );
        }
        let r = Producer::open(name);
        assert!(
            matches!(r, Err(Error::InvalidName { .. })),
            "Producer::open({name:?}): {r:?}"
        );
        let r = Consumer::open(name);
        assert!(
            matches!(r, Err(Error::InvalidName { .. })),
            "Consumer::open({name:?}): {r:?}"
        );
        let r = Segment::open(name);
        assert!(
            matches!(r, Err(Error::InvalidName { .. })),
            "Segment::open({name:?}): {r:?}"
        );
        let r = Segment::remove(name);
        assert!(
            matches!(r, Err(Error::InvalidName { .. })),
            "Segment::remove({name:?}): {r:?}"
        );
        // The error carries the name as given.
        if let Err(Error::InvalidName { name: got, reason }) = Consumer::open(name) {
            assert_eq!(got, name);
            assert!(!reason.is_empty());
        }
    }
}

#[test]
fn longest_valid_name_works() {
    // 255 bytes including the '/' is the limit; one more is refused.
    let t = TestName::new("long");
    let pad = 255 - t.len();
    let name = format!("{}{}", t.as_str(), "x".repeat(pad));
    assert_eq!(name.len(), 255);
    let name = TestName(name);
    let tx = Producer::create(&name, &small()).expect("a 255-byte name is valid");
    drop(tx);
    let too_long = format!("{}y", name.as_str());
    let r = Producer::create(&too_long, &small());
    assert!(matches!(r, Err(Error::InvalidName { .. })), "{r:?}");
}

// ---------------------------------------------------------------------------------------
// 2. Create on an existing name
// ---------------------------------------------------------------------------------------

fn assert_create_exists(name: &str, backing: Backing) {
    let opts = small().backing(backing);
    let r = Producer::create(name, &opts);
    assert!(
        matches!(r, Err(Error::AlreadyExists { .. })),
        "Producer::create({backing}): {r:?}"
    );
    if let Err(Error::AlreadyExists { name: got }) = &r {
        assert_eq!(got, name);
    }
    let r = Consumer::create(name, &opts);
    assert!(
        matches!(r, Err(Error::AlreadyExists { .. })),
        "Consumer::create({backing}): {r:?}"
    );
}

#[test]
fn create_existing_posix_is_already_exists() {
    let name = TestName::new("exists-posix");
    let _tx = Producer::create(&name, &small()).unwrap();
    assert_create_exists(&name, Backing::Posix);
    // create_or_open falls back to open.
    let rx = Consumer::create_or_open(&name, &small());
    assert!(rx.is_ok(), "{rx:?}");
}

#[test]
fn create_existing_sysv_is_already_exists() {
    let name = TestName::new("exists-sysv");
    let _tx = Producer::create(&name, &small().backing(Backing::SysV)).unwrap();
    assert_create_exists(&name, Backing::SysV);
    let rx = Consumer::create_or_open(&name, &small().backing(Backing::SysV));
    assert!(rx.is_ok(), "{rx:?}");
}

#[test]
fn create_sysv_over_posix_is_already_exists() {
    let name = TestName::new("exists-cross1");
    let _tx = Producer::create(&name, &small()).unwrap();
    assert_create_exists(&name, Backing::SysV);
    assert!(
        !sysv_exists(&name),
        "a refused SysV create left a segment behind"
    );
}

#[test]
fn create_posix_over_sysv_is_already_exists() {
    let name = TestName::new("exists-cross2");
    let _tx = Producer::create(&name, &small().backing(Backing::SysV)).unwrap();
    assert_create_exists(&name, Backing::Posix);
    assert!(
        !std::path::Path::new(&shm_path(&name)).exists(),
        "a refused POSIX create left a file behind"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Open of a missing name
// ---------------------------------------------------------------------------------------

#[test]
fn open_missing_is_not_found() {
    let name = TestName::new("missing");
    let r = Consumer::open(&name);
    match &r {
        Err(Error::NotFound { name: n, key }) => {
            assert_eq!(n, name.as_str());
            assert_eq!(*key, sysv_key(&name));
        }
        _ => panic!("Consumer::open: {r:?}"),
    }
    let r = Producer::open(&name);
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    let r = Segment::open(&name);
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    let r = Segment::remove(&name);
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
}

#[test]
fn open_after_creator_dropped_is_not_found() {
    for backing in [Backing::Posix, Backing::SysV] {
        let name = TestName::new("gone");
        let tx = Producer::create(&name, &small().backing(backing)).unwrap();
        drop(tx); // not persistent: the creator removes the name
        let r = Consumer::open(&name);
        assert!(matches!(r, Err(Error::NotFound { .. })), "{backing}: {r:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 4. Not a shmlane segment
// ---------------------------------------------------------------------------------------

#[test]
fn foreign_file_is_not_shmlane() {
    let name = TestName::new("foreign");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut bytes: Vec<u8> = (0..4096 + 123).map(|_| rng.next() as u8).collect();
    bytes[0] = 0xA5; // non-zero first byte: not "still being created"
    std::fs::write(shm_path(&name), &bytes).unwrap();
    let r = Consumer::open(&name);
    assert!(matches!(r, Err(Error::NotShmlane { .. })), "{r:?}");
    let r = Producer::open(&name);
    assert!(matches!(r, Err(Error::NotShmlane { .. })), "{r:?}");
    // create refuses it too, and leaves it alone.
    let r = Producer::create(&name, &small());
    assert!(matches!(r, Err(Error::AlreadyExists { .. })), "{r:?}");
    assert_eq!(std::fs::read(shm_path(&name)).unwrap(), bytes);
}

#[test]
fn tiny_foreign_file_is_not_shmlane() {
    for len in 1..8usize {
        let name = TestName::new("tiny");
        let bytes: Vec<u8> = (0..len).map(|i| 0xF0 | i as u8).collect();
        std::fs::write(shm_path(&name), &bytes).unwrap();
        let r = Consumer::open(&name);
        assert!(
            matches!(r, Err(Error::NotShmlane { .. })),
            "{len} bytes: {r:?}"
        );
    }
}

#[test]
fn foreign_file_with_zero_first_byte_but_garbage_is_not_shmlane() {
    // Only an all-zero magic means "not ready yet"; any other non-magic value is foreign.
    let name = TestName::new("foreign0");
    let mut bytes = vec![0x5Au8; 8192];
    bytes[0] = 0;
    std::fs::write(shm_path(&name), &bytes).unwrap();
    let r = Consumer::open(&name);
    assert!(matches!(r, Err(Error::NotShmlane { .. })), "{r:?}");
}

/// A System V segment made by someone else under the key shmlane derives from a name.
struct ForeignSysV {
    id: i32,
    ptr: *mut u8,
}

impl ForeignSysV {
    fn new(name: &str, len: usize, fill: &[u8]) -> ForeignSysV {
        assert!(fill.len() <= len);
        // SAFETY: create and attach a fresh segment; we write only `fill.len() <= len`
        // bytes at its start.
        unsafe {
            let id = libc::shmget(
                sysv_key(name),
                len,
                libc::IPC_CREAT | libc::IPC_EXCL | 0o600,
            );
            assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
            let p = libc::shmat(id, std::ptr::null(), 0);
            assert!(
                p as isize != -1,
                "shmat: {}",
                std::io::Error::last_os_error()
            );
            let ptr = p.cast::<u8>();
            std::ptr::copy_nonoverlapping(fill.as_ptr(), ptr, fill.len());
            ForeignSysV { id, ptr }
        }
    }
}

impl Drop for ForeignSysV {
    fn drop(&mut self) {
        // SAFETY: detach our attachment and remove the segment we created.
        unsafe {
            libc::shmdt(self.ptr.cast());
            libc::shmctl(self.id, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}

#[test]
fn foreign_sysv_segment_is_not_shmlane() {
    let name = TestName::new("foreign-sysv");
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut bytes: Vec<u8> = (0..8192).map(|_| rng.next() as u8).collect();
    bytes[0] = 0x42;
    let seg = ForeignSysV::new(&name, bytes.len(), &bytes);
    let r = Consumer::open(&name);
    assert!(matches!(r, Err(Error::NotShmlane { .. })), "{r:?}");
    let r = Producer::create(&name, &small().backing(Backing::SysV));
    assert!(matches!(r, Err(Error::AlreadyExists { .. })), "{r:?}");
    drop(seg);
    assert!(!sysv_exists(&name));
}

#[test]
fn tiny_sysv_segment_with_magic_is_truncated() {
    let name = TestName::new("tiny-sysv");
    let seg = ForeignSysV::new(&name, 100, &shmlane::format::MAGIC);
    let r = Consumer::open(&name);
    assert!(matches!(r, Err(Error::Truncated { len: 100, .. })), "{r:?}");
    drop(seg);
}

// ---------------------------------------------------------------------------------------
// 5. Truncated, and not ready
// ---------------------------------------------------------------------------------------

fn truncated_to(len: u64) {
    let name = TestName::new("trunc");
    let tx = Producer::create(&name, &small().persist(true)).unwrap();
    drop(tx); // persist: the file stays, nobody maps it any more
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    assert_eq!(f.metadata().unwrap().len(), (HEADER_SIZE + 4096) as u64);
    f.set_len(len).unwrap();
    drop(f);
    let r = Consumer::open(&name);
    match &r {
        Err(Error::Truncated {
            len: got, expected, ..
        }) => {
            assert_eq!(*got, len);
            assert!(*expected > len, "expected {expected} <= len {len}");
        }
        _ => panic!("truncated to {len}: {r:?}"),
    }
    let r = Producer::open(&name);
    assert!(
        matches!(r, Err(Error::Truncated { .. })),
        "truncated to {len}: {r:?}"
    );
}

#[test]
fn truncated_below_header_is_truncated() {
    truncated_to(100);
}

#[test]
fn truncated_inside_data_is_truncated() {
    truncated_to(HEADER_SIZE as u64 + 10);
}

#[test]
fn empty_file_is_not_ready_after_waiting() {
    let name = TestName::new("empty");
    std::fs::write(shm_path(&name), b"").unwrap();
    let start = Instant::now();
    let r = Consumer::open(&name);
    let waited = start.elapsed();
    assert!(matches!(r, Err(Error::NotReady { .. })), "{r:?}");
    if let Err(Error::NotReady { waited_ms, .. }) = r {
        assert!(waited_ms >= 1000, "waited_ms {waited_ms}");
    }
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 6. Header fields of a live segment
// ---------------------------------------------------------------------------------------

#[test]
fn wrong_magic_is_not_shmlane() {
    let name = TestName::new("magic");
    let _tx = Producer::create(&name, &small()).unwrap();
    write_at(&name, 0, b"X");
    let r = Consumer::open(&name);
    assert!(matches!(r, Err(Error::NotShmlane { .. })), "{r:?}");
}

#[test]
fn wrong_version_is_version_mismatch() {
    let name = TestName::new("version");
    let _tx = Producer::create(&name, &small()).unwrap();
    write_at(&name, offset_of!(Header, version), &7u32.to_ne_bytes());
    let r = Consumer::open(&name);
    match &r {
        Err(Error::VersionMismatch {
            found, expected, ..
        }) => {
            assert_eq!(*found, 7);
            assert_eq!(*expected, shmlane::format::VERSION);
        }
        _ => panic!("{r:?}"),
    }
}

#[test]
fn wrong_layout_hash_is_layout_mismatch() {
    let name = TestName::new("layout");
    let _tx = Producer::create(&name, &small()).unwrap();
    let bogus = shmlane::format::layout_hash() ^ 0x0123_4567_89ab_cdef;
    write_at(&name, offset_of!(Header, layout_hash), &bogus.to_ne_bytes());
    let r = Consumer::open(&name);
    match &r {
        Err(Error::LayoutMismatch {
            found, expected, ..
        }) => {
            assert_eq!(*found, bogus);
            assert_eq!(*expected, shmlane::format::layout_hash());
        }
        _ => panic!("{r:?}"),
    }
}

#[test]
fn mpmc_kind_opened_as_spsc_is_kind_mismatch() {
    let name = TestName::new("kind");
    let _tx = Producer::create(&name, &small()).unwrap();
    write_at(&name, offset_of!(Header, kind), &2u32.to_ne_bytes());
    let r = Consumer::open(&name);
    match &r {
        Err(Error::KindMismatch {
            found, expected, ..
        }) => {
            assert_eq!(*found, "mpmc");
            assert_eq!(*expected, "spsc");
        }
        _ => panic!("{r:?}"),
    }
    let r = Producer::open(&name);
    assert!(matches!(r, Err(Error::KindMismatch { .. })), "{r:?}");
}

// ---------------------------------------------------------------------------------------
// 7. Message sizes and options
// ---------------------------------------------------------------------------------------

fn is_too_large(r: &Result<(), Error>, len: usize, max: usize) -> bool {
    matches!(r, Err(Error::MessageTooLarge { len: l, max: m }) if *l == len && *m == max)
}

#[test]
fn oversized_message_is_message_too_large() {
    let name = TestName::new("toolarge");
    let mut tx = Producer::create(&name, &small()).unwrap();
    let mut rx = Consumer::open(&name).unwrap();
    assert_eq!(tx.max_message(), 100);
    let big = vec![7u8; 101];

    let r = tx.send(&big);
    assert!(is_too_large(&r, 101, 100), "send: {r:?}");
    let r = tx.send_tagged(3, &big);
    assert!(is_too_large(&r, 101, 100), "send_tagged: {r:?}");
    let r = tx.send_timeout(&big, Duration::from_millis(10));
    assert!(is_too_large(&r, 101, 100), "send_timeout: {r:?}");
    let r = tx.send_tagged_timeout(3, &big, Duration::from_millis(10));
    assert!(is_too_large(&r, 101, 100), "send_tagged_timeout: {r:?}");
    let r = tx.reserve(101).map(|_| ());
    assert!(is_too_large(&r, 101, 100), "reserve: {r:?}");
    let r = tx
        .reserve_timeout(1 << 20, Duration::from_millis(10))
        .map(|_| ());
    assert!(is_too_large(&r, 1 << 20, 100), "reserve_timeout: {r:?}");
    let r = tx.try_send(&big);
    assert_eq!(r, Err(TrySendError::TooLarge { len: 101, max: 100 }));
    let r = tx.try_send_tagged(1, &big);
    assert_eq!(r, Err(TrySendError::TooLarge { len: 101, max: 100 }));
    let r = tx.try_reserve(usize::MAX).map(|_| ());
    assert_eq!(
        r,
        Err(TrySendError::TooLarge {
            len: usize::MAX,
            max: 100
        })
    );
    // A batch stops at the oversized message, after publishing what came before it.
    let ok = [1u8; 10];
    let r = tx.send_batch([&ok[..], &big[..], &ok[..]]);
    assert!(
        matches!(r, Err(Error::MessageTooLarge { len: 101, max: 100 })),
        "send_batch: {r:?}"
    );
    let m = rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(&m[..], &ok[..]);
    drop(m);

    // Nothing oversized got into the ring; exactly max_message still goes through.
    let r = rx.try_recv().map(|_| ());
    assert_eq!(r, Err(TryRecvError::Empty));
    tx.send(&big[..100]).unwrap();
    let m = rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(m.len(), 100);
}

#[test]
fn inconsistent_options_are_invalid_options() {
    let name = TestName::new("opts");
    let cases = [
        (
            "max_message > capacity/2",
            Options::new().capacity(4096).max_message(2049),
        ),
        (
            "max_message > rounded capacity/2",
            Options::new().capacity(3000).max_message(2049),
        ),
        ("capacity 0", Options::new().capacity(0)),
        ("capacity > 1 TiB", Options::new().capacity((1 << 40) + 1)),
        (
            "mode with setuid bit",
            Options::new().capacity(4096).mode(0o4600),
        ),
    ];
    for (what, opts) in cases {
        for backing in [Backing::Posix, Backing::SysV] {
            let opts = opts.clone().backing(backing);
            let r = Producer::create(&name, &opts);
            assert!(
                matches!(r, Err(Error::InvalidOptions { .. })),
                "{what} ({backing}) Producer: {r:?}"
            );
            let r = Consumer::create(&name, &opts);
            assert!(
                matches!(r, Err(Error::InvalidOptions { .. })),
                "{what} ({backing}) Consumer: {r:?}"
            );
        }
    }
    // Nothing was created on the way.
    let r = Consumer::open(&name);
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    // The boundary itself is fine: max_message == capacity / 2. Its record (2056 bytes)
    // is more than half the ring, so the ring gets twice the capacity; 2040 bytes (a
    // record of exactly half the ring) keep it.
    let tx = Producer::create(&name, &Options::new().capacity(4096).max_message(2048))
        .expect("max_message == capacity / 2");
    assert_eq!((tx.capacity(), tx.max_message()), (8192, 2048));
    let rx = Consumer::open(&name).expect("open");
    assert_eq!((rx.capacity(), rx.max_message()), (8192, 2048));
    drop((tx, rx));
    let tx = Producer::create(&name, &Options::new().capacity(4096).max_message(2040))
        .expect("max_message == capacity / 2 - 8");
    assert_eq!((tx.capacity(), tx.max_message()), (4096, 2040));
}

#[test]
fn segment_larger_than_dev_shm_is_no_space() {
    let path = std::ffi::CString::new("/dev/shm").unwrap();
    // SAFETY: statvfs is plain old data; all zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes into the struct we pass; the path is NUL-terminated.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    assert_eq!(rc, 0);
    let total = st.f_blocks as u64 * st.f_frsize as u64;
    let capacity = (total.max(1 << 20) * 2).next_power_of_two();
    if total == 0 || capacity > (1 << 40) {
        skip(&format!(
            "/dev/shm has no size limit we can exceed ({total} bytes)"
        ));
        return;
    }
    let name = TestName::new("nospace");
    let start = Instant::now();
    let r = Producer::create(&name, &Options::new().capacity(capacity as usize));
    assert!(matches!(r, Err(Error::NoSpace { .. })), "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(
        !std::path::Path::new(&shm_path(&name)).exists(),
        "a failed create left its file behind"
    );
}

// ---------------------------------------------------------------------------------------
// 8. Roles
// ---------------------------------------------------------------------------------------

#[test]

fn second_producer_in_same_process_is_role_taken() {
    let name = TestName::new("role-p");
    let _tx = Producer::create(&name, &small()).unwrap();
    let r = Producer::open(&name);
    assert!(
        matches!(r, Err(Error::RoleTaken { pid, .. }) if pid == std::process::id() as i32),
        "{r:?}"
    );
}

#[test]

fn second_consumer_in_same_process_is_role_taken() {
    let name = TestName::new("role-c");
    let _tx = Producer::create(&name, &small()).unwrap();
    let _rx = Consumer::open(&name).unwrap();
    let r = Consumer::open(&name);
    assert!(
        matches!(r, Err(Error::RoleTaken { pid, .. }) if pid == std::process::id() as i32),
        "{r:?}"
    );
    let r = Consumer::create_or_open(&name, &small());
    assert!(
        matches!(r, Err(Error::RoleTaken { pid, .. }) if pid == std::process::id() as i32),
        "{r:?}"
    );
}

#[test]
fn roles_held_by_another_process_are_role_taken() {
    const ME: &str = "roles_held_by_another_process_are_role_taken";
    if is_child(ME) {
        let name = child_arg("NAME");
        let holder: i32 = child_arg("PID").parse().unwrap();
        assert_ne!(holder, std::process::id() as i32);
        let r = Producer::open(&name);
        assert!(
            matches!(r, Err(Error::RoleTaken { pid, .. }) if pid == holder),
            "Producer::open: {r:?}"
        );
        let r = Consumer::open(&name);
        assert!(
            matches!(r, Err(Error::RoleTaken { pid, .. }) if pid == holder),
            "Consumer::open: {r:?}"
        );
        return;
    }
    let name = TestName::new("role-x");
    let mut tx = Producer::create(&name, &small()).unwrap();
    let mut rx = Consumer::open(&name).unwrap();
    let child = spawn_child(
        ME,
        &[
            ("NAME", name.to_string()),
            ("PID", std::process::id().to_string()),
        ],
    );
    let status = wait_child(child, Duration::from_secs(10));
    assert!(status.success(), "child: {status:?}");
    // The refused attempts did not disturb the holders.
    tx.send(b"still mine").unwrap();
    let m = rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(&m[..], b"still mine");
}

#[test]
fn producer_takeover_continues_the_stream() {
    let name = TestName::new("takeover-p");
    let mut rx = Consumer::create(&name, &small()).unwrap();
    let mut tx = Producer::open(&name).unwrap();
    for i in 0..3u32 {
        tx.send_tagged(i, &i.to_ne_bytes()).unwrap();
    }
    drop(tx);
    let mut tx = Producer::open(&name).expect("the role is free after a clean drop");
    for i in 3..6u32 {
        tx.send_tagged(i, &i.to_ne_bytes()).unwrap();
    }
    for i in 0..6u32 {
        let m = rx.recv_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!((m.tag(), &m[..]), (i, &i.to_ne_bytes()[..]));
    }
    let r = rx.try_recv().map(|_| ());
    assert_eq!(r, Err(TryRecvError::Empty));
}

#[test]
fn consumer_takeover_continues_the_stream() {
    let name = TestName::new("takeover-c");
    let mut tx = Producer::create(&name, &small()).unwrap();
    let mut rx = Consumer::open(&name).unwrap();
    for i in 0..6u32 {
        tx.send_tagged(i, &i.to_ne_bytes()).unwrap();
    }
    for i in 0..2u32 {
        let m = rx.recv_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!(m.tag(), i);
    }
    drop(rx);
    let mut rx = Consumer::open(&name).expect("the role is free after a clean drop");
    for i in 2..6u32 {
        let m = rx.recv_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!((m.tag(), &m[..]), (i, &i.to_ne_bytes()[..]));
    }
    // And the new consumer is a real peer: the producer is not disconnected.
    assert!(!tx.is_disconnected());
    tx.send(b"more").unwrap();
    assert_eq!(
        &rx.recv_timeout(Duration::from_secs(1)).unwrap()[..],
        b"more"
    );
}

// ---------------------------------------------------------------------------------------
// 9. Permission denied (as a real unprivileged user)
// ---------------------------------------------------------------------------------------

/// In a child: become nobody (uid/gid 65534). Returns false (after printing why) when the
/// system does not let us, in which case the test is skipped.
fn become_nobody() -> bool {
    // SAFETY: plain system calls with integer arguments / a null list.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            skip(&format!(
                "setgroups(0) failed: {}",
                std::io::Error::last_os_error()
            ));
            return false;
        }
        if libc::setgid(65534) != 0 {
            skip(&format!(
                "setgid(65534) failed: {}",
                std::io::Error::last_os_error()
            ));
            return false;
        }
        if libc::setuid(65534) != 0 {
            skip(&format!(
                "setuid(65534) failed: {}",
                std::io::Error::last_os_error()
            ));
            return false;
        }
        assert_eq!(libc::geteuid(), 65534);
        assert_eq!(libc::getegid(), 65534);
    }
    true
}

fn permission_denied(me: &str, backing: Backing) {
    if is_child(me) {
        let name = child_arg("NAME");
        if !become_nobody() {
            return;
        }
        let r = Consumer::open(&name);
        assert!(
            matches!(r, Err(Error::PermissionDenied { .. })),
            "Consumer::open as nobody ({backing}): {r:?}"
        );
        let r = Producer::open(&name);
        assert!(
            matches!(r, Err(Error::PermissionDenied { .. })),
            "Producer::open as nobody ({backing}): {r:?}"
        );
        // It exists, even if we may not touch it.
        let r = Producer::create(&name, &small().backing(backing));
        assert!(
            matches!(r, Err(Error::AlreadyExists { .. })),
            "Producer::create as nobody ({backing}): {r:?}"
        );
        return;
    }
    let name = TestName::new("perm");
    let mut tx = Producer::create(&name, &small().backing(backing)).unwrap();
    let child = spawn_child(me, &[("NAME", name.to_string())]);
    if !finish_child(child, Duration::from_secs(10)) {
        return;
    }
    // The segment is untouched and still ours.
    let mut rx = Consumer::open(&name).unwrap();
    tx.send(b"ok").unwrap();
    assert_eq!(&rx.recv_timeout(Duration::from_secs(1)).unwrap()[..], b"ok");
}

#[test]
fn posix_mode_0600_is_permission_denied_for_other_user() {
    permission_denied(
        "posix_mode_0600_is_permission_denied_for_other_user",
        Backing::Posix,
    );
}

#[test]
fn sysv_mode_0600_is_permission_denied_for_other_user() {
    permission_denied(
        "sysv_mode_0600_is_permission_denied_for_other_user",
        Backing::SysV,
    );
}

// ---------------------------------------------------------------------------------------
// 10. System V key collision
// ---------------------------------------------------------------------------------------

#[test]
fn sysv_stored_name_differs_is_key_collision() {
    let name = TestName::new("collide");
    let tx = Producer::create(&name, &small().backing(Backing::SysV)).unwrap();
    let key = sysv_key(&name);
    // SAFETY: look up and attach the segment we just created; we write only inside its
    // header (name and name_len), which lies in the first page of a >= 8 KiB segment.
    let (id, p) = unsafe {
        let id = libc::shmget(key, 0, 0);
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        let p = libc::shmat(id, std::ptr::null(), 0);
        assert!(
            p as isize != -1,
            "shmat: {}",
            std::io::Error::last_os_error()
        );
        (id, p.cast::<u8>())
    };
    let other = "/somebody-else";
    // SAFETY: see above; offsets come from the Header definition.
    unsafe {
        let dst = p.add(offset_of!(Header, name));
        for (i, b) in other.bytes().enumerate() {
            dst.add(i).write_volatile(b);
        }
        p.add(offset_of!(Header, name_len))
            .cast::<u32>()
            .write_volatile(other.len() as u32);
    }
    let r = Consumer::open(&name);
    let ok = matches!(
        &r,
        Err(Error::KeyCollision { name: n, key: k, other: o })
            if n == name.as_str() && *k == key && o == other
    );
    // SAFETY: detach our raw attachment and mark the segment for removal.
    unsafe {
        libc::shmdt(p.cast());
        libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
    }
    drop(tx);
    assert!(ok, "{r:?}");
    assert!(!sysv_exists(&name));
}

// ---------------------------------------------------------------------------------------
// 11. Timeouts and try_* on empty / full rings, for every wait strategy
// ---------------------------------------------------------------------------------------

#[test]
fn empty_and_full_rings_time_out() {
    for wait in [Wait::Block, Wait::Yield, Wait::Spin] {
        let name = TestName::new("timeout");
        let mut tx = Producer::create(&name, &small().wait(wait)).unwrap();
        let mut rx = Consumer::open(&name).unwrap();
        assert_eq!((tx.wait(), rx.wait()), (wait, wait));
        let t = Duration::from_millis(60);

        let r = rx.try_recv().map(|_| ());
        assert_eq!(r, Err(TryRecvError::Empty), "{wait}");
        let start = Instant::now();
        let r = rx.recv_timeout(t).map(|_| ());
        let took = start.elapsed();
        assert!(matches!(r, Err(Error::Timeout)), "{wait}: {r:?}");
        assert!(
            took >= t && took < Duration::from_secs(1),
            "{wait}: {took:?}"
        );

        // Fill the ring.
        let msg = [0xEEu8; 100];
        let mut sent = 0;
        loop {
            match tx.try_send(&msg) {
                Ok(()) => sent += 1,
                Err(TrySendError::Full) => break,
                Err(e) => panic!("{wait}: try_send: {e:?}"),
            }
            assert!(sent < 1000, "{wait}: the ring never filled");
        }
        assert!(sent > 0);
        let r = tx.try_send(&msg);
        assert_eq!(r, Err(TrySendError::Full), "{wait}");
        let r = tx.try_reserve(8).map(|_| ());
        assert_eq!(r, Err(TrySendError::Full), "{wait}");
        let start = Instant::now();
        let r = tx.send_timeout(&msg, t);
        let took = start.elapsed();
        assert!(matches!(r, Err(Error::Timeout)), "{wait}: {r:?}");
        assert!(
            took >= t && took < Duration::from_secs(1),
            "{wait}: {took:?}"
        );
        let r = tx.reserve_timeout(100, t).map(|_| ());
        assert!(matches!(r, Err(Error::Timeout)), "{wait}: {r:?}");

        // A timed-out endpoint is still fine: the messages all arrive, then room again.
        for _ in 0..sent {
            let m = rx.recv_timeout(Duration::from_secs(1)).unwrap();
            assert_eq!(&m[..], &msg[..]);
        }
        let r = rx.try_recv().map(|_| ());
        assert_eq!(r, Err(TryRecvError::Empty), "{wait}");
        tx.send_timeout(&msg, Duration::from_secs(1)).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(1)).unwrap().len(), 100);
    }
}

// ---------------------------------------------------------------------------------------
// 12. Disconnects
// ---------------------------------------------------------------------------------------

#[test]
fn dropped_producer_drains_then_disconnected() {
    for wait in [Wait::Block, Wait::Yield, Wait::Spin] {
        let name = TestName::new("disc-p");
        let mut tx = Producer::create(&name, &small().wait(wait)).unwrap();
        let mut rx = Consumer::open(&name).unwrap();
        for i in 0..3u32 {
            tx.send_tagged(i, b"msg").unwrap();
        }
        drop(tx);
        assert!(rx.is_disconnected());
        for i in 0..3u32 {
            let m = rx.recv_timeout(Duration::from_secs(1)).unwrap();
            assert_eq!(m.tag(), i);
        }
        let start = Instant::now();
        let r = rx.recv_timeout(Duration::from_secs(2)).map(|_| ());
        assert!(matches!(r, Err(Error::Disconnected)), "{wait}: {r:?}");
        assert!(start.elapsed() < Duration::from_secs(1));
        let r = rx.try_recv().map(|_| ());
        assert_eq!(r, Err(TryRecvError::Disconnected), "{wait}");
        // Blocking recv, run on a watchdog thread so a hang fails instead of hanging.
        let (done, result) = mpsc::channel();
        std::thread::spawn(move || {
            let r = rx.recv().map(|m| m.len());
            let _ = done.send(r);
        });
        let r = result
            .recv_timeout(Duration::from_secs(3))
            .expect("recv did not return");
        assert!(matches!(r, Err(Error::Disconnected)), "{wait}: {r:?}");
    }
}

#[test]
fn try_recv_drains_then_disconnected() {
    let name = TestName::new("disc-try");
    let mut tx = Producer::create(&name, &small()).unwrap();
    let mut rx = Consumer::open(&name).unwrap();
    for i in 0..3u32 {
        tx.send_tagged(i, b"msg").unwrap();
    }
    drop(tx);
    for i in 0..3u32 {
        assert_eq!(rx.try_recv().unwrap().tag(), i);
    }
    let r = rx.try_recv().map(|_| ());
    assert_eq!(r, Err(TryRecvError::Disconnected));
}

#[test]
fn dropped_consumer_is_disconnected_for_producer() {
    let name = TestName::new("disc-c");
    let mut tx = Producer::create(&name, &small()).unwrap();
    let rx = Consumer::open(&name).unwrap();
    tx.send(b"before").unwrap();
    drop(rx);
    assert!(tx.is_disconnected());
    let r = tx.send(b"after");
    assert!(matches!(r, Err(Error::Disconnected)), "send: {r:?}");
    let r = tx.send_timeout(b"after", Duration::from_secs(1));
    assert!(matches!(r, Err(Error::Disconnected)), "send_timeout: {r:?}");
    let r = tx.reserve(4).map(|_| ());
    assert!(matches!(r, Err(Error::Disconnected)), "reserve: {r:?}");
    let r = tx.try_send(b"after");
    assert_eq!(r, Err(TrySendError::Disconnected));
}

#[test]
fn dead_producer_drains_then_disconnected() {
    const ME: &str = "dead_producer_drains_then_disconnected";
    if is_child(ME) {
        let mut tx = Producer::open(&child_arg("NAME")).unwrap();
        for i in 0..5u32 {
            tx.send_tagged(i, &[i as u8; 16]).unwrap();
        }
        // Die without a clean close: no Drop, no closed flag.
        std::mem::forget(tx);
        std::process::exit(0);
    }
    let name = TestName::new("dead-p");
    let mut rx = Consumer::create(&name, &small()).unwrap();
    let start = Instant::now();
    let child = spawn_child(ME, &[("NAME", name.to_string())]);
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let end = loop {
            match rx.recv() {
                Ok(m) => got.push((m.tag(), m.to_vec())),
                Err(e) => break e,
            }
        };
        let _ = done.send((got, end, start.elapsed()));
    });
    let r = result.recv_timeout(Duration::from_secs(5));
    let status = wait_child(child, Duration::from_secs(5));
    let (got, end, elapsed) = r.expect("blocking recv never returned after the producer died");
    assert!(status.success(), "child: {status:?}");
    assert_eq!(got.len(), 5, "{got:?}");
    for (i, (tag, payload)) in got.iter().enumerate() {
        assert_eq!(*tag, i as u32);
        assert_eq!(payload, &vec![i as u8; 16]);
    }
    // A death is not a clean end: PeerDied, after everything it published.
    assert!(matches!(end, Error::PeerDied), "{end:?}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[test]
fn dead_consumer_is_disconnected_for_producer() {
    const ME: &str = "dead_consumer_is_disconnected_for_producer";
    if is_child(ME) {
        let rx = Consumer::open(&child_arg("NAME")).unwrap();
        std::mem::forget(rx);
        std::process::exit(0);
    }
    let name = TestName::new("dead-c");
    let mut tx = Producer::create(&name, &small()).unwrap();
    let child = spawn_child(ME, &[("NAME", name.to_string())]);
    let status = wait_child(child, Duration::from_secs(5));
    assert!(status.success(), "child: {status:?}");
    // Sends go on until the ring is full; then the dead consumer is noticed.
    let mut sent = 0;
    let err = loop {
        match tx.try_send(&[1u8; 64]) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 1000, "the ring never filled");
    };
    // try_* say Disconnected for both ends; peer() tells a death.
    assert_eq!(err, TrySendError::Disconnected);
    assert!(matches!(tx.peer(), shmlane::PeerState::Dead(_)));
    let start = Instant::now();
    let r = tx.send_timeout(&[1u8; 64], Duration::from_secs(2));
    assert!(matches!(r, Err(Error::PeerDied)), "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}
