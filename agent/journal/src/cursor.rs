//! Cursors in systemd's string form and the order in which entries of several files
//! interleave, both as sd-journal defines them (src/libsystemd/sd-journal/sd-journal.c:
//! `sd_journal_get_cursor`, `sd_journal_seek_cursor`, `compare_with_location`;
//! journal-file.c: `journal_file_compare_locations`).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::error::CursorError;
use crate::format::Id128;

/// A position in the journal: `s=<seqnum_id>;i=<seqnum>;b=<boot_id>;m=<monotonic>;t=<realtime>;x=<xor_hash>`
/// (numbers in hex), exactly what `journalctl --show-cursor` prints and `--after-cursor`
/// takes. Parsed cursors may carry only some fields, as systemd allows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cursor {
    pub seqnum_id: Option<Id128>,
    pub seqnum: Option<u64>,
    pub boot_id: Option<Id128>,
    pub monotonic: Option<u64>,
    pub realtime: Option<u64>,
    pub xor_hash: Option<u64>,
}

impl Cursor {
    /// A cursor that only says "after this wall-clock time" (microseconds since the epoch).
    pub fn at_realtime(realtime: u64) -> Cursor {
        Cursor {
            realtime: Some(realtime),
            ..Cursor::default()
        }
    }

    fn seqnum_pos(&self) -> Option<(Id128, u64)> {
        Some((self.seqnum_id?, self.seqnum?))
    }

    fn monotonic_pos(&self) -> Option<(Id128, u64)> {
        Some((self.boot_id?, self.monotonic?))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut part = |f: &mut fmt::Formatter<'_>, k: char, v: String| {
            let r = write!(f, "{sep}{k}={v}");
            sep = ";";
            r
        };
        if let Some(s) = self.seqnum_id {
            part(f, 's', s.to_string())?;
        }
        if let Some(i) = self.seqnum {
            part(f, 'i', format!("{i:x}"))?;
        }
        if let Some(b) = self.boot_id {
            part(f, 'b', b.to_string())?;
        }
        if let Some(m) = self.monotonic {
            part(f, 'm', format!("{m:x}"))?;
        }
        if let Some(t) = self.realtime {
            part(f, 't', format!("{t:x}"))?;
        }
        if let Some(x) = self.xor_hash {
            part(f, 'x', format!("{x:x}"))?;
        }
        Ok(())
    }
}

impl FromStr for Cursor {
    type Err = CursorError;

    /// Accepts what `sd_journal_seek_cursor` accepts: `k=v` pairs separated by `;`, in any
    /// order, unknown keys ignored; at least one usable position (s+i, b+m or t).
    fn from_str(s: &str) -> Result<Cursor, CursorError> {
        let err = |m: &str| CursorError(m.to_string());
        if s.len() > 512 {
            return Err(err("longer than any systemd cursor"));
        }
        let mut c = Cursor::default();
        for part in s.trim().split(';') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| err(&format!("{part:?} is not key=value")))?;
            let hex = |v: &str| {
                u64::from_str_radix(v, 16).map_err(|_| err(&format!("{k}={v} is not hex")))
            };
            let id = |v: &str| Id128::parse(v).ok_or_else(|| err(&format!("{k}={v} is not an id")));
            match k {
                "s" => c.seqnum_id = Some(id(v)?),
                "i" => c.seqnum = Some(hex(v)?),
                "b" => c.boot_id = Some(id(v)?),
                "m" => c.monotonic = Some(hex(v)?),
                "t" => c.realtime = Some(hex(v)?),
                "x" => c.xor_hash = Some(hex(v)?),
                _ => {}
            }
        }
        if c.seqnum_pos().is_none() && c.monotonic_pos().is_none() && c.realtime.is_none() {
            return Err(err("no position (needs s and i, b and m, or t)"));
        }
        Ok(c)
    }
}

/// The fields of an entry that place it in the merged order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryKey {
    pub seqnum_id: Id128,
    pub seqnum: u64,
    pub boot_id: Id128,
    pub monotonic: u64,
    pub realtime: u64,
    pub xor_hash: u64,
}

impl EntryKey {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            seqnum_id: Some(self.seqnum_id),
            seqnum: Some(self.seqnum),
            boot_id: Some(self.boot_id),
            monotonic: Some(self.monotonic),
            realtime: Some(self.realtime),
            xor_hash: Some(self.xor_hash),
        }
    }
}

/// Order of two entries from (possibly) different files: by seqnum when both come from the
/// same seqnum source, else by monotonic time within the same boot, else by wall clock,
/// finally by content hash. Not transitive across sources; like journalctl we only ever use
/// it to pick the smallest of the files' next entries by a linear scan.
pub fn compare_entries(a: &EntryKey, b: &EntryKey) -> Ordering {
    if a.seqnum_id == b.seqnum_id {
        let o = a.seqnum.cmp(&b.seqnum);
        if o != Ordering::Equal {
            return o;
        }
    }
    if a.boot_id == b.boot_id {
        let o = a.monotonic.cmp(&b.monotonic);
        if o != Ordering::Equal {
            return o;
        }
    }
    a.realtime
        .cmp(&b.realtime)
        .then(a.xor_hash.cmp(&b.xor_hash))
}

/// Order of an entry against a location (a cursor, possibly partial).
pub fn compare_with_location(e: &EntryKey, l: &Cursor) -> Ordering {
    if let Some((id, seqnum)) = l.seqnum_pos()
        && id == e.seqnum_id
    {
        let o = e.seqnum.cmp(&seqnum);
        if o != Ordering::Equal {
            return o;
        }
    }
    if let Some((boot, mono)) = l.monotonic_pos()
        && boot == e.boot_id
    {
        let o = e.monotonic.cmp(&mono);
        if o != Ordering::Equal {
            return o;
        }
    }
    if let Some(t) = l.realtime {
        let o = e.realtime.cmp(&t);
        if o != Ordering::Equal {
            return o;
        }
    }
    if let Some(x) = l.xor_hash {
        let o = e.xor_hash.cmp(&x);
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = "s=b1f2046cec2d49248a994b7285598f08;i=1;b=0123456789abcdef0123456789abcdef;m=3e8;t=60a24181e4000;x=d288923f1623bb1b";

    #[test]
    fn parses_and_prints_systemd_cursors() {
        let c: Cursor = REAL.parse().unwrap();
        assert_eq!(c.seqnum, Some(1));
        assert_eq!(c.monotonic, Some(1000));
        assert_eq!(c.realtime, Some(1_700_000_000_000_000));
        assert_eq!(c.to_string(), REAL);
        // Any order, unknown keys ignored, partial positions.
        let p: Cursor = "t=10;z=whatever".parse().unwrap();
        assert_eq!(p, Cursor::at_realtime(16));
        assert_eq!(p.to_string(), "t=10");
        for bad in [
            "",
            "s=xx",
            "i=5",
            "t=zz",
            "b=0123456789abcdef0123456789abcdef",
            "nonsense",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }

    fn key(s: u8, seq: u64, b: u8, mono: u64, rt: u64) -> EntryKey {
        EntryKey {
            seqnum_id: Id128([s; 16]),
            seqnum: seq,
            boot_id: Id128([b; 16]),
            monotonic: mono,
            realtime: rt,
            xor_hash: 0,
        }
    }

    #[test]
    fn order_prefers_seqnum_then_monotonic_then_realtime() {
        // Same source: seqnum wins over a clock that went backwards.
        assert_eq!(
            compare_entries(&key(1, 1, 1, 50, 900), &key(1, 2, 1, 10, 100)),
            Ordering::Less
        );
        // Different source, same boot: monotonic.
        assert_eq!(
            compare_entries(&key(1, 9, 1, 10, 900), &key(2, 1, 1, 20, 100)),
            Ordering::Less
        );
        // Different source and boot: realtime.
        assert_eq!(
            compare_entries(&key(1, 9, 1, 10, 900), &key(2, 1, 2, 20, 100)),
            Ordering::Greater
        );
        let loc = key(1, 5, 1, 10, 100).cursor();
        assert_eq!(
            compare_with_location(&key(1, 6, 1, 0, 0), &loc),
            Ordering::Greater
        );
        assert_eq!(
            compare_with_location(&key(1, 5, 1, 10, 100), &loc),
            Ordering::Equal
        );
        assert_eq!(
            compare_with_location(&key(3, 1, 3, 0, 99), &loc),
            Ordering::Less
        );
    }
}
