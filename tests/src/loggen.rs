//! Generator of realistic kubelet pod log trees, for tests and benchmarks.
//!
//! Lays out `<root>/<namespace>_<pod>_<uid>/<container>/0.log` and writes CRI lines
//! (containerd/CRI-O: long messages split into `P` parts ending with an `F` part) or docker
//! json-file lines, a mix of plain text, JSON payloads and stderr. Every logical line
//! carries a unique id as its first token (plain) or `"id"` field (JSON), so a test can
//! check that every line arrived exactly once and was joined back correctly; the generator
//! remembers the expected message per id. It can rotate like kubelet (rename to
//! `0.log.<timestamp>` + create, optionally gzip the rotated file) and copytruncate.
//!
//! ```no_run
//! use node_agent_tests::loggen::{ContainerLog, Format, LineMix};
//! let root = tempfile::tempdir().unwrap();
//! let mut log = ContainerLog::create(root.path(), "default", "web-1", "app", Format::Cri).unwrap();
//! let ids = log.write_lines(100, &LineMix::default()).unwrap();
//! log.rotate(false).unwrap();
//! ```

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Container runtime log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `<RFC3339Nano> <stream> <P|F> <msg>` (containerd, CRI-O).
    Cri,
    /// `{"log":"…\n","stream":"…","time":"…"}` (docker json-file).
    Docker,
}

/// What the lines look like.
#[derive(Debug, Clone)]
pub struct LineMix {
    /// Per mille of lines written to stderr.
    pub stderr_per_mille: u32,
    /// Per mille of lines whose payload is a JSON object.
    pub json_per_mille: u32,
    /// Per mille of lines made long enough to be split into partials.
    pub long_per_mille: u32,
    /// Payload size of a normal line (bytes, besides the id).
    pub payload_bytes: usize,
    /// Runtime's split size: messages longer than this are written as P…P F parts.
    pub split_bytes: usize,
}

impl Default for LineMix {
    fn default() -> Self {
        Self {
            stderr_per_mille: 100,
            json_per_mille: 200,
            long_per_mille: 100,
            payload_bytes: 80,
            split_bytes: 64,
        }
    }
}

impl LineMix {
    /// Plain stdout lines of about `line_bytes` bytes on disk, never split (benchmarks).
    pub fn plain(line_bytes: usize) -> Self {
        Self {
            stderr_per_mille: 0,
            json_per_mille: 0,
            long_per_mille: 0,
            payload_bytes: line_bytes.saturating_sub(60),
            split_bytes: usize::MAX,
        }
    }
}

/// What a consumer should see for one logical line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub stderr: bool,
    pub message: String,
}

/// The id a generated message carries (first token, or the `"id"` field of JSON).
pub fn message_id(message: &str) -> Option<&str> {
    if let Some(rest) = message.strip_prefix("{\"id\":\"") {
        return rest.split('"').next();
    }
    message.split(' ').next().filter(|s| s.starts_with("id-"))
}

static NEXT_TREE: AtomicU64 = AtomicU64::new(0);

/// One container's log directory being written to, like a container runtime does.
pub struct ContainerLog {
    dir: PathBuf,
    path: PathBuf,
    out: BufWriter<File>,
    format: Format,
    prefix: String,
    seq: u64,
    rng: u64,
    /// Fake clock for timestamps: strictly increasing nanoseconds.
    clock_nanos: i64,
    rotations: u32,
    track_expected: bool,
    expected: HashMap<String, Expected>,
    lines: u64,
}

impl ContainerLog {
    /// Creates `<root>/<ns>_<pod>_<uid>/<container>/0.log` (uid derived from the names).
    pub fn create(
        root: &Path,
        namespace: &str,
        pod: &str,
        container: &str,
        format: Format,
    ) -> std::io::Result<Self> {
        let n = NEXT_TREE.fetch_add(1, Ordering::Relaxed);
        let uid = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), n);
        Self::create_in(root, namespace, pod, &uid, container, format, n)
    }

    /// [`ContainerLog::create`] for a given pod uid (a pod the fake API server serves).
    pub fn create_with_uid(
        root: &Path,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
        format: Format,
    ) -> std::io::Result<Self> {
        let n = NEXT_TREE.fetch_add(1, Ordering::Relaxed);
        Self::create_in(root, namespace, pod, uid, container, format, n)
    }

    fn create_in(
        root: &Path,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
        format: Format,
        n: u64,
    ) -> std::io::Result<Self> {
        let dir = root
            .join(format!("{namespace}_{pod}_{uid}"))
            .join(container);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("0.log");
        let out = BufWriter::with_capacity(8192, open_append(&path)?);
        Ok(Self {
            dir,
            path,
            out,
            format,
            prefix: format!("id-{pod}-{container}-"),
            seq: 0,
            rng: 0x9E37_79B9_7F4A_7C15 ^ n,
            clock_nanos: 1_700_000_000_000_000_000,
            rotations: 0,
            track_expected: true,
            expected: HashMap::new(),
            lines: 0,
        })
    }

    /// The live file (`…/0.log`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container directory (holds rotated files too).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pod directory (`<ns>_<pod>_<uid>`), e.g. to delete the pod.
    pub fn pod_dir(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }

    /// Stops remembering expected messages (large backlogs for benchmarks).
    pub fn set_track_expected(&mut self, on: bool) {
        self.track_expected = on;
    }

    /// Logical lines written so far.
    pub fn lines_written(&self) -> u64 {
        self.lines
    }

    /// Every id written so far, with what a consumer should see.
    pub fn expected(&self) -> &HashMap<String, Expected> {
        &self.expected
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: deterministic, dependency-free.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Writes one logical line; returns its id. Bytes stay buffered until [`Self::flush`]
    /// or the buffer fills (so a reader also sees lines cut mid-way, as in real life).
    pub fn write_line(&mut self, mix: &LineMix) -> std::io::Result<String> {
        let id = format!("{}{}", self.prefix, self.seq);
        self.seq += 1;
        let r = self.next_rand();
        let stderr = (r % 1000) < u64::from(mix.stderr_per_mille);
        let json = ((r >> 10) % 1000) < u64::from(mix.json_per_mille);
        let long = ((r >> 20) % 1000) < u64::from(mix.long_per_mille);
        let size = if long {
            mix.split_bytes
                .saturating_mul(3)
                .saturating_add(17)
                .min(1 << 20)
        } else {
            mix.payload_bytes
        };
        let filler: String = (0..size)
            .map(|i| (b'a' + ((r as usize >> 7) + i) as u8 % 26) as char)
            .collect();
        let message = if json {
            format!("{{\"id\":\"{id}\",\"level\":\"info\",\"msg\":\"{filler}\"}}")
        } else {
            format!("{id} {filler}")
        };
        self.write_message(stderr, &message, mix.split_bytes)?;
        self.lines += 1;
        if self.track_expected {
            self.expected
                .insert(id.clone(), Expected { stderr, message });
        }
        Ok(id)
    }

    /// Writes `lines` as consecutive messages of one stream, one message each, as a
    /// runtime records a multi-line message (a stack trace); each counts as a line written.
    /// No ids: consumers cannot track them (benchmarks).
    pub fn write_messages(
        &mut self,
        stderr: bool,
        lines: &[&str],
        split_bytes: usize,
    ) -> std::io::Result<()> {
        for line in lines {
            self.write_message(stderr, line, split_bytes)?;
            self.lines += 1;
        }
        Ok(())
    }

    /// Writes `n` lines; returns their ids.
    pub fn write_lines(&mut self, n: usize, mix: &LineMix) -> std::io::Result<Vec<String>> {
        (0..n).map(|_| self.write_line(mix)).collect()
    }

    fn write_message(&mut self, stderr: bool, message: &str, split: usize) -> std::io::Result<()> {
        let stream = if stderr { "stderr" } else { "stdout" };
        let bytes = message.as_bytes();
        let mut parts: Vec<&str> = Vec::new();
        let mut start = 0;
        while bytes.len() - start > split {
            let mut end = start + split;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            parts.push(&message[start..end]);
            start = end;
        }
        parts.push(&message[start..]);
        let last = parts.len() - 1;
        for (i, part) in parts.iter().enumerate() {
            self.clock_nanos += 1_000;
            let ts = rfc3339_nanos(self.clock_nanos);
            match self.format {
                Format::Cri => {
                    let tag = if i == last { 'F' } else { 'P' };
                    writeln!(self.out, "{ts} {stream} {tag} {part}")?;
                }
                Format::Docker => {
                    let mut log = serde_json::to_string(part).map_err(std::io::Error::other)?;
                    if i == last {
                        log.insert_str(log.len() - 1, "\\n");
                    }
                    writeln!(
                        self.out,
                        "{{\"log\":{log},\"stream\":\"{stream}\",\"time\":\"{ts}\"}}"
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Pushes buffered bytes to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// kubelet-style rotation: rename `0.log` to `0.log.<timestamp>` and start a new
    /// `0.log`. With `gzip`, the older rotated files are compressed to `….gz` (and the
    /// plain ones removed), as kubelet does: it keeps only the newest rotation plain.
    /// Returns the path of the file just rotated.
    pub fn rotate(&mut self, gzip: bool) -> std::io::Result<PathBuf> {
        self.flush()?;
        self.rotations += 1;
        let rotated = self
            .dir
            .join(format!("0.log.20240101-{:06}", self.rotations));
        std::fs::rename(&self.path, &rotated)?;
        self.out = BufWriter::with_capacity(8192, open_append(&self.path)?);
        if gzip {
            for entry in std::fs::read_dir(&self.dir)? {
                let path = entry?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with("0.log.") && !name.ends_with(".gz") && path != rotated {
                    compress(&path)?;
                }
            }
        }
        Ok(rotated)
    }

    /// copytruncate rotation: copy `0.log` to `0.log.<timestamp>` and truncate `0.log` in
    /// place (same inode). Lines a reader had not read before the truncate are lost by
    /// design of copytruncate, so call it only once the reader caught up.
    pub fn copytruncate(&mut self) -> std::io::Result<PathBuf> {
        self.flush()?;
        self.rotations += 1;
        let copy = self
            .dir
            .join(format!("0.log.20240101-{:06}", self.rotations));
        std::fs::copy(&self.path, &copy)?;
        OpenOptions::new()
            .write(true)
            .open(&self.path)?
            .set_len(0)?;
        Ok(copy)
    }
}

/// Compresses `path` to `path.gz` and removes it.
fn compress(path: &Path) -> std::io::Result<()> {
    let gz_path = PathBuf::from(format!("{}.gz", path.display()));
    let data = std::fs::read(path)?;
    let mut enc =
        flate2::write::GzEncoder::new(File::create(&gz_path)?, flate2::Compression::fast());
    enc.write_all(&data)?;
    enc.finish()?.sync_all()?;
    std::fs::remove_file(path)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` for nanoseconds since the epoch.
pub fn rfc3339_nanos(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // civil_from_days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

/// A node's worth of pods: `pods × containers` logs with mixed formats.
pub struct LogTree {
    pub logs: Vec<ContainerLog>,
}

impl LogTree {
    /// `pods` pods in namespace `ns`, each with `containers` containers; every third
    /// container uses docker json-file, the rest CRI.
    pub fn create(root: &Path, ns: &str, pods: usize, containers: usize) -> std::io::Result<Self> {
        let mut logs = Vec::new();
        for p in 0..pods {
            for c in 0..containers {
                let format = if (p * containers + c) % 3 == 2 {
                    Format::Docker
                } else {
                    Format::Cri
                };
                logs.push(ContainerLog::create(
                    root,
                    ns,
                    &format!("pod{p}"),
                    &format!("c{c}"),
                    format,
                )?);
            }
        }
        Ok(Self { logs })
    }

    /// Every expected id across the tree.
    pub fn expected(&self) -> HashMap<String, Expected> {
        self.logs
            .iter()
            .flat_map(|l| l.expected().iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.logs.iter_mut().try_for_each(ContainerLog::flush)
    }
}

/// Background writer producing a steady load on a set of logs (e.g. across agent restarts
/// or a leader handover), with optional kubelet-style rotation.
pub struct LoadWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    written: std::sync::Arc<AtomicU64>,
    thread: std::thread::JoinHandle<std::io::Result<Vec<ContainerLog>>>,
}

impl LoadWriter {
    /// Writes about `lines_per_sec` lines per second spread over `logs` (in rounds of one
    /// line per log, flushed every round); with `rotate_every`, each log is rotated after
    /// that many of its lines (gzip on every other rotation).
    pub fn spawn(
        mut logs: Vec<ContainerLog>,
        lines_per_sec: u64,
        rotate_every: Option<u64>,
        mix: LineMix,
    ) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let written = std::sync::Arc::new(AtomicU64::new(0));
        let count = std::sync::Arc::clone(&written);
        let thread = std::thread::spawn(move || {
            let round = std::time::Duration::from_secs_f64(
                logs.len().max(1) as f64 / lines_per_sec.max(1) as f64,
            );
            let started = std::time::Instant::now();
            let mut rounds: u32 = 0;
            while !flag.load(Ordering::Relaxed) {
                for log in &mut logs {
                    log.write_line(&mix)?;
                    if let Some(every) = rotate_every
                        && every > 0
                        && log.lines_written() % every == 0
                    {
                        let gzip = log.rotations % 2 == 1;
                        log.rotate(gzip)?;
                    }
                    log.flush()?;
                    count.fetch_add(1, Ordering::SeqCst);
                }
                rounds += 1;
                let due = started + round * rounds;
                if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            Ok(logs)
        });
        Self {
            stop,
            written,
            thread,
        }
    }

    /// Lines written (and flushed) so far, live.
    pub fn lines_counter(&self) -> std::sync::Arc<AtomicU64> {
        std::sync::Arc::clone(&self.written)
    }

    /// Stops writing; returns the logs (with everything they expect) once flushed.
    pub fn stop(self) -> std::io::Result<Vec<ContainerLog>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| std::io::Error::other("load writer panicked"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_writer_writes_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let log = ContainerLog::create(dir.path(), "ns", "p", "c", Format::Cri).unwrap();
        let w = LoadWriter::spawn(vec![log], 20_000, Some(50), LineMix::default());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let logs = w.stop().unwrap();
        assert!(logs[0].lines_written() >= 50);
        assert_eq!(logs[0].expected().len() as u64, logs[0].lines_written());
        let rotated = std::fs::read_dir(logs[0].dir()).unwrap().count();
        assert!(rotated >= 2, "{rotated} files");
    }

    #[test]
    fn timestamps_format() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(1_709_200_800_000_000_001),
            "2024-02-29T10:00:00.000000001Z"
        );
    }

    #[test]
    fn writes_cri_with_partials_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ContainerLog::create(dir.path(), "ns", "p", "c", Format::Cri).unwrap();
        let mix = LineMix {
            long_per_mille: 1000,
            ..LineMix::default()
        };
        let ids = log.write_lines(3, &mix).unwrap();
        log.flush().unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(text.lines().any(|l| l.contains(" P ")));
        assert_eq!(text.lines().filter(|l| l.contains(" F ")).count(), 3);
        for id in &ids {
            assert_eq!(message_id(&log.expected()[id].message), Some(id.as_str()));
        }
        let first = log.rotate(true).unwrap();
        assert_eq!(std::fs::metadata(log.path()).unwrap().len(), 0);
        log.write_lines(1, &mix).unwrap();
        let second = log.rotate(true).unwrap();
        assert!(second.exists());
        assert!(!first.exists());
        assert!(PathBuf::from(format!("{}.gz", first.display())).exists());
    }
}
