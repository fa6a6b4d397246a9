//! Developer tasks: `cargo xtask bench ...`.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("no tasks yet")
}
