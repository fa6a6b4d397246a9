//! What can go wrong reading journal files, as a kind the caller can count.
//!
//! Problems with one file or one entry never stop the reader: they become an [`Issue`]
//! (queued, see `Journal::take_issues`) and a per-kind counter (`Stats::issues`), and the
//! reader goes on with everything else.

use std::fmt;
use std::path::PathBuf;

/// Why one read inside a journal file failed (internal; surfaces as an [`Issue`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("not a journal file (bad signature)")]
    NotJournal,
    #[error("unsupported journal feature: {0}")]
    Unsupported(String),
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("corrupt: {0}")]
    Bad(String),
    #[error("over the size cap: {0}")]
    TooLarge(String),
    #[error("{algo} decompression failed: {reason}")]
    Decompress { algo: &'static str, reason: String },
    #[error("I/O error: {0}")]
    Io(String),
}

impl Corruption {
    pub fn kind(&self) -> IssueKind {
        match self {
            Corruption::NotJournal => IssueKind::NotJournal,
            Corruption::Unsupported(_) => IssueKind::Unsupported,
            Corruption::Truncated(_) => IssueKind::Truncated,
            Corruption::Bad(_) => IssueKind::Corrupt,
            Corruption::TooLarge(_) => IssueKind::TooLarge,
            Corruption::Decompress { .. } => IssueKind::Decompress,
            Corruption::Io(_) => IssueKind::Io,
        }
    }
}

impl From<std::io::Error> for Corruption {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Corruption::Truncated("read past the end of the file")
        } else {
            Corruption::Io(e.to_string())
        }
    }
}

/// The countable kind of an [`Issue`]; `as_str` is a stable metric label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IssueKind {
    /// A directory or file could not be listed, opened or read.
    Io,
    /// A `*.journal` file without the journal signature.
    NotJournal,
    /// A journal with incompatible flags this reader does not know (a newer systemd).
    Unsupported,
    /// A file shorter than its header claims, or an object running past the end.
    Truncated,
    /// An object with a wrong type, size, offset or a broken entry-array chain.
    Corrupt,
    /// A compressed DATA object that does not decode.
    Decompress,
    /// An object or decompressed field over the configured cap (the field is skipped).
    TooLarge,
    /// More journal files than `max_files`; the extra ones are not read.
    TooManyFiles,
    /// A resume point whose entries were vacuumed: entries may have been lost.
    EntriesMayBeLost,
}

impl IssueKind {
    pub const ALL: [IssueKind; 9] = [
        IssueKind::Io,
        IssueKind::NotJournal,
        IssueKind::Unsupported,
        IssueKind::Truncated,
        IssueKind::Corrupt,
        IssueKind::Decompress,
        IssueKind::TooLarge,
        IssueKind::TooManyFiles,
        IssueKind::EntriesMayBeLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IssueKind::Io => "io",
            IssueKind::NotJournal => "not_journal",
            IssueKind::Unsupported => "unsupported",
            IssueKind::Truncated => "truncated",
            IssueKind::Corrupt => "corrupt",
            IssueKind::Decompress => "decompress",
            IssueKind::TooLarge => "too_large",
            IssueKind::TooManyFiles => "too_many_files",
            IssueKind::EntriesMayBeLost => "entries_may_be_lost",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for IssueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem met while reading, with the file it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub kind: IssueKind,
    pub path: Option<PathBuf>,
    pub detail: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}: {}: {}", self.kind, p.display(), self.detail),
            None => write!(f, "{}: {}", self.kind, self.detail),
        }
    }
}

/// A cursor string that is not in systemd's `s=…;i=…;b=…;m=…;t=…;x=…` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid journal cursor: {0}")]
pub struct CursorError(pub(crate) String);
