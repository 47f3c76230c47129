//! `open_header` and `validate_header`: arbitrary bytes as a segment, through every
//! opener, and through the validator alone.

use super::*;

/// `fuzz/fuzz_targets/validate_header.rs`: the header validator alone, with no segment and
/// no `/dev/shm`. The input is a header image; the segment's length is the input's length,
/// and, when the input is longer than the header, also its last 8 bytes read as a length
/// (so lengths the input cannot hold are tried too). As in [`open_header`], a header with
/// the shmlane magic gets `state = READY` and its placeholder name replaced, so inputs
/// reach the deep checks. Must hold: `validate` answers (never panics), and a geometry it
/// accepts fits the segment: the data area inside `segment_len`, `segment_len` inside the
/// length, `max_message` at most half the data area, MPMC slots that multiply out.
pub fn validate_header(data: &[u8]) {
    use shmlane::format::{validate, Kind, NameCheck, Snapshot};
    let mut content = data.to_vec();
    let mut lens = vec![content.len() as u64];
    if content.len() > HEADER_SIZE + 8 {
        let tail = content.len() - 8;
        lens.push(u64::from_ne_bytes(content[tail..].try_into().unwrap()) % (1 << 40));
    }
    if content.len() >= HEADER_SIZE && content[..8] == MAGIC {
        let state = offset_of!(Header, state);
        content[state..state + 4].copy_from_slice(&STATE_READY.to_ne_bytes());
    }
    let name = "/shmlane-fuzz-validate";
    let nl = offset_of!(Header, name_len);
    let n = offset_of!(Header, name);
    if content.len() >= n + name.len()
        && content[nl..nl + 4] == (NAME_PLACEHOLDER.len() as u32).to_ne_bytes()
        && &content[n..n + NAME_PLACEHOLDER.len()] == NAME_PLACEHOLDER
    {
        content[nl..nl + 4].copy_from_slice(&(name.len() as u32).to_ne_bytes());
        content[n..n + name.len()].copy_from_slice(name.as_bytes());
    }
    for (len, names) in lens.into_iter().flat_map(|l| {
        [
            (l, NameCheck::Is(shmlane::Backing::Posix)),
            (l, NameCheck::Any),
        ]
    }) {
        let snapshot = Snapshot::from_bytes(&content, len);
        let Ok(g) = validate(&snapshot, name, None, names) else {
            continue;
        };
        assert!(
            HEADER_SIZE as u64 + g.capacity as u64 <= g.segment_len as u64,
            "{g:?}"
        );
        assert!(g.segment_len as u64 <= len, "{g:?} in {len} bytes");
        assert!(g.max_message <= g.capacity / 2, "{g:?}");
        if g.kind == Kind::Mpmc {
            assert_eq!(
                g.slot_count.checked_mul(g.slot_size),
                Some(g.capacity),
                "{g:?}"
            );
        }
    }
}

/// Opens a segment whose whole content is `data` (at most [`OPEN_HEADER_MAX_LEN`]
/// bytes) with all four endpoint types, and uses whatever opens with a few non-blocking
/// calls.
///
/// So that executions stay fast and inputs from real segments reach the deep checks:
/// empty inputs, and inputs whose first 8 bytes are zero (the opener would wait 2 s for
/// a creator that is "not finished"), are skipped; a header with the shmlane magic gets
/// `state = READY` for the same reason; and a stored name equal to [`NAME_PLACEHOLDER`]
/// is replaced by the segment's real name.
pub fn open_header(data: &[u8]) {
    open_header_opened(data);
}

/// [`open_header`], returning which opens succeeded: `[Consumer, Producer, Receiver,
/// Sender]` (so a test can tell that seeds copied from real segments still open).
pub fn open_header_opened(data: &[u8]) -> [bool; 4] {
    let data = &data[..data.len().min(OPEN_HEADER_MAX_LEN)];
    if data.len() < 8 || data[..8] == [0u8; 8] {
        // Empty or zero magic: "creator not finished", the opener would wait 2 s.
        return [false; 4];
    }
    let name = ShmName::new("oh");
    let mut content = data.to_vec();
    if content[..8] == MAGIC && content.len() >= HEADER_SIZE {
        let state = offset_of!(Header, state);
        content[state..state + 4].copy_from_slice(&STATE_READY.to_ne_bytes());
        let nl = offset_of!(Header, name_len);
        let n = offset_of!(Header, name);
        let stored_len = u32::from_ne_bytes(content[nl..nl + 4].try_into().unwrap());
        if stored_len as usize == NAME_PLACEHOLDER.len()
            && &content[n..n + NAME_PLACEHOLDER.len()] == NAME_PLACEHOLDER
        {
            let real = name.as_bytes();
            content[nl..nl + 4].copy_from_slice(&(real.len() as u32).to_ne_bytes());
            content[n..n + real.len()].copy_from_slice(real);
        }
    }
    {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(name.path())
            .unwrap_or_else(|e| panic!("fuzz setup: create {}: {e}", name.path()));
        file.write_all_at(&content, 0)
            .unwrap_or_else(|e| panic!("fuzz setup: write {}: {e}", name.path()));
    }

    let consumer = Consumer::open(&name);
    let producer = Producer::open(&name);
    check_open_result("Consumer::open", &consumer);
    check_open_result("Producer::open", &producer);
    let mut opened = [consumer.is_ok(), producer.is_ok(), false, false];
    let (mut consumer, mut producer) = (consumer.ok(), producer.ok());
    let max = consumer
        .as_ref()
        .map(|c| c.max_message())
        .or_else(|| producer.as_ref().map(|p| p.max_message()));
    if let Some(max) = max {
        let msg = vec![0x5a_u8; max + 1];
        for (i, len) in [0, 1, max / 2, max, max + 1, 7.min(max + 1)]
            .into_iter()
            .enumerate()
        {
            if let Some(p) = producer.as_mut() {
                let r = p.try_send_tagged(i as u32, &msg[..len]);
                match r {
                    Ok(()) | Err(TrySendError::Full) | Err(TrySendError::Disconnected) => {
                        assert!(len <= max, "a message over max_message was sent");
                    }
                    Err(TrySendError::TooLarge { .. }) => assert!(len > max),
                    Err(TrySendError::Corrupt { .. }) => {}
                }
            }
            if let Some(c) = consumer.as_mut() {
                spsc_consume_any(c, i % 3 == 2);
            }
        }
        if let Some(p) = producer.as_mut() {
            if let Ok(mut g) = p.try_reserve(max.min(3)) {
                g.set_tag(9);
                // Dropped without commit: sends nothing.
            }
        }
        if let Some(c) = consumer.as_mut() {
            for _ in 0..4 {
                spsc_consume_any(c, false);
            }
        }
    }
    drop((consumer, producer));

    let receiver = Receiver::open(&name);
    let sender = Sender::open(&name);
    check_open_result("Receiver::open", &receiver);
    check_open_result("Sender::open", &sender);
    opened[2] = receiver.is_ok();
    opened[3] = sender.is_ok();
    let (receiver, sender) = (receiver.ok(), sender.ok());
    let max = receiver
        .as_ref()
        .map(|r| r.max_message())
        .or_else(|| sender.as_ref().map(|s| s.max_message()));
    if let Some(max) = max {
        let msg = vec![0xa5_u8; max + 1];
        for (i, len) in [0, max, 1, max + 1, max / 3].into_iter().enumerate() {
            if let Some(s) = sender.as_ref() {
                match s.try_send_tagged(i as u32, &msg[..len]) {
                    Ok(()) | Err(TrySendError::Full) | Err(TrySendError::Disconnected) => {
                        assert!(len <= max, "a message over max_message was sent");
                    }
                    Err(TrySendError::TooLarge { .. }) => assert!(len > max),
                    Err(TrySendError::Corrupt { .. }) => {}
                }
                if i == 2 {
                    // A cancelled slot for the receiver to skip.
                    let _ = s.try_reserve(len.min(max));
                }
            }
            if let Some(r) = receiver.as_ref() {
                mpmc_consume_any(r, i % 2 == 1);
                let _ = r.len();
            }
        }
        if let Some(r) = receiver.as_ref() {
            for _ in 0..4 {
                mpmc_consume_any(r, false);
            }
        }
    }
    opened
}

/// The errors an `open` of arbitrary bytes may return: those that describe what it read.
fn check_open_result<T>(what: &str, r: &Result<T, Error>) {
    // An allow-list: what an open of arbitrary bytes under an existing POSIX name may
    // say. Anything else (`Io`, `Disconnected`, `NotFound`, `NotReady` for a header
    // marked ready, ...) is a bug.
    if let Err(e) = r {
        assert!(
            matches!(
                e,
                Error::NotShmlane { .. }
                    | Error::Truncated { .. }
                    | Error::VersionMismatch { .. }
                    | Error::LayoutMismatch { .. }
                    | Error::KindMismatch { .. }
                    | Error::TypeMismatch { .. }
                    | Error::Corrupt { .. }
                    | Error::RoleTaken { .. }
                    | Error::TooManyEndpoints { .. }
            ),
            "{what}: unexpected error {e:?}"
        );
    }
}

/// One receive of anything from a possibly corrupt SPSC ring: a message of at most
/// `max_message` bytes, or a specific error.
fn spsc_consume_any(c: &mut Consumer, blocking: bool) {
    let max = c.max_message();
    let r = if blocking {
        c.recv_timeout(Duration::ZERO)
            .map(|m| (m.len(), touch(&m)).0)
    } else {
        c.try_recv()
            .map(|m| (m.len(), touch(&m)).0)
            .map_err(Error::from)
    };
    match &r {
        Ok(len) => assert!(*len <= max, "received {len} bytes, max_message is {max}"),
        Err(e) => assert!(
            matches!(
                e,
                Error::Corrupt { .. } | Error::Empty | Error::Timeout | Error::Disconnected
            ),
            "unexpected receive error {e:?}"
        ),
    }
}

/// As [`spsc_consume_any`], for an MPMC receiver.
fn mpmc_consume_any(r: &Receiver, blocking: bool) {
    let max = r.max_message();
    let res = if blocking {
        r.recv_timeout(Duration::ZERO)
            .map(|m| (m.len(), touch(&m)).0)
    } else {
        r.try_recv()
            .map(|m| (m.len(), touch(&m)).0)
            .map_err(Error::from)
    };
    match &res {
        Ok(len) => assert!(*len <= max, "received {len} bytes, max_message is {max}"),
        Err(e) => assert!(
            matches!(
                e,
                Error::Corrupt { .. } | Error::Empty | Error::Timeout | Error::Disconnected
            ),
            "unexpected receive error {e:?}"
        ),
    }
}
