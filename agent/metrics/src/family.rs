//! One scrape's samples, and their text exposition.
//!
//! Collectors say *what* to emit (`set.gauge(name, help, labels, value)`). Samples are kept
//! flat: label names and values go into one string arena, so a sample costs no allocation,
//! and a set reused across scrapes ([`MetricSet::clear`]) keeps its families, arena and
//! index. Building protobuf `MetricFamily`s per sample (a `Vec` of label pairs and two
//! `String`s per label) was the largest user-space cost of a scrape. Summaries and
//! histograms (textfile, the agent's registries) are rare and stay in protobuf form.
//!
//! [`MetricSet::encode_text`] writes what client_golang's registry would serve: families
//! sorted by name, series sorted by label values, duplicates dropped with an error log
//! (its ContinueOnError behaviour: a bad series is left out, the scrape goes on).

use std::cell::OnceCell;
use std::ops::Range;

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType, Untyped};
use rustc_hash::FxHashMap;

use super::exposition;

/// Label sets up to this size are put in name order without allocating.
const MAX_STACK_LABELS: usize = 16;

/// A string in [`MetricSet::text`].
type Span = Range<usize>;

struct Sample {
    /// Range of [`MetricSet::pairs`], sorted by label name.
    pairs: Range<usize>,
    value: f64,
}

struct Family {
    name: String,
    help: String,
    kind: MetricType,
    /// `# HELP` and `# TYPE` lines, written once per family rather than per scrape.
    header: Vec<u8>,
    samples: Vec<Sample>,
    /// Summaries and histograms, kept as protobuf.
    complex: Vec<Metric>,
}

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut family = Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            header: Vec::new(),
            samples: Vec::new(),
            complex: Vec::new(),
        };
        family.write_header();
        family
    }

    fn write_header(&mut self) {
        self.header.clear();
        exposition::write_header(&mut self.header, &self.name, &self.help, self.kind);
    }

    fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.complex.is_empty()
    }
}

/// Families collected during one scrape.
#[derive(Default)]
pub struct MetricSet {
    /// In order of first appearance.
    families: Vec<Family>,
    /// Family position by name. FxHash: SipHash of ~300 names per scrape showed up in
    /// profiles, and the keys are our own metric names, not attacker-chosen.
    index: FxHashMap<String, usize>,
    /// The family of the previous sample: collectors emit a family's samples back to back.
    last: Option<usize>,
    /// Label names and values of every sample, back to back.
    text: String,
    /// (name, value) of each label.
    pairs: Vec<(Span, Span)>,
    /// Protobuf view for tests and the textfile collector, built on first use.
    proto: OnceCell<Vec<MetricFamily>>,
}

impl MetricSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the set for the next scrape, keeping its allocations. Families that got no
    /// sample in the scrape just ended are dropped, so names that stop appearing (textfile
    /// metrics, say) do not accumulate.
    pub fn clear(&mut self) {
        // Kept in name order, so the next encode finds its families (nearly) sorted.
        let unsorted = !self.families.is_sorted_by(|a, b| a.name <= b.name);
        if unsorted || self.families.iter().any(Family::is_empty) {
            self.families.retain(|f| !f.is_empty());
            self.families.sort_by(|a, b| a.name.cmp(&b.name));
            self.index.clear();
            for (i, f) in self.families.iter().enumerate() {
                self.index.insert(f.name.clone(), i);
            }
        }
        for f in &mut self.families {
            f.samples.clear();
            f.complex.clear();
        }
        self.last = None;
        self.text.clear();
        self.pairs.clear();
        self.proto = OnceCell::new();
    }

    /// Adds a gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(MetricType::GAUGE, name, help, labels, value);
    }

    /// Adds a counter sample.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(MetricType::COUNTER, name, help, labels, value);
    }

    /// Adds an untyped sample (node_exporter uses these for netstat and vmstat).
    pub fn untyped(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(MetricType::UNTYPED, name, help, labels, value);
    }

    /// Adds a sample of the given type (counter, gauge or untyped).
    pub fn sample(
        &mut self,
        kind: MetricType,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let Some(i) = self.family(name, help, kind) else {
            return;
        };
        let start = self.pairs.len();
        // client_golang keeps label pairs sorted by name; the text output follows that order.
        if labels.is_sorted_by(|a, b| a.0 <= b.0) {
            for (k, v) in labels {
                self.push_pair(k, v);
            }
        } else {
            // Positions in name order; on the stack for all but unusually wide label sets.
            let mut stack;
            let mut heap;
            let order: &mut [usize] = if labels.len() <= MAX_STACK_LABELS {
                stack = [0; MAX_STACK_LABELS];
                &mut stack[..labels.len()]
            } else {
                heap = vec![0; labels.len()];
                &mut heap
            };
            for (n, slot) in order.iter_mut().enumerate() {
                *slot = n;
            }
            order.sort_by(|&a, &b| labels[a].0.cmp(labels[b].0));
            for &n in order.iter() {
                self.push_pair(labels[n].0, labels[n].1);
            }
        }
        let pairs = start..self.pairs.len();
        self.proto = OnceCell::new();
        self.families[i].samples.push(Sample { pairs, value });
    }

    /// Adds a ready-made family (textfile, the agent's registries), merging with a family
    /// of the same name and type. One of another type is dropped with an error, as
    /// client_golang's registry does.
    #[allow(deprecated)]
    pub fn extend_family(&mut self, mut family: MetricFamily) {
        let kind = family.get_field_type();
        let Some(i) = self.family(family.name(), family.help(), kind) else {
            return;
        };
        match kind {
            MetricType::COUNTER | MetricType::GAUGE | MetricType::UNTYPED => {
                for m in family.get_metric() {
                    let value = match kind {
                        MetricType::COUNTER => m.get_counter().get_value(),
                        MetricType::GAUGE => m.get_gauge().get_value(),
                        _ => m.get_untyped().get_value(),
                    };
                    let labels: Vec<(&str, &str)> = m
                        .get_label()
                        .iter()
                        .map(|l| (l.name(), l.value()))
                        .collect();
                    self.sample(kind, family.name(), family.help(), &labels, value);
                }
            }
            MetricType::SUMMARY | MetricType::HISTOGRAM => {
                self.proto = OnceCell::new();
                self.families[i].complex.extend(family.take_metric());
            }
        }
    }

    /// True if a sample of this family was added.
    pub fn contains(&self, name: &str) -> bool {
        self.index
            .get(name)
            .is_some_and(|&i| !self.families[i].is_empty())
    }

    /// Type and help of a family that has samples.
    pub fn family_info(&self, name: &str) -> Option<(MetricType, &str)> {
        let f = &self.families[*self.index.get(name)?];
        (!f.is_empty()).then_some((f.kind, f.help.as_str()))
    }

    /// The families as protobuf, in order of first appearance, series in insertion order
    /// (tests and checks; a scrape uses [`Self::encode_text`]).
    pub fn families(&self) -> &[MetricFamily] {
        self.proto.get_or_init(|| self.to_proto())
    }

    pub fn into_families(mut self) -> Vec<MetricFamily> {
        self.families();
        self.proto.take().unwrap_or_default()
    }

    /// Writes text format 0.0.4: families sorted by name, series by label values, series
    /// with the same labels as an earlier one dropped.
    pub fn encode_text(&mut self, out: &mut Vec<u8>) {
        let Self {
            families,
            text,
            pairs,
            ..
        } = self;
        let mut order: Vec<usize> = (0..families.len())
            .filter(|&i| !families[i].is_empty())
            .collect();
        order.sort_unstable_by(|&a, &b| families[a].name.cmp(&families[b].name));
        let values = |s: &Sample| pairs[s.pairs.clone()].iter().map(|(_, v)| &text[v.clone()]);
        let mut num = String::with_capacity(32);
        for i in order {
            let family = &mut families[i];
            out.extend_from_slice(&family.header);
            let samples = &mut family.samples;
            if !samples.is_sorted_by(|a, b| values(a).cmp(values(b)).is_le()) {
                // Stable: of two equal label sets the first collected is kept.
                samples.sort_by(|a, b| values(a).cmp(values(b)));
            }
            let mut dropped = 0;
            for (n, s) in samples.iter().enumerate() {
                let labels = pairs[s.pairs.clone()]
                    .iter()
                    .map(|(k, v)| (&text[k.clone()], &text[v.clone()]));
                if n > 0 && same_labels(text, pairs, &samples[n - 1], s) {
                    dropped += 1;
                    continue;
                }
                exposition::write_sample(out, &mut num, &family.name, "", labels, None, s.value);
            }
            if !family.complex.is_empty() {
                exposition::encode_complex(
                    out,
                    &mut num,
                    &family.name,
                    family.kind,
                    &mut family.complex,
                );
            }
            if dropped > 0 {
                tracing::error!(
                    metric = family.name,
                    dropped,
                    "metric collected before with the same name and label values"
                );
            }
        }
    }

    /// The family for a sample, created if new; `None` when the name is taken by a family
    /// of another type in this scrape.
    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> Option<usize> {
        let i = match self.last {
            Some(i) if self.families[i].name == name => i,
            _ => match self.index.get(name) {
                Some(&i) => i,
                None => {
                    self.index.insert(name.to_string(), self.families.len());
                    self.families.push(Family::new(name, help, kind));
                    self.families.len() - 1
                }
            },
        };
        let family = &mut self.families[i];
        if family.kind != kind {
            if !family.is_empty() {
                tracing::error!(
                    metric = name,
                    "metric collected with conflicting types; dropping the later samples"
                );
                return None;
            }
            // Left over from an earlier scrape of a reused set.
            family.kind = kind;
            family.write_header();
        }
        if family.is_empty() && family.help != help {
            family.help = help.to_string();
            family.write_header();
        }
        self.last = Some(i);
        Some(i)
    }

    fn push_pair(&mut self, name: &str, value: &str) {
        let k = self.text.len()..self.text.len() + name.len();
        self.text.push_str(name);
        let v = self.text.len()..self.text.len() + value.len();
        self.text.push_str(value);
        self.pairs.push((k, v));
    }

    #[allow(deprecated)]
    fn to_proto(&self) -> Vec<MetricFamily> {
        self.families
            .iter()
            .filter(|f| !f.is_empty())
            .map(|f| {
                let mut family = MetricFamily::default();
                family.set_name(f.name.clone());
                family.set_help(f.help.clone());
                family.set_field_type(f.kind);
                for s in &f.samples {
                    let mut m = Metric::default();
                    m.set_label(
                        self.pairs[s.pairs.clone()]
                            .iter()
                            .map(|(k, v)| {
                                let mut p = LabelPair::default();
                                p.set_name(self.text[k.clone()].to_string());
                                p.set_value(self.text[v.clone()].to_string());
                                p
                            })
                            .collect(),
                    );
                    match f.kind {
                        MetricType::COUNTER => {
                            let mut c = Counter::default();
                            c.set_value(s.value);
                            m.set_counter(c);
                        }
                        MetricType::GAUGE => {
                            let mut g = Gauge::default();
                            g.set_value(s.value);
                            m.set_gauge(g);
                        }
                        _ => {
                            let mut u = Untyped::default();
                            u.set_value(s.value);
                            m.set_untyped(u);
                        }
                    }
                    family.mut_metric().push(m);
                }
                family.mut_metric().extend(f.complex.iter().cloned());
                family
            })
            .collect()
    }
}

fn same_labels(text: &str, pairs: &[(Span, Span)], a: &Sample, b: &Sample) -> bool {
    let (pa, pb) = (&pairs[a.pairs.clone()], &pairs[b.pairs.clone()]);
    pa.len() == pb.len()
        && pa.iter().zip(pb).all(|((ka, va), (kb, vb))| {
            text[ka.clone()] == text[kb.clone()] && text[va.clone()] == text[vb.clone()]
        })
}

#[cfg(test)]
mod tests {
    use prometheus::proto::{Bucket, Histogram, Quantile, Summary};

    use super::*;

    fn text(set: &mut MetricSet) -> String {
        let mut out = Vec::new();
        set.encode_text(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_reused_set_serves_only_this_scrapes_samples() {
        let mut set = MetricSet::new();
        set.gauge("a", "A.", &[("x", "1")], 1.0);
        set.gauge("b", "B.", &[], 2.0);
        assert_eq!(
            text(&mut set),
            "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\n# HELP b B.\n# TYPE b gauge\nb 2\n"
        );
        set.clear();
        set.gauge("b", "B.", &[], 3.0);
        // A name may come back with another type or help in a later scrape (textfiles).
        set.counter("a_total", "A total.", &[], 4.0);
        assert!(!set.contains("a"));
        assert_eq!(
            text(&mut set),
            "# HELP a_total A total.\n# TYPE a_total counter\na_total 4\n# HELP b B.\n# TYPE b gauge\nb 3\n"
        );
        set.clear();
        set.clear();
        assert_eq!(
            set.families.len(),
            0,
            "families unused for a scrape are dropped"
        );
        set.untyped("b", "B changed.", &[], 5.0);
        assert_eq!(
            text(&mut set),
            "# HELP b B changed.\n# TYPE b untyped\nb 5\n"
        );
    }

    #[test]
    fn labels_are_sorted_by_name_and_series_by_values() {
        let mut set = MetricSet::new();
        let many: Vec<(String, String)> = (0..20)
            .rev()
            .map(|i| (format!("l{i:02}"), i.to_string()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        set.gauge("m", "M.", &many, 1.0);
        set.gauge("n", "N.", &[("z", "b"), ("a", "2")], 1.0);
        set.gauge("n", "N.", &[("z", "a"), ("a", "10")], 2.0);
        set.gauge("n", "N.", &[("a", "10"), ("z", "a")], 3.0);
        let out = text(&mut set);
        let m_line = out.lines().find(|l| l.starts_with("m{")).unwrap();
        assert!(m_line.starts_with("m{l00=\"0\",l01=\"1\","), "{m_line}");
        assert!(m_line.ends_with("l19=\"19\"} 1"), "{m_line}");
        // Values compare as strings ("10" < "2"); the duplicate keeps the first value.
        assert!(
            out.ends_with("n{a=\"10\",z=\"a\"} 2\nn{a=\"2\",z=\"b\"} 1\n"),
            "{out}"
        );
    }

    #[test]
    fn conflicting_types_keep_the_first() {
        let mut set = MetricSet::new();
        set.gauge("x", "X.", &[], 1.0);
        set.counter("x", "X.", &[], 2.0);
        let mut family = MetricFamily::default();
        family.set_name("x".into());
        family.set_help("X.".into());
        family.set_field_type(MetricType::UNTYPED);
        family.mut_metric().push(Metric::default());
        set.extend_family(family);
        assert_eq!(text(&mut set), "# HELP x X.\n# TYPE x gauge\nx 1\n");
    }

    fn label(name: &str, value: &str) -> LabelPair {
        let mut p = LabelPair::default();
        p.set_name(name.into());
        p.set_value(value.into());
        p
    }

    #[test]
    fn summaries_and_histograms_are_written_series_by_series() {
        let mut set = MetricSet::new();
        let mut summary = MetricFamily::default();
        summary.set_name("s".into());
        summary.set_help("S.".into());
        summary.set_field_type(MetricType::SUMMARY);
        for (v, n) in [("b", 2), ("a", 1)] {
            let mut q = Quantile::default();
            q.set_quantile(0.5);
            q.set_value(n as f64);
            let mut s = Summary::default();
            s.set_quantile(vec![q]);
            s.set_sample_sum(10.5);
            s.set_sample_count(n);
            let mut m = Metric::default();
            m.set_label(vec![label("k", v)]);
            m.set_summary(s);
            summary.mut_metric().push(m);
        }
        set.extend_family(summary);
        let mut histogram = MetricFamily::default();
        histogram.set_name("h".into());
        histogram.set_help("H.".into());
        histogram.set_field_type(MetricType::HISTOGRAM);
        let mut b = Bucket::default();
        b.set_upper_bound(0.25);
        b.set_cumulative_count(3);
        let mut h = Histogram::default();
        h.set_bucket(vec![b]);
        h.set_sample_count(4);
        h.set_sample_sum(1.5);
        let mut m = Metric::default();
        m.set_histogram(h);
        histogram.mut_metric().push(m);
        set.extend_family(histogram);
        assert_eq!(
            text(&mut set),
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"0.25\"} 3\nh_bucket{le=\"+Inf\"} 4\n\
             h_sum 1.5\nh_count 4\n\
             # HELP s S.\n# TYPE s summary\ns{k=\"a\",quantile=\"0.5\"} 1\ns_sum{k=\"a\"} 10.5\n\
             s_count{k=\"a\"} 1\ns{k=\"b\",quantile=\"0.5\"} 2\ns_sum{k=\"b\"} 10.5\ns_count{k=\"b\"} 2\n"
        );
        assert_eq!(set.families().len(), 2);
    }
}
