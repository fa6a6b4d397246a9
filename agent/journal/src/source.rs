//! Positioned reads of a journal file through a few cached windows.
//!
//! The reader uses `pread`, not mmap: journald truncates and rewrites nothing it has linked,
//! but a file truncated under a mapping (by an operator, a full disk, a hostile tool) raises
//! SIGBUS, which would kill the agent. Objects of one entry sit next to each other, so a
//! handful of 64 KiB windows turns the many small object reads into few syscalls.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::error::Corruption;

/// Something that can be read at an offset: a file, or bytes in memory (fuzzing, tests).
pub trait ReadAt: Send {
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the data.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// The current length of the data.
    fn len(&self) -> io::Result<u64>;
    /// Modification time in ns (files only): identifies a file version that was read.
    fn mtime_ns(&self) -> Option<i64> {
        None
    }
}

impl ReadAt for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset.saturating_add(done as u64);
            match FileExt::read_at(self, buf.get_mut(done..).unwrap_or_default(), at) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn mtime_ns(&self) -> Option<i64> {
        use std::os::unix::fs::MetadataExt;
        let m = self.metadata().ok()?;
        Some(m.mtime() * 1_000_000_000 + m.mtime_nsec())
    }
}

impl ReadAt for Arc<[u8]> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        let src = self.get(start..).unwrap_or_default();
        let n = src.len().min(buf.len());
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(src.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.as_ref().len() as u64)
    }
}

const WINDOW: u64 = 64 * 1024;
const WINDOWS: usize = 8;

struct Window {
    start: u64,
    data: Vec<u8>,
    last_use: u64,
}

/// A [`ReadAt`] with an LRU of [`WINDOWS`] aligned windows of [`WINDOW`] bytes.
pub struct CachedReader {
    src: Box<dyn ReadAt>,
    windows: Vec<Window>,
    scratch: Vec<u8>,
    clock: u64,
    /// read syscalls issued (for the benchmark and tests)
    pub reads: u64,
}

impl CachedReader {
    pub fn new(src: Box<dyn ReadAt>) -> CachedReader {
        CachedReader {
            src,
            windows: Vec::new(),
            scratch: Vec::new(),
            clock: 0,
            reads: 0,
        }
    }

    pub fn source_len(&self) -> io::Result<u64> {
        self.src.len()
    }

    pub fn source_mtime_ns(&self) -> Option<i64> {
        self.src.mtime_ns()
    }

    /// Forgets cached bytes: the writer fills entry-array slots in place, so windows of an
    /// online file are stale once its header shows new entries.
    pub fn invalidate(&mut self) {
        self.windows.clear();
    }

    /// Frees the buffers (a file that has nothing more to give right now).
    pub fn release(&mut self) {
        self.windows = Vec::new();
        self.scratch = Vec::new();
    }

    /// Returns `len` bytes at `offset`, all of them below `limit` (the readable end of the
    /// file), or an error; never a short slice.
    pub fn read(&mut self, offset: u64, len: usize, limit: u64) -> Result<&[u8], Corruption> {
        let end = offset
            .checked_add(len as u64)
            .ok_or(Corruption::Bad("offset overflows".into()))?;
        if end > limit {
            return Err(Corruption::Truncated("object past the end of the file"));
        }
        if len == 0 {
            return Ok(&[]);
        }
        let first = offset / WINDOW;
        if (end - 1) / WINDOW != first {
            return self.read_scratch(offset, len);
        }
        self.clock += 1;
        let start = first * WINDOW;
        let idx = match self.windows.iter().position(|w| w.start == start) {
            Some(i) if (w_end(&self.windows[i])) >= end => i,
            found => {
                let want = (limit - start).min(WINDOW) as usize;
                let mut data = match found {
                    Some(i) => std::mem::take(&mut self.windows[i].data),
                    None => Vec::new(),
                };
                data.resize(want, 0);
                self.reads += 1;
                let n = self.src.read_at(start, &mut data)?;
                data.truncate(n);
                let w = Window {
                    start,
                    data,
                    last_use: self.clock,
                };
                match found {
                    Some(i) => {
                        self.windows[i] = w;
                        i
                    }
                    None if self.windows.len() < WINDOWS => {
                        self.windows.push(w);
                        self.windows.len() - 1
                    }
                    None => {
                        let lru = (0..self.windows.len())
                            .min_by_key(|&i| self.windows[i].last_use)
                            .unwrap_or(0);
                        self.windows[lru] = w;
                        lru
                    }
                }
            }
        };
        let w = &mut self.windows[idx];
        w.last_use = self.clock;
        let from = (offset - w.start) as usize;
        w.data
            .get(from..from + len)
            .ok_or(Corruption::Truncated("file shorter than its header says"))
    }

    fn read_scratch(&mut self, offset: u64, len: usize) -> Result<&[u8], Corruption> {
        self.scratch.clear();
        self.scratch.resize(len, 0);
        self.reads += 1;
        let n = self.src.read_at(offset, &mut self.scratch)?;
        if n < len {
            return Err(Corruption::Truncated("file shorter than its header says"));
        }
        Ok(&self.scratch)
    }
}

fn w_end(w: &Window) -> u64 {
    w.start + w.data.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(n: usize) -> CachedReader {
        let bytes: Arc<[u8]> = (0..n).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
        CachedReader::new(Box::new(bytes))
    }

    #[test]
    fn reads_within_across_and_past_windows() {
        let n = 3 * WINDOW as usize + 100;
        let mut r = reader(n);
        let limit = n as u64;
        assert_eq!(r.read(10, 3, limit).unwrap(), &[10, 11, 12]);
        assert_eq!(r.read(20, 2, limit).unwrap(), &[20, 21]);
        assert_eq!(r.reads, 1);
        let across = r.read(WINDOW - 2, 4, limit).unwrap().to_vec();
        assert_eq!(across.len(), 4);
        assert_eq!(across[0], ((WINDOW - 2) % 251) as u8);
        assert!(matches!(
            r.read(limit - 2, 4, limit),
            Err(Corruption::Truncated(_))
        ));
        assert!(matches!(
            r.read(u64::MAX - 1, 4, u64::MAX),
            Err(Corruption::Bad(_))
        ));
        // A limit beyond the real data (header lies about the size) is a clean error.
        assert!(matches!(
            r.read(limit + 10, 4, limit + 100),
            Err(Corruption::Truncated(_))
        ));
    }

    #[test]
    fn lru_keeps_at_most_windows() {
        let n = 20 * WINDOW as usize;
        let mut r = reader(n);
        for i in 0..20 {
            r.read(i * WINDOW, 8, n as u64).unwrap();
        }
        assert!(r.windows.len() <= WINDOWS);
    }
}
