//! `cargo xtask ci`: the one test command (README, `.ci/run`). Installs missing test peers,
//! then runs format, lint, the workspace tests and each area's CI step under `.ci/steps/`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::bail;

/// Area steps run after the workspace tests, when present (each installs what it needs).
const AREA_STEPS: &[&str] = &[
    "ebpf.sh",
    "deploy.sh",
    "es-emulator.sh",
    "image.sh",
    "soak.sh",
    // Last: its first build (nightly, sanitizers) is the longest of any step.
    "fuzz.sh",
];

pub fn main(root: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut steps: Vec<(String, Command)> = Vec::new();
    let script = |name: &str| {
        let mut c = Command::new("bash");
        c.arg(root.join(".ci/steps").join(name));
        c
    };
    steps.push(("install prerequisites".into(), script("install.sh")));
    let mut fmt = Command::new(&cargo);
    fmt.args(["fmt", "--all", "--check"]);
    steps.push(("cargo fmt --check".into(), fmt));
    let mut clippy = Command::new(&cargo);
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    steps.push(("cargo clippy -D warnings".into(), clippy));
    let mut test = Command::new(&cargo);
    test.args(["test", "--workspace", "--no-fail-fast"]);
    steps.push(("cargo test --workspace".into(), test));
    for name in AREA_STEPS {
        if root.join(".ci/steps").join(name).exists() {
            let mut step = script(name);
            // The image smoke test checks what the image changes at run time (a static
            // binary on an empty root, as UID 65532); a dev build shows that in minutes,
            // the release build the Dockerfile makes would take ~15 more.
            if *name == "image.sh" {
                step.env("IMAGE_PROFILE", "dev");
            }
            steps.push((format!(".ci/steps/{name}"), step));
        }
    }

    let mut failed = Vec::new();
    let total = steps.len();
    for (name, mut cmd) in steps {
        println!("==> {name}");
        let start = Instant::now();
        // Tests whose tool or privilege is missing fail instead of skipping
        // (tests/src/require.rs): a CI run never passes by skipping.
        let ok = cmd
            .current_dir(root)
            .env("NODE_AGENT_REQUIRE_ALL", "1")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        println!(
            "<== {name}: {} in {:.0?}",
            if ok { "ok" } else { "FAILED" },
            start.elapsed()
        );
        if !ok {
            failed.push(name);
            // Without prerequisites the rest would fail for the wrong reason.
            if failed.len() == 1 && failed[0] == "install prerequisites" {
                break;
            }
        }
    }
    println!(
        "ci: {} passed, {} failed",
        total - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!("failed steps: {}", failed.join(", "));
    }
    Ok(())
}
