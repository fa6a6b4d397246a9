//! Developer tasks: `cargo xtask ci` (the test command), `cargo xtask bench <area>` and
//! `cargo xtask fuzz`.

use anyhow::bail;

mod bench_journal;
mod bench_logs;
mod bench_metrics;
mod bench_rules;
mod bench_sinks;
mod bench_syscalls;
mod ci;
mod cross;
mod fuzz;
mod order_file;
mod selfstat;
mod size;
mod soak;

const USAGE: &str = "usage: cargo xtask ci | cargo xtask bench <metrics|logs|journal|sinks|syscalls|rules> [ARGS] | cargo xtask cross aarch64 [ARGS] | cargo xtask fuzz [--minutes N | --seconds N] [--target NAME]... | cargo xtask order-file [SCRAPES] [--check] [--ebpf] | cargo xtask soak [--minutes N | --seconds N] [--seed S]";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        // One arm per task; each lives in its own module.
        ["ci"] => ci::main(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")),
        ["bench", "metrics", rest @ ..] => bench_metrics::main(rest),
        ["bench", "journal", rest @ ..] => bench_journal::run(rest),
        ["bench", "logs", rest @ ..] => bench_logs::run(rest),
        ["bench", "sinks", rest @ ..] => bench_sinks::run(rest),
        ["bench", "syscalls"] => bench_syscalls::run(),
        ["bench", "rules", rest @ ..] => bench_rules::run(rest),
        ["cross", "aarch64", rest @ ..] => cross::run(
            &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
            rest,
        ),
        ["fuzz", rest @ ..] => fuzz::run(
            &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
            rest,
        ),
        ["order-file", rest @ ..] => order_file::run(rest),
        ["soak", rest @ ..] => soak::run(rest),
        [cmd, ..] => bail!("unknown task {cmd:?}; {USAGE}"),
        [] => bail!("{USAGE}"),
    }
}
