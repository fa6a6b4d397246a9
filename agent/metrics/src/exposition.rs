//! Text format 0.0.4 as node_exporter serves it: the pieces [`MetricSet::encode_text`]
//! writes samples with, Go's float formatting, and summaries/histograms.
//!
//! The encoder is our own because the prometheus crate's text encoder cannot write
//! untyped metrics (node_netstat_*, node_vmstat_* are untyped in node_exporter) and
//! formats floats differently from Go.
//!
//! [`MetricSet::encode_text`]: super::MetricSet::encode_text

use std::io::Write;

use prometheus::proto::{Metric, MetricType};

/// Content type of text exposition format 0.0.4 (node_exporter 1.5.0 negotiates nothing else).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `# HELP` and `# TYPE` lines of a family.
pub fn write_header(out: &mut Vec<u8>, name: &str, help: &str, kind: MetricType) {
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    escape_into(out, help, false);
    out.extend_from_slice(b"\n# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(match kind {
        MetricType::COUNTER => b" counter\n",
        MetricType::GAUGE => b" gauge\n",
        MetricType::SUMMARY => b" summary\n",
        MetricType::HISTOGRAM => b" histogram\n",
        MetricType::UNTYPED => b" untyped\n",
    });
}

/// One sample line: `name{k="v",...} value`, with an optional extra label last
/// (`quantile`, `le`).
pub fn write_sample<'a>(
    out: &mut Vec<u8>,
    num: &mut String,
    name: &str,
    suffix: &str,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    extra: Option<(&str, &str)>,
    value: f64,
) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    let mut first = true;
    let mut label = |out: &mut Vec<u8>, k: &str, v: &str| {
        out.push(if first { b'{' } else { b',' });
        first = false;
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_into(out, v, true);
        out.push(b'"');
    };
    for (k, v) in labels {
        label(out, k, v);
    }
    if let Some((k, v)) = extra {
        label(out, k, v);
    }
    if !first {
        out.push(b'}');
    }
    out.push(b' ');
    format_float(num, value);
    out.extend_from_slice(num.as_bytes());
    out.push(b'\n');
}

/// Summary or histogram series (protobuf form), sorted by label values, duplicates
/// dropped with an error log.
pub fn encode_complex(
    out: &mut Vec<u8>,
    num: &mut String,
    name: &str,
    kind: MetricType,
    metrics: &mut Vec<Metric>,
) {
    if !metrics.is_sorted_by(|a, b| cmp_label_values(a, b).is_le()) {
        metrics.sort_by(cmp_label_values);
    }
    let before = metrics.len();
    metrics.dedup_by(|a, b| labels_equal(a, b));
    if metrics.len() != before {
        tracing::error!(
            metric = name,
            dropped = before - metrics.len(),
            "metric collected before with the same name and label values"
        );
    }
    for m in metrics.iter() {
        let labels = || m.get_label().iter().map(|p| (p.name(), p.value()));
        let mut line = |out: &mut Vec<u8>, suffix: &str, extra: Option<(&str, &str)>, v: f64| {
            write_sample(out, num, name, suffix, labels(), extra, v);
            if m.timestamp_ms() != 0 {
                out.pop();
                let _ = writeln!(out, " {}", m.timestamp_ms());
            }
        };
        if kind == MetricType::SUMMARY {
            let s = m.get_summary();
            for q in s.get_quantile() {
                let mut qs = String::new();
                format_float(&mut qs, q.quantile());
                line(out, "", Some(("quantile", &qs)), q.value());
            }
            line(out, "_sum", None, s.sample_sum());
            line(out, "_count", None, s.sample_count() as f64);
        } else {
            let h = m.get_histogram();
            let mut saw_inf = false;
            for b in h.get_bucket() {
                saw_inf |= b.upper_bound() == f64::INFINITY;
                let mut le = String::new();
                format_float(&mut le, b.upper_bound());
                line(
                    out,
                    "_bucket",
                    Some(("le", &le)),
                    b.cumulative_count() as f64,
                );
            }
            if !saw_inf {
                line(
                    out,
                    "_bucket",
                    Some(("le", "+Inf")),
                    h.get_sample_count() as f64,
                );
            }
            line(out, "_sum", None, h.get_sample_sum());
            line(out, "_count", None, h.get_sample_count() as f64);
        }
    }
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

/// HELP escapes `\` and newline; label values additionally escape `"`.
fn escape_into(out: &mut Vec<u8>, text: &str, quote: bool) {
    // Almost nothing needs escaping: copy whole unless a special byte is present.
    if !text
        .bytes()
        .any(|b| b == b'\\' || b == b'\n' || (quote && b == b'"'))
    {
        out.extend_from_slice(text.as_bytes());
        return;
    }
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
    buf.clear();
    if v.is_nan() {
        buf.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        buf.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if v == 0.0 {
        buf.push_str(if v.is_sign_negative() { "-0" } else { "0" });
        return;
    }
    // Most samples are integers (counts, bytes, ids). Below 2^53 every integer is a double
    // of its own, so its shortest round-trip digits are its decimal digits minus trailing
    // zeros: no float formatting needed.
    if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        let mut ints = itoa::Buffer::new();
        let all = ints.format((v as i64).unsigned_abs()).as_bytes();
        let digits = &all[..all.iter().rposition(|&d| d != b'0').map_or(1, |i| i + 1)];
        push_go_form(buf, v < 0.0, digits, all.len() as i32 - 1);
        return;
    }
    // Other values: ryu's shortest round-trip digits ("1234.56", "1.2e-7", "1e16"), laid
    // out again in Go's form.
    let mut floats = ryu::Buffer::new();
    let text = floats.format_finite(v.abs());
    let (mantissa, exp) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits = [0u8; 40];
    let mut n = 0;
    for &b in int_part.as_bytes().iter().chain(frac_part.as_bytes()) {
        if n < digits.len() {
            digits[n] = b;
            n += 1;
        }
    }
    let leading = digits[..n].iter().take_while(|&&d| d == b'0').count();
    let end = digits[..n]
        .iter()
        .rposition(|&d| d != b'0')
        .map_or(leading + 1, |i| i + 1);
    let exp = int_part.len() as i32 - 1 - leading as i32 + exp;
    push_go_form(buf, v < 0.0, &digits[leading..end.max(leading + 1)], exp);
}

/// Writes digits `d.ddd` × 10^exp the way Go's `%g` with shortest precision does.
fn push_go_form(buf: &mut String, negative: bool, digits: &[u8], exp: i32) {
    // Only ASCII digits reach here.
    let digits = std::str::from_utf8(digits).unwrap_or("0");
    if negative {
        buf.push('-');
    }
    if (-4..6).contains(&exp) {
        if exp < 0 {
            buf.push_str("0.");
            buf.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            buf.push_str(digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                buf.push_str(digits);
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
        buf.push('e');
        buf.push(if exp < 0 { '-' } else { '+' });
        let mut ints = itoa::Buffer::new();
        let e = ints.format(exp.unsigned_abs());
        if e.len() < 2 {
            buf.push('0');
        }
        buf.push_str(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetricSet;

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
        assert_eq!(f(1234567.0), "1.234567e+06");
        assert_eq!(f(-270553174016.0), "-2.70553174016e+11");
        assert_eq!(f(9_007_199_254_740_992.0), "9.007199254740992e+15");
        assert_eq!(f(1e21), "1e+21");
        assert_eq!(f(-0.0), "-0");
        assert_eq!(f(0.0), "0");
        assert_eq!(f(1e-5), "1e-05");
        assert_eq!(f(1.5e300), "1.5e+300");
        assert_eq!(f(5e-324), "5e-324");
        // Same as formatting through Rust's Display for the plain range.
        for v in [0.1, 0.5, 3.25, 123.456, 0.00012, 99999.99] {
            assert_eq!(f(v), format!("{v}"));
        }
    }

    #[test]
    fn integer_fast_path_agrees_with_float_formatting() {
        // The reference: Rust's shortest `{:e}` digits, laid out by the same Go rules.
        let reference = |v: f64| {
            let e = format!("{:e}", v.abs());
            let (mantissa, exp) = e.split_once('e').unwrap();
            let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
            let mut s = String::new();
            push_go_form(&mut s, v < 0.0, digits.as_bytes(), exp.parse().unwrap());
            s
        };
        let mut v = 1.0f64;
        while v < 9e15 {
            for x in [v, v + 1.0, v * 7.0, -(v * 3.0 + 11.0), (v * 1.5).floor()] {
                assert_eq!(f(x), reference(x), "{x}");
            }
            v *= 10.0;
        }
    }

    #[test]
    fn any_float_is_shortest_and_round_trips() {
        // Rust's `{:e}` also gives shortest digits, so the digit counts must agree; the
        // digits themselves may differ on exact ties, where Go (like ryu) rounds half to
        // even and Rust does not (checked below).
        let digit_count = |s: &str| {
            let mantissa = s.split(['e', 'E']).next().unwrap();
            let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
            digits
                .trim_start_matches('0')
                .trim_end_matches('0')
                .len()
                .max(1)
        };
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut checked = 0;
        while checked < 20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = f64::from_bits(x);
            if !v.is_finite() || v == 0.0 {
                continue;
            }
            let ours = f(v);
            assert_eq!(
                ours.parse::<f64>().unwrap(),
                v,
                "{ours} does not round-trip"
            );
            assert_eq!(
                digit_count(&ours),
                digit_count(&format!("{v:e}")),
                "{ours} vs {v:e}"
            );
            checked += 1;
        }
        // 667082108456853.25 (written as bits: clippy reads the literal as too precise) is
        // exactly halfway between two 16-digit candidates: Go's strconv (and Python's repr)
        // pick the even one.
        let tie = f64::from_bits(0x4302_f5a9_40e2_7caa);
        assert_eq!(format!("{tie:.2}"), "667082108456853.25");
        assert_eq!(f(tie), "6.670821084568532e+14");
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
        let mut out = Vec::new();
        set.encode_text(&mut out);
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
