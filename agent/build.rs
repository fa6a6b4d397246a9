//! Release builds for x86_64-unknown-linux-gnu (the image's binary) link the functions a
//! start-up and metrics scrapes execute next to each other, from `link/metrics.order`
//! (`cargo xtask order-file` writes it). The kernel maps file-backed text in 64 KiB
//! fault-around windows, so ~2 MiB of executed functions scattered over 13 MiB of text
//! kept ~10 MiB of it resident; laid out contiguously they keep ~2 MiB.
//!
//! Only that target: Rust links it with its own lld (`--symbol-ordering-file` is an lld
//! option; GNU ld, used for aarch64, has no equivalent), and the names in the file carry
//! hashes that differ per target. Names the binary no longer has are skipped without a
//! warning (`--no-warn-symbol-ordering`): a stale file costs RSS, not a failed build.

use std::path::Path;

fn main() {
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/metrics.order");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=NODE_AGENT_NO_ORDER_FILE");
    let target = std::env::var("TARGET").unwrap_or_default();
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    // Off switch for measuring the layout's effect (and for regenerating the file from a
    // binary that is laid out as the compiler left it).
    let disabled = std::env::var_os("NODE_AGENT_NO_ORDER_FILE").is_some();
    if target == "x86_64-unknown-linux-gnu" && release && !disabled && order.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
