//! File identity: (dev, inode) guarded by content fingerprints.
//!
//! (dev, inode) follows a file across kubelet's rename, but inodes are reused once a file is
//! deleted. So a checkpoint also stores a hash of up to [`FINGERPRINT_BYTES`] bytes just
//! before the saved offset (Fluent Bit's offset guard): if those bytes differ at start-up,
//! the inode now holds another file and we read it from the beginning.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// How many bytes before an offset the guard hashes.
pub const FINGERPRINT_BYTES: u64 = 256;
/// How much of the first line names the file in `file_id`.
pub(super) const HEAD_BYTES: usize = 4096;

/// (dev, inode) of an open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileKey {
    pub dev: u64,
    pub inode: u64,
}

impl FileKey {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            inode: meta.ino(),
        }
    }
}

/// The confirmed position in one file: what the tail sources checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub dev: u64,
    pub inode: u64,
    /// Guards against inode reuse: hash of the bytes just before `offset`.
    pub fingerprint: Fingerprint,
    /// Everything before this offset was delivered to every sink.
    pub offset: u64,
    /// Where the file was last seen (informational; identity is dev+inode+fingerprint).
    pub path: PathBuf,
    /// Hash of the file's first line, once known: finds the file again after kubelet
    /// compressed it (new inode) while no agent ran.
    #[serde(default)]
    pub head: Option<u64>,
}

impl crate::position::Position for FileEntry {
    type Key = FileKey;

    fn key(&self) -> FileKey {
        FileKey {
            dev: self.dev,
            inode: self.inode,
        }
    }

    fn progress(&self) -> u64 {
        self.offset
    }

    fn content_id(&self) -> Option<u64> {
        self.head
    }
}

/// Guard for a saved offset: hash of the `len` bytes that end at the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u64,
    pub hash: u64,
}

/// Fingerprint of the bytes before `offset` (fewer when the offset is near the start).
pub fn fingerprint_before(file: &File, offset: u64) -> std::io::Result<Fingerprint> {
    let len = offset.min(FINGERPRINT_BYTES);
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset - len)?;
    Ok(Fingerprint {
        len,
        hash: xxh3_64(&buf),
    })
}

/// Whether `file` still holds the bytes `fp` was taken from, ending at `offset`.
pub fn matches(file: &File, offset: u64, fp: &Fingerprint) -> bool {
    if fp.len > offset {
        return false;
    }
    let mut buf = vec![0u8; fp.len as usize];
    match file.read_exact_at(&mut buf, offset - fp.len) {
        Ok(()) => xxh3_64(&buf) == fp.hash,
        Err(_) => false,
    }
}

/// Hash of a file's first line (up to 4 KiB). The first line of a container log carries a
/// nanosecond timestamp, so it tells files apart even when they share an inode over time.
pub fn head_hash(file: &File) -> std::io::Result<u64> {
    head(file).map(|(hash, _)| hash)
}

/// [`head_hash`], and whether the first line is complete (has its newline, or fills the
/// 4 KiB window): a file still being written (e.g. a copy in progress) may not be.
pub fn head(file: &File) -> std::io::Result<(u64, bool)> {
    let mut head = vec![0u8; HEAD_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        let n = file.read_at(&mut head[filled..], filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(head_of_bytes(&head[..filled]))
}

/// [`head`] of a file's first (up to) [`HEAD_BYTES`] bytes.
pub fn head_of_bytes(head: &[u8]) -> (u64, bool) {
    let (first_line, complete) = match memchr::memchr(b'\n', head) {
        Some(i) => (&head[..=i], true),
        None => (head, head.len() == HEAD_BYTES),
    };
    (xxh3_64(first_line), complete)
}

/// Stable id of a file across renames: hash of (dev, inode, first line), so a reused inode
/// or a copytruncated file gets a new id. Call once the first line is complete.
pub fn file_id(key: FileKey, head: u64) -> u64 {
    let mut material = [0u8; 24];
    material[..8].copy_from_slice(&key.dev.to_le_bytes());
    material[8..16].copy_from_slice(&key.inode.to_le_bytes());
    material[16..].copy_from_slice(&head.to_le_bytes());
    xxh3_64(&material)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fingerprint_detects_inode_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, b"first file line one\nline two\n").unwrap();
        let f = File::open(&path).unwrap();
        let fp = fingerprint_before(&f, 20).unwrap();
        assert_eq!(fp.len, 20);
        assert!(matches(&f, 20, &fp));
        // Same inode, other content (what a reused inode looks like).
        let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        w.write_all(b"other").unwrap();
        assert!(!matches(&f, 20, &fp));
        // An offset beyond the end cannot match.
        assert!(!matches(&f, 10_000, &fp));
    }

    #[test]
    fn file_id_follows_rename_and_changes_with_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, b"2024-01-01T00:00:00.1Z stdout F a\n").unwrap();
        let f = File::open(&path).unwrap();
        let key = FileKey::of(&f.metadata().unwrap());
        let id = file_id(key, head_hash(&f).unwrap());
        let renamed = dir.path().join("0.log.20240101-000000");
        std::fs::rename(&path, &renamed).unwrap();
        let g = File::open(&renamed).unwrap();
        let g_key = FileKey::of(&g.metadata().unwrap());
        assert_eq!(g_key, key);
        assert_eq!(file_id(g_key, head_hash(&g).unwrap()), id);
        let (_, complete) = head(&g).unwrap();
        assert!(complete);
        std::fs::write(&renamed, b"2024-01-01T00:00:00.2Z stdout F b\n").unwrap();
        assert_ne!(file_id(key, head_hash(&g).unwrap()), id);
    }
}
