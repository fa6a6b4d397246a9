//! One journal file: its header, the global entry-array chain (entry index → ENTRY offset),
//! entry keys for ordering, and entry decoding (DATA objects, decompression, caps).
//!
//! Every offset read from the file is checked (8-byte aligned, inside the header-declared
//! arena and the real file length) before use; every size is checked against the caps in
//! [`Limits`]; every chain walked must move forward in the file, so no hostile file can make
//! us loop, read out of bounds or allocate more than the caps.

use std::path::{Path, PathBuf};

use crate::cursor::EntryKey;
use crate::decompress::decompress_into;
use crate::entry::Entry;
use crate::error::Corruption;
use crate::filter::Filter;
use crate::format::{
    DATA_PAYLOAD_OFFSET, DATA_PAYLOAD_OFFSET_COMPACT, ENTRY_ARRAY_FIXED_LEN, ENTRY_FIXED_LEN,
    EntryFixed, HEADER_READ_LEN, HEADER_SIZE_MIN, Header, OBJECT_COMPRESSION_MASK, OBJECT_DATA,
    OBJECT_ENTRY, OBJECT_ENTRY_ARRAY, OBJECT_HEADER_LEN, ObjectHeader, SIGNATURE, STATE_ARCHIVED,
    le64,
};
use crate::source::{CachedReader, ReadAt};

/// Caps on what one file may make the reader read or allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest DATA/ENTRY object read (bytes on disk). Larger fields are skipped and counted.
    pub max_object_size: u64,
    /// Largest field after decompression. Larger fields are skipped and counted.
    pub max_field_size: usize,
    /// Most fields one entry may have (journald itself stops at 1024). More: entry skipped.
    pub max_fields: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_object_size: 16 << 20,
            max_field_size: 16 << 20,
            max_fields: 4096,
        }
    }
}

/// The ENTRY object of index `i`, located and keyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    pub offset: u64,
    pub size: u64,
    pub key: EntryKey,
}

/// Why an entry could not be located: the chain is broken from here on (stop reading the
/// file) or only this entry is bad (skip it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Chain(Corruption),
    Entry(Corruption),
}

#[derive(Clone, Copy, Debug)]
struct ArrayRef {
    offset: u64,
    first: u64,
    cap: u64,
}

/// Field problems met while decoding one entry that did not cost the entry.
#[derive(Default)]
pub struct FieldProblems {
    pub list: Vec<Corruption>,
}

const CACHE_SLOTS: usize = 1024;
const CACHE_MAX_PAYLOAD: usize = 1024;

/// Payloads of DATA objects shared by several entries (`_HOSTNAME=`, `_SYSTEMD_UNIT=`, …),
/// direct-mapped by offset: DATA objects never change once written, so entries need not be
/// invalidated. At most CACHE_SLOTS × CACHE_MAX_PAYLOAD bytes.
struct DataCache {
    slots: Vec<Option<(u64, Box<[u8]>)>>,
}

impl DataCache {
    fn slot(offset: u64) -> usize {
        ((offset >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize % CACHE_SLOTS
    }

    fn get(&self, offset: u64) -> Option<&[u8]> {
        match self.slots.get(Self::slot(offset)) {
            Some(Some((o, p))) if *o == offset => Some(p),
            _ => None,
        }
    }

    fn put(&mut self, offset: u64, payload: &[u8]) {
        if self.slots.is_empty() {
            self.slots.resize_with(CACHE_SLOTS, || None);
        }
        if let Some(s) = self.slots.get_mut(Self::slot(offset)) {
            *s = Some((offset, payload.into()));
        }
    }
}

struct Deferred {
    position: usize,
    offset: u64,
    payload_offset: u64,
    len: u64,
    flags: u8,
}

pub struct JournalFile {
    path: PathBuf,
    r: CachedReader,
    header: Header,
    /// The readable end: min(real file length, header_size + arena_size).
    limit: u64,
    /// The header claims more bytes than the file has.
    truncated: bool,
    chain: Vec<ArrayRef>,
    limits: Limits,
    cache: DataCache,
    items: Vec<u64>,
    deferred: Vec<Deferred>,
}

impl JournalFile {
    pub fn open(
        path: &Path,
        src: Box<dyn ReadAt>,
        limits: Limits,
    ) -> Result<JournalFile, Corruption> {
        let mut r = CachedReader::new(src);
        let header = read_header(&mut r)?;
        let mut f = JournalFile {
            path: path.to_path_buf(),
            r,
            header,
            limit: 0,
            truncated: false,
            chain: Vec::new(),
            limits,
            cache: DataCache { slots: Vec::new() },
            items: Vec::new(),
            deferred: Vec::new(),
        };
        f.update_limit()?;
        Ok(f)
    }

    fn update_limit(&mut self) -> Result<(), Corruption> {
        let len = self.r.source_len()?;
        let used = self.header.used_size();
        self.truncated = used > len;
        self.limit = used.min(len);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn set_path(&mut self, p: PathBuf) {
        self.path = p;
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn n_entries(&self) -> u64 {
        self.header.n_entries
    }

    /// The file's modification time now (through the open handle).
    pub fn mtime_ns(&self) -> Option<i64> {
        self.r.source_mtime_ns()
    }

    pub fn is_archived(&self) -> bool {
        self.header.state == STATE_ARCHIVED
    }

    /// The header claims more bytes than the file holds (read up to the real end).
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// Re-reads the header; true when the writer added entries (or changed state).
    pub fn refresh(&mut self) -> Result<bool, Corruption> {
        self.r.invalidate();
        let h = read_header(&mut self.r)?;
        if h.file_id != self.header.file_id || h.compact() != self.header.compact() {
            return Err(Corruption::Bad(
                "file replaced under the same handle".into(),
            ));
        }
        let changed = h.n_entries != self.header.n_entries
            || h.state != self.header.state
            || h.arena_size != self.header.arena_size;
        self.header = h;
        self.update_limit()?;
        Ok(changed)
    }

    /// Frees read buffers (the data cache stays: new entries reuse shared fields).
    pub fn release_buffers(&mut self) {
        self.r.release();
        self.items = Vec::new();
    }

    fn check_offset(&self, off: u64, what: &'static str) -> Result<(), Corruption> {
        if !off.is_multiple_of(8) || off < self.header.header_size || off >= self.limit {
            if off >= self.limit && off < self.header.used_size() {
                return Err(Corruption::Truncated(what));
            }
            return Err(Corruption::Bad(format!(
                "{what} offset {off:#x} out of range"
            )));
        }
        Ok(())
    }

    fn object_header(&mut self, off: u64, kind: u8, min: u64) -> Result<ObjectHeader, Corruption> {
        let h = ObjectHeader::parse(self.r.read(off, OBJECT_HEADER_LEN as usize, self.limit)?)?;
        h.expect(kind, min)?;
        let end = off
            .checked_add(h.size)
            .ok_or(Corruption::Bad("object size overflows".into()))?;
        if end > self.limit {
            return Err(if end <= self.header.used_size() {
                Corruption::Truncated("object runs past the end of the file")
            } else {
                Corruption::Bad(format!("object at {off:#x} runs past the arena"))
            });
        }
        Ok(h)
    }

    /// Extends the known chain until it covers index `i`.
    fn array_for(&mut self, i: u64) -> Result<ArrayRef, Corruption> {
        loop {
            let covered = self.chain.last().map_or(0, |a| a.first + a.cap);
            if i < covered {
                let at = self.chain.partition_point(|a| a.first + a.cap <= i);
                return self
                    .chain
                    .get(at)
                    .copied()
                    .ok_or(Corruption::Bad("entry array index".into()));
            }
            let next = match self.chain.last() {
                None => self.header.entry_array_offset,
                Some(last) => {
                    let at = last.offset + OBJECT_HEADER_LEN;
                    le64(self.r.read(at, 8, self.limit)?, 0).unwrap_or(0)
                }
            };
            if next == 0 {
                return Err(Corruption::Bad(format!(
                    "entry array chain ends at {covered} of {} entries",
                    self.header.n_entries
                )));
            }
            // Arrays are appended, so each link must point forward: no cycles.
            if let Some(last) = self.chain.last()
                && next <= last.offset
            {
                return Err(Corruption::Bad("entry array chain points backwards".into()));
            }
            self.check_offset(next, "entry array")?;
            let item = self.header.item_len();
            let h = self.object_header(next, OBJECT_ENTRY_ARRAY, ENTRY_ARRAY_FIXED_LEN + item)?;
            let cap = (h.size - ENTRY_ARRAY_FIXED_LEN) / item;
            self.chain.push(ArrayRef {
                offset: next,
                first: covered,
                cap,
            });
        }
    }

    /// Locates entry `i` (0-based, below `n_entries`).
    pub fn locate(&mut self, i: u64) -> Result<Located, KeyError> {
        if i >= self.header.n_entries {
            return Err(KeyError::Chain(Corruption::Bad(
                "index past n_entries".into(),
            )));
        }
        let a = self.array_for(i).map_err(KeyError::Chain)?;
        let item = self.header.item_len();
        let at = a.offset + ENTRY_ARRAY_FIXED_LEN + (i - a.first) * item;
        let b = self
            .r
            .read(at, item as usize, self.limit)
            .map_err(KeyError::Chain)?;
        let offset =
            crate::format::item_offset(b, 0, self.header.compact(), item as usize).unwrap_or(0);
        if offset == 0 {
            return Err(KeyError::Chain(Corruption::Bad(format!(
                "empty entry array slot {i} below n_entries"
            ))));
        }
        self.key_at(offset).map_err(KeyError::Entry)
    }

    fn key_at(&mut self, offset: u64) -> Result<Located, Corruption> {
        self.check_offset(offset, "entry")?;
        let h = self.object_header(offset, OBJECT_ENTRY, ENTRY_FIXED_LEN)?;
        let stride = self.entry_item_stride();
        // Mirrors journalctl's own object checks: such entries are skipped by it too.
        if h.size > self.limits.max_object_size {
            return Err(Corruption::TooLarge(format!(
                "entry object of {} bytes",
                h.size
            )));
        }
        if !(h.size - ENTRY_FIXED_LEN).is_multiple_of(stride) || h.size == ENTRY_FIXED_LEN {
            return Err(Corruption::Bad("entry object size".into()));
        }
        let fixed =
            EntryFixed::parse(self.r.read(offset, ENTRY_FIXED_LEN as usize, self.limit)?)?;
        const TIME_MAX: u64 = 1 << 55;
        if fixed.seqnum == 0
            || fixed.realtime == 0
            || fixed.realtime >= TIME_MAX
            || fixed.monotonic >= TIME_MAX
        {
            return Err(Corruption::Bad("entry seqnum or timestamps invalid".into()));
        }
        Ok(Located {
            offset,
            size: h.size,
            key: EntryKey {
                seqnum_id: self.header.seqnum_id,
                seqnum: fixed.seqnum,
                boot_id: fixed.boot_id,
                monotonic: fixed.monotonic,
                realtime: fixed.realtime,
                xor_hash: fixed.xor_hash,
            },
        })
    }

    fn entry_item_stride(&self) -> u64 {
        if self.header.compact() { 4 } else { 16 }
    }

    /// First index in `[lo, n_entries)` whose key is "past" (`past` is monotone over the
    /// file's entries, e.g. seqnum > x). Unreadable probes count as not past (so a linear
    /// scan from the result still sees them).
    pub fn partition(&mut self, mut lo: u64, past: impl Fn(&EntryKey) -> bool) -> u64 {
        let mut hi = self.header.n_entries;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.locate(mid) {
                Ok(l) if past(&l.key) => hi = mid,
                Ok(_) => lo = mid + 1,
                Err(_) => return lo,
            }
        }
        lo
    }

    /// The newest readable entry (looking back a few entries past corrupt ones).
    pub fn tail(&mut self) -> Option<Located> {
        let n = self.header.n_entries;
        (n.saturating_sub(16)..n)
            .rev()
            .find_map(|i| self.locate(i).ok())
    }

    /// Decodes the entry. `Ok(None)`: the filter rejected it. Field-level problems (a corrupt
    /// or oversized DATA object) drop only that field and are pushed to `problems`.
    pub fn read_entry(
        &mut self,
        at: &Located,
        filter: &Filter,
        problems: &mut FieldProblems,
    ) -> Result<Option<Entry>, Corruption> {
        let stride = self.entry_item_stride();
        let n = ((at.size - ENTRY_FIXED_LEN) / stride) as usize;
        if n > self.limits.max_fields {
            return Err(Corruption::TooLarge(format!("entry with {n} fields")));
        }
        let compact = self.header.compact();
        let items = self
            .r
            .read(at.offset + ENTRY_FIXED_LEN, n * stride as usize, self.limit)?;
        self.items.clear();
        for i in 0..n {
            self.items
                .push(crate::format::item_offset(items, i, compact, stride as usize).unwrap_or(0));
        }
        let mut entry = Entry::new(at.key);
        self.deferred.clear();
        let items = std::mem::take(&mut self.items);
        for &d in &items {
            if let Err(e) = self.read_data(d, &mut entry) {
                problems.list.push(e);
            }
        }
        self.items = items;

        if !filter.is_empty() {
            let decided = |e: &Entry| {
                crate::filter::FILTER_FIELDS
                    .iter()
                    .all(|f| e.get(f).is_some())
            };
            if !self.deferred.is_empty() && !decided(&entry) {
                self.decode_deferred(&mut entry, problems);
            }
            let accepted = filter.accepts(
                entry.get("_SYSTEMD_UNIT"),
                entry.get("SYSLOG_IDENTIFIER"),
                entry.get("_TRANSPORT"),
            );
            if !accepted {
                return Ok(None);
            }
        }
        self.decode_deferred(&mut entry, problems);
        Ok(Some(entry))
    }

    fn read_data(&mut self, offset: u64, entry: &mut Entry) -> Result<(), Corruption> {
        if let Some(p) = self.cache.get(offset) {
            let start = entry.buf_mut().len();
            entry.buf_mut().extend_from_slice(p);
            entry.commit_field(start);
            return Ok(());
        }
        self.check_offset(offset, "data")?;
        let po = if self.header.compact() {
            DATA_PAYLOAD_OFFSET_COMPACT
        } else {
            DATA_PAYLOAD_OFFSET
        };
        let h = self.object_header(offset, OBJECT_DATA, po)?;
        let len = h.size - po;
        let flags = h.flags & OBJECT_COMPRESSION_MASK;
        if len > self.limits.max_object_size {
            return Err(Corruption::TooLarge(format!(
                "data object of {} bytes",
                h.size
            )));
        }
        if flags != 0 {
            self.deferred.push(Deferred {
                position: entry.field_count(),
                offset,
                payload_offset: po,
                len,
                flags,
            });
            return Ok(());
        }
        if len as usize > self.limits.max_field_size {
            return Err(Corruption::TooLarge(format!("field of {len} bytes")));
        }
        let shared = le64(self.r.read(offset + 56, 8, self.limit)?, 0).unwrap_or(0) > 1;
        let payload = self.r.read(offset + po, len as usize, self.limit)?;
        let start = entry.buf_mut().len();
        entry.buf_mut().extend_from_slice(payload);
        if entry.commit_field(start) && shared && payload.len() <= CACHE_MAX_PAYLOAD {
            self.cache.put(offset, payload);
        }
        Ok(())
    }

    fn decode_deferred(&mut self, entry: &mut Entry, problems: &mut FieldProblems) {
        let mut inserted = 0;
        for d in std::mem::take(&mut self.deferred) {
            let start = entry.buf_mut().len();
            let cap = self.limits.max_field_size;
            let result = self
                .r
                .read(d.offset + d.payload_offset, d.len as usize, self.limit)
                .and_then(|src| decompress_into(d.flags, src, cap, entry.buf_mut()));
            match result {
                Ok(()) if entry.commit_field(start) => {
                    entry.move_last_field_to(d.position + inserted);
                    inserted += 1;
                }
                Ok(()) => {}
                Err(e) => {
                    entry.buf_mut().truncate(start);
                    problems.list.push(e);
                }
            }
        }
    }
}

fn read_header(r: &mut CachedReader) -> Result<Header, Corruption> {
    let len = r.source_len()?;
    let n = len.min(HEADER_READ_LEN as u64) as usize;
    let mut buf = r.read(0, n, len)?.to_vec();
    if buf.len() < HEADER_SIZE_MIN as usize {
        if buf.len() >= 8 && buf.get(..8) != Some(SIGNATURE.as_slice()) {
            return Err(Corruption::NotJournal);
        }
        return Err(Corruption::Truncated("file shorter than a journal header"));
    }
    // Older (shorter) headers: the fields we use all lie in the first 208 bytes.
    buf.resize(HEADER_READ_LEN, 0);
    Header::parse(&buf)
}
