//! Persisted read positions: a versioned JSON file in `state_dir`, written atomically
//! (tmp → fsync → rename → fsync dir) so a crash leaves either the old or the new file.
//!
//! Without a checkpoint (first start on a node) every existing log file is shipped from its
//! beginning: nothing kubelet still keeps is lost, at the price of re-shipping what an
//! earlier shipper may already have sent.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::file_id::{FileKey, Fingerprint};

const VERSION: u32 = 1;
const FILE_NAME: &str = "logs-checkpoint.json";

/// The confirmed position in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
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

impl Entry {
    pub fn key(&self) -> FileKey {
        FileKey {
            dev: self.dev,
            inode: self.inode,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding checkpoint: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io {
        action,
        path,
        source,
    }
}

/// Reads and writes the checkpoint file.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    path: PathBuf,
}

impl CheckpointStore {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.to_path_buf(),
            path: state_dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads positions. Missing file → empty. A corrupt or unknown-version file is logged,
    /// moved aside (`.corrupt-<unix time>`) for inspection, and we start empty.
    pub fn load(&self) -> Result<HashMap<FileKey, Entry>, CheckpointError> {
        std::fs::create_dir_all(&self.dir).map_err(io("creating state dir", &self.dir))?;
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(e) => return Err(io("reading checkpoint", &self.path)(e)),
        };
        let problem = match serde_json::from_slice::<OnDisk>(&text) {
            Ok(d) if d.version == VERSION => {
                return Ok(d.entries.into_iter().map(|e| (e.key(), e)).collect());
            }
            Ok(d) => format!("unsupported version {}", d.version),
            Err(e) => e.to_string(),
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let aside = self.path.with_extension(format!("json.corrupt-{stamp}"));
        tracing::error!(
            path = %self.path.display(),
            moved_to = %aside.display(),
            problem = %problem,
            "log checkpoint is unreadable; moving it aside and reading every log file from the beginning"
        );
        std::fs::rename(&self.path, &aside)
            .map_err(io("moving aside corrupt checkpoint", &self.path))?;
        Ok(HashMap::new())
    }

    /// Writes positions atomically.
    pub fn save<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> Result<(), CheckpointError> {
        let mut entries: Vec<Entry> = entries.into_iter().cloned().collect();
        entries.sort_by_key(|e| (e.dev, e.inode));
        let body = serde_json::to_vec(&OnDisk {
            version: VERSION,
            entries,
        })?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(&body).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(io("renaming into place", &self.path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing state dir", &self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(inode: u64) -> Entry {
        Entry {
            dev: 3,
            inode,
            fingerprint: Fingerprint { len: 4, hash: 99 },
            offset: 1234,
            path: "/var/log/pods/a_b_c/d/0.log".into(),
            head: Some(7),
        }
    }

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(&dir.path().join("state"));
        assert!(store.load().unwrap().is_empty());
        store.save([&entry(1), &entry(2)]).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[&FileKey { dev: 3, inode: 2 }], entry(2));
        store.save([&entry(5)]).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(
            loaded.keys().copied().collect::<Vec<_>>(),
            vec![FileKey { dev: 3, inode: 5 }]
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
    }

    #[test]
    fn corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        std::fs::write(store.path(), b"{\"version\":1,\"entries\":[{trunc").unwrap();
        assert!(store.load().unwrap().is_empty());
        assert!(!store.path().exists());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(aside.len(), 1);
        assert!(
            aside[0].starts_with("logs-checkpoint.json.corrupt-"),
            "{aside:?}"
        );

        std::fs::write(store.path(), b"{\"version\":99,\"entries\":[]}").unwrap();
        assert!(store.load().unwrap().is_empty());
        assert!(!store.path().exists());
    }
}
