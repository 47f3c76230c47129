//! What a bridge puts in each sample's zenoh attachment: what the sample is, its tag, the
//! sending `out`'s epoch and the sample's sequence number in that epoch.
//!
//! The attachment is 24 bytes, little endian:
//!
//! | bytes  | field                                                           |
//! |--------|-----------------------------------------------------------------|
//! | 0..2   | `b"SZ"`                                                         |
//! | 2      | version ([`VERSION`])                                           |
//! | 3      | kind: 0 data, 1 end (the ring's producer finished), 2 end (the ring's producer died) |
//! | 4..8   | tag (data); 0 (end)                                             |
//! | 8..16  | epoch: a random number each `out` draws when it starts          |
//! | 16..24 | data: the message's sequence number in the epoch, from 0; end: how many data messages the epoch sent |
//!
//! The payload is the message's bytes (data) or empty (end). What arrives from the network
//! is untrusted: [`Header::decode`] checks every field and says what is wrong.

/// The attachment's format version.
pub const VERSION: u8 = 1;

/// The attachment's length in bytes.
pub const LEN: usize = 24;

const MAGIC: [u8; 2] = *b"SZ";

/// What a sample carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One message of the ring, with its tag.
    Data {
        /// The message's tag.
        tag: u32,
    },
    /// The end of the stream: the ring's producer finished (`died == false`) or died.
    End {
        /// Whether the ring's producer died instead of finishing.
        died: bool,
    },
}

/// A decoded attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Data or end.
    pub kind: Kind,
    /// The sending `out`'s epoch.
    pub epoch: u64,
    /// Data: the sequence number. End: the number of data messages of the epoch.
    pub seq: u64,
}

impl Header {
    /// The 24 bytes of this header.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2] = VERSION;
        let (kind, tag) = match self.kind {
            Kind::Data { tag } => (0, tag),
            Kind::End { died: false } => (1, 0),
            Kind::End { died: true } => (2, 0),
        };
        b[3] = kind;
        b[4..8].copy_from_slice(&tag.to_le_bytes());
        b[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b
    }

    /// Reads a header, checking every field.
    ///
    /// ```
    /// use shmlane_zenoh::wire::{Header, Kind};
    /// let h = Header { kind: Kind::Data { tag: 7 }, epoch: 1, seq: 2 };
    /// assert_eq!(Header::decode(&h.encode()), Ok(h));
    /// assert!(Header::decode(b"short").is_err());
    /// ```
    pub fn decode(b: &[u8]) -> Result<Header, String> {
        if b.len() != LEN {
            return Err(format!(
                "an attachment of {} bytes, not {LEN} (not from a shmlane-zenoh `out`?)",
                b.len()
            ));
        }
        if b[0..2] != MAGIC {
            return Err(
                "an attachment without the shmlane-zenoh mark (not from a shmlane-zenoh `out`?)"
                    .into(),
            );
        }
        if b[2] != VERSION {
            return Err(format!(
                "an attachment of format version {}, this build reads version {VERSION}",
                b[2]
            ));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let tag = u32_at(4);
        let kind = match b[3] {
            0 => Kind::Data { tag },
            1 | 2 if tag != 0 => return Err(format!("an end marker with tag {tag}, not 0")),
            1 => Kind::End { died: false },
            2 => Kind::End { died: true },
            k => return Err(format!("an attachment of unknown kind {k}")),
        };
        Ok(Header {
            kind,
            epoch: u64_at(8),
            seq: u64_at(16),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_bad_field() {
        for kind in [
            Kind::Data { tag: 0 },
            Kind::Data { tag: u32::MAX },
            Kind::End { died: false },
            Kind::End { died: true },
        ] {
            let h = Header {
                kind,
                epoch: 0x0123_4567_89ab_cdef,
                seq: u64::MAX,
            };
            assert_eq!(Header::decode(&h.encode()), Ok(h));
        }
        let good = Header {
            kind: Kind::Data { tag: 5 },
            epoch: 9,
            seq: 3,
        }
        .encode();
        assert!(Header::decode(&good[..LEN - 1])
            .unwrap_err()
            .contains("23 bytes"));
        let mut long = good.to_vec();
        long.push(0);
        assert!(Header::decode(&long).unwrap_err().contains("25 bytes"));
        let mut b = good;
        b[0] = b'X';
        assert!(Header::decode(&b).unwrap_err().contains("mark"));
        let mut b = good;
        b[2] = 2;
        assert!(Header::decode(&b).unwrap_err().contains("version 2"));
        let mut b = good;
        b[3] = 3;
        assert!(Header::decode(&b).unwrap_err().contains("unknown kind 3"));
        let mut b = good;
        b[3] = 1;
        assert!(Header::decode(&b).unwrap_err().contains("tag 5"));
    }
}
