//! Developer tasks: `cargo xtask bench <metrics|logs|syscalls>`.

use anyhow::bail;

mod bench_logs;
mod bench_sinks;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        // One arm per benchmark area; each lives in its own module.
        ["bench", "logs", rest @ ..] => bench_logs::run(rest),
        ["bench", "sinks", rest @ ..] => bench_sinks::run(rest),
        [cmd, ..] => bail!("unknown task {cmd:?}; try: cargo xtask bench <metrics|logs|syscalls>"),
        [] => bail!("usage: cargo xtask bench <metrics|logs|syscalls>"),
    }
}
