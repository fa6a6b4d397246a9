//! Reads one open file in chunks and splits it into lines, keeping a trailing partial line
//! buffered until its newline arrives. Reads go through the open fd (`pread`), so a file
//! renamed or unlinked under us is still read to its end.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Tail state of one file.
#[derive(Debug)]
pub struct Tailer {
    file: File,
    /// File offset of the next read.
    read_offset: u64,
    /// Bytes read but not yet returned as lines (a partial line).
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    /// Discarding the rest of an over-long line until its newline; holds its start offset.
    skipping_from: Option<u64>,
    chunk: usize,
    max_line: usize,
}

/// What one read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    pub bytes: usize,
    pub lines: u64,
}

impl Tailer {
    /// Starts reading `file` at `offset` (a line boundary from a checkpoint, or 0).
    /// Lines longer than `max_line` bytes are cut there and the rest is skipped.
    pub fn new(file: File, offset: u64, chunk: usize, max_line: usize) -> Self {
        Self {
            file,
            read_offset: offset,
            buf: Vec::new(),
            buf_offset: offset,
            skipping_from: None,
            chunk: chunk.max(1),
            max_line: max_line.max(1),
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Offset just after the last complete line handed out: where a restart may resume.
    pub fn consumed_offset(&self) -> u64 {
        self.skipping_from.unwrap_or(self.buf_offset)
    }

    /// Offset of the next read (everything before it has been read).
    pub fn read_offset(&self) -> u64 {
        self.read_offset
    }

    /// Reads up to one chunk and calls `on_line(offset, line, cut)` for each complete line
    /// (without its `\n`). `cut` marks the head of a line that exceeded `max_line`.
    pub fn read_chunk(
        &mut self,
        mut on_line: impl FnMut(u64, &[u8], bool),
    ) -> std::io::Result<ReadStats> {
        let old_len = self.buf.len();
        self.buf.resize(old_len + self.chunk, 0);
        let n = match self
            .file
            .read_at(&mut self.buf[old_len..], self.read_offset)
        {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(old_len);
                return Err(e);
            }
        };
        self.buf.truncate(old_len + n);
        self.read_offset += n as u64;
        let mut lines = 0;
        let mut start = 0;
        // Only the new bytes can hold a newline: the old ones were already searched.
        let mut search_from = old_len;
        while let Some(i) = memchr::memchr(b'\n', &self.buf[search_from..]) {
            let end = search_from + i;
            if self.skipping_from.take().is_none() {
                on_line(self.buf_offset + start as u64, &self.buf[start..end], false);
                lines += 1;
            }
            start = end + 1;
            search_from = start;
        }
        let rest = self.buf.len() - start;
        if self.skipping_from.is_none() && rest > self.max_line {
            let line_start = self.buf_offset + start as u64;
            on_line(line_start, &self.buf[start..start + self.max_line], true);
            lines += 1;
            self.skipping_from = Some(line_start);
        }
        if self.skipping_from.is_some() {
            start = self.buf.len();
        }
        self.buf.drain(..start);
        self.buf_offset += start as u64;
        Ok(ReadStats { bytes: n, lines })
    }

    /// Detects copytruncate: the file is now shorter than what we read. Restarts at 0.
    pub fn check_truncated(&mut self) -> std::io::Result<bool> {
        let size = self.file.metadata()?.len();
        if size < self.read_offset {
            self.read_offset = 0;
            self.buf.clear();
            self.buf_offset = 0;
            self.skipping_from = None;
            return Ok(true);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(t: &mut Tailer) -> Vec<(u64, String, bool)> {
        let mut out = Vec::new();
        loop {
            let s = t
                .read_chunk(|o, l, c| out.push((o, String::from_utf8_lossy(l).into_owned(), c)))
                .unwrap();
            if s.bytes == 0 {
                return out;
            }
        }
    }

    #[test]
    fn splits_lines_and_buffers_partials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = File::create(&path).unwrap();
        w.write_all(b"one\ntwo\nthr").unwrap();
        let mut t = Tailer::new(File::open(&path).unwrap(), 0, 3, 100);
        assert_eq!(
            lines(&mut t),
            vec![(0, "one".into(), false), (4, "two".into(), false)]
        );
        assert_eq!(t.consumed_offset(), 8);
        w.write_all(b"ee\n").unwrap();
        assert_eq!(lines(&mut t), vec![(8, "three".into(), false)]);
        assert_eq!(t.consumed_offset(), 14);
    }

    #[test]
    fn keeps_reading_after_rename_and_unlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = File::create(&path).unwrap();
        w.write_all(b"a\n").unwrap();
        let mut t = Tailer::new(File::open(&path).unwrap(), 0, 64, 100);
        assert_eq!(lines(&mut t).len(), 1);
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        w.write_all(b"b\n").unwrap();
        std::fs::remove_file(dir.path().join("0.log.1")).unwrap();
        w.write_all(b"c\n").unwrap();
        assert_eq!(
            lines(&mut t),
            vec![(2, "b".into(), false), (4, "c".into(), false)]
        );
    }

    #[test]
    fn cuts_over_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, b"short\n0123456789abcdef\nnext\n").unwrap();
        let mut t = Tailer::new(File::open(&path).unwrap(), 0, 4, 8);
        assert_eq!(
            lines(&mut t),
            vec![
                (0, "short".into(), false),
                (6, "01234567".into(), true),
                (23, "next".into(), false)
            ]
        );
        assert_eq!(t.consumed_offset(), 28);
    }

    #[test]
    fn detects_copytruncate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, b"old line\nmore\n").unwrap();
        let mut t = Tailer::new(File::open(&path).unwrap(), 0, 64, 100);
        assert_eq!(lines(&mut t).len(), 2);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::write(&path, b"new\n").unwrap();
        assert!(t.check_truncated().unwrap());
        assert_eq!(lines(&mut t), vec![(0, "new".into(), false)]);
        assert!(!t.check_truncated().unwrap());
    }
}
