//! Developer tasks: `cargo xtask bench <metrics|logs|syscalls>`.

use anyhow::bail;

mod bench_syscalls;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        // One arm per benchmark area; each lives in its own module.
        ["bench", "syscalls"] => bench_syscalls::run(),
        [cmd, ..] => bail!("unknown task {cmd:?}; try: cargo xtask bench <metrics|logs|syscalls>"),
        [] => bail!("usage: cargo xtask bench <metrics|logs|syscalls>"),
    }
}
