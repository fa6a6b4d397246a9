//! One journal entry: its fields (name → bytes, in the file's order; a name may repeat) and
//! the timestamps and ids that place it, with its cursor.

use crate::cursor::{Cursor, EntryKey};
use crate::format::Id128;

#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    eq: usize,
    end: usize,
}

/// A decoded entry. All field bytes live in one buffer (two allocations per entry).
#[derive(Clone, Debug)]
pub struct Entry {
    pub(crate) key: EntryKey,
    buf: Vec<u8>,
    fields: Vec<Span>,
}

impl Entry {
    pub(crate) fn new(key: EntryKey) -> Entry {
        Entry {
            key,
            buf: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// Wall-clock time the entry was logged, microseconds since the Unix epoch.
    pub fn realtime_usec(&self) -> u64 {
        self.key.realtime
    }

    /// Microseconds since boot `boot_id` (CLOCK_MONOTONIC of the logging host).
    pub fn monotonic_usec(&self) -> u64 {
        self.key.monotonic
    }

    pub fn boot_id(&self) -> Id128 {
        self.key.boot_id
    }

    pub fn seqnum(&self) -> u64 {
        self.key.seqnum
    }

    pub fn seqnum_id(&self) -> Id128 {
        self.key.seqnum_id
    }

    /// systemd's cursor string for this entry (`Display`), to checkpoint and resume from.
    pub fn cursor(&self) -> Cursor {
        self.key.cursor()
    }

    /// All fields in file order; values may be binary (`MESSAGE` included).
    pub fn fields(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter().map(|s| {
            let name = self.buf.get(s.start..s.eq).unwrap_or_default();
            // Names were checked to be UTF-8 when the field was added.
            let name = std::str::from_utf8(name).unwrap_or_default();
            (name, self.buf.get(s.eq + 1..s.end).unwrap_or_default())
        })
    }

    /// The first value of field `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields().find_map(|(n, v)| (n == name).then_some(v))
    }

    pub fn message(&self) -> Option<&[u8]> {
        self.get("MESSAGE")
    }

    pub fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// Bytes of all `NAME=value` payloads (what "MB per second" counts).
    pub fn payload_len(&self) -> usize {
        self.fields.iter().map(|s| s.end - s.start).sum()
    }

    /// Space for appending one raw `NAME=value` payload; call [`Entry::commit_field`] after.
    pub(crate) fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Turns the bytes from `start` to the end of the buffer into a field. Payloads without
    /// `=` or with a non-UTF-8 name are dropped (returns false), as journalctl drops them.
    pub(crate) fn commit_field(&mut self, start: usize) -> bool {
        let end = self.buf.len();
        let payload = self.buf.get(start..end).unwrap_or_default();
        let Some(eq) = memchr_eq(payload) else {
            self.buf.truncate(start);
            return false;
        };
        if eq == 0 || std::str::from_utf8(payload.get(..eq).unwrap_or_default()).is_err() {
            self.buf.truncate(start);
            return false;
        }
        self.fields.push(Span {
            start,
            eq: start + eq,
            end,
        });
        true
    }

    /// Moves the field at `from` (the last one pushed) to position `to`, keeping file order
    /// when a compressed payload is decoded after its uncompressed neighbours.
    pub(crate) fn move_last_field_to(&mut self, to: usize) {
        if let Some(span) = self.fields.pop() {
            let to = to.min(self.fields.len());
            self.fields.insert(to, span);
        }
    }
}

fn memchr_eq(b: &[u8]) -> Option<usize> {
    b.iter().position(|c| *c == b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_get_and_rejects() {
        let mut e = Entry::new(EntryKey {
            seqnum_id: Id128::default(),
            seqnum: 1,
            boot_id: Id128::default(),
            monotonic: 2,
            realtime: 3,
            xor_hash: 4,
        });
        for p in [
            &b"MESSAGE=hi\xff"[..],
            b"NOEQUALS",
            b"=novalue",
            b"\xff\xfe=x",
            b"A=1",
            b"A=2",
        ] {
            let start = e.buf_mut().len();
            e.buf_mut().extend_from_slice(p);
            e.commit_field(start);
        }
        let f: Vec<_> = e.fields().collect();
        assert_eq!(
            f,
            vec![("MESSAGE", &b"hi\xff"[..]), ("A", b"1"), ("A", b"2")]
        );
        assert_eq!(e.get("A"), Some(&b"1"[..]));
        assert_eq!(e.message(), Some(&b"hi\xff"[..]));
        assert_eq!(e.payload_len(), 11 + 3 + 3);
        e.move_last_field_to(0);
        assert_eq!(e.fields().next(), Some(("A", &b"2"[..])));
    }
}
