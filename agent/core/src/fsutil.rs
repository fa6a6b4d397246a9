//! Opening files that input controls (pod log directories, host-file globs, textfiles):
//! never through a symlink, never outside the root they were found under, and only if
//! they are regular files. A container can create `0.log -> /host/etc/shadow` in its log
//! directory (it is on a hostPath); following it would ship the node's secrets.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

/// Opens `path` (which must lie under `root`) for reading with `openat2`'s
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: no component may be a symlink and resolution
/// may not leave `root`. The result must be a regular file (not a FIFO, socket or device,
/// which could block the reader or read kernel memory). `root` itself may be a symlink.
pub fn open_regular_beneath(root: &Path, path: &Path) -> io::Result<File> {
    let rel = path.strip_prefix(root).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not under {}", path.display(), root.display()),
        )
    })?;
    let dir = File::open(root)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = match openat2(&dir, rel, how) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ELOOP) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is or passes through a symlink; not followed",
                    path.display()
                ),
            ));
        }
        Err(nix::errno::Errno::EXDEV) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} resolves outside {}", path.display(), root.display()),
            ));
        }
        Err(e) => return Err(io::Error::from(e)),
    };
    let file = File::from(fd);
    check_regular(&file, path)?;
    Ok(file)
}

/// Fails unless `file` is a regular file.
pub fn check_regular(file: &File, path: &Path) -> io::Result<()> {
    let t = file.metadata()?.file_type();
    if t.is_file() {
        return Ok(());
    }
    let what = if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} is {what}; not read", path.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_symlinks_escapes_and_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pods");
        std::fs::create_dir_all(root.join("p/c")).unwrap();
        std::fs::write(root.join("p/c/0.log"), b"ok\n").unwrap();
        let secret = dir.path().join("shadow");
        std::fs::write(&secret, b"root:x\n").unwrap();
        std::os::unix::fs::symlink(&secret, root.join("p/c/1.log")).unwrap();
        std::os::unix::fs::symlink(root.join("p/c"), root.join("p/link")).unwrap();
        nix::unistd::mkfifo(&root.join("p/c/2.log"), nix::sys::stat::Mode::S_IRWXU).unwrap();

        assert!(open_regular_beneath(&root, &root.join("p/c/0.log")).is_ok());
        let err = open_regular_beneath(&root, &root.join("p/c/1.log")).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        // A symlinked directory on the way counts too.
        let err = open_regular_beneath(&root, &root.join("p/link/0.log")).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        // A FIFO would block the reader forever.
        let err = open_regular_beneath(&root, &root.join("p/c/2.log")).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert!(open_regular_beneath(&root, &root.join("p/c")).is_err());
        assert!(open_regular_beneath(&root, &secret).is_err());
        assert!(open_regular_beneath(&root, &root.join("p/c/../../../shadow")).is_err());
    }
}
