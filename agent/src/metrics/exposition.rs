//! Turns gathered families into the text format node_exporter serves: families merged by
//! name and sorted, series sorted by label values, duplicates dropped (client_golang's
//! ContinueOnError behaviour: a bad series is logged and left out, the scrape goes on).
//!
//! The encoder is our own because the prometheus crate's text encoder cannot write
//! untyped metrics (node_netstat_*, node_vmstat_* are untyped in node_exporter) and
//! formats floats differently from Go.

use std::io::{self, Write};

use prometheus::proto::{Metric, MetricFamily, MetricType};

/// Content type of text exposition format 0.0.4 (node_exporter 1.5.0 negotiates nothing else).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Merges families with the same name, drops empty families, conflicting types and
/// duplicate series, and sorts everything the way client_golang does.
pub fn normalize(families: impl IntoIterator<Item = MetricFamily>) -> Vec<MetricFamily> {
    let mut families: Vec<MetricFamily> = families.into_iter().collect();
    // Stable: of several families with one name, the first collected stays first.
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut merged: Vec<MetricFamily> = Vec::with_capacity(families.len());
    for mut family in families {
        if let Some(last) = merged.last_mut()
            && last.name() == family.name()
        {
            if last.get_field_type() == family.get_field_type() {
                last.mut_metric().extend(family.take_metric());
            } else {
                tracing::error!(
                    metric = family.name(),
                    "metric collected with conflicting types; dropping the later family"
                );
            }
            continue;
        }
        merged.push(family);
    }
    merged.retain_mut(|family| {
        let metrics = family.mut_metric();
        if !metrics.is_sorted_by(|a, b| cmp_label_values(a, b).is_le()) {
            metrics.sort_by(cmp_label_values);
        }
        let before = metrics.len();
        metrics.dedup_by(|a, b| labels_equal(a, b));
        if metrics.len() != before {
            tracing::error!(
                metric = family.name(),
                dropped = before - family.get_metric().len(),
                "metric collected before with the same name and label values"
            );
        }
        !family.get_metric().is_empty()
    });
    merged
}

/// client_golang orders series by their label values, compared label by label.
fn cmp_label_values(a: &Metric, b: &Metric) -> std::cmp::Ordering {
    a.get_label()
        .iter()
        .map(|p| p.value())
        .cmp(b.get_label().iter().map(|p| p.value()))
}

fn labels_equal(a: &Metric, b: &Metric) -> bool {
    a.get_label().len() == b.get_label().len()
        && a.get_label()
            .iter()
            .zip(b.get_label())
            .all(|(x, y)| x.name() == y.name() && x.value() == y.value())
}

/// Encodes families as text format 0.0.4.
pub fn encode_text(families: &[MetricFamily], out: &mut Vec<u8>) -> io::Result<()> {
    let mut num = String::with_capacity(32);
    for family in families {
        let name = family.name();
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(name.as_bytes());
        out.push(b' ');
        escape_into(out, family.help(), false);
        out.extend_from_slice(b"\n# TYPE ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(match family.get_field_type() {
            MetricType::COUNTER => b" counter\n",
            MetricType::GAUGE => b" gauge\n",
            MetricType::SUMMARY => b" summary\n",
            MetricType::HISTOGRAM => b" histogram\n",
            MetricType::UNTYPED => b" untyped\n",
        });
        for m in family.get_metric() {
            match family.get_field_type() {
                MetricType::COUNTER => sample(
                    out,
                    &mut num,
                    name,
                    "",
                    m,
                    None,
                    m.get_counter().get_value(),
                ),
                MetricType::GAUGE => {
                    sample(out, &mut num, name, "", m, None, m.get_gauge().get_value())
                }
                #[allow(deprecated)]
                MetricType::UNTYPED => sample(
                    out,
                    &mut num,
                    name,
                    "",
                    m,
                    None,
                    m.get_untyped().get_value(),
                ),
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        format_float(&mut num, q.quantile());
                        let qv = num.clone();
                        sample(
                            out,
                            &mut num,
                            name,
                            "",
                            m,
                            Some(("quantile", &qv)),
                            q.value(),
                        );
                    }
                    sample(out, &mut num, name, "_sum", m, None, s.sample_sum());
                    sample(
                        out,
                        &mut num,
                        name,
                        "_count",
                        m,
                        None,
                        s.sample_count() as f64,
                    );
                }
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let mut saw_inf = false;
                    for b in h.get_bucket() {
                        saw_inf |= b.upper_bound() == f64::INFINITY;
                        format_float(&mut num, b.upper_bound());
                        let le = num.clone();
                        sample(
                            out,
                            &mut num,
                            name,
                            "_bucket",
                            m,
                            Some(("le", &le)),
                            b.cumulative_count() as f64,
                        );
                    }
                    if !saw_inf {
                        sample(
                            out,
                            &mut num,
                            name,
                            "_bucket",
                            m,
                            Some(("le", "+Inf")),
                            h.get_sample_count() as f64,
                        );
                    }
                    sample(out, &mut num, name, "_sum", m, None, h.get_sample_sum());
                    sample(
                        out,
                        &mut num,
                        name,
                        "_count",
                        m,
                        None,
                        h.get_sample_count() as f64,
                    );
                }
            }
        }
    }
    Ok(())
}

fn sample(
    out: &mut Vec<u8>,
    num: &mut String,
    name: &str,
    suffix: &str,
    m: &Metric,
    extra: Option<(&str, &str)>,
    value: f64,
) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    let labels = m.get_label();
    if !labels.is_empty() || extra.is_some() {
        out.push(b'{');
        let mut first = true;
        let pairs = labels.iter().map(|p| (p.name(), p.value())).chain(extra);
        for (k, v) in pairs {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"=\"");
            escape_into(out, v, true);
            out.push(b'"');
        }
        out.push(b'}');
    }
    out.push(b' ');
    format_float(num, value);
    out.extend_from_slice(num.as_bytes());
    if m.timestamp_ms() != 0 {
        let _ = write!(out, " {}", m.timestamp_ms());
    }
    out.push(b'\n');
}

/// HELP escapes `\` and newline; label values additionally escape `"`.
fn escape_into(out: &mut Vec<u8>, text: &str, quote: bool) {
    for b in text.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if quote => out.extend_from_slice(b"\\\""),
            _ => out.push(b),
        }
    }
}

/// Formats like Go's `strconv.FormatFloat(v, 'g', -1, 64)` (what client_golang writes):
/// shortest round-trip digits, exponent form (`2.70553174016e+11`) when the exponent is
/// < -4 or >= 6, since in shortest mode strconv decides with precision 6.
pub fn format_float(buf: &mut String, v: f64) {
    use std::fmt::Write as _;
    buf.clear();
    if v.is_nan() {
        buf.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        buf.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    // Most samples are small integers (counts, ids, flags): print them directly.
    if v.fract() == 0.0 && v.abs() < 1e6 {
        if v == 0.0 && v.is_sign_negative() {
            buf.push_str("-0");
        } else {
            let _ = write!(buf, "{}", v as i64);
        }
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "2.70553174016e11"; the
    // plain form is rebuilt from the same digits instead of formatting twice.
    let _ = write!(buf, "{v:e}");
    let Some(e_at) = buf.find('e') else { return };
    let exp: i32 = buf[e_at + 1..].parse().unwrap_or(0);
    let negative = buf.starts_with('-');
    let digits: String = buf[..e_at].chars().filter(char::is_ascii_digit).collect();
    buf.clear();
    if negative {
        buf.push('-');
    }
    if (-4..6).contains(&exp) {
        if exp < 0 {
            buf.push_str("0.");
            buf.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            buf.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                buf.push_str(&digits);
                buf.extend(std::iter::repeat_n('0', int_len - digits.len()));
            } else {
                buf.push_str(&digits[..int_len]);
                buf.push('.');
                buf.push_str(&digits[int_len..]);
            }
        }
    } else {
        buf.push_str(&digits[..1]);
        if digits.len() > 1 {
            buf.push('.');
            buf.push_str(&digits[1..]);
        }
        let _ = write!(buf, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricSet;

    fn f(v: f64) -> String {
        let mut s = String::new();
        format_float(&mut s, v);
        s
    }

    #[test]
    fn floats_like_go() {
        assert_eq!(f(1.0), "1");
        assert_eq!(f(57743.0), "57743");
        assert_eq!(f(270553174016.0), "2.70553174016e+11");
        assert_eq!(f(1e6), "1e+06");
        assert_eq!(f(123456.5), "123456.5");
        assert_eq!(f(0.25), "0.25");
        assert_eq!(f(6.3649e-05), "6.3649e-05");
        assert_eq!(f(0.0001), "0.0001");
        assert_eq!(f(f64::NAN), "NaN");
        assert_eq!(f(f64::NEG_INFINITY), "-Inf");
        assert_eq!(f(-2.5), "-2.5");
        assert_eq!(f(0.001955634), "0.001955634");
        assert_eq!(f(12.5), "12.5");
        assert_eq!(f(999999.0), "999999");
        assert_eq!(f(-1234567.0), "-1.234567e+06");
        assert_eq!(f(1.8446744073709552e19), "1.8446744073709552e+19");
        assert_eq!(f(100000.5), "100000.5");
        // Same as formatting through Rust's Display for the plain range.
        for v in [0.1, 0.5, 3.25, 123.456, 0.00012, 99999.99] {
            assert_eq!(f(v), format!("{v}"));
        }
    }

    #[test]
    fn encodes_sorted_escaped_text() {
        let mut set = MetricSet::new();
        set.gauge(
            "b_metric",
            "B help with \\ and\nnewline.",
            &[("z", "1"), ("a", "x\"y")],
            2.0,
        );
        set.gauge(
            "b_metric",
            "B help with \\ and\nnewline.",
            &[("z", "0"), ("a", "a")],
            3.0,
        );
        set.untyped("a_metric", "A.", &[], 1.0);
        set.counter("c_total", "C.", &[], 4.0);
        set.counter("c_total", "C.", &[], 5.0);
        let families = normalize(set.into_families());
        let mut out = Vec::new();
        encode_text(&families, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "# HELP a_metric A.\n# TYPE a_metric untyped\na_metric 1\n\
             # HELP b_metric B help with \\\\ and\\nnewline.\n# TYPE b_metric gauge\n\
             b_metric{a=\"a\",z=\"0\"} 3\nb_metric{a=\"x\\\"y\",z=\"1\"} 2\n\
             # HELP c_total C.\n# TYPE c_total counter\nc_total 4\n"
        );
    }
}
