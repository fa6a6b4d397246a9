//! Per-file line → message assembly: detects CRI or docker json-file per line, joins
//! partial lines per stream until the final part, caps joined messages, and turns lines
//! that fit neither format into raw `malformed` messages (never dropped).

use std::time::Instant;

use super::{cri, docker};
use crate::sources::tail::decode::{Decoder, ParseStats, Parsed};
use node_agent_core::record::Stream;

#[derive(Debug)]
struct Pending {
    offset: u64,
    timestamp_nanos: i64,
    buf: Vec<u8>,
    truncated: bool,
    /// When the first part arrived (the pending budget flushes the oldest first).
    since: Instant,
}

/// Joins partial lines of one file (one pending message per stream, as runtimes write them).
#[derive(Debug)]
pub struct Assembler {
    max_bytes: usize,
    pending: [Option<Pending>; 2],
}

fn slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// Longest prefix of `bytes` within `max` bytes that does not split a UTF-8 sequence.
fn cut_at(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    let mut end = max;
    while end > 0 && end < bytes.len() && (bytes[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    // Not UTF-8 at all near the cut: fall back to the byte limit.
    if end == 0 {
        &bytes[..max]
    } else {
        &bytes[..end]
    }
}

fn into_string(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

impl Assembler {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            pending: [None, None],
        }
    }

    /// Offset of the earliest line still waiting for its final part: a checkpoint must not
    /// move past it.
    pub fn pending_start(&self) -> Option<u64> {
        self.pending.iter().flatten().map(|p| p.offset).min()
    }

    /// Forgets pending parts (the file was truncated under us).
    pub fn reset(&mut self) {
        self.pending = [None, None];
    }

    /// Feeds one line (without `\n`) that starts at `offset`. `cut` says the tailer cut an
    /// over-long line. `now_nanos` stamps malformed lines.
    pub fn push(
        &mut self,
        offset: u64,
        line: &[u8],
        cut: bool,
        now_nanos: i64,
        stats: &mut ParseStats,
        out: &mut Vec<Parsed>,
    ) {
        if line.first() == Some(&b'{')
            && let Some(d) = docker::parse(line)
        {
            self.part(
                offset,
                d.timestamp_nanos,
                d.stream,
                d.partial,
                d.message.as_bytes(),
                cut,
                stats,
                out,
            );
            return;
        }
        if let Some(c) = cri::parse(line) {
            self.part(
                offset,
                c.timestamp_nanos,
                c.stream,
                c.partial,
                c.message,
                cut,
                stats,
                out,
            );
            return;
        }
        stats.malformed += 1;
        let body = cut_at(line, self.max_bytes);
        let truncated = cut || body.len() < line.len();
        if truncated {
            stats.truncated += 1;
        }
        out.push(Parsed {
            offset,
            timestamp_nanos: now_nanos,
            stream: Stream::Stdout,
            message: into_string(body.to_vec()),
            truncated,
            malformed: true,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn part(
        &mut self,
        offset: u64,
        timestamp_nanos: i64,
        stream: Stream,
        partial: bool,
        text: &[u8],
        cut: bool,
        stats: &mut ParseStats,
        out: &mut Vec<Parsed>,
    ) {
        let slot = &mut self.pending[slot(stream)];
        // Fast path: a whole message in one line.
        if slot.is_none() && !partial {
            let body = cut_at(text, self.max_bytes);
            let truncated = cut || body.len() < text.len();
            if truncated {
                stats.truncated += 1;
            }
            out.push(Parsed {
                offset,
                timestamp_nanos,
                stream,
                message: into_string(body.to_vec()),
                truncated,
                malformed: false,
            });
            return;
        }
        let p = slot.get_or_insert_with(|| Pending {
            offset,
            timestamp_nanos,
            buf: Vec::new(),
            truncated: false,
            since: Instant::now(),
        });
        let room = self.max_bytes.saturating_sub(p.buf.len());
        let body = cut_at(text, room);
        p.buf.extend_from_slice(body);
        p.truncated |= cut || body.len() < text.len();
        if !partial && let Some(done) = slot.take() {
            if done.truncated {
                stats.truncated += 1;
            }
            out.push(Parsed {
                offset: done.offset,
                timestamp_nanos: done.timestamp_nanos,
                stream,
                message: into_string(done.buf),
                truncated: done.truncated,
                malformed: false,
            });
        }
    }

    /// Emits pending partial messages as they are (the file ended without their final part).
    pub fn flush(&mut self, stats: &mut ParseStats, out: &mut Vec<Parsed>) {
        let mut done: Vec<(Stream, Pending)> = Vec::new();
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            if let Some(p) = self.pending[i].take() {
                done.push((stream, p));
            }
        }
        done.sort_by_key(|(_, p)| p.offset);
        for (stream, p) in done {
            if p.truncated {
                stats.truncated += 1;
            }
            out.push(Parsed {
                offset: p.offset,
                timestamp_nanos: p.timestamp_nanos,
                stream,
                message: into_string(p.buf),
                truncated: p.truncated,
                malformed: false,
            });
        }
    }
}

impl Assembler {
    /// Bytes the pending parts occupy (their buffers' capacity: what is really held).
    pub fn pending_bytes(&self) -> usize {
        self.pending
            .iter()
            .flatten()
            .map(|p| p.buf.capacity())
            .sum()
    }

    pub fn oldest_pending(&self) -> Option<Instant> {
        self.pending.iter().flatten().map(|p| p.since).min()
    }

    /// Emits the pending message that waits longest as it is, flagged truncated.
    pub fn flush_oldest(&mut self, out: &mut Vec<Parsed>) -> bool {
        let oldest = (0..self.pending.len())
            .filter_map(|i| self.pending[i].as_ref().map(|p| (p.since, i)))
            .min();
        let Some((_, i)) = oldest else {
            return false;
        };
        let Some(p) = self.pending[i].take() else {
            return false;
        };
        out.push(Parsed {
            offset: p.offset,
            timestamp_nanos: p.timestamp_nanos,
            stream: if i == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            },
            message: into_string(p.buf),
            truncated: true,
            malformed: false,
        });
        true
    }
}

impl Decoder for Assembler {
    fn push(
        &mut self,
        offset: u64,
        line: &[u8],
        cut: bool,
        now_nanos: i64,
        stats: &mut ParseStats,
        out: &mut Vec<Parsed>,
    ) {
        Assembler::push(self, offset, line, cut, now_nanos, stats, out);
    }

    fn pending_start(&self) -> Option<u64> {
        Assembler::pending_start(self)
    }

    fn flush(&mut self, stats: &mut ParseStats, out: &mut Vec<Parsed>) {
        Assembler::flush(self, stats, out);
    }

    fn reset(&mut self) {
        Assembler::reset(self);
    }

    fn pending_bytes(&self) -> usize {
        Assembler::pending_bytes(self)
    }

    fn oldest_pending(&self) -> Option<Instant> {
        Assembler::oldest_pending(self)
    }

    fn flush_oldest(&mut self, out: &mut Vec<Parsed>) -> bool {
        Assembler::flush_oldest(self, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(a: &mut Assembler, lines: &[&[u8]]) -> (Vec<Parsed>, ParseStats) {
        let mut out = Vec::new();
        let mut stats = ParseStats::default();
        let mut offset = 0;
        for l in lines {
            a.push(offset, l, false, 7, &mut stats, &mut out);
            offset += l.len() as u64 + 1;
        }
        (out, stats)
    }

    #[test]
    fn joins_partials_per_stream() {
        let mut a = Assembler::new(1024);
        let (out, stats) = feed(
            &mut a,
            &[
                b"2024-01-01T00:00:00Z stdout P hel",
                b"2024-01-01T00:00:01Z stderr F err line",
                b"2024-01-01T00:00:02Z stdout P lo ",
                b"2024-01-01T00:00:03Z stdout F world",
            ],
        );
        assert_eq!(stats.malformed, 0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].message, "err line");
        assert_eq!(out[0].stream, Stream::Stderr);
        assert_eq!(out[0].offset, 34);
        assert_eq!(out[1].message, "hello world");
        assert_eq!(out[1].offset, 0);
        assert_eq!(out[1].timestamp_nanos, 1_704_067_200_000_000_000);
        assert_eq!(a.pending_start(), None);
    }

    #[test]
    fn caps_joined_messages_and_flags_them() {
        let mut a = Assembler::new(8);
        let (out, stats) = feed(
            &mut a,
            &[
                b"2024-01-01T00:00:00Z stdout P 12345",
                b"2024-01-01T00:00:00Z stdout P 67890",
                b"2024-01-01T00:00:00Z stdout F abc",
                b"2024-01-01T00:00:00Z stdout F short",
                b"2024-01-01T00:00:00Z stdout F \xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
            ],
        );
        assert_eq!(out[0].message, "12345678");
        assert!(out[0].truncated);
        assert_eq!(out[1].message, "short");
        assert!(!out[1].truncated);
        // Cut on a character boundary: 4 × 'é' = 8 bytes.
        assert_eq!(out[2].message, "éééé");
        assert!(out[2].truncated);
        assert_eq!(stats.truncated, 2);
    }

    #[test]
    fn malformed_lines_are_kept_raw() {
        let mut a = Assembler::new(1024);
        let (out, stats) = feed(
            &mut a,
            &[
                b"garbage \xff here",
                b"2024-99-01T00:00:00Z stdout F bad time",
                b"{\"log\":1}",
            ],
        );
        assert_eq!(stats.malformed, 3);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|p| p.malformed && p.timestamp_nanos == 7));
        assert_eq!(out[0].message, "garbage \u{fffd} here");
        assert_eq!(out[1].message, "2024-99-01T00:00:00Z stdout F bad time");
    }

    #[test]
    fn docker_partials_join() {
        let mut a = Assembler::new(1024);
        let (out, _) = feed(
            &mut a,
            &[
                br#"{"log":"a very ","stream":"stdout","time":"2024-01-01T00:00:00Z"}"#,
                br#"{"log":"long line\n","stream":"stdout","time":"2024-01-01T00:00:00Z"}"#,
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].message, "a very long line");
        assert_eq!(out[0].offset, 0);
    }

    #[test]
    fn flush_oldest_ships_the_longest_waiting_part_flagged() {
        let mut a = Assembler::new(1024);
        let (out, _) = feed(
            &mut a,
            &[
                b"2024-01-01T00:00:00Z stderr P first ",
                b"2024-01-01T00:00:00Z stdout P second",
            ],
        );
        assert!(out.is_empty());
        assert!(a.pending_bytes() >= "first second".len());
        let mut out = Vec::new();
        assert!(a.flush_oldest(&mut out));
        assert_eq!(out[0].message, "first ");
        assert_eq!(out[0].stream, Stream::Stderr);
        assert!(out[0].truncated);
        // Its later parts become a message of their own; the other stream is untouched.
        let (more, _) = feed(&mut a, &[b"2024-01-01T00:00:00Z stderr F rest"]);
        assert_eq!(more[0].message, "rest");
        assert!(a.flush_oldest(&mut out));
        assert_eq!(out[1].message, "second");
        assert!(!a.flush_oldest(&mut out));
        assert_eq!(a.pending_bytes(), 0);
    }

    #[test]
    fn pending_start_and_flush() {
        let mut a = Assembler::new(1024);
        let (out, _) = feed(
            &mut a,
            &[
                b"2024-01-01T00:00:00Z stdout F x",
                b"2024-01-01T00:00:00Z stderr P tail",
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(a.pending_start(), Some(32));
        let mut out = Vec::new();
        a.flush(&mut ParseStats::default(), &mut out);
        assert_eq!(out[0].message, "tail");
        assert_eq!(a.pending_start(), None);
    }
}
