//! Persisted positions of one source: a versioned JSON file in `state_dir`, written atomically
//! (tmp → fsync → rename → fsync dir) so a crash leaves either the old or the new file.
//! A corrupt or unknown-version file is moved aside and the source starts without
//! positions (each source documents what that means for it).
//!
//! Beside the positions a checkpoint may say up to when they cover every file
//! (`covered_until_ns`, see [`Loaded::covered_until`]). Older agents wrote no such field
//! and ignore it when they read one, so the version stays 1.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::position::Position;

const VERSION: u32 = 1;

#[derive(Serialize)]
struct OnDiskRef<'a, P> {
    version: u32,
    entries: &'a [P],
    #[serde(skip_serializing_if = "Option::is_none")]
    covered_until_ns: Option<u64>,
    #[serde(skip_serializing_if = "<[u64]>::is_empty")]
    finished: &'a [u64],
}

#[derive(Deserialize)]
#[serde(bound = "P: Position")]
struct OnDisk<P> {
    version: u32,
    entries: Vec<P>,
    #[serde(default)]
    covered_until_ns: Option<u64>,
    #[serde(default)]
    finished: Vec<u64>,
}

/// What a checkpoint file holds.
#[derive(Debug)]
pub struct Loaded<P: Position> {
    pub entries: HashMap<P::Key, P>,
    /// Every file last written before this time either has its position in `entries` or
    /// was confirmed to its end and forgotten. The tail source reads a rotated file it has
    /// no position for only if it was written after this. `None`: not recorded (a
    /// checkpoint of an older agent, or another source); the file's mtime stands in.
    pub covered_until: Option<SystemTime>,
    /// Content ids of streams recently confirmed to their end and forgotten
    /// ([`crate::position::Position::content_id`]).
    pub finished: Vec<u64>,
}

fn to_nanos(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
}

fn from_nanos(ns: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_nanos(ns))
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

/// Decodes a checkpoint file's bytes; the error says what is wrong with them. Pure, so
/// it is also the fuzzing entry point (tests/fuzz `checkpoint`).
pub fn decode<P: Position>(bytes: &[u8]) -> Result<HashMap<P::Key, P>, String> {
    decode_full(bytes).map(|l| l.entries)
}

/// [`decode`] with the coverage time.
pub fn decode_full<P: Position>(bytes: &[u8]) -> Result<Loaded<P>, String> {
    match serde_json::from_slice::<OnDisk<P>>(bytes) {
        Ok(d) if d.version == VERSION => Ok(Loaded {
            entries: d.entries.into_iter().map(|e| (e.key(), e)).collect(),
            covered_until: d.covered_until_ns.and_then(from_nanos),
            finished: d.finished,
        }),
        Ok(d) => Err(format!("unsupported version {}", d.version)),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads and writes one source's checkpoint file, `<state_dir>/<file_name>`.
#[derive(Debug)]
pub struct CheckpointStore<P> {
    dir: PathBuf,
    path: PathBuf,
    _positions: PhantomData<fn() -> P>,
}

impl<P> Clone for CheckpointStore<P> {
    fn clone(&self) -> Self {
        Self {
            dir: self.dir.clone(),
            path: self.path.clone(),
            _positions: PhantomData,
        }
    }
}

impl<P: Position> CheckpointStore<P> {
    pub fn new(state_dir: &Path, file_name: &str) -> Self {
        Self {
            dir: state_dir.to_path_buf(),
            path: state_dir.join(file_name),
            _positions: PhantomData,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads positions. Missing file → empty. A corrupt or unknown-version file is logged,
    /// moved aside (`.corrupt-<unix time>`) for inspection, and we start empty.
    pub fn load(&self) -> Result<HashMap<P::Key, P>, CheckpointError> {
        self.load_full().map(|l| l.entries)
    }

    /// [`Self::load`] with the coverage time.
    pub fn load_full(&self) -> Result<Loaded<P>, CheckpointError> {
        let empty = || Loaded {
            entries: HashMap::new(),
            covered_until: None,
            finished: Vec::new(),
        };
        std::fs::create_dir_all(&self.dir).map_err(io("creating state dir", &self.dir))?;
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(empty()),
            Err(e) => return Err(io("reading checkpoint", &self.path)(e)),
        };
        let problem = match decode_full::<P>(&text) {
            Ok(loaded) => return Ok(loaded),
            Err(problem) => problem,
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
            "checkpoint is unreadable; moving it aside and reading the source from the beginning"
        );
        std::fs::rename(&self.path, &aside)
            .map_err(io("moving aside corrupt checkpoint", &self.path))?;
        Ok(empty())
    }

    /// Checks, without changing anything, that the state dir can hold this checkpoint: it
    /// exists (or can be created) and is writable, and an existing file can be read (a
    /// corrupt one is fine: [`Self::load`] moves it aside). Run before taking the leader
    /// lock, so a broken state dir fails the pod at once instead of a silent leader.
    pub fn check(&self) -> Result<(), CheckpointError> {
        std::fs::create_dir_all(&self.dir).map_err(io("creating state dir", &self.dir))?;
        let probe = node_agent_core::state::unique_temp_path(&self.dir, "write-check");
        File::create(&probe).map_err(io("writing into the state dir", &self.dir))?;
        let _ = std::fs::remove_file(&probe);
        match std::fs::read(&self.path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("reading checkpoint", &self.path)(e)),
        }
    }

    /// Writes positions atomically. The temporary name is unique to this process, so two
    /// agents that (wrongly) share a state dir never write through each other's file.
    pub fn save<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a P>,
    ) -> Result<(), CheckpointError> {
        self.save_full(entries, None, &[])
    }

    /// [`Self::save`] with the coverage time and finished ids ([`Loaded`]).
    pub fn save_full<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a P>,
        covered_until: Option<SystemTime>,
        finished: &[u64],
    ) -> Result<(), CheckpointError> {
        let mut entries: Vec<P> = entries.into_iter().cloned().collect();
        entries.sort_by_key(|e| e.key());
        let body = serde_json::to_vec(&OnDiskRef {
            version: VERSION,
            entries: &entries,
            covered_until_ns: covered_until.and_then(to_nanos),
            finished,
        })?;
        let stem = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("checkpoint");
        let tmp = node_agent_core::state::unique_temp_path(&self.dir, stem);
        let written = File::create(&tmp)
            .map_err(io("creating", &tmp))
            .and_then(|mut f| {
                f.write_all(&body).map_err(io("writing", &tmp))?;
                f.sync_all().map_err(io("syncing", &tmp))
            })
            .and_then(|()| {
                std::fs::rename(&tmp, &self.path).map_err(io("renaming into place", &self.path))
            });
        if written.is_err() {
            // A full disk must not leave a half-written temporary file behind.
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing state dir", &self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::tail::file_id::{FileEntry as Entry, FileKey, Fingerprint};

    const FILE_NAME: &str = "logs-checkpoint.json";

    #[test]
    fn coverage_time_round_trips_and_is_optional() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::<Entry>::new(dir.path(), FILE_NAME);
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        store.save_full([&entry(1)], Some(t), &[5, 6]).unwrap();
        let loaded = store.load_full().unwrap();
        assert_eq!(loaded.covered_until, Some(t));
        assert_eq!(loaded.finished, [5, 6]);
        assert_eq!(loaded.entries.len(), 1);
        // An older agent's file has no such field.
        let old = br#"{"version":1,"entries":[]}"#;
        assert_eq!(decode_full::<Entry>(old).unwrap().covered_until, None);
        store.save([&entry(1)]).unwrap();
        assert_eq!(store.load_full().unwrap().covered_until, None);
    }

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
        let store = CheckpointStore::<Entry>::new(&dir.path().join("state"), FILE_NAME);
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
        let store = CheckpointStore::<Entry>::new(dir.path(), FILE_NAME);
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
