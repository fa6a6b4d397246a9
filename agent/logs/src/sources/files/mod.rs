//! Host log files by glob (`logs.files`), over the same tailing as pod logs
//! ([`crate::sources::tail`]): rotation by rename or copytruncate, checkpoints by file
//! identity guarded by a fingerprint, positions advanced only after delivery, symlinks
//! refused. Records carry kind `file` (or `audit` for `format: audit`) and the file's path.
//!
//! - Each entry's globs are grouped by their literal base directory; each group is one
//!   tail source watching that directory only as deep as its globs reach, with its own
//!   checkpoint file `files-<hash of base and globs>.json` (changing an entry's globs
//!   starts it afresh: its current files are shipped from their beginning).
//! - Files whose names look rotated (`x.log.1`, `x.log-20240101`, `x.log.2.gz`) are
//!   rotations, whether or not a glob matches them: they are finished through the handle
//!   held across the rename, and read on their own only when a checkpoint points into
//!   them (as for pods), so `/var/log/*` does not ship `syslog.1` a second time. Other
//!   compressions (xz, bz2, zstd) are never read.
//! - Files matched by two entries are shipped by both.

pub mod audit;
pub mod config;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use prometheus::{IntCounterVec, Opts};
use tokio_util::sync::CancellationToken;

use node_agent_core::record::{LogRecord, SourceKind, SourceMeta, Stream};
use node_agent_core::telemetry;

use crate::source::{Exit, Source, SourceContext};
use crate::sources::tail::decode::{Decoder, ParseStats, Parsed};
use crate::sources::tail::file_id::FileEntry;
use crate::sources::tail::{Candidate, FileKind, Layout, TailSettings, TailSource};
pub use config::{Compiled, FileFormat, FilesEntry};

/// Bound on directory entries one scan looks at (a runaway directory cannot stall us).
const MAX_SCAN_ENTRIES: usize = 100_000;

struct FilesMetrics {
    /// Lines of `format: json|audit` files that were not what the format says.
    unparsed: IntCounterVec,
}

fn metrics() -> &'static FilesMetrics {
    static METRICS: OnceLock<FilesMetrics> = OnceLock::new();
    METRICS.get_or_init(|| FilesMetrics {
        unparsed: telemetry::register(
            IntCounterVec::new(
                Opts::new(
                    "node_agent_logs_file_lines_unparsed_total",
                    "Lines of logs.files entries with format json or audit that were not a \
                     JSON object (audit: not an audit event); shipped raw, audit ones flagged malformed.",
                ),
                &["format"],
            )
            .expect("static metric definition"),
        ),
    })
}

/// What a name says about rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Not a rotated name.
    Current,
    Rotated,
    /// `.gz` rotation.
    Gzip,
    /// Compressed another way: never read.
    OtherCompression,
}

/// Classifies a file name the way logrotate and friends name rotations.
pub fn rotation_of(name: &str) -> Rotation {
    for ext in [".xz", ".bz2", ".zst", ".lz4", ".zip"] {
        if name.ends_with(ext) {
            return Rotation::OtherCompression;
        }
    }
    if name.ends_with(".gz") {
        return Rotation::Gzip;
    }
    let numbered = name.rsplit_once('.').is_some_and(|(stem, n)| {
        !stem.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    });
    // dateext: x.log-20240101 (optionally -20240101-1700 or -2024010117).
    let dated = name.match_indices('-').any(|(i, _)| {
        let d = &name[i + 1..];
        i > 0
            && d.bytes().take(8).filter(u8::is_ascii_digit).count() == 8
            && d.bytes()
                .all(|b| b.is_ascii_digit() || b == b'-' || b == b'_')
    });
    if numbered || dated || name.ends_with(".old") {
        Rotation::Rotated
    } else {
        Rotation::Current
    }
}

/// Lists the files of `c`: matched current files, and every rotated-looking name in their
/// directories (matched or not) as rotations.
pub fn scan(c: &Compiled) -> Vec<Candidate<FileFormat>> {
    let mut dirs: BTreeMap<PathBuf, Vec<(String, bool)>> = BTreeMap::new();
    let mut stack = vec![(c.base.clone(), 0usize)];
    let mut seen = 0usize;
    while let Some((dir, level)) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in read.flatten() {
            seen += 1;
            if seen > MAX_SCAN_ENTRIES {
                tracing::warn!(base = %c.base.display(), "logs.files: scan stopped at {MAX_SCAN_ENTRIES} directory entries");
                break;
            }
            let Ok(t) = e.file_type() else { continue };
            let path = e.path();
            if t.is_dir() {
                // Not followed into symlinked directories (file_type does not follow).
                if level < c.depth {
                    stack.push((path, level + 1));
                }
                continue;
            }
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let matched = c.include.is_match(&path);
            dirs.entry(dir.clone()).or_default().push((name, matched));
        }
    }
    let mut out = Vec::new();
    for (dir, names) in dirs {
        // Rotations belong to a matched file of the directory: `x.log.1` of `x.log`.
        let current: Vec<&str> = names
            .iter()
            .filter(|(n, m)| *m && rotation_of(n) == Rotation::Current)
            .map(|(n, _)| n.as_str())
            .collect();
        for (name, matched) in &names {
            let path = dir.join(name);
            if c.exclude.is_match(&path) {
                continue;
            }
            let rotation = rotation_of(name);
            let of_current = || {
                current.iter().any(|cur| {
                    name.len() > cur.len()
                        && name.starts_with(cur)
                        && matches!(name.as_bytes()[cur.len()], b'.' | b'-')
                })
            };
            let kind = match rotation {
                Rotation::Current if *matched => FileKind::Current,
                Rotation::Rotated if *matched || of_current() => FileKind::Rotated,
                Rotation::Gzip if *matched || of_current() => FileKind::RotatedCompressed,
                _ => continue,
            };
            out.push(Candidate {
                path,
                kind,
                info: c.format,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Plain lines: each line is a message (a trailing `\r` dropped), stamped when read.
#[derive(Debug)]
pub struct LineDecoder {
    max_bytes: usize,
}

impl LineDecoder {
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes }
    }
}

impl Decoder for LineDecoder {
    fn push(
        &mut self,
        offset: u64,
        line: &[u8],
        cut: bool,
        now_nanos: i64,
        stats: &mut ParseStats,
        out: &mut Vec<Parsed>,
    ) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut message = String::from_utf8_lossy(line).into_owned();
        let mut truncated = cut;
        if message.len() > self.max_bytes {
            let mut end = self.max_bytes;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            truncated = true;
        }
        if truncated {
            stats.truncated += 1;
        }
        out.push(Parsed {
            offset,
            timestamp_nanos: now_nanos,
            stream: Stream::Stdout,
            message,
            truncated,
            malformed: false,
        });
    }

    fn pending_start(&self) -> Option<u64> {
        None
    }

    fn flush(&mut self, _stats: &mut ParseStats, _out: &mut Vec<Parsed>) {}

    fn reset(&mut self) {}
}

/// One group of a `logs.files` entry.
pub struct FilesLayout {
    pub compiled: Compiled,
    pub node: String,
    pub max_line_bytes: usize,
}

impl FilesLayout {
    fn kind(&self) -> SourceKind {
        match self.compiled.format {
            FileFormat::Audit => SourceKind::Audit,
            FileFormat::Plain | FileFormat::Json => SourceKind::File,
        }
    }
}

impl Layout for FilesLayout {
    type Info = FileFormat;
    type Decoder = LineDecoder;

    fn root(&self) -> &Path {
        &self.compiled.base
    }

    fn scan(&self) -> Vec<Candidate<FileFormat>> {
        scan(&self.compiled)
    }

    fn decoder(&self, _info: &FileFormat) -> LineDecoder {
        LineDecoder::new(self.max_line_bytes)
    }

    fn source_meta(&self, _info: &FileFormat, path: &Path, file_id: u64) -> SourceMeta {
        SourceMeta {
            kind: self.kind(),
            namespace: String::new(),
            pod: String::new(),
            pod_uid: String::new(),
            container: String::new(),
            node: self.node.clone(),
            path: path.to_path_buf(),
            file_id,
            kubernetes: None,
        }
    }

    fn lag_labels(&self, _info: &FileFormat) -> [String; 3] {
        // Host files have no namespace/pod/container: one series for all of them.
        Default::default()
    }

    fn watch_depth(&self) -> usize {
        self.compiled.depth
    }

    fn decorate(&self, format: &FileFormat, record: &mut LogRecord) {
        crate::sources::source_metrics().read(self.kind()).inc();
        match format {
            FileFormat::Plain => {}
            FileFormat::Json => {
                record.fields = serde_json::from_str(&record.message).ok();
                if record.fields.is_none() {
                    metrics().unparsed.with_label_values(&["json"]).inc();
                }
            }
            FileFormat::Audit => {
                if !audit::decorate(record) {
                    metrics().unparsed.with_label_values(&["audit"]).inc();
                }
            }
        }
    }
}

/// A tail source over one group of a `logs.files` entry.
pub struct FilesSource {
    inner: TailSource<FilesLayout>,
    name: &'static str,
    checkpoint: String,
}

impl FilesSource {
    pub fn new(layout: FilesLayout, settings: TailSettings) -> Self {
        let checkpoint = checkpoint_file(&layout.compiled);
        let name = match layout.compiled.format {
            FileFormat::Audit => "audit",
            FileFormat::Plain | FileFormat::Json => "files",
        };
        Self {
            inner: TailSource::new(layout, settings),
            name,
            checkpoint,
        }
    }
}

/// `files-<hash>.json`: the base directory and globs name the checkpoint, not the entry's
/// place in the list (reordering entries keeps positions).
pub fn checkpoint_file(c: &Compiled) -> String {
    let mut material = c.base.to_string_lossy().into_owned();
    let mut patterns = c.patterns.clone();
    patterns.sort();
    for p in patterns {
        material.push('\n');
        material.push_str(&p);
    }
    format!(
        "files-{:016x}.json",
        xxhash_rust::xxh3::xxh3_64(material.as_bytes())
    )
}

impl Source for FilesSource {
    type Position = FileEntry;

    fn name(&self) -> &'static str {
        self.name
    }

    fn checkpoint_file(&self) -> &str {
        &self.checkpoint
    }

    fn run(self: Box<Self>, ctx: SourceContext<FileEntry>, stop: &CancellationToken) -> Exit {
        self.inner.run(ctx, stop)
    }
}

/// Compiles `entries` into their groups; `Err` names the entry (validation catches these
/// first).
pub fn compile_all(entries: &[FilesEntry]) -> anyhow::Result<Vec<Compiled>> {
    let mut out: Vec<Compiled> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let groups = e
            .compile()
            .map_err(|err| anyhow::anyhow!("logs.files[{i}]: {err}"))?;
        for g in groups {
            let name = checkpoint_file(&g);
            if out.iter().any(|o| checkpoint_file(o) == name) {
                anyhow::bail!(
                    "logs.files[{i}]: the globs {:?} under {} are listed twice",
                    g.patterns,
                    g.base.display()
                );
            }
            out.push(g);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names() {
        for n in [
            "syslog",
            "app.log",
            "kern.log",
            "x.json",
            "my-app.log",
            "auth.log.bak",
        ] {
            assert_eq!(rotation_of(n), Rotation::Current, "{n}");
        }
        for n in [
            "syslog.1",
            "app.log.12",
            "app.log-20240101",
            "app.log-2024010117",
            "app.log-20240101-1700",
            "x.old",
        ] {
            assert_eq!(rotation_of(n), Rotation::Rotated, "{n}");
        }
        assert_eq!(rotation_of("syslog.2.gz"), Rotation::Gzip);
        assert_eq!(rotation_of("app.log-20240101.gz"), Rotation::Gzip);
        assert_eq!(rotation_of("app.log.1.xz"), Rotation::OtherCompression);
    }

    #[test]
    fn scans_matches_and_their_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in [
            "app.log",
            "app.log.1",
            "app.log.2.gz",
            "app.log.3.xz",
            "other.txt",
            "other.txt.1",
            "dpkg.log",
            "sub/deep.log",
            "orphan.log.1",
        ] {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x\n").unwrap();
        }
        let entry = FilesEntry {
            paths: vec![
                format!("{}/*.log", root.display()),
                format!("{}/*.log.*", root.display()),
            ],
            exclude: vec![format!("{}/dpkg.log", root.display())],
            format: FileFormat::Plain,
        };
        let groups = entry.compile().unwrap();
        assert_eq!(groups.len(), 1);
        let got: Vec<(String, FileKind)> = scan(&groups[0])
            .into_iter()
            .map(|c| {
                (
                    c.path
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    c.kind,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("app.log".into(), FileKind::Current),
                ("app.log.1".into(), FileKind::Rotated),
                ("app.log.2.gz".into(), FileKind::RotatedCompressed),
                ("orphan.log.1".into(), FileKind::Rotated),
            ]
        );
        let names: Vec<String> = (0..2).map(|_| checkpoint_file(&groups[0])).collect();
        assert_eq!(names[0], names[1]);
        assert!(names[0].starts_with("files-") && names[0].ends_with(".json"));
        assert!(
            compile_all(&[entry.clone(), entry]).is_err(),
            "the same globs twice"
        );
    }

    #[test]
    fn line_decoder_cuts_and_strips_cr() {
        let mut d = LineDecoder::new(5);
        let mut stats = ParseStats::default();
        let mut out = Vec::new();
        d.push(0, b"hello\r", false, 7, &mut stats, &mut out);
        d.push(7, "héllo wörld".as_bytes(), false, 7, &mut stats, &mut out);
        assert_eq!(out[0].message, "hello");
        assert!(!out[0].truncated);
        assert_eq!(out[1].message, "héll");
        assert!(out[1].truncated);
        assert_eq!(stats.truncated, 1);
        assert_eq!(out[1].offset, 7);
    }
}
