//! A small builder for Prometheus metric families, so collectors say *what* to emit
//! (`set.gauge(name, help, labels, value)`) and not how protobuf structs are filled.

use rustc_hash::FxHashMap;

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType, Untyped};

/// Families collected during one scrape, indexed by name.
#[derive(Default)]
pub struct MetricSet {
    families: Vec<MetricFamily>,
    /// Family position by name. FxHash: SipHash of ~300 names per scrape showed up in
    /// profiles, and the keys are our own metric names, not attacker-chosen.
    index: FxHashMap<String, usize>,
}

impl MetricSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut g = Gauge::default();
        g.set_value(value);
        let mut m = metric(labels);
        m.set_gauge(g);
        self.push(name, help, MetricType::GAUGE, m);
    }

    /// Adds a counter sample.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut c = Counter::default();
        c.set_value(value);
        let mut m = metric(labels);
        m.set_counter(c);
        self.push(name, help, MetricType::COUNTER, m);
    }

    /// Adds an untyped sample (node_exporter uses these for netstat and vmstat).
    // The plain (non-protobuf) model marks Untyped deprecated, but the text format needs it.
    #[allow(deprecated)]
    pub fn untyped(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut u = Untyped::default();
        u.set_value(value);
        let mut m = metric(labels);
        m.set_untyped(u);
        self.push(name, help, MetricType::UNTYPED, m);
    }

    /// Adds a sample of the given type.
    pub fn sample(
        &mut self,
        kind: MetricType,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        match kind {
            MetricType::COUNTER => self.counter(name, help, labels, value),
            MetricType::GAUGE => self.gauge(name, help, labels, value),
            _ => self.untyped(name, help, labels, value),
        }
    }

    /// Adds a ready-made family (e.g. parsed from a textfile), merging with an existing
    /// family of the same name.
    pub fn extend_family(&mut self, mut family: MetricFamily) {
        match self.index.get(family.name()) {
            Some(&i) => {
                let existing = &mut self.families[i];
                existing.mut_metric().extend(family.take_metric());
            }
            None => {
                self.index
                    .insert(family.name().to_string(), self.families.len());
                self.families.push(family);
            }
        }
    }

    /// True if a family of this name was added.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The families, in insertion order.
    pub fn families(&self) -> &[MetricFamily] {
        &self.families
    }

    pub fn into_families(self) -> Vec<MetricFamily> {
        self.families
    }

    fn push(&mut self, name: &str, help: &str, kind: MetricType, m: Metric) {
        // Collectors usually emit a family's samples back to back: check the last family
        // before hashing the name (hashing dominated scrape CPU in profiles).
        if let Some(last) = self.families.last_mut()
            && last.name() == name
        {
            last.mut_metric().push(m);
            return;
        }
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                let mut f = MetricFamily::default();
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.set_field_type(kind);
                self.index.insert(name.to_string(), self.families.len());
                self.families.push(f);
                self.families.len() - 1
            }
        };
        self.families[i].mut_metric().push(m);
    }
}

fn metric(labels: &[(&str, &str)]) -> Metric {
    let mut pairs: Vec<LabelPair> = labels
        .iter()
        .map(|(k, v)| {
            let mut p = LabelPair::default();
            p.set_name(k.to_string());
            p.set_value(v.to_string());
            p
        })
        .collect();
    // client_golang keeps label pairs sorted by name; the text output follows that order.
    if !pairs.is_sorted_by(|a, b| a.name() <= b.name()) {
        pairs.sort_by(|a, b| a.name().cmp(b.name()));
    }
    let mut m = Metric::default();
    m.set_label(pairs);
    m
}
