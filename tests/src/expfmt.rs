//! A small parser of the Prometheus text format (0.0.4), for comparing exporters in tests.

use std::collections::{BTreeMap, BTreeSet};

/// One series: label set and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A metric family as exposed: TYPE, HELP and the series of its samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Family {
    pub kind: String,
    pub help: String,
    /// Samples keyed by their full sample name (e.g. `x_bucket`, `x_sum` for histograms).
    pub series: Vec<(String, Series)>,
}

impl Family {
    /// Label names used by the family's plain samples (not `le`/`quantile`).
    pub fn label_names(&self) -> BTreeSet<String> {
        self.series
            .iter()
            .flat_map(|(_, s)| s.labels.keys().cloned())
            .filter(|k| k != "le" && k != "quantile")
            .collect()
    }

    /// Values of one label across the family's series.
    pub fn label_values(&self, label: &str) -> BTreeSet<String> {
        self.series
            .iter()
            .filter_map(|(_, s)| s.labels.get(label).cloned())
            .collect()
    }

    /// The value of the first series whose labels include all of `want`.
    pub fn value_where(&self, want: &[(&str, &str)]) -> Option<f64> {
        self.series
            .iter()
            .find(|(_, s)| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, s)| s.value)
    }
}

/// Parses exposition text into families keyed by name. Errors name the offending line.
pub fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or(format!("line {}: bad TYPE", n + 1))?;
            families.entry(name.to_string()).or_default().kind = kind.to_string();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.to_string()).or_default().help = help.to_string();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (sample_name, labels, rest) =
            split_sample(line).map_err(|e| format!("line {}: {e}: {line}", n + 1))?;
        let value_text = rest
            .split_whitespace()
            .next()
            .ok_or(format!("line {}: no value", n + 1))?;
        let value = parse_value(value_text).map_err(|e| format!("line {}: {e}", n + 1))?;
        let family_name = family_of(&families, &sample_name);
        families
            .entry(family_name)
            .or_default()
            .series
            .push((sample_name, Series { labels, value }));
    }
    Ok(families)
}

fn family_of(families: &BTreeMap<String, Family>, sample: &str) -> String {
    if families.contains_key(sample) {
        return sample.to_string();
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix)
            && families
                .get(base)
                .is_some_and(|f| f.kind == "histogram" || f.kind == "summary")
        {
            return base.to_string();
        }
    }
    sample.to_string()
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|e| format!("bad value {text:?}: {e}")),
    }
}

fn split_sample(line: &str) -> Result<(String, BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let Some(brace) = line.find('{') else {
        let (name, rest) = line.split_once(' ').ok_or("no value")?;
        return Ok((name.to_string(), labels, rest));
    };
    let name = line[..brace].to_string();
    let mut chars = line[brace + 1..].char_indices().peekable();
    let base = brace + 1;
    loop {
        // label name
        let start = match chars.peek() {
            Some((_, '}')) => {
                let (i, _) = chars.next().ok_or("eof")?;
                return Ok((name, labels, line[base + i + 1..].trim_start()));
            }
            Some((i, _)) => *i,
            None => return Err("unterminated labels".into()),
        };
        let mut eq = None;
        for (i, c) in chars.by_ref() {
            if c == '=' {
                eq = Some(i);
                break;
            }
        }
        let eq = eq.ok_or("label without '='")?;
        let key = line[base + start..base + eq]
            .trim_start_matches(',')
            .to_string();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err("label value not quoted".into());
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("bad escape".into()),
                },
                Some((_, '"')) => break,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        }
        labels.insert(key, value);
        if let Some((_, ',')) = chars.peek() {
            chars.next();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_families_labels_and_escapes() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"z\"} 2\n\
                    # TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_sum 1.5e+06\nh_count 3\nuntyped_one 1\n";
        let f = parse(text).unwrap();
        assert_eq!(f["a_total"].kind, "counter");
        assert_eq!(f["a_total"].help, "A.");
        assert_eq!(f["a_total"].value_where(&[("y", "q\"z")]), Some(2.0));
        assert_eq!(f["h"].series.len(), 3);
        assert_eq!(f["h"].label_names().len(), 0);
        assert_eq!(f["untyped_one"].series[0].1.value, 1.0);
    }
}
