//! Release builds for x86_64-unknown-linux-gnu (the image's binary) link the functions a
//! start-up and metrics scrapes execute next to each other, from `link/metrics.order`
//! (`cargo xtask order-file` writes it). The kernel maps file-backed text in 64 KiB
//! fault-around windows, so ~2 MiB of executed functions scattered over 13 MiB of text
//! kept ~9.4 MiB of it resident; laid out contiguously they keep ~3 MiB.
//!
//! `--symbol-ordering-file` is an lld option. Rust links this target with its own lld
//! unless a linker is configured: the Dockerfile names `x86_64-linux-gnu-gcc` (for cross
//! builds), and gcc then runs GNU ld, which rejects the option. So with a configured
//! linker the build also points the gcc driver at Rust's lld (`-fuse-ld=lld -B`, what
//! rustc itself passes by default). Only this target: GNU ld links aarch64, and the
//! names in the file carry hashes that differ per target. Names the binary no longer
//! has are skipped without a warning: a stale file costs RSS, not a failed build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/metrics.order");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=NODE_AGENT_NO_ORDER_FILE");
    let target = std::env::var("TARGET").unwrap_or_default();
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    // Off switch, to measure what the layout does.
    let disabled = std::env::var_os("NODE_AGENT_NO_ORDER_FILE").is_some();
    if target != "x86_64-unknown-linux-gnu" || !release || disabled || !order.exists() {
        return;
    }
    if std::env::var_os("RUSTC_LINKER").is_some() {
        let Some(gcc_ld) = rust_lld_dir() else {
            println!("cargo:warning=no rust-lld (gcc-ld) in the toolchain: text not ordered");
            return;
        };
        println!("cargo:rustc-link-arg-bins=-fuse-ld=lld");
        println!("cargo:rustc-link-arg-bins=-B{}", gcc_ld.display());
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// The toolchain's `gcc-ld` directory (an `ld.lld` that runs rust-lld), for the machine
/// the build runs on.
fn rust_lld_dir() -> Option<PathBuf> {
    let rustc = std::env::var_os("RUSTC")?;
    let host = std::env::var("HOST").ok()?;
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    let dir = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/gcc-ld");
    dir.join("ld.lld").exists().then_some(dir)
}
