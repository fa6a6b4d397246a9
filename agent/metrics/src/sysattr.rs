//! Reading single-value sysfs attributes as procfs' `util.SysReadFile` /
//! `util.ReadUintFromFile` do: whitespace trimmed, integers in decimal.

use std::path::Path;

use super::{CollectorError, read_proc};

/// A sysfs attribute, trimmed.
pub fn read_string(path: &Path) -> Result<String, CollectorError> {
    Ok(read_proc(path)?.trim().to_string())
}

/// A sysfs attribute read as raw bytes (for labels that may not be UTF-8: invalid
/// sequences become U+FFFD, as Go's `strings.ToValidUTF8` does), trimmed.
pub fn read_lossy(path: &Path) -> Result<String, CollectorError> {
    let bytes = std::fs::read(path).map_err(|e| CollectorError::io(path, e))?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_string())
}

/// A decimal u64 attribute.
pub fn read_u64(path: &Path) -> Result<u64, CollectorError> {
    let text = read_proc(path)?;
    let text = text.trim();
    text.parse()
        .map_err(|e| CollectorError::parse(path.display().to_string(), format!("{text:?}: {e}")))
}

/// True for "no such file" and "permission denied" (root-only attributes).
pub fn is_absent_or_denied(e: &CollectorError) -> bool {
    matches!(e, CollectorError::Io { source, .. }
        if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied))
}

/// Sorted names of the entries of `dir`; `None` when it does not exist.
pub fn sorted_entries(dir: &Path) -> Result<Option<Vec<String>>, CollectorError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CollectorError::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CollectorError::io(dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(Some(names))
}

/// An unsigned integer as Go's `strconv.ParseUint(s, 0, 64)` reads it: `0x`/`0o`/`0b`
/// prefixes, a leading `0` for octal, `_` separators allowed after a prefix.
pub fn parse_uint_base0(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid unsigned integer {s:?}");
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if let Some(b) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        (b, 2)
    } else if let Some(o) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
        (o, 8)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    let digits: String = if radix == 10 {
        digits.to_string()
    } else {
        digits.replace('_', "")
    };
    if digits.is_empty() || digits.starts_with('+') {
        return Err(bad());
    }
    u64::from_str_radix(&digits, radix).map_err(|_| bad())
}
