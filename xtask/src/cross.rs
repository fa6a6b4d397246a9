//! `cargo xtask cross aarch64`: the static node-agent binary for arm64, cross-built on an
//! x86_64 machine, and the agent's unit tests run under qemu-user.
//!
//! How, and why this way:
//! - The standard library for aarch64 is built from source (nightly `-Z build-std` with
//!   the `rust-src` component), so no prebuilt `rust-std` for the target is needed.
//! - Debian's `gcc-aarch64-linux-gnu` links (and compiles the C in dependencies, e.g.
//!   ring) against `libc6-dev-arm64-cross`.
//! - glibc with `+crt-static`, exactly as the x86_64 image: one static binary for
//!   `FROM scratch`, and the same libc on both architectures. (musl would need an arm64
//!   musl libc: Rust ships it only inside the prebuilt target, and Debian only as an
//!   arm64 multiarch package.) glibc >= 2.34 has the files/dns NSS modules built in, so
//!   name resolution works in a static binary on an empty root.
//! - The static binaries (the agent and its test harnesses) run under `qemu-aarch64`
//!   directly; no sysroot is needed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Parser;

const TARGET: &str = "aarch64-unknown-linux-gnu";
const TARGET_ENV: &str = "AARCH64_UNKNOWN_LINUX_GNU";
const CROSS_PREFIX: &str = "aarch64-linux-gnu-";
const QEMU: &str = "qemu-aarch64";
/// The host toolchain that builds std from source.
const TOOLCHAIN: &str = "nightly";

/// Unit tests whose subject qemu-user replaces (all pass natively on x86_64):
/// - qemu synthesises `/proc/self/stat` (and `maps`, `auxv`, `cmdline`, `exe`) itself, as
///   a regular file with most fields zero (RSS among them): a test that checks it reads
///   real procfs, or this process's RSS, cannot pass under emulation;
/// - qemu runs glibc's posix_spawn (clone with CLONE_VM | CLONE_VFORK) as a plain fork, so
///   `Command::spawn` returns before the child has exec'd: its `/proc/<pid>/stat` still
///   names `qemu-aarch64` (measured: 265 of 300 spawns under load; 0 of 300 natively).
///
/// Names are libtest `--skip` filters (substrings of the test path), so they hold whichever
/// crate the module lives in.
const SKIPPED_UNDER_QEMU: &[(&str, &str)] = &[
    (
        "procfile::tests::proc_files_are_kept_and_reread_fresh",
        "qemu's /proc/self/stat is not a procfs file",
    ),
    (
        "process::tests::reports_this_process",
        "qemu's /proc/self/stat reports RSS 0",
    ),
    (
        "procfile::tests::a_file_of_a_vanished_object_is_opened_again",
        "qemu's spawn returns before the child's exec",
    ),
];

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask cross aarch64",
    about = "Cross-build the static arm64 binary and run the unit tests under qemu-user"
)]
struct Args {
    /// Packages to build and test (repeatable); the binary comes from `node-agent`.
    #[arg(short = 'p', long = "package", default_value = "node-agent")]
    packages: Vec<String>,
    /// Cargo features (e.g. `node-agent/ebpf`, which also needs bpf-linker).
    #[arg(long, default_value = "")]
    features: String,
    /// Build with the release profile (as the image does).
    #[arg(long)]
    release: bool,
    /// Only build (and smoke-run) the binary.
    #[arg(long)]
    no_test: bool,
}

pub fn run(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let args = Args::try_parse_from(std::iter::once("cross-aarch64").chain(args.iter().copied()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    preflight(!args.no_test)?;
    let root = root
        .canonicalize()
        .with_context(|| format!("workspace root {}", root.display()))?;
    let root = root.as_path();
    let target_dir = root.join("target/cross");

    let started = Instant::now();
    let mut build = cargo(root, &target_dir, "build", &args);
    run_step(&mut build, "cross build")?;
    println!("cross: build {:.1?}", started.elapsed());

    let profile = if args.release { "release" } else { "debug" };
    let binary = target_dir.join(TARGET).join(profile).join("node-agent");
    check_static_aarch64(&binary)?;
    smoke(&binary)?;

    if !args.no_test {
        let started = Instant::now();
        let mut test = cargo(root, &target_dir, "test", &args);
        test.arg("--");
        for (name, _) in SKIPPED_UNDER_QEMU {
            test.args(["--skip", name]);
        }
        for (name, why) in SKIPPED_UNDER_QEMU {
            println!("cross: skipping {name} under qemu: {why}");
        }
        run_step(&mut test, "unit tests under qemu-aarch64")?;
        println!("cross: tests {:.1?}", started.elapsed());
    }
    println!("cross: ok: {} (static, aarch64)", binary.display());
    Ok(())
}

/// Fails with the fix for each missing tool, before a long build fails deep inside.
fn preflight(need_qemu: bool) -> anyhow::Result<()> {
    let sysroot =
        output(Command::new("rustup").args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"]))
            .with_context(|| {
                format!("the {TOOLCHAIN} toolchain (rustup toolchain install {TOOLCHAIN})")
            })?;
    if !Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust/library/Cargo.lock")
        .is_file()
    {
        bail!(
            "-Z build-std needs rust-src: rustup component add rust-src --toolchain {TOOLCHAIN} \
             (.ci/steps/install.sh does)"
        );
    }
    let gcc = format!("{CROSS_PREFIX}gcc");
    output(Command::new(&gcc).arg("--version")).with_context(|| {
        format!("{gcc} (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross; .ci/steps/install.sh does)")
    })?;
    if need_qemu {
        output(Command::new(QEMU).arg("--version")).with_context(|| {
            format!("{QEMU} (apt-get install qemu-user; .ci/steps/install.sh does)")
        })?;
    }
    Ok(())
}

/// `rustup run nightly cargo <subcommand> -Z build-std --target aarch64-...` with the
/// cross linker, C compiler and static CRT for the target only (build scripts and proc
/// macros stay host binaries, and the nested bpfel build of `ebpf` is untouched).
fn cargo(root: &Path, target_dir: &Path, subcommand: &str, args: &Args) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root)
        .args(["run", TOOLCHAIN, "cargo", subcommand, "--locked", "-Z"])
        // The release profile has panic = "abort": std must be built with that runtime too.
        .arg(if args.release {
            "build-std=std,panic_abort"
        } else {
            "build-std"
        })
        .args(["--target", TARGET]);
    for package in &args.packages {
        cmd.args(["--package", package]);
    }
    if !args.features.is_empty() {
        cmd.args(["--features", &args.features]);
    }
    if args.release {
        cmd.arg("--release");
    }
    // The outer `cargo run` of xtask exported its own toolchain and cargo.
    cmd.env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env("CARGO_TARGET_DIR", target_dir)
        // Line tables keep test backtraces useful; full debuginfo would multiply the size
        // of target/cross (a second copy of every dependency) and the link times.
        .env("CARGO_PROFILE_DEV_DEBUG", "line-tables-only")
        .env(
            format!("CARGO_TARGET_{TARGET_ENV}_LINKER"),
            format!("{CROSS_PREFIX}gcc"),
        )
        .env(
            format!("CARGO_TARGET_{TARGET_ENV}_RUSTFLAGS"),
            "-C target-feature=+crt-static",
        )
        .env(format!("CARGO_TARGET_{TARGET_ENV}_RUNNER"), QEMU)
        .env(
            format!("CC_{}", TARGET.replace('-', "_")),
            format!("{CROSS_PREFIX}gcc"),
        )
        .env(
            format!("AR_{}", TARGET.replace('-', "_")),
            format!("{CROSS_PREFIX}ar"),
        );
    cmd
}

/// The binary is an AArch64 ELF without a program interpreter (statically linked).
fn check_static_aarch64(binary: &PathBuf) -> anyhow::Result<()> {
    let readelf = format!("{CROSS_PREFIX}readelf");
    let headers = output(
        Command::new(&readelf)
            .args(["--file-header", "--program-headers", "--wide"])
            .arg(binary),
    )
    .with_context(|| format!("{readelf} {}", binary.display()))?;
    let machine = headers
        .lines()
        .find_map(|l| l.trim().strip_prefix("Machine:"))
        .map(str::trim)
        .unwrap_or("?");
    if machine != "AArch64" {
        bail!("{}: machine {machine:?}, not AArch64", binary.display());
    }
    if headers
        .lines()
        .any(|l| l.trim_start().starts_with("INTERP"))
    {
        bail!(
            "{}: dynamically linked (has a program interpreter)",
            binary.display()
        );
    }
    Ok(())
}

fn smoke(binary: &Path) -> anyhow::Result<()> {
    let version = output(Command::new(QEMU).arg(binary).arg("--version"))
        .with_context(|| format!("{QEMU} {} --version", binary.display()))?;
    if !version.starts_with("node-agent ") {
        bail!("unexpected --version output under {QEMU}: {version:?}");
    }
    println!("cross: {QEMU} node-agent --version: {}", version.trim());
    Ok(())
}

fn run_step(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().context("not found or not runnable")?;
    if !out.status.success() {
        bail!(
            "exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
