//! Reads one open file in chunks and splits it into lines, keeping a trailing partial line
//! buffered until its newline arrives. Reads go through the open fd (`pread`), so a file
//! renamed or unlinked under us is still read to its end.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Tail state of one file. Reads go into a caller-provided scratch buffer shared by all
/// files; a file only keeps its (usually tiny) unfinished last line, so a node with a
/// thousand containers does not hold a thousand read buffers.
#[derive(Debug)]
pub struct Tailer {
    file: File,
    /// File offset of the next read.
    read_offset: u64,
    /// Bytes of a line whose newline has not arrived yet.
    partial: Vec<u8>,
    /// File offset of `partial[0]`.
    partial_offset: u64,
    /// Discarding the rest of an over-long line until its newline; holds its start offset.
    skipping_from: Option<u64>,
    max_line: usize,
}

/// What one read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    pub bytes: usize,
    pub lines: u64,
}

/// Capacity a partial-line buffer may keep once emptied.
const KEEP_CAPACITY: usize = 4096;

impl Tailer {
    /// Starts reading `file` at `offset` (a line boundary from a checkpoint, or 0).
    /// Lines longer than `max_line` bytes are cut there and the rest is skipped.
    pub fn new(file: File, offset: u64, max_line: usize) -> Self {
        Self {
            file,
            read_offset: offset,
            partial: Vec::new(),
            partial_offset: offset,
            skipping_from: None,
            max_line: max_line.max(1),
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Offset just after the last complete line handed out: where a restart may resume.
    pub fn consumed_offset(&self) -> u64 {
        match self.skipping_from {
            Some(start) => start,
            None if !self.partial.is_empty() => self.partial_offset,
            None => self.read_offset,
        }
    }

    /// Offset of the next read (everything before it has been read).
    pub fn read_offset(&self) -> u64 {
        self.read_offset
    }

    fn clear_partial(&mut self) {
        self.partial.clear();
        if self.partial.capacity() > KEEP_CAPACITY {
            self.partial.shrink_to(KEEP_CAPACITY);
        }
    }

    /// Cuts the buffered partial line if it grew past `max_line`: hands out its head and
    /// skips the rest up to the newline (memory stays bounded whatever the writer does).
    fn cut_if_over_long(&mut self, on_line: &mut impl FnMut(u64, &[u8], bool)) -> u64 {
        if self.partial.len() <= self.max_line {
            return 0;
        }
        on_line(self.partial_offset, &self.partial[..self.max_line], true);
        self.skipping_from = Some(self.partial_offset);
        self.clear_partial();
        1
    }

    /// Reads up to `scratch.len()` bytes and calls `on_line(offset, line, cut)` for each
    /// complete line (without its `\n`). `cut` marks the head of a line that exceeded
    /// `max_line`.
    pub fn read_chunk(
        &mut self,
        scratch: &mut [u8],
        mut on_line: impl FnMut(u64, &[u8], bool),
    ) -> std::io::Result<ReadStats> {
        let n = self.file.read_at(scratch, self.read_offset)?;
        let data = &scratch[..n];
        let data_offset = self.read_offset;
        self.read_offset += n as u64;
        let mut lines = 0;
        let mut pos = 0;
        if !self.partial.is_empty() || self.skipping_from.is_some() {
            let Some(i) = memchr::memchr(b'\n', data) else {
                if self.skipping_from.is_none() {
                    self.partial.extend_from_slice(data);
                    lines += self.cut_if_over_long(&mut on_line);
                }
                return Ok(ReadStats { bytes: n, lines });
            };
            if self.skipping_from.take().is_none() {
                self.partial.extend_from_slice(&data[..i]);
                let cut = self.partial.len() > self.max_line;
                let end = self.partial.len().min(self.max_line);
                on_line(self.partial_offset, &self.partial[..end], cut);
                lines += 1;
            }
            self.clear_partial();
            pos = i + 1;
        }
        while let Some(i) = memchr::memchr(b'\n', &data[pos..]) {
            let line = &data[pos..pos + i];
            let cut = line.len() > self.max_line;
            on_line(
                data_offset + pos as u64,
                &line[..line.len().min(self.max_line)],
                cut,
            );
            lines += 1;
            pos += i + 1;
        }
        if pos < n {
            self.partial_offset = data_offset + pos as u64;
            self.partial.extend_from_slice(&data[pos..]);
            lines += self.cut_if_over_long(&mut on_line);
        }
        Ok(ReadStats { bytes: n, lines })
    }

    /// Detects copytruncate: the file is now shorter than what we read. Restarts at 0.
    pub fn check_truncated(&mut self) -> std::io::Result<bool> {
        let size = self.file.metadata()?.len();
        if size < self.read_offset {
            self.read_offset = 0;
            self.clear_partial();
            self.partial_offset = 0;
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

    fn lines(t: &mut Tailer, chunk: usize) -> Vec<(u64, String, bool)> {
        let mut out = Vec::new();
        let mut scratch = vec![0u8; chunk];
        loop {
            let s = t
                .read_chunk(&mut scratch, |o, l, c| {
                    out.push((o, String::from_utf8_lossy(l).into_owned(), c))
                })
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
        let mut t = Tailer::new(File::open(&path).unwrap(), 0, 100);
        let chunk = 3;
        assert_eq!(
            lines(&mut t, chunk),
            vec![(0, "one".into(), false), (4, "two".into(), false)]
        );
        assert_eq!(t.consumed_offset(), 8);
        w.write_all(b"ee\n").unwrap();
        assert_eq!(lines(&mut t, chunk), vec![(8, "three".into(), false)]);
        assert_eq!(t.consumed_offset(), 14);
    }

    #[test]
    fn keeps_reading_after_rename_and_unlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = File::create(&path).unwrap();
        w.write_all(b"a\n").unwrap();
        let mut t = Tailer::new(File::open(&path).unwrap(), 0, 100);
        let chunk = 64;
        assert_eq!(lines(&mut t, chunk).len(), 1);
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        w.write_all(b"b\n").unwrap();
        std::fs::remove_file(dir.path().join("0.log.1")).unwrap();
        w.write_all(b"c\n").unwrap();
        assert_eq!(
            lines(&mut t, chunk),
            vec![(2, "b".into(), false), (4, "c".into(), false)]
        );
    }

    #[test]
    fn cuts_over_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, b"short\n0123456789abcdef\nnext\n").unwrap();
        let mut t = Tailer::new(File::open(&path).unwrap(), 0, 8);
        let chunk = 4;
        assert_eq!(
            lines(&mut t, chunk),
            vec![
                (0, "short".into(), false),
                (6, "01234567".into(), true),
                (23, "next".into(), false)
            ]
        );
        assert_eq!(t.consumed_offset(), 28);
    }

    #[test]
    fn cuts_over_long_lines_in_any_chunking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, b"0123456789abcdef\nnext\n0123456789\n").unwrap();
        for chunk in [1, 5, 11, 64] {
            let mut t = Tailer::new(File::open(&path).unwrap(), 0, 8);
            assert_eq!(
                lines(&mut t, chunk),
                vec![
                    (0, "01234567".into(), true),
                    (17, "next".into(), false),
                    (22, "01234567".into(), true)
                ],
                "chunk {chunk}"
            );
            assert_eq!(t.consumed_offset(), 33);
        }
    }

    #[test]
    fn detects_copytruncate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, b"old line\nmore\n").unwrap();
        let mut t = Tailer::new(File::open(&path).unwrap(), 0, 100);
        let chunk = 64;
        assert_eq!(lines(&mut t, chunk).len(), 2);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::write(&path, b"new\n").unwrap();
        assert!(t.check_truncated().unwrap());
        assert_eq!(lines(&mut t, chunk), vec![(0, "new".into(), false)]);
        assert!(!t.check_truncated().unwrap());
    }
}
