//! Durations as the config file and flags spell them: "5s", "250ms", "2m", "1h" or a bare
//! number of seconds.

use std::time::Duration;

use anyhow::{Context, bail};

/// The longest duration any setting accepts.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Durations as "5s", "250ms", "2m", "1h" or a bare number of seconds.
pub fn parse(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .with_context(|| format!("invalid duration {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => bail!("invalid duration unit in {text:?} (use ms, s, m or h)"),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        bail!("invalid duration {text:?}");
    }
    // No setting needs more; a bound here also keeps `Instant + duration` from overflowing.
    if seconds > MAX.as_secs_f64() {
        bail!("duration {text:?} is longer than the maximum of 365 days");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Serde helper: durations written as "5s"/"250ms" in the YAML file.
pub mod serde_format {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert!(parse("5 parsecs").is_err());
        // Used to abort the process (Duration::from_secs_f64 panics on overflow).
        let err = parse("99999999999999999999s").unwrap_err();
        assert!(err.to_string().contains("maximum"), "{err}");
        assert!(parse("366d").is_err());
        assert_eq!(parse("8760h").unwrap(), MAX);
    }
}
