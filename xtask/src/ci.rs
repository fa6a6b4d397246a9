//! `cargo xtask ci`: the one test command (README, `.ci/run`). Installs missing test peers,
//! then runs format, lint, the workspace tests and each area's CI step under `.ci/steps/`.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{Command, Stdio};
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
        cmd.current_dir(root).env("NODE_AGENT_REQUIRE_ALL", "1");
        let (ok, tail) = run_keeping_tail(cmd);
        println!(
            "<== {name}: {} in {:.0?}",
            if ok { "ok" } else { "FAILED" },
            start.elapsed()
        );
        if !ok {
            failed.push((name, tail));
            // Without prerequisites the rest would fail for the wrong reason.
            if failed.len() == 1 && failed[0].0 == "install prerequisites" {
                break;
            }
        }
    }
    // A CI log is often read from its end: repeat why each failed step failed there,
    // after the later steps' output.
    for (name, tail) in &failed {
        println!("---- last {} lines of {name} ----", tail.len());
        for line in tail {
            println!("{line}");
        }
    }
    println!(
        "ci: {} passed, {} failed",
        total - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
        bail!("failed steps: {}", names.join(", "));
    }
    Ok(())
}

/// Lines of a failed step's output repeated at the end of the run.
const TAIL_LINES: usize = 80;

/// Runs `cmd` with its stdout and stderr passed through to ours, keeping the last
/// [`TAIL_LINES`] lines of each; returns whether it succeeded and that tail, stdout's lines
/// then stderr's. One tail per stream: the two pipes are read by two threads, so with one
/// shared tail a burst of stdout read late could evict the error the step wrote last.
fn run_keeping_tail(mut cmd: Command) -> (bool, Vec<String>) {
    use std::io::{BufRead, Write};
    use std::sync::{Arc, Mutex};
    let mut child = match cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return (false, vec![format!("could not start: {e}")]),
    };
    let pipes: Vec<(Box<dyn std::io::Read + Send>, bool)> = [
        child.stdout.take().map(|p| (Box::new(p) as _, false)),
        child.stderr.take().map(|p| (Box::new(p) as _, true)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let tails: Vec<Arc<Mutex<VecDeque<String>>>> = pipes
        .iter()
        .map(|_| Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES))))
        .collect();
    let readers: Vec<_> = pipes
        .into_iter()
        .zip(&tails)
        .map(|((pipe, is_err), tail)| {
            let tail = Arc::clone(tail);
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe)
                    .split(b'\n')
                    .map_while(Result::ok)
                {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    if is_err {
                        let _ = writeln!(std::io::stderr(), "{text}");
                    } else {
                        let _ = writeln!(std::io::stdout(), "{text}");
                    }
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(text);
                }
            })
        })
        .collect();
    let ok = child.wait().map(|s| s.success()).unwrap_or(false);
    // A process the step left behind may hold the pipes open: wait for the rest of the
    // output briefly, not for that process.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while readers.iter().any(|r| !r.is_finished()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let tail = tails
        .iter()
        .flat_map(|t| {
            t.lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
                .collect::<Vec<_>>()
        })
        .collect();
    (ok, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_keeps_the_tail_of_both_streams() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "seq 1 100; echo oops >&2; exit 3"]);
        let (ok, tail) = run_keeping_tail(cmd);
        assert!(!ok);
        // stdout's last 80 lines, then stderr's, however the two readers interleaved.
        let expected: Vec<String> = (21..=100)
            .map(|n| n.to_string())
            .chain(["oops".to_string()])
            .collect();
        assert_eq!(tail, expected);
    }
}
