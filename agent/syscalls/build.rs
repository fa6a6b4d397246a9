//! With `--features ebpf`: builds `ebpf/syscalls-ebpf` for `bpfel-unknown-none` (nightly +
//! rust-src + bpf-linker, via aya-build) and lets `syscalls/loader.rs` embed the object.
//! Without the feature this does nothing, so stable `cargo build`/`cargo test` need neither.
//!
//! A missing toolchain is a hard build error, not a silent fallback: asking for the `ebpf`
//! feature and getting a binary whose syscalls collector can never work would only move the
//! surprise to a node at runtime. `AYA_BUILD_SKIP=1` (aya-build's own switch) is the explicit
//! opt-out for tools like clippy; such a binary reports "built without the eBPF object".

fn main() -> anyhow::Result<()> {
    // Without this, cargo re-scans the whole package (fixtures included) on every build;
    // with the feature, aya-build adds the eBPF crate's directory.
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(syscalls_ebpf_object)");
    #[cfg(feature = "ebpf")]
    ebpf::build()?;
    Ok(())
}

#[cfg(feature = "ebpf")]
mod ebpf {
    use std::env;
    use std::path::Path;
    use std::process::Command;

    use anyhow::{Context as _, bail};

    const PACKAGE: &str = "syscalls-ebpf";
    const TOOLCHAIN_VAR: &str = "NODE_AGENT_EBPF_TOOLCHAIN";
    const LINKER_VERSION: &str = "0.10.4";

    pub fn build() -> anyhow::Result<()> {
        println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
        println!("cargo::rerun-if-env-changed={TOOLCHAIN_VAR}");
        if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
            println!(
                "cargo::warning=AYA_BUILD_SKIP set: node-agent is built without the eBPF object"
            );
            return Ok(());
        }
        // "nightly" by default; e.g. "stable" works together with RUSTC_BOOTSTRAP=1.
        let toolchain = env::var(TOOLCHAIN_VAR).unwrap_or_else(|_| "nightly".into());
        check_toolchain(&toolchain)?;

        let metadata = cargo_metadata::MetadataCommand::new()
            .no_deps()
            .exec()
            .context("cargo metadata")?;
        let package = metadata
            .packages
            .into_iter()
            .find(|p| p.name.as_str() == PACKAGE)
            .with_context(|| format!("package {PACKAGE} is not in the workspace"))?;
        let root = package
            .manifest_path
            .parent()
            .with_context(|| format!("{} has no parent directory", package.manifest_path))?
            .to_string();
        aya_build::build_ebpf(
            [aya_build::Package {
                name: PACKAGE,
                root_dir: &root,
                ..Default::default()
            }],
            aya_build::Toolchain::Custom(&toolchain),
        )
        .context("building the eBPF program with aya-build")?;
        println!("cargo::rustc-cfg=syscalls_ebpf_object");
        Ok(())
    }

    /// Fails early with the fix, instead of aya-build's deep cargo/linker error.
    fn check_toolchain(toolchain: &str) -> anyhow::Result<()> {
        let has_linker = env::var_os("PATH").is_some_and(|path| {
            env::split_paths(&path).any(|dir| dir.join("bpf-linker").is_file())
        });
        if !has_linker {
            bail!(
                "--features ebpf needs bpf-linker on PATH: \
                 cargo install bpf-linker --version {LINKER_VERSION} --locked \
                 (or set AYA_BUILD_SKIP=1 to build without the eBPF object)"
            );
        }
        let sysroot = Command::new("rustup")
            .args(["run", toolchain, "rustc", "--print", "sysroot"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let has_rust_src = sysroot.as_deref().is_some_and(|root| {
            Path::new(root)
                .join("lib/rustlib/src/rust/library/Cargo.lock")
                .is_file()
        });
        if !has_rust_src {
            bail!(
                "--features ebpf needs the {toolchain} toolchain with rust-src \
                 (for -Z build-std=core): rustup component add rust-src --toolchain {toolchain} \
                 (or set AYA_BUILD_SKIP=1 to build without the eBPF object)"
            );
        }
        Ok(())
    }
}
