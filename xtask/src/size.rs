//! Sizes on the benchmark command lines ("64MiB", "1GiB").

use anyhow::{Context, bail};

pub const MIB: u64 = 1024 * 1024;

/// Parses a byte count with an optional binary unit (b, KiB, MiB, GiB; case-insensitive).
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().with_context(|| format!("size {text:?}"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1024,
        "m" | "mib" | "mb" => MIB,
        "g" | "gib" | "gb" => 1024 * MIB,
        other => bail!("unknown size unit {other:?} (use KiB, MiB, GiB)"),
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 * MIB);
        assert_eq!(parse_size("1g").unwrap(), 1024 * MIB);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("3 parsecs").is_err());
    }
}
