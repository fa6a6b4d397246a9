//! Reads systemd journal files directly, without libsystemd (the agent ships as a static
//! scratch image): the journal directories as one journal in journalctl's order, systemd
//! cursors to checkpoint and resume, seeking, follow mode across appends, rotation and
//! vacuuming, a cheap unit/identifier/kernel filter, and zstd/LZ4/XZ DATA objects decoded
//! by pure-Rust decoders with a size cap.
//!
//! ```no_run
//! use node_agent_journal::{Journal, JournalOptions};
//! let mut j = Journal::open(JournalOptions::default());
//! while let Some(e) = j.next_entry() {
//!     let msg = e.message().unwrap_or_default();
//!     println!("{} {}", e.cursor(), String::from_utf8_lossy(msg));
//! }
//! for issue in j.take_issues() {
//!     eprintln!("{issue}");
//! }
//! ```
//!
//! # Why not a crate from crates.io
//!
//! Looked at (2026-12): `sdjournal` 0.1.15 (MIT, pure Rust, the most complete), netdata's
//! `systemd-journal-sdk` 0.10, `qjournal` 0.3, `systemd-journal-reader` 0.1, and the
//! libsystemd bindings (`journald`, `systemd`). None fits:
//! - `systemd-journal-sdk` is GPL-3.0-or-later and `qjournal` LGPL-2.1 (with C zstd):
//!   neither can be linked into this Apache-2.0 static binary.
//! - `sdjournal` merges files by realtime first (then seqnum), not by journalctl's
//!   seqnum-source / boot+monotonic / realtime order, so interleaving and "after cursor"
//!   differ from journalctl whenever a clock steps; its cursors are its own `SJ1:` hex
//!   (systemd cursors are only accepted); a file that fails to open is dropped with only a
//!   tracing event, so the caller cannot count corrupt files; XZ needs the C `xz2`; it
//!   mmaps archived files (SIGBUS if one is truncated under the mapping); its newer releases
//!   need a newer rustc than this workspace's 1.95.
//! - `systemd-journal-reader` supports zstd only (C `zstd`), no merge, cursors or follow.
//! - Bindings need libsystemd at run time, which a scratch image does not have.
//!
//! So the reader is written here from systemd's "Journal File Format" document and the
//! sd-journal sources' ordering and cursor rules (see [`cursor`]), and tested against
//! `journalctl` on files written by systemd's own `systemd-journal-remote`.
//!
//! # Corner cases
//! - Compact files (systemd ≥ 252: le32 items), regular files, keyed (siphash) and jenkins
//!   hash files (hashes are never needed: entries are found through the entry arrays).
//! - Online files (being written): re-read the header when at their end; appended entries
//!   are seen without reopening; stale cached windows are dropped on every header change.
//! - Archived `system@…journal`, `user-*.journal` and `…journal~` files; rotation (the
//!   renamed file keeps its inode and is followed); vacuumed files are read to the end
//!   through the open handle, then closed.
//! - Truncated files are read up to their real end; a broken entry-array chain stops that
//!   file there; corrupt entries and DATA objects are skipped; each is an [`Issue`] with a
//!   countable [`IssueKind`]. Offsets, sizes and chains are bounds-checked, chains must move
//!   forward (no loops), object and decompressed sizes are capped ([`Limits`]).

pub mod config;
pub mod cursor;
mod decompress;
mod entry;
mod error;
pub mod export;
mod file;
mod filter;
mod format;
mod journal;
mod source;

pub use config::{ConfigError, JournalConfig};
pub use cursor::Cursor;
pub use entry::Entry;
pub use error::{CursorError, Issue, IssueKind};
pub use file::Limits;
pub use filter::Filter;
pub use format::Id128;
pub use journal::{CursorSeek, DEFAULT_DIRECTORIES, Journal, JournalOptions, Stats};

/// What [`parse_file_bytes`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParseSummary {
    pub entries: u64,
    pub payload_bytes: u64,
    pub issues: u64,
}

/// Reads `bytes` as one journal file from head to end with the default limits: the entry
/// point for fuzzing (must never panic, loop or allocate beyond the caps on any input).
pub fn parse_file_bytes(bytes: &[u8]) -> ParseSummary {
    let opts = JournalOptions {
        // Small caps keep a fuzzer's runs fast; the code paths are the same.
        limits: Limits {
            max_object_size: 1 << 20,
            max_field_size: 1 << 20,
            max_fields: 1024,
        },
        ..JournalOptions::default()
    };
    let mut j = Journal::open_bytes(bytes, opts);
    let mut s = ParseSummary::default();
    while let Some(e) = j.next_entry() {
        s.entries += 1;
        s.payload_bytes += e.payload_len() as u64;
        // Exercise the cursor round trip too.
        let c = e.cursor();
        debug_assert_eq!(c.to_string().parse::<Cursor>().ok(), Some(c));
    }
    s.issues = j.stats().issues.iter().sum();
    s
}
