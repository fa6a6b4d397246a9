//! `textfile`: metrics from `*.prom` files in `--collector.textfile.directory`
//! (node_exporter 1.5.0 collector/textfile.go).
//!
//! - The directory may be a glob (`*` and `?` per path component); "" disables reading
//!   but still emits `node_textfile_scrape_error 0`.
//! - A file that fails to parse, or that carries client-side timestamps, is skipped whole
//!   and sets `node_textfile_scrape_error 1`.
//! - Families of the same name from several files are merged; a family without HELP gets
//!   "Metric read from <files>"; series missing some of their family's label names get
//!   them as "" (per file, as convertMetricFamily does).
//! - `node_textfile_mtime_seconds{file}` for each file that was read.
//!
//! The parser is our own strict port of expfmt's TextParser: the Rust crates for this
//! (prometheus-parse and similar) are lenient, unmaintained or do not group summary and
//! histogram samples, while node_exporter must reject exactly what expfmt rejects.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType, Quantile,
    Summary, Untyped,
};

use super::{BuildContext, Collector, CollectorError, MetricSet};

const MTIME_HELP: &str = "Unixtime mtime of textfiles successfully read.";
const ERROR_HELP: &str = "1 if there was an error opening or reading a file, 0 otherwise";

pub struct TextfileCollector {
    pattern: String,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(TextfileCollector {
        pattern: ctx.options.textfile_directory.clone(),
    }))
}

/// One family parsed from one file, before merging.
struct Parsed {
    family: MetricFamily,
    has_help: bool,
}

impl Collector for TextfileCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let mut errored = false;
        // Every file's families, in file order.
        let mut parsed: Vec<Parsed> = Vec::new();
        let mut files_of: HashMap<String, Vec<String>> = HashMap::new();
        let mut mtimes: Vec<(String, f64)> = Vec::new();

        if !self.pattern.is_empty() {
            let dirs = expand_glob(&self.pattern);
            let dirs = if dirs.is_empty() {
                vec![PathBuf::from(&self.pattern)]
            } else {
                dirs
            };
            for dir in dirs {
                let names = match prom_files(&dir) {
                    Ok(n) => n,
                    Err(e) => {
                        errored = true;
                        tracing::error!(path = %dir.display(), error = %e, "failed to read textfile collector directory");
                        continue;
                    }
                };
                for name in names {
                    let path = clean_join(&dir, &name);
                    let path_str = path.display().to_string();
                    let (mtime, families) = match process_file(&dir, &name, &path) {
                        Ok(r) => r,
                        Err(e) => {
                            errored = true;
                            tracing::error!(file = %name, error = %e, "failed to collect textfile data");
                            continue;
                        }
                    };
                    for p in families {
                        files_of
                            .entry(p.family.name().to_string())
                            .or_default()
                            .push(path_str.clone());
                        parsed.push(p);
                    }
                    mtimes.push((path_str, mtime));
                }
            }
        }

        // The HELP fallback is set per file before merging, so a file without HELP conflicts
        // with one that has it, exactly as in node_exporter.
        let mut merged: Vec<MetricFamily> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for mut p in parsed {
            if !p.has_help {
                let files = files_of
                    .get(p.family.name())
                    .map(|f| f.join(", "))
                    .unwrap_or_default();
                p.family.set_help(format!("Metric read from {files}"));
            }
            match index.get(p.family.name()) {
                Some(&i) => merge_into(&mut merged[i], p.family),
                None => {
                    index.insert(p.family.name().to_string(), merged.len());
                    merged.push(p.family);
                }
            }
        }

        for family in merged {
            if let Some((kind, help)) = out.family_info(family.name())
                && (kind != family.get_field_type() || help != family.help())
            {
                tracing::error!(
                    metric = family.name(),
                    "textfile metric clashes with a built-in metric of another type or help; dropped"
                );
                continue;
            }
            out.extend_family(family);
        }

        mtimes.sort_by(|a, b| a.0.cmp(&b.0));
        for (file, mtime) in &mtimes {
            out.gauge(
                "node_textfile_mtime_seconds",
                MTIME_HELP,
                &[("file", file)],
                *mtime,
            );
        }
        out.gauge(
            "node_textfile_scrape_error",
            ERROR_HELP,
            &[],
            if errored { 1.0 } else { 0.0 },
        );
        Ok(())
    }
}

/// Adds a later file's family to the merged one. A later family whose type or help differs
/// is dropped, as client_golang's gather rejects metrics inconsistent with the first.
fn merge_into(first: &mut MetricFamily, mut later: MetricFamily) {
    if first.get_field_type() != later.get_field_type() || first.help() != later.help() {
        tracing::error!(
            metric = first.name(),
            "textfile metric has inconsistent type or help across files; dropping the later one"
        );
        return;
    }
    first.mut_metric().extend(later.take_metric());
}

/// `dir/name` cleaned lexically like Go's filepath.Join (`./d//x` → `d/x`, `a/../b` → `b`),
/// since the path shows up in the `file` label and in HELP texts.
fn clean_join(dir: &Path, name: &str) -> PathBuf {
    use std::path::Component;
    let mut parts: Vec<Component<'_>> = Vec::new();
    for c in dir.components().chain(Path::new(name).components()) {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match parts.last() {
                Some(Component::Normal(_)) => {
                    parts.pop();
                }
                Some(Component::RootDir) => {}
                _ => parts.push(c),
            },
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return PathBuf::from(".");
    }
    parts.iter().collect()
}

/// `*.prom` file names in `dir`, sorted (Go's os.ReadDir order).
fn prom_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".prom"))
        .collect();
    names.sort();
    Ok(names)
}

/// Reads and parses `dir/name` (shown as `path`), returning its mtime (whole seconds) and
/// families. Never through a symlink and only a regular file: whoever may write the
/// directory must not make the agent (root) read other files or block on a FIFO.
fn process_file(dir: &Path, name: &str, path: &Path) -> Result<(f64, Vec<Parsed>), CollectorError> {
    use std::io::Read as _;
    let mut file = node_agent_core::fsutil::open_regular_beneath(dir, &dir.join(name))
        .map_err(|e| CollectorError::io(path, e))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| CollectorError::io(path, e))?;
    let (families, has_timestamps) =
        parse_text(&text).map_err(|e| CollectorError::parse(path.display().to_string(), e))?;
    if has_timestamps {
        return Err(CollectorError::parse(
            path.display().to_string(),
            "contains unsupported client-side timestamps, skipping entire file",
        ));
    }
    // Stat only after a successful parse, so a broken file never looks fresh.
    let mtime = file
        .metadata()
        .and_then(|m| m.modified())
        .map_err(|e| CollectorError::io(path, e))?;
    let secs = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as f64)
        .unwrap_or(0.0);
    let families = families.into_iter().map(fill_missing_labels).collect();
    Ok((secs, families))
}

/// Parses a textfile's text as the collector does (missing labels filled in) and says
/// whether it carries client-side timestamps; the fuzzing entry point (tests/fuzz).
pub fn parse_textfile(text: &str) -> Result<(Vec<MetricFamily>, bool), String> {
    let (families, has_timestamps) = parse_text(text)?;
    let families = families
        .into_iter()
        .map(|p| fill_missing_labels(p).family)
        .collect();
    Ok((families, has_timestamps))
}

/// Gives every series all label names used in its family, missing ones as "".
fn fill_missing_labels(mut p: Parsed) -> Parsed {
    let mut names: Vec<String> = Vec::new();
    for m in p.family.get_metric() {
        for l in m.get_label() {
            if !names.iter().any(|n| n == l.name()) {
                names.push(l.name().to_string());
            }
        }
    }
    for m in p.family.mut_metric() {
        let mut labels = m.take_label();
        for n in &names {
            if !labels.iter().any(|l| l.name() == n) {
                labels.push(label_pair(n, ""));
            }
        }
        labels.sort_by(|a, b| a.name().cmp(b.name()));
        m.set_label(labels);
    }
    p
}

/// Expands `*` / `?` wildcards component by component; a pattern without wildcards
/// yields itself if it exists. Returns nothing when nothing matches.
fn expand_glob(pattern: &str) -> Vec<PathBuf> {
    let has_wild = |s: &str| s.contains(['*', '?']);
    if !has_wild(pattern) {
        return if Path::new(pattern).exists() {
            vec![PathBuf::from(pattern)]
        } else {
            Vec::new()
        };
    }
    let (mut current, rest) = if let Some(rest) = pattern.strip_prefix('/') {
        (vec![PathBuf::from("/")], rest)
    } else {
        (vec![PathBuf::from(".")], pattern)
    };
    let relative = !pattern.starts_with('/');
    for comp in rest.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for base in &current {
            if has_wild(comp) {
                let Ok(entries) = std::fs::read_dir(base) else {
                    continue;
                };
                let mut matched: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok())
                    .filter(|e| {
                        e.file_name()
                            .to_str()
                            // Go's filepath.Match lets `*` match a leading dot too.
                            .is_some_and(|n| wildcard_match(comp, n))
                    })
                    .map(|e| base.join(e.file_name()))
                    .collect();
                matched.sort();
                next.extend(matched);
            } else {
                let p = base.join(comp);
                if p.exists() {
                    next.push(p);
                }
            }
        }
        current = next;
    }
    if relative {
        current = current
            .into_iter()
            .map(|p| p.strip_prefix(".").map(Path::to_path_buf).unwrap_or(p))
            .collect();
    }
    current
}

/// Shell-style match of `*` and `?` against a whole name.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

// ---------------------------------------------------------------------------------------
// Text format parser (expfmt TextParser semantics).

/// A family being built. Summary and histogram samples are grouped by label set and
/// turned into metrics at the end (the plain proto model has no mutable accessors).
struct Building {
    name: String,
    kind: Option<MetricType>,
    help: Option<String>,
    metrics: Vec<Metric>,
    groups: Vec<Group>,
    /// Label signature → index in `groups`.
    group_index: HashMap<String, usize>,
    has_timestamp: bool,
}

#[derive(Default)]
struct Group {
    labels: Vec<(String, String)>,
    sum: f64,
    count: u64,
    /// (quantile or upper bound, value or cumulative count)
    points: Vec<(f64, f64)>,
}

impl Building {
    fn finish(self) -> Option<(Parsed, bool)> {
        let kind = self.kind.unwrap_or(MetricType::UNTYPED);
        let mut metrics = self.metrics;
        for mut g in self.groups {
            g.points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut m = metric_with_labels(&g.labels);
            if kind == MetricType::SUMMARY {
                let mut s = Summary::default();
                s.set_sample_sum(g.sum);
                s.set_sample_count(g.count);
                s.set_quantile(
                    g.points
                        .iter()
                        .map(|&(q, v)| {
                            let mut quantile = Quantile::default();
                            quantile.set_quantile(q);
                            quantile.set_value(v);
                            quantile
                        })
                        .collect(),
                );
                m.set_summary(s);
            } else {
                let mut h = Histogram::default();
                h.set_sample_sum(g.sum);
                h.set_sample_count(g.count);
                h.set_bucket(
                    g.points
                        .iter()
                        .map(|&(le, c)| {
                            let mut b = Bucket::default();
                            b.set_upper_bound(le);
                            b.set_cumulative_count(c as u64);
                            b
                        })
                        .collect(),
                );
                m.set_histogram(h);
            }
            metrics.push(m);
        }
        if metrics.is_empty() {
            return None; // expfmt drops families that only had HELP/TYPE
        }
        let mut family = MetricFamily::default();
        family.set_name(self.name);
        family.set_field_type(kind);
        let has_help = self.help.is_some();
        family.set_help(self.help.unwrap_or_default());
        family.set_metric(metrics);
        Some((Parsed { family, has_help }, self.has_timestamp))
    }
}

/// Parses text exposition format 0.0.4 into families (first-seen order, empty families
/// dropped) and whether any sample carried a timestamp. Errors name the line.
fn parse_text(text: &str) -> Result<(Vec<Parsed>, bool), String> {
    let mut fams: Vec<Building> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (n, raw) in text.lines().enumerate() {
        parse_line(raw, &mut fams, &mut index).map_err(|e| format!("line {}: {e}", n + 1))?;
    }
    let mut any_timestamp = false;
    let families = fams
        .into_iter()
        .filter_map(Building::finish)
        .map(|(p, ts)| {
            any_timestamp |= ts;
            p
        })
        .collect();
    Ok((families, any_timestamp))
}

fn family<'a>(
    fams: &'a mut Vec<Building>,
    index: &mut HashMap<String, usize>,
    name: &str,
) -> &'a mut Building {
    let i = *index.entry(name.to_string()).or_insert_with(|| {
        fams.push(Building {
            name: name.to_string(),
            kind: None,
            help: None,
            metrics: Vec::new(),
            groups: Vec::new(),
            group_index: HashMap::new(),
            has_timestamp: false,
        });
        fams.len() - 1
    });
    &mut fams[i]
}

fn parse_line(
    raw: &str,
    fams: &mut Vec<Building>,
    index: &mut HashMap<String, usize>,
) -> Result<(), String> {
    let line = raw.trim_start_matches([' ', '\t']);
    if line.is_empty() {
        return Ok(());
    }
    if let Some(comment) = line.strip_prefix('#') {
        return parse_comment(comment, fams, index);
    }
    let mut cur = Cursor { s: line, pos: 0 };
    let name = cur.metric_name()?;
    let labels = if cur.peek() == Some('{') {
        cur.pos += 1;
        cur.labels()?
    } else {
        Vec::new()
    };
    cur.skip_blank();
    let value_tok = cur.token();
    if value_tok.is_empty() {
        return Err(format!("no value for metric {name:?}"));
    }
    let value = parse_float(value_tok)?;
    cur.skip_blank();
    let ts_tok = cur.token();
    let has_timestamp = !ts_tok.is_empty();
    if has_timestamp {
        ts_tok
            .parse::<i64>()
            .map_err(|e| format!("invalid timestamp {ts_tok:?}: {e}"))?;
    }
    cur.skip_blank();
    if cur.pos < cur.s.len() {
        return Err(format!(
            "unexpected text after sample: {:?}",
            &cur.s[cur.pos..]
        ));
    }
    add_sample(fams, index, name, labels, value, has_timestamp)
}

fn parse_comment(
    comment: &str,
    fams: &mut Vec<Building>,
    index: &mut HashMap<String, usize>,
) -> Result<(), String> {
    let mut cur = Cursor { s: comment, pos: 0 };
    cur.skip_blank();
    let keyword = cur.token();
    if keyword != "HELP" && keyword != "TYPE" {
        return Ok(()); // a plain comment
    }
    cur.skip_blank();
    if cur.pos >= cur.s.len() {
        return Ok(()); // "# HELP" alone is just a comment to expfmt
    }
    let name = cur.metric_name()?;
    if cur.pos < cur.s.len() && !matches!(cur.peek(), Some(' ' | '\t')) {
        return Err(format!("invalid metric name in comment: {comment:?}"));
    }
    cur.skip_blank();
    let rest = &cur.s[cur.pos..];
    let b = family(fams, index, name);
    if keyword == "HELP" {
        if b.help.is_some() {
            return Err(format!("second HELP line for metric name {name:?}"));
        }
        b.help = Some(unescape(rest, false)?);
    } else {
        if b.kind.is_some() {
            return Err(format!(
                "second TYPE line for metric name {name:?}, or TYPE reported after samples"
            ));
        }
        b.kind = Some(match rest.trim_end_matches([' ', '\t']) {
            "counter" => MetricType::COUNTER,
            "gauge" => MetricType::GAUGE,
            "histogram" => MetricType::HISTOGRAM,
            "summary" => MetricType::SUMMARY,
            "untyped" => MetricType::UNTYPED,
            other => return Err(format!("unknown metric type {other:?}")),
        });
    }
    Ok(())
}

#[allow(deprecated)] // Untyped is deprecated in the plain model but the text format has it
fn add_sample(
    fams: &mut Vec<Building>,
    index: &mut HashMap<String, usize>,
    name: &str,
    mut labels: Vec<(String, String)>,
    value: f64,
    has_timestamp: bool,
) -> Result<(), String> {
    // `_sum`, `_count` (and `_bucket`) samples belong to an already declared summary or
    // histogram of the base name.
    let mut target = name;
    let mut suffix = "";
    for s in ["_sum", "_count", "_bucket"] {
        if let Some(base) = name.strip_suffix(s)
            && let Some(&i) = index.get(base)
            && match fams[i].kind {
                Some(MetricType::SUMMARY) => s != "_bucket",
                Some(MetricType::HISTOGRAM) => true,
                _ => false,
            }
        {
            target = base;
            suffix = s;
            break;
        }
    }
    let b = family(fams, index, target);
    b.has_timestamp |= has_timestamp;
    let kind = *b.kind.get_or_insert(MetricType::UNTYPED);
    if matches!(kind, MetricType::SUMMARY | MetricType::HISTOGRAM) {
        let special = if kind == MetricType::SUMMARY {
            "quantile"
        } else {
            "le"
        };
        let special_value = labels
            .iter()
            .position(|(k, _)| k == special)
            .map(|pos| labels.remove(pos).1);
        labels.sort();
        let signature: String = labels
            .iter()
            .map(|(k, v)| format!("{k}\u{0}{v}\u{0}"))
            .collect();
        let i = match b.group_index.get(&signature) {
            Some(&i) => i,
            None => {
                b.groups.push(Group {
                    labels,
                    ..Group::default()
                });
                b.group_index.insert(signature, b.groups.len() - 1);
                b.groups.len() - 1
            }
        };
        let g = &mut b.groups[i];
        match suffix {
            "_sum" => g.sum = value,
            "_count" => g.count = value as u64,
            "_bucket" => {
                let le = special_value.ok_or("histogram bucket without le label")?;
                g.points.push((parse_float(&le)?, value));
            }
            _ if kind == MetricType::SUMMARY => {
                let q = special_value.ok_or("summary sample without quantile label")?;
                g.points.push((parse_float(&q)?, value));
            }
            _ => return Err(format!("unexpected sample {name:?} for histogram")),
        }
        return Ok(());
    }
    let mut m = metric_with_labels(&labels);
    match kind {
        MetricType::COUNTER => {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        }
        MetricType::GAUGE => {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        _ => {
            let mut u = Untyped::default();
            u.set_value(value);
            m.set_untyped(u);
        }
    }
    b.metrics.push(m);
    Ok(())
}

fn label_pair(name: &str, value: &str) -> LabelPair {
    let mut p = LabelPair::default();
    p.set_name(name.to_string());
    p.set_value(value.to_string());
    p
}

fn metric_with_labels(labels: &[(String, String)]) -> Metric {
    let mut pairs: Vec<LabelPair> = labels.iter().map(|(k, v)| label_pair(k, v)).collect();
    pairs.sort_by(|a, b| a.name().cmp(b.name()));
    let mut m = Metric::default();
    m.set_label(pairs);
    m
}

/// Go's ParseFloat accepts Inf/NaN spellings that Rust's `f64::from_str` also accepts;
/// both reject empty strings and trailing junk.
fn parse_float(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|e| format!("invalid value {s:?}: {e}"))
}

/// HELP text escapes `\\` and `\n`; label values additionally `\"`.
fn unescape(s: &str, quotes: bool) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            other => {
                return Err(format!(
                    "invalid escape sequence '\\{}'",
                    other.unwrap_or(' ')
                ));
            }
        }
    }
    Ok(out)
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn skip_blank(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    /// Up to the next blank or end of line.
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`
    fn metric_name(&mut self) -> Result<&'a str, String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            let ok = c.is_ascii_alphabetic()
                || c == '_'
                || c == ':'
                || (self.pos > start && c.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(format!("invalid metric name at {:?}", &self.s[start..]));
        }
        Ok(&self.s[start..self.pos])
    }

    /// `name="value", ...}` after the opening brace.
    fn labels(&mut self) -> Result<Vec<(String, String)>, String> {
        let mut labels: Vec<(String, String)> = Vec::new();
        loop {
            self.skip_blank();
            if self.peek() == Some('}') {
                self.pos += 1;
                return Ok(labels);
            }
            let start = self.pos;
            while let Some(c) = self.peek() {
                let ok =
                    c.is_ascii_alphabetic() || c == '_' || (self.pos > start && c.is_ascii_digit());
                if !ok {
                    break;
                }
                self.pos += 1;
            }
            if self.pos == start {
                return Err(format!("invalid label name at {:?}", &self.s[start..]));
            }
            let name = &self.s[start..self.pos];
            self.skip_blank();
            if self.peek() != Some('=') {
                return Err(format!("expected '=' after label name {name:?}"));
            }
            self.pos += 1;
            self.skip_blank();
            if self.peek() != Some('"') {
                return Err(format!("expected '\"' to open value of label {name:?}"));
            }
            self.pos += 1;
            let vstart = self.pos;
            let mut escaped = false;
            loop {
                let Some(c) = self.peek() else {
                    return Err(format!("unterminated value of label {name:?}"));
                };
                self.pos += c.len_utf8();
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => break,
                    _ => escaped = false,
                }
            }
            let value = unescape(&self.s[vstart..self.pos - 1], true)?;
            if labels.iter().any(|(k, _)| k == name) {
                return Err(format!("duplicate label name {name:?}"));
            }
            labels.push((name.to_string(), value));
            self.skip_blank();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {}
                _ => return Err(format!("expected ',' or '}}' after label {name:?}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> String {
        format!("{}/testdata/textfile/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn collect(pattern: &str) -> MetricSet {
        let c = TextfileCollector {
            pattern: pattern.to_string(),
        };
        let mut set = MetricSet::new();
        c.update(&mut set).unwrap();
        set
    }

    fn family<'a>(set: &'a MetricSet, name: &str) -> &'a MetricFamily {
        set.families()
            .iter()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    fn scrape_error(set: &MetricSet) -> f64 {
        family(set, "node_textfile_scrape_error").get_metric()[0]
            .get_gauge()
            .get_value()
    }

    fn labels(m: &Metric) -> Vec<(&str, &str)> {
        m.get_label()
            .iter()
            .map(|l| (l.name(), l.value()))
            .collect()
    }

    #[test]
    fn disabled_emits_only_scrape_error_zero() {
        let set = collect("");
        assert_eq!(set.families().len(), 1);
        assert_eq!(scrape_error(&set), 0.0);
    }

    #[test]
    fn missing_directory_is_a_scrape_error() {
        let set = collect(&dir("does-not-exist"));
        assert_eq!(scrape_error(&set), 1.0);
    }

    #[test]
    fn good_files_merge_and_bad_files_are_skipped() {
        let d = dir("mixed");
        let set = collect(&d);
        assert_eq!(scrape_error(&set), 1.0);

        // Same family in a.prom (with HELP) and b.prom (without): b's part gets the
        // fallback HELP, which conflicts, so only a's series remain (node_exporter 1.5.0).
        let jobs = family(&set, "batch_jobs_total");
        assert_eq!(jobs.get_field_type(), MetricType::COUNTER);
        assert_eq!(jobs.help(), "Jobs run.");
        assert_eq!(jobs.get_metric().len(), 2);
        // Missing labels are filled with "" within the file's family.
        assert_eq!(
            labels(&jobs.get_metric()[1]),
            [("job", ""), ("result", "ok")]
        );

        // No HELP anywhere: fallback names every file that has the family.
        let temp = family(&set, "room_temperature");
        assert_eq!(
            temp.help(),
            format!("Metric read from {d}/a.prom, {d}/b.prom")
        );
        assert_eq!(temp.get_field_type(), MetricType::UNTYPED);

        // Escapes in label values and HELP.
        let esc = family(&set, "escaped");
        assert_eq!(esc.help(), "a\\b\nc");
        assert_eq!(labels(&esc.get_metric()[0]), [("path", "C:\\dir \"x\"\n")]);

        // Summary and histogram are grouped by label set.
        let s = family(&set, "rpc_seconds");
        assert_eq!(s.get_field_type(), MetricType::SUMMARY);
        let sm = s.get_metric()[0].get_summary();
        assert_eq!(sm.sample_count(), 10);
        assert_eq!(sm.sample_sum(), 2.5);
        let qs: Vec<_> = sm
            .get_quantile()
            .iter()
            .map(|q| (q.quantile(), q.value()))
            .collect();
        assert_eq!(qs, [(0.5, 0.1), (0.99, 0.9)]);
        let h = family(&set, "req_size_bytes");
        assert_eq!(h.get_field_type(), MetricType::HISTOGRAM);
        let hm = h.get_metric()[0].get_histogram();
        let bs: Vec<_> = hm
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        assert_eq!(bs, [(100.0, 1), (1000.0, 3), (f64::INFINITY, 4)]);
        assert_eq!(hm.get_sample_count(), 4);

        // Files with timestamps or parse errors contribute nothing, not even mtime.
        assert!(!set.contains("from_timestamped"));
        assert!(!set.contains("from_broken"));
        let files: Vec<_> = family(&set, "node_textfile_mtime_seconds")
            .get_metric()
            .iter()
            .map(|m| m.get_label()[0].value().to_string())
            .collect();
        assert_eq!(files, [format!("{d}/a.prom"), format!("{d}/b.prom")]);
        assert!(
            family(&set, "node_textfile_mtime_seconds").get_metric()[0]
                .get_gauge()
                .get_value()
                > 1.0e9
        );
        // Non-.prom files are ignored.
        assert!(!set.contains("ignored_txt"));
    }

    #[test]
    fn conflicting_type_across_files_keeps_the_first() {
        let set = collect(&dir("conflict"));
        let f = family(&set, "thing");
        assert_eq!(f.get_field_type(), MetricType::GAUGE);
        assert_eq!(f.get_metric().len(), 1);
        assert_eq!(scrape_error(&set), 0.0);
    }

    #[test]
    fn glob_directories() {
        let set = collect(&format!(
            "{}/testdata/textfile/gl*b/*",
            env!("CARGO_MANIFEST_DIR")
        ));
        assert_eq!(scrape_error(&set), 0.0);
        assert_eq!(family(&set, "from_glob").get_metric().len(), 2);
    }

    #[test]
    fn parser_rejects_what_expfmt_rejects() {
        for bad in [
            "metric{a=\"1\",a=\"2\"} 1\n",
            "metric{a=\"1\" 1\n",
            "metric{a=1} 1\n",
            "metric\n",
            "metric abc\n",
            "metric 1 2 3\n",
            "metric 1 1.5\n",
            "1metric 1\n",
            "# TYPE m gauge\n# TYPE m counter\n",
            "m 1\n# TYPE m gauge\n",
            "# HELP m a\n# HELP m b\n",
            "# TYPE m bogus\n",
            "m{a=\"\\x\"} 1\n",
            "# TYPE s summary\ns 1\n",
            "# TYPE h histogram\nh_bucket 1\n",
        ] {
            assert!(parse_text(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn parser_accepts_expfmt_forms() {
        let (fams, ts) = parse_text(
            "# just a comment\n\n  # HELP m Some help\n# TYPE m gauge\nm{a=\"x\",} 1.5\nm{ a = \"y\" } +Inf\nm NaN\nother_metric -2e3 \n",
        )
        .unwrap();
        assert!(!ts);
        assert_eq!(fams.len(), 2);
        assert_eq!(fams[0].family.get_metric().len(), 3);
        assert!(fams[0].has_help);
        assert_eq!(
            fams[0].family.get_metric()[1].get_gauge().get_value(),
            f64::INFINITY
        );
        assert!(!fams[1].has_help);
        // A family with only HELP/TYPE is dropped.
        assert!(
            parse_text("# HELP x y\n# TYPE x gauge\n")
                .unwrap()
                .0
                .is_empty()
        );
        // Timestamps are parsed (and later rejected by the collector).
        assert!(parse_text("m 1 1700000000000\n").unwrap().1);
        assert!(parse_text("m 1 0\n").unwrap().1);
    }

    #[test]
    fn paths_are_cleaned_like_go() {
        assert_eq!(
            clean_join(Path::new("./d//"), "x.prom"),
            Path::new("d/x.prom")
        );
        assert_eq!(
            clean_join(Path::new("/a/../b/"), "x.prom"),
            Path::new("/b/x.prom")
        );
        assert_eq!(clean_join(Path::new("/.."), "x.prom"), Path::new("/x.prom"));
        assert_eq!(
            clean_join(Path::new("../d"), "x.prom"),
            Path::new("../d/x.prom")
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.prom", "a.prom"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("x*", "yx"));
    }

    #[test]
    fn refuses_symlinks_and_special_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("textfile");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("good.prom"), "good 1\n").unwrap();
        // A secret that happens to parse (a textfile dir is often writable by a job that
        // should not read the node's files); the link must not be followed.
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, "secret_value 42\n").unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("link.prom")).unwrap();
        // A FIFO would block the scrape forever.
        nix::unistd::mkfifo(&dir.join("fifo.prom"), nix::sys::stat::Mode::S_IRWXU).unwrap();

        let set = collect(dir.to_str().unwrap());
        assert_eq!(scrape_error(&set), 1.0);
        assert_eq!(family(&set, "good").get_metric().len(), 1);
        assert!(set.families().iter().all(|f| f.name() != "secret_value"));
        let files: Vec<String> = family(&set, "node_textfile_mtime_seconds")
            .get_metric()
            .iter()
            .map(|m| m.get_label()[0].value().to_string())
            .collect();
        assert_eq!(files, [dir.join("good.prom").display().to_string()]);
    }
}
