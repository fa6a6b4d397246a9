//! Line → message decoding, per file: what a tail source's layout plugs in (CRI/docker with
//! partial-line joining for pods; plain or JSON lines for host files).

use std::time::Instant;

use node_agent_core::record::Stream;

/// A complete message, before the stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Offset of the message's first line in the file.
    pub offset: u64,
    pub timestamp_nanos: i64,
    pub stream: Stream,
    pub message: String,
    pub truncated: bool,
    pub malformed: bool,
}

/// Counts for metrics, taken per call.
#[derive(Debug, Default, Clone, Copy)]
pub struct ParseStats {
    pub malformed: u64,
    pub truncated: u64,
}

/// Turns the lines of one file into messages.
pub trait Decoder: Send {
    /// Feeds one line (without `\n`) that starts at `offset`. `cut` says the tailer cut an
    /// over-long line; `now_nanos` stamps lines without a timestamp of their own.
    fn push(
        &mut self,
        offset: u64,
        line: &[u8],
        cut: bool,
        now_nanos: i64,
        stats: &mut ParseStats,
        out: &mut Vec<Parsed>,
    );

    /// Offset of the earliest line still waiting to complete a message: positions must not
    /// move past it.
    fn pending_start(&self) -> Option<u64>;

    /// Emits pending parts as they are (the file ended without their final part).
    fn flush(&mut self, stats: &mut ParseStats, out: &mut Vec<Parsed>);

    /// Forgets pending parts (the file was truncated under us).
    fn reset(&mut self);

    /// Bytes held for messages waiting for their final part (`logs.max_pending_bytes`).
    fn pending_bytes(&self) -> usize {
        0
    }

    /// When the oldest message still waiting for its final part began waiting.
    fn oldest_pending(&self) -> Option<Instant> {
        None
    }

    /// Emits the oldest waiting message as it is, flagged truncated (the pending budget is
    /// exhausted); its later parts become a message of their own. `false`: none waits.
    fn flush_oldest(&mut self, _out: &mut Vec<Parsed>) -> bool {
        false
    }
}
