//! The exec-storm driver (`exec_storm.c`): a static, libc-free program that execs itself in
//! a chain, so that a test or benchmark can exec far faster than a shell loop spawning
//! `/bin/true` does (that reaches ~1,000 execs/s; one chain here reaches >10,000).
//!
//! Compiled from source with gcc into a directory the caller owns: the binary is never
//! committed, and it is built for the machine that runs it.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};

const SOURCE: &str = include_str!("exec_storm.c");

/// Why the driver cannot be built here, if it cannot (for tests to skip on).
pub fn unavailable() -> Option<String> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return Some("exec_storm driver: x86_64 or aarch64 only".into());
    }
    match Command::new("gcc").arg("--version").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("gcc not installed (builds the exec_storm driver)".into()),
    }
}

/// Compiles the driver into `dir/exec_storm` and returns its path.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let source = dir.join("exec_storm.c");
    std::fs::write(&source, SOURCE).with_context(|| format!("writing {}", source.display()))?;
    let binary = dir.join("exec_storm");
    let out = Command::new("gcc")
        .args([
            "-nostdlib",
            "-static",
            "-O2",
            "-fno-stack-protector",
            "-fno-pie",
            "-no-pie",
            "-o",
        ])
        .arg(&binary)
        .arg(&source)
        .output()
        .context("running gcc")?;
    ensure!(
        out.status.success(),
        "gcc failed on exec_storm.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(binary)
}

/// What [`run`] did.
#[derive(Debug, Clone, Copy)]
pub struct Storm {
    /// Successful execs, counting the one that starts each chain.
    pub execs: u64,
    pub elapsed: Duration,
}

impl Storm {
    pub fn per_second(&self) -> f64 {
        self.execs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `chains` chains side by side, each `per_chain` execs long, every process in the
/// cgroup whose `cgroup.procs` is `procs` (joined before the first exec, so every exec of
/// the storm happens inside it).
pub fn run(binary: &Path, procs: &Path, chains: u32, per_chain: u64) -> anyhow::Result<Storm> {
    ensure!(per_chain >= 1, "a chain is at least its first exec");
    let procs = std::ffi::CString::new(procs.as_os_str().as_encoded_bytes())
        .context("NUL in the cgroup path")?;
    let start = Instant::now();
    let mut children = Vec::new();
    for _ in 0..chains {
        let mut cmd = Command::new(binary);
        // The first exec is the spawn itself: per_chain - 1 more.
        cmd.arg((per_chain - 1).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let procs = procs.clone();
        // SAFETY: only async-signal-safe calls (open, write, close) in the child.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, c"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        children.push(
            cmd.spawn()
                .with_context(|| format!("starting {}", binary.display()))?,
        );
    }
    for mut child in children {
        let status = child.wait().context("waiting for an exec chain")?;
        ensure!(status.success(), "an exec chain failed: {status}");
    }
    Ok(Storm {
        execs: u64::from(chains) * per_chain,
        elapsed: start.elapsed(),
    })
}
