//! The on-disk layout of a journal file (systemd's "Journal File Format"), parsed from byte
//! slices with every offset and size checked. Nothing here does I/O.
//!
//! All integers are little endian. Objects are 8-byte aligned; an object starts with a
//! 16-byte header (`type u8, flags u8, reserved[6], size le64`). Compact files (systemd ≥ 252,
//! incompatible flag `COMPACT`) store entry items and entry-array items as le32 offsets and
//! put two extra le32 fields in front of a DATA payload.

use std::fmt;

use crate::error::Corruption;

pub const SIGNATURE: &[u8; 8] = b"LPKSHHRH";

/// The smallest header any systemd ever wrote (before v187 added n_data/n_fields).
pub const HEADER_SIZE_MIN: u64 = 208;
/// Bytes of the header we read; newer headers are longer, older shorter (zero-filled).
pub const HEADER_READ_LEN: usize = 272;

pub const STATE_ARCHIVED: u8 = 2;

pub const INCOMPAT_COMPRESSED_XZ: u32 = 1 << 0;
pub const INCOMPAT_COMPRESSED_LZ4: u32 = 1 << 1;
pub const INCOMPAT_KEYED_HASH: u32 = 1 << 2;
pub const INCOMPAT_COMPRESSED_ZSTD: u32 = 1 << 3;
pub const INCOMPAT_COMPACT: u32 = 1 << 4;
/// Every incompatible flag this reader understands; a file with any other is refused, as
/// systemd itself refuses it. The hash kind (keyed siphash vs jenkins) only matters for hash
/// table lookups, which this reader never does: it walks the entry arrays and takes the
/// cursor's xor_hash from the ENTRY object, where systemd stores it hash-kind independent.
pub const INCOMPAT_SUPPORTED: u32 = INCOMPAT_COMPRESSED_XZ
    | INCOMPAT_COMPRESSED_LZ4
    | INCOMPAT_KEYED_HASH
    | INCOMPAT_COMPRESSED_ZSTD
    | INCOMPAT_COMPACT;

pub const OBJECT_DATA: u8 = 1;
pub const OBJECT_ENTRY: u8 = 3;
pub const OBJECT_ENTRY_ARRAY: u8 = 6;

pub const OBJECT_COMPRESSED_XZ: u8 = 1 << 0;
pub const OBJECT_COMPRESSED_LZ4: u8 = 1 << 1;
pub const OBJECT_COMPRESSED_ZSTD: u8 = 1 << 2;
pub const OBJECT_COMPRESSION_MASK: u8 =
    OBJECT_COMPRESSED_XZ | OBJECT_COMPRESSED_LZ4 | OBJECT_COMPRESSED_ZSTD;

pub const OBJECT_HEADER_LEN: u64 = 16;
/// ENTRY: header, seqnum, realtime, monotonic, boot_id[16], xor_hash; then items.
pub const ENTRY_FIXED_LEN: u64 = 64;
/// ENTRY_ARRAY: header, next_entry_array_offset; then items.
pub const ENTRY_ARRAY_FIXED_LEN: u64 = 24;
/// DATA: header, hash, next_hash, next_field, entry_offset, entry_array_offset, n_entries.
pub const DATA_PAYLOAD_OFFSET: u64 = 64;
/// Compact DATA adds tail_entry_array_offset le32 and tail_entry_array_n_entries le32.
pub const DATA_PAYLOAD_OFFSET_COMPACT: u64 = 72;

/// A 128-bit id (file, machine, boot, seqnum source), printed as 32 lowercase hex digits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id128(pub [u8; 16]);

impl Id128 {
    /// Parses 32 hex digits (systemd also accepts the dashed UUID form; so do we).
    pub fn parse(s: &str) -> Option<Id128> {
        let mut out = [0u8; 16];
        let mut nibbles = s.bytes().filter(|b| *b != b'-');
        for byte in &mut out {
            let hi = hex_val(nibbles.next()?)?;
            let lo = hex_val(nibbles.next()?)?;
            *byte = (hi << 4) | lo;
        }
        if nibbles.next().is_some() {
            return None;
        }
        Some(Id128(out))
    }

    pub fn is_null(&self) -> bool {
        self.0 == [0; 16]
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Id128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Id128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

pub fn le64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

pub fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

fn id128(b: &[u8], at: usize) -> Option<Id128> {
    let s = b.get(at..at.checked_add(16)?)?;
    Some(Id128(s.try_into().ok()?))
}

/// The fields of the file header this reader uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub compatible_flags: u32,
    pub incompatible_flags: u32,
    pub state: u8,
    pub file_id: Id128,
    pub machine_id: Id128,
    pub seqnum_id: Id128,
    pub header_size: u64,
    pub arena_size: u64,
    pub tail_object_offset: u64,
    pub n_entries: u64,
    pub tail_entry_seqnum: u64,
    pub head_entry_seqnum: u64,
    pub entry_array_offset: u64,
    pub head_entry_realtime: u64,
    pub tail_entry_realtime: u64,
}

impl Header {
    /// Parses the first bytes of a file (up to [`HEADER_READ_LEN`]; fewer for old headers).
    pub fn parse(b: &[u8]) -> Result<Header, Corruption> {
        if b.len() < HEADER_SIZE_MIN as usize {
            return Err(Corruption::Truncated("file shorter than a journal header"));
        }
        if b.get(..8) != Some(SIGNATURE.as_slice()) {
            return Err(Corruption::NotJournal);
        }
        let g = |at| le64(b, at).ok_or(Corruption::Truncated("header"));
        let h = Header {
            compatible_flags: le32(b, 8).ok_or(Corruption::Truncated("header"))?,
            incompatible_flags: le32(b, 12).ok_or(Corruption::Truncated("header"))?,
            state: *b.get(16).ok_or(Corruption::Truncated("header"))?,
            file_id: id128(b, 24).ok_or(Corruption::Truncated("header"))?,
            machine_id: id128(b, 40).ok_or(Corruption::Truncated("header"))?,
            seqnum_id: id128(b, 72).ok_or(Corruption::Truncated("header"))?,
            header_size: g(88)?,
            arena_size: g(96)?,
            tail_object_offset: g(136)?,
            n_entries: g(152)?,
            tail_entry_seqnum: g(160)?,
            head_entry_seqnum: g(168)?,
            entry_array_offset: g(176)?,
            head_entry_realtime: g(184)?,
            tail_entry_realtime: g(192)?,
        };
        let unknown = h.incompatible_flags & !INCOMPAT_SUPPORTED;
        if unknown != 0 {
            return Err(Corruption::Unsupported(format!(
                "unknown incompatible flags {unknown:#x}"
            )));
        }
        if h.header_size < HEADER_SIZE_MIN || !h.header_size.is_multiple_of(8) {
            return Err(Corruption::Bad(format!("header size {}", h.header_size)));
        }
        if h.state > STATE_ARCHIVED {
            return Err(Corruption::Bad(format!("unknown state {}", h.state)));
        }
        if h.header_size.checked_add(h.arena_size).is_none() {
            return Err(Corruption::Bad("arena size overflows".into()));
        }
        Ok(h)
    }

    pub fn compact(&self) -> bool {
        self.incompatible_flags & INCOMPAT_COMPACT != 0
    }

    /// header_size + arena_size: the end of the last byte the writer claims.
    pub fn used_size(&self) -> u64 {
        self.header_size.saturating_add(self.arena_size)
    }

    /// Bytes one entry item / entry-array item takes.
    pub fn item_len(&self) -> u64 {
        if self.compact() { 4 } else { 8 }
    }
}

/// A parsed 16-byte object header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectHeader {
    pub kind: u8,
    pub flags: u8,
    pub size: u64,
}

impl ObjectHeader {
    pub fn parse(b: &[u8]) -> Result<ObjectHeader, Corruption> {
        let kind = *b.first().ok_or(Corruption::Truncated("object header"))?;
        let flags = *b.get(1).ok_or(Corruption::Truncated("object header"))?;
        let size = le64(b, 8).ok_or(Corruption::Truncated("object header"))?;
        Ok(ObjectHeader { kind, flags, size })
    }

    /// Checks the type and a minimum size, as every object read must.
    pub fn expect(&self, kind: u8, min_size: u64) -> Result<(), Corruption> {
        if self.kind != kind {
            return Err(Corruption::Bad(format!(
                "object type {} where {} expected",
                self.kind, kind
            )));
        }
        if self.size < min_size {
            return Err(Corruption::Bad(format!(
                "object size {} below {}",
                self.size, min_size
            )));
        }
        Ok(())
    }
}

/// The fixed part of an ENTRY object (the part a cursor and the merge order need).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryFixed {
    pub seqnum: u64,
    pub realtime: u64,
    pub monotonic: u64,
    pub boot_id: Id128,
    pub xor_hash: u64,
}

impl EntryFixed {
    /// Parses from the object's first [`ENTRY_FIXED_LEN`] bytes.
    pub fn parse(b: &[u8]) -> Result<EntryFixed, Corruption> {
        let t = Corruption::Truncated("entry object");
        Ok(EntryFixed {
            seqnum: le64(b, 16).ok_or_else(|| t.clone())?,
            realtime: le64(b, 24).ok_or_else(|| t.clone())?,
            monotonic: le64(b, 32).ok_or_else(|| t.clone())?,
            boot_id: id128(b, 40).ok_or_else(|| t.clone())?,
            xor_hash: le64(b, 56).ok_or(t)?,
        })
    }
}

/// Reads item `i` of an item list (`le32` in compact files, `le64` otherwise). Regular ENTRY
/// items are 16 bytes (offset + hash): pass `stride` 16 for those.
pub fn item_offset(items: &[u8], i: usize, compact: bool, stride: usize) -> Option<u64> {
    let at = i.checked_mul(stride)?;
    if compact {
        le32(items, at).map(u64::from)
    } else {
        le64(items, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id128_round_trip_and_rejects() {
        let s = "0123456789abcdef0123456789abcdef";
        let id = Id128::parse(s).unwrap();
        assert_eq!(id.to_string(), s);
        assert_eq!(
            Id128::parse("01234567-89ab-cdef-0123-456789abcdef"),
            Some(id)
        );
        assert_eq!(Id128::parse("0123"), None);
        assert_eq!(Id128::parse(&format!("{s}00")), None);
        assert_eq!(Id128::parse("zz23456789abcdef0123456789abcdef"), None);
    }

    #[test]
    fn header_rejects_short_wrong_signature_and_unknown_flags() {
        assert!(matches!(
            Header::parse(&[0; 100]),
            Err(Corruption::Truncated(_))
        ));
        assert!(matches!(
            Header::parse(&[0; 272]),
            Err(Corruption::NotJournal)
        ));
        let mut h = [0u8; 272];
        h[..8].copy_from_slice(SIGNATURE);
        h[12..16].copy_from_slice(&(1u32 << 9).to_le_bytes());
        assert!(matches!(Header::parse(&h), Err(Corruption::Unsupported(_))));
        h[12..16].copy_from_slice(&0u32.to_le_bytes());
        h[88..96].copy_from_slice(&272u64.to_le_bytes());
        h[96..104].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(Header::parse(&h), Err(Corruption::Bad(_))));
        h[96..104].copy_from_slice(&4096u64.to_le_bytes());
        let parsed = Header::parse(&h).unwrap();
        assert_eq!(parsed.used_size(), 272 + 4096);
        assert!(!parsed.compact());
    }

    #[test]
    fn items_compact_and_regular() {
        let mut b = Vec::new();
        b.extend_from_slice(&7u32.to_le_bytes());
        b.extend_from_slice(&9u32.to_le_bytes());
        assert_eq!(item_offset(&b, 1, true, 4), Some(9));
        assert_eq!(item_offset(&b, 2, true, 4), None);
        assert_eq!(item_offset(&b, 0, false, 8), Some(9u64 << 32 | 7));
        assert_eq!(item_offset(&b, usize::MAX, false, 16), None);
    }
}
