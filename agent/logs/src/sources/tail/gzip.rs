//! Decompressing a rotated `.gz` file we must finish (a checkpoint points into it): into an
//! anonymous, already unlinked file in the state dir, bounded in size and interruptible.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use tokio_util::sync::CancellationToken;

/// Largest decompressed rotation we accept. kubelet rotates at `containerLogMaxSize`
/// (10 MiB by default); anything far beyond is not a log rotation but a decompression bomb.
pub const MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;

/// Why a compressed file was not decompressed.
#[derive(Debug, thiserror::Error)]
pub enum GunzipError {
    /// The `.gz` itself could not be opened (`InvalidInput`: not a regular file).
    #[error("opening: {0}")]
    Open(#[source] std::io::Error),
    /// Not gzip, or a damaged or cut-off stream.
    #[error("corrupt: {0}")]
    Corrupt(#[source] std::io::Error),
    /// Staging the decompressed copy in the state dir failed.
    #[error("staging the decompressed copy: {0}")]
    Io(#[from] std::io::Error),
    #[error("decompresses to more than {limit} bytes; not a log rotation")]
    TooLarge { limit: u64 },
    #[error("stopped by shutdown")]
    Stopped,
}

/// Decompresses `gz` (a regular file under `root`, not reached through a symlink) into an
/// unlinked file under `dir` (at most `limit` bytes).
pub fn decompress_to_unlinked(
    root: &Path,
    gz: &Path,
    dir: &Path,
    limit: u64,
    stop: &CancellationToken,
) -> Result<File, GunzipError> {
    let source =
        node_agent_core::fsutil::open_regular_beneath(root, gz).map_err(GunzipError::Open)?;
    let tmp_path = node_agent_core::state::unique_temp_path(dir, "logs-gunzip");
    let mut out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp_path)?;
    std::fs::remove_file(&tmp_path)?;
    let mut dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(source));
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        if stop.is_cancelled() {
            return Err(GunzipError::Stopped);
        }
        let n = dec.read(&mut buf).map_err(GunzipError::Corrupt)?;
        if n == 0 {
            return Ok(out);
        }
        total += n as u64;
        if total > limit {
            return Err(GunzipError::TooLarge { limit });
        }
        out.write_all(&buf[..n])?;
    }
}

/// The first-line hash ([`super::file_id::head`]) of a compressed file's content, read
/// from its first few KiB only.
pub fn head_of(root: &Path, gz: &Path) -> Result<(u64, bool), GunzipError> {
    let source =
        node_agent_core::fsutil::open_regular_beneath(root, gz).map_err(GunzipError::Open)?;
    let mut dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(source));
    let mut head = vec![0u8; super::file_id::HEAD_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        let n = dec
            .read(&mut head[filled..])
            .map_err(GunzipError::Corrupt)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(super::file_id::head_of_bytes(&head[..filled]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz(dir: &Path, content: &[u8]) -> std::path::PathBuf {
        let path = dir.join("0.log.20240101-000000.gz");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(content).unwrap();
        enc.finish().unwrap();
        path
    }

    #[test]
    fn decompresses_into_an_unlinked_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = gz(dir.path(), b"line one\nline two\n");
        let stop = CancellationToken::new();
        let mut f = decompress_to_unlinked(dir.path(), &path, dir.path(), 1 << 20, &stop).unwrap();
        let mut text = String::new();
        use std::io::Seek;
        f.rewind().unwrap();
        f.read_to_string(&mut text).unwrap();
        assert_eq!(text, "line one\nline two\n");
        // Nothing but the .gz is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_and_cut_off_files_are_told_apart_from_staging_errors() {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let full = gz(dir.path(), &vec![b'y'; 100_000]);
        let bytes = std::fs::read(&full).unwrap();
        for damaged in [
            b"\x1f\x8b not really gzip".to_vec(),
            bytes[..bytes.len() / 2].to_vec(),
        ] {
            std::fs::write(&full, &damaged).unwrap();
            let err =
                decompress_to_unlinked(dir.path(), &full, dir.path(), 1 << 30, &stop).unwrap_err();
            assert!(matches!(err, GunzipError::Corrupt(_)), "{err}");
        }
        let missing = dir.path().join("gone.gz");
        let err =
            decompress_to_unlinked(dir.path(), &missing, dir.path(), 1 << 30, &stop).unwrap_err();
        assert!(matches!(err, GunzipError::Open(_)), "{err}");
        let err = decompress_to_unlinked(
            dir.path(),
            &full,
            &dir.path().join("no-dir"),
            1 << 30,
            &stop,
        )
        .unwrap_err();
        assert!(matches!(err, GunzipError::Io(_)), "{err}");
    }

    #[test]
    fn a_bomb_is_refused_and_shutdown_interrupts() {
        let dir = tempfile::tempdir().unwrap();
        let path = gz(dir.path(), &vec![b'x'; 1 << 20]);
        let stop = CancellationToken::new();
        let err = decompress_to_unlinked(dir.path(), &path, dir.path(), 1000, &stop).unwrap_err();
        assert!(
            matches!(err, GunzipError::TooLarge { limit: 1000 }),
            "{err}"
        );
        stop.cancel();
        let err =
            decompress_to_unlinked(dir.path(), &path, dir.path(), 1 << 30, &stop).unwrap_err();
        assert!(matches!(err, GunzipError::Stopped), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
