//! Which entries of a push Loki refused, read from its 400 answer.
//!
//! Loki keeps the valid entries of a push and answers 400 naming the others, in two shapes:
//!
//! - the distributor's validation (one line per entry, grouped when many):
//!   `entry for stream '{app="x"}' has timestamp too old: 2023-11-14 22:13:20 +0000 UTC, oldest acceptable timestamp is: …`
//! - the ingester's per-stream block (at most `max_returned_stream_errors`, default 10,
//!   entries listed):
//!   `entry with timestamp 2023-11-14 22:13:20.5 +0000 UTC ignored, reason: 'entry out of order',`
//!   …
//!   `user 'fake', total ignored: 12 out of 40 for stream: {app="x"}`
//!
//! How we split: an entry named by (stream, timestamp) is dead-lettered alone and the
//! rest of the request counts as delivered. When a block says more were ignored than it
//! lists, every entry of that stream in the request is dead-lettered (the copy errs on
//! the side of keeping data; the extra ones may also be in Loki). When nothing in the
//! answer can be attributed (e.g. "invalid labels", which refuses the whole push), the
//! whole request is dead-lettered. An ingester reports only one failing stream per
//! push, so a push with several refused streams can name fewer entries than it dropped;
//! delivering streams in order (see the sink) is what keeps out-of-order refusals to
//! redeliveries of entries Loki already holds.

use std::collections::HashMap;

/// A request's streams: label string → (timestamp, index into the batch) entries.
pub type RequestStreams<'a> = &'a [(String, Vec<(i64, usize)>)];

/// Batch indices refused by the answer `body`, each with its reason; `None`: nothing in
/// the answer could be attributed (the caller refuses the whole request).
pub fn attribute(body: &str, streams: RequestStreams<'_>) -> Option<Vec<(usize, String)>> {
    let by_labels: HashMap<&str, &Vec<(i64, usize)>> =
        streams.iter().map(|(l, e)| (l.as_str(), e)).collect();
    let mut refused: Vec<(usize, String)> = Vec::new();
    let mut attributed_any = false;
    // Ingester block entries waiting for their "for stream:" trailer.
    let mut block: Vec<(i64, String)> = Vec::new();
    let take = |labels: Option<&str>, ts: i64, reason: &str, refused: &mut Vec<_>| -> bool {
        let candidates: Vec<&Vec<(i64, usize)>> = match labels.and_then(|l| by_labels.get(l)) {
            Some(entries) => vec![*entries],
            // Labels we cannot match (formatting differences): any stream with the timestamp.
            None => streams.iter().map(|(_, e)| e).collect(),
        };
        let mut found = false;
        for entries in candidates {
            for &(t, i) in entries {
                if t == ts {
                    refused.push((i, reason.to_string()));
                    found = true;
                }
            }
        }
        found
    };
    for line in body.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("entry with timestamp ") {
            if let Some((ts, reason)) = rest.split_once(" ignored, reason: ")
                && let Some(ts) = parse_go_time(ts)
            {
                block.push((
                    ts,
                    reason.trim_end_matches(',').trim_matches('\'').to_string(),
                ));
            }
        } else if let Some(pos) = line.find("total ignored: ") {
            let rest = &line[pos + "total ignored: ".len()..];
            let ignored: Option<usize> =
                rest.split_whitespace().next().and_then(|n| n.parse().ok());
            let labels = rest.split_once(" for stream: ").map(|(_, l)| l.trim());
            let listed = block.len();
            for (ts, reason) in block.drain(..) {
                attributed_any |= take(labels, ts, &reason, &mut refused);
            }
            if ignored.is_some_and(|n| n > listed)
                && let Some(entries) = labels.and_then(|l| by_labels.get(l))
            {
                let reason = format!(
                    "Loki ignored {} entries of this stream and named {listed}: {line}",
                    ignored.unwrap_or(0)
                );
                refused.extend(entries.iter().map(|&(_, i)| (i, reason.clone())));
                attributed_any = true;
            }
        } else if let Some(rest) = line.strip_prefix("entry for stream '")
            && let Some((labels, rest)) = rest.split_once("' has timestamp too ")
            && let Some((_, rest)) = rest.split_once(": ")
        {
            let ts = rest.split(',').next().and_then(parse_go_time);
            if let Some(ts) = ts {
                attributed_any |= take(Some(labels), ts, line, &mut refused);
            }
        }
    }
    // A block without its trailer (cut answer): attribute by timestamp alone.
    for (ts, reason) in block {
        attributed_any |= take(None, ts, &reason, &mut refused);
    }
    if !attributed_any {
        return None;
    }
    refused.sort_by_key(|(i, _)| *i);
    refused.dedup_by_key(|(i, _)| *i);
    Some(refused)
}

/// Go's `time.Time.String()`: `2006-01-02 15:04:05.999999999 -0700 MST` (the zone
/// abbreviation and a monotonic clock reading, if any, are ignored).
pub fn parse_go_time(s: &str) -> Option<i64> {
    let mut parts = s.split_whitespace();
    let (date, time, offset) = (parts.next()?, parts.next()?, parts.next()?);
    let dt = chrono::DateTime::parse_from_str(
        &format!("{date} {time} {offset}"),
        "%Y-%m-%d %H:%M:%S%.f %z",
    )
    .ok()?;
    dt.timestamp_nanos_opt()
}

/// The inverse of [`parse_go_time`] in UTC, as Loki prints entry timestamps (tests and the
/// test receiver use it).
pub fn format_go_time(nanos: i64) -> String {
    let dt = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(nanos);
    let frac = nanos.rem_euclid(1_000_000_000);
    let mut s = dt.format("%Y-%m-%d %H:%M:%S").to_string();
    if frac != 0 {
        let digits = format!("{frac:09}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000_000_000;

    fn streams() -> Vec<(String, Vec<(i64, usize)>)> {
        vec![
            (
                r#"{app="a"}"#.to_string(),
                vec![(T, 0), (T + 1, 1), (T + 2, 2)],
            ),
            (r#"{app="b"}"#.to_string(), vec![(T + 5, 3), (T + 6, 4)]),
        ]
    }

    #[test]
    fn go_times_round_trip() {
        for ns in [T, T + 500_000_000, T + 1, 0] {
            assert_eq!(
                parse_go_time(&format_go_time(ns)),
                Some(ns),
                "{}",
                format_go_time(ns)
            );
        }
        assert_eq!(
            format_go_time(T + 500_000_000),
            "2023-11-14 22:13:20.5 +0000 UTC"
        );
        assert_eq!(
            parse_go_time("2023-11-14 23:13:20 +0100 CET m=+0.001"),
            Some(T)
        );
        assert_eq!(parse_go_time("yesterday"), None);
    }

    #[test]
    fn ingester_blocks_name_entries_one_by_one() {
        let body = format!(
            "entry with timestamp {} ignored, reason: 'entry out of order',\n\
             entry with timestamp {} ignored, reason: 'entry out of order',\n\
             user 'fake', total ignored: 2 out of 3 for stream: {{app=\"a\"}}",
            format_go_time(T),
            format_go_time(T + 2)
        );
        let refused = attribute(&body, &streams()).unwrap();
        assert_eq!(refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(refused[0].1, "entry out of order");
    }

    #[test]
    fn truncated_block_refuses_the_whole_stream() {
        let body = format!(
            "entry with timestamp {} ignored, reason: 'entry out of order',\n\
             user 'fake', total ignored: 3 out of 3 for stream: {{app=\"a\"}}",
            format_go_time(T),
        );
        let refused = attribute(&body, &streams()).unwrap();
        assert_eq!(
            refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    #[test]
    fn distributor_too_old_lines() {
        let body = format!(
            "entry for stream '{{app=\"b\"}}' has timestamp too old: {}, oldest acceptable timestamp is: {}",
            format_go_time(T + 6),
            format_go_time(T + 100),
        );
        let refused = attribute(&body, &streams()).unwrap();
        assert_eq!(refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [4]);
        assert!(refused[0].1.contains("too old"));
    }

    #[test]
    fn unattributable_answers_refuse_everything() {
        assert_eq!(
            attribute(
                "error at least one label pair is required per stream",
                &streams()
            ),
            None
        );
        assert_eq!(attribute("", &streams()), None);
        // A timestamp that is in no stream of the request.
        let body = format!(
            "entry with timestamp {} ignored, reason: 'entry out of order',\nuser 'x', total ignored: 1 out of 3 for stream: {{app=\"a\"}}",
            format_go_time(T + 99)
        );
        assert_eq!(attribute(&body, &streams()), None);
    }
}
