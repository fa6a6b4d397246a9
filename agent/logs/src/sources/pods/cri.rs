//! CRI log lines (containerd, CRI-O): `<RFC3339Nano> <stdout|stderr> <P|F> <message>`.

use node_agent_core::record::Stream;

/// One CRI line, borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriLine<'a> {
    pub timestamp_nanos: i64,
    pub stream: Stream,
    /// `P`: more parts of the same message follow; `F`: this part ends it.
    pub partial: bool,
    pub message: &'a [u8],
}

/// Parses one line (without its `\n`); `None` when it is not CRI-shaped.
pub fn parse(line: &[u8]) -> Option<CriLine<'_>> {
    let sp = memchr::memchr(b' ', line)?;
    let timestamp_nanos = parse_timestamp(&line[..sp])?;
    let rest = &line[sp + 1..];
    let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout ") {
        (Stream::Stdout, r)
    } else if let Some(r) = rest.strip_prefix(b"stderr ") {
        (Stream::Stderr, r)
    } else {
        return None;
    };
    // The tag field may carry more flags after a ':' in future runtimes; only P/F matter.
    let tag_end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
    let tag = &rest[..tag_end];
    let partial = match tag.first() {
        Some(b'P') => true,
        Some(b'F') => false,
        _ => return None,
    };
    if tag.len() > 1 && tag[1] != b':' {
        return None;
    }
    let message = if tag_end < rest.len() {
        &rest[tag_end + 1..]
    } else {
        &[]
    };
    Some(CriLine {
        timestamp_nanos,
        stream,
        partial,
        message,
    })
}

/// RFC 3339 with optional fraction (up to nanoseconds) and `Z` or `±HH:MM` offset, to
/// nanoseconds since the epoch. Hand-rolled: it runs once per line on the hot path.
pub fn parse_timestamp(s: &[u8]) -> Option<i64> {
    fn num(s: &[u8]) -> Option<i64> {
        let mut v: i64 = 0;
        for &b in s {
            if !b.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(b - b'0');
        }
        Some(v)
    }
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't' | b' ') {
        return None;
    }
    if s[13] != b':' || s[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(&s[0..4])?, num(&s[5..7])?, num(&s[8..10])?);
    let (hour, min, sec) = (num(&s[11..13])?, num(&s[14..16])?, num(&s[17..19])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: i64 = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(&frac[..digits])? * 10i64.pow(9 - digits as u32);
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let v = num(&[*h1, *h2])? * 3600 + num(&[*m1, *m2])? * 60;
            if *sign == b'+' { v } else { -v }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_partial_lines() {
        let l = parse(b"2016-10-06T00:17:09.669794202Z stdout F hello world").unwrap();
        assert_eq!(l.timestamp_nanos, 1_475_713_029_669_794_202);
        assert_eq!(l.stream, Stream::Stdout);
        assert!(!l.partial);
        assert_eq!(l.message, b"hello world");

        let l = parse(b"2016-10-06T00:17:09.669794202Z stderr P part").unwrap();
        assert_eq!(l.stream, Stream::Stderr);
        assert!(l.partial);
        assert_eq!(l.message, b"part");

        // Empty message, with and without the separating space.
        assert_eq!(
            parse(b"2016-10-06T00:17:09Z stdout F").unwrap().message,
            b""
        );
        assert_eq!(
            parse(b"2016-10-06T00:17:09Z stdout F ").unwrap().message,
            b""
        );
        // Message keeps inner spaces and invalid UTF-8 bytes.
        assert_eq!(
            parse(b"2016-10-06T00:17:09Z stdout F  a \xff b")
                .unwrap()
                .message,
            b" a \xff b"
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_timestamp(b"1970-01-01T00:00:01.5Z"),
            Some(1_500_000_000)
        );
        assert_eq!(
            parse_timestamp(b"2024-02-29T12:00:00.000000001+02:00"),
            Some(1_709_200_800_000_000_001)
        );
        assert_eq!(
            parse_timestamp(b"2024-02-29T10:00:00.000000001Z"),
            Some(1_709_200_800_000_000_001)
        );
        for bad in [
            &b"2024-13-01T00:00:00Z"[..],
            b"2024-01-01T00:00:00",
            b"2024-01-01T25:00:00Z",
            b"2024-01-01T00:00:00.Z",
            b"2024-01-01T00:00:00.1234567890Z",
            b"yesterday at noon",
            b"",
        ] {
            assert_eq!(
                parse_timestamp(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn rejects_non_cri() {
        for bad in [
            &b"hello world"[..],
            b"2016-10-06T00:17:09Z stdin F x",
            b"2016-10-06T00:17:09Z stdout X x",
            b"2016-10-06T00:17:09Z stdout",
            b"not-a-time stdout F x",
            b"2016-10-06T00:17:09Z stdout FF x",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
