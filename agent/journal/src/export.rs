//! systemd's Journal Export Format (what `journalctl -o export` prints and
//! `systemd-journal-remote` reads): writing entries, and parsing it back. Used to make test
//! journals with systemd's own tools and to read `journalctl` as the oracle.

use std::io::{self, Write};

/// One exported entry: its fields in order (names with their raw values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportEntry {
    pub fields: Vec<(String, Vec<u8>)>,
}

impl ExportEntry {
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find_map(|(n, v)| (n == name).then_some(v.as_slice()))
    }
}

/// Writes one entry. Values with a newline (or any non-UTF-8 byte) use the binary form
/// `NAME\n<le64 length><bytes>\n`; others `NAME=value\n`. An empty line ends the entry.
pub fn write_entry<'a, W: Write>(
    out: &mut W,
    fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> io::Result<()> {
    for (name, value) in fields {
        if value.contains(&b'\n') || std::str::from_utf8(value).is_err() {
            out.write_all(name.as_bytes())?;
            out.write_all(b"\n")?;
            out.write_all(&(value.len() as u64).to_le_bytes())?;
            out.write_all(value)?;
            out.write_all(b"\n")?;
        } else {
            out.write_all(name.as_bytes())?;
            out.write_all(b"=")?;
            out.write_all(value)?;
            out.write_all(b"\n")?;
        }
    }
    out.write_all(b"\n")
}

/// Parses a whole export stream. Malformed input is an error naming the byte offset.
pub fn parse(mut b: &[u8]) -> Result<Vec<ExportEntry>, String> {
    let total = b.len();
    let mut out = Vec::new();
    let mut cur = ExportEntry::default();
    while !b.is_empty() {
        let at = total - b.len();
        let nl = b
            .iter()
            .position(|c| *c == b'\n')
            .ok_or(format!("unterminated line at byte {at}"))?;
        let (line, rest) = b.split_at(nl);
        b = rest.get(1..).unwrap_or_default();
        if line.is_empty() {
            out.push(std::mem::take(&mut cur));
            continue;
        }
        if let Some(eq) = line.iter().position(|c| *c == b'=') {
            let name = std::str::from_utf8(line.get(..eq).unwrap_or_default())
                .map_err(|_| format!("non-UTF-8 field name at byte {at}"))?;
            cur.fields.push((
                name.to_string(),
                line.get(eq + 1..).unwrap_or_default().to_vec(),
            ));
        } else {
            let name = std::str::from_utf8(line).map_err(|_| format!("bad name at {at}"))?;
            let len = b
                .get(..8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or(format!("binary field {name} without length at {at}"))?;
            let len = usize::try_from(len).map_err(|_| format!("length at {at}"))?;
            let value = b
                .get(8..8usize.saturating_add(len))
                .ok_or(format!("binary field {name} cut short at {at}"))?;
            cur.fields.push((name.to_string(), value.to_vec()));
            b = b.get(8 + len..).unwrap_or_default();
            if b.first() != Some(&b'\n') {
                return Err(format!("binary field {name} not followed by a newline"));
            }
            b = b.get(1..).unwrap_or_default();
        }
    }
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_text_and_binary() {
        let mut buf = Vec::new();
        let fields: Vec<(&str, &[u8])> = vec![
            ("MESSAGE", b"two\nlines"),
            ("BIN", b"\xff\x00x"),
            ("PRIORITY", b"6"),
        ];
        write_entry(&mut buf, fields.clone()).unwrap();
        write_entry(&mut buf, [("A", &b"1"[..])]).unwrap();
        let parsed = parse(&buf).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].get("MESSAGE"), Some(&b"two\nlines"[..]));
        assert_eq!(parsed[0].get("BIN"), Some(&b"\xff\x00x"[..]));
        assert_eq!(parsed[1].fields, vec![("A".to_string(), b"1".to_vec())]);
        assert!(parse(b"X\n\x05\x00\x00\x00\x00\x00\x00\x00ab").is_err());
        assert!(parse(b"unterminated").is_err());
    }
}
