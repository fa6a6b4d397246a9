//! Limits how fast one container (or pod, namespace, file) may log: `type: throttle` in
//! `logs.processors`, a token bucket per key.
//!
//! ```yaml
//! - type: throttle
//!   name: noisy-pods            # the `reason` label of dropped records
//!   key: container              # container (default), pod, namespace or file
//!   records_per_second: 1000    # either limit or both
//!   bytes_per_second: 1048576
//!   burst_seconds: 2            # bucket size, in seconds of the rate (default 1)
//!   action: drop                # drop (default) or slow
//! ```
//!
//! `drop`: records over the limit are dropped and counted in
//! `node_agent_logs_dropped_records_total{reason}` and, per container,
//! `node_agent_logs_throttled_records_total{namespace,pod,container}`; their positions
//! advance. `slow`: nothing is dropped; the key's files are not read again until its bucket
//! has refilled ([`Stage::paused_until`]), so the container's backlog waits on disk (it may
//! rotate away if it stays over the limit for long) while every other file is read as usual.
//! Only tailed files can wait like this; for the journal `slow` does not limit (use `drop`).
//! With several sinks each sink's lane has its own buckets.
//! Buckets of keys not seen for five minutes are forgotten.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, Opts};
use serde::Deserialize;

use node_agent_core::record::{LogRecord, SourceMeta};

use super::Stage;
use super::config::BuildContext;
use super::matcher::{MatchConfig, Matcher};
use crate::batch::record_bytes;
use crate::metrics::metrics;

/// Buckets idle this long are dropped (they would be full again anyway).
const IDLE_BUCKET: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleKey {
    #[default]
    Container,
    Pod,
    Namespace,
    File,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleAction {
    #[default]
    Drop,
    Slow,
}

/// `type: throttle`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    pub key: ThrottleKey,
    pub records_per_second: Option<f64>,
    pub bytes_per_second: Option<f64>,
    pub burst_seconds: f64,
    pub action: ThrottleAction,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            name: None,
            matcher: MatchConfig::default(),
            key: ThrottleKey::Container,
            records_per_second: None,
            bytes_per_second: None,
            burst_seconds: 1.0,
            action: ThrottleAction::Drop,
        }
    }
}

fn throttled_counter() -> &'static IntCounterVec {
    static C: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        node_agent_core::telemetry::register(
            IntCounterVec::new(
                Opts::new(
                    "node_agent_logs_throttled_records_total",
                    "Records a throttle processor dropped, by container.",
                ),
                &["namespace", "pod", "container"],
            )
            .expect("static metric definition"),
        )
    })
}

impl ThrottleConfig {
    pub fn build(&self, cx: &mut BuildContext<'_>) -> Option<Throttle> {
        let at = cx.at.clone();
        let matcher = cx.matcher(&self.matcher);
        let problems = &mut *cx.problems;
        problems.check(
            self.records_per_second.is_some() || self.bytes_per_second.is_some(),
            &at,
            "needs records_per_second or bytes_per_second",
        );
        for (name, v) in [
            ("records_per_second", self.records_per_second),
            ("bytes_per_second", self.bytes_per_second),
            ("burst_seconds", Some(self.burst_seconds)),
        ] {
            if let Some(v) = v {
                problems.check(
                    v.is_finite() && v > 0.0,
                    &at.key(name),
                    "must be a number greater than 0",
                );
            }
        }
        let reason = BuildContext::label(&self.name, "throttle");
        Some(Throttle {
            matcher,
            key: self.key,
            records: self
                .records_per_second
                .map(|r| Limit::new(r, self.burst_seconds)),
            bytes: self
                .bytes_per_second
                .map(|r| Limit::new(r, self.burst_seconds)),
            action: self.action,
            buckets: HashMap::new(),
            files: HashMap::new(),
            last: None,
            dropped: cx.counter(&metrics().dropped_records, &[&reason]),
            counting: cx.counting,
            last_sweep: Instant::now(),
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Limit {
    rate: f64,
    burst: f64,
}

impl Limit {
    fn new(rate: f64, burst_seconds: f64) -> Self {
        // A bucket holds at least one record's worth, or nothing would ever pass.
        Self {
            rate,
            burst: (rate * burst_seconds).max(1.0),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    records: f64,
    bytes: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, records: Option<Limit>, bytes: Option<Limit>) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        if let Some(l) = records {
            self.records = (self.records + l.rate * dt).min(l.burst);
        }
        if let Some(l) = bytes {
            self.bytes = (self.bytes + l.rate * dt).min(l.burst);
        }
    }
}

/// The throttle stage.
pub struct Throttle {
    matcher: Matcher,
    key: ThrottleKey,
    records: Option<Limit>,
    bytes: Option<Limit>,
    action: ThrottleAction,
    buckets: HashMap<String, Bucket>,
    /// Which bucket a file's records draw from (`slow`: which files to pause).
    files: HashMap<u64, String>,
    /// Key of the last source seen (records of one file come in runs).
    last: Option<(Arc<SourceMeta>, String)>,
    dropped: IntCounter,
    /// Whether this lane counts per container (see `BuildContext::counting`).
    counting: bool,
    last_sweep: Instant,
}

impl Throttle {
    fn key_of(&mut self, source: &Arc<SourceMeta>) -> String {
        if let Some((s, k)) = &self.last
            && Arc::ptr_eq(s, source)
        {
            return k.clone();
        }
        let k = match self.key {
            ThrottleKey::Container => {
                format!(
                    "{}/{}/{}/{}",
                    source.namespace, source.pod, source.pod_uid, source.container
                )
            }
            ThrottleKey::Pod => format!("{}/{}/{}", source.namespace, source.pod, source.pod_uid),
            ThrottleKey::Namespace => source.namespace.clone(),
            ThrottleKey::File => source.path.display().to_string(),
        };
        self.last = Some((Arc::clone(source), k.clone()));
        k
    }

    fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) < IDLE_BUCKET {
            return;
        }
        self.last_sweep = now;
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < IDLE_BUCKET);
        let buckets = &self.buckets;
        self.files.retain(|_, k| buckets.contains_key(k));
    }

    /// When the bucket `key` is out of debt again (`slow`).
    fn resume_at(&self, bucket: &Bucket) -> Option<Instant> {
        let wait = |tokens: f64, limit: Option<Limit>| {
            limit
                .filter(|_| tokens < 0.0)
                .map(|l| Duration::from_secs_f64((-tokens / l.rate).min(3600.0)))
        };
        let wait = wait(bucket.records, self.records).max(wait(bucket.bytes, self.bytes))?;
        Some(bucket.last + wait)
    }
}

impl Stage for Throttle {
    fn name(&self) -> &'static str {
        "throttle"
    }

    fn process(&mut self, record: LogRecord, out: &mut Vec<LogRecord>) {
        if !self.matcher.matches(&record.source) {
            out.push(record);
            return;
        }
        let now = Instant::now();
        self.sweep(now);
        let key = self.key_of(&record.source);
        let (records, bytes) = (self.records, self.bytes);
        if self.action == ThrottleAction::Slow && !self.files.contains_key(&record.source.file_id) {
            self.files.insert(record.source.file_id, key.clone());
        }
        let bucket = self.buckets.entry(key).or_insert_with(|| Bucket {
            records: records.map_or(0.0, |l| l.burst),
            bytes: bytes.map_or(0.0, |l| l.burst),
            last: now,
        });
        bucket.refill(now, records, bytes);
        let size = record_bytes(&record) as f64;
        let fits = records.is_none_or(|_| bucket.records >= 1.0)
            && bytes.is_none_or(|_| bucket.bytes >= size.min(bytes.map_or(0.0, |l| l.burst)));
        if fits || self.action == ThrottleAction::Slow {
            // `slow` always passes what was read and goes into debt; reading waits it out.
            bucket.records -= 1.0;
            bucket.bytes -= size;
            out.push(record);
        } else {
            self.dropped.inc();
            if self.counting {
                let s = &record.source;
                throttled_counter()
                    .with_label_values(&[&s.namespace, &s.pod, &s.container])
                    .inc();
            }
        }
    }

    fn paused_until(&self, file_id: u64) -> Option<Instant> {
        let bucket = self.buckets.get(self.files.get(&file_id)?)?;
        self.resume_at(bucket).filter(|t| *t > Instant::now())
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.action != ThrottleAction::Slow {
            return None;
        }
        let now = Instant::now();
        self.buckets
            .values()
            .filter_map(|b| self.resume_at(b))
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{meta, record};
    use super::*;
    use node_agent_core::config::{KeyPath, Problems};

    fn throttle(yaml: &str) -> Result<Throttle, String> {
        let config: ThrottleConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        let mut problems = Problems::new();
        let at = KeyPath::root().key("logs").key("processors").index(4);
        let mut cx = BuildContext {
            at: &at,
            problems: &mut problems,
            max_line_bytes: 1024,
            counting: true,
        };
        let t = config.build(&mut cx);
        problems.into_result().map_err(|e| e.to_string())?;
        t.ok_or_else(|| "not built".into())
    }

    #[test]
    fn drop_over_the_limit_per_container() {
        // A rate so low that no refill happens during the test: exactly the burst passes.
        let mut t =
            throttle("name: t-throttle\nrecords_per_second: 0.001\nburst_seconds: 5000").unwrap();
        let before = t.dropped.get();
        let mut out = Vec::new();
        let noisy = meta("ns", "noisy", "c");
        let quiet = meta("ns", "quiet", "c");
        for i in 0..20 {
            let mut r = record(i, "x");
            r.source = Arc::clone(&noisy);
            t.process(r, &mut out);
        }
        let mut r = record(100, "other container");
        r.source = quiet;
        t.process(r, &mut out);
        assert_eq!(out.len(), 6, "5 of the noisy one, and the quiet one");
        assert_eq!(out[5].message, "other container");
        assert_eq!(t.dropped.get() - before, 15);
        assert_eq!(
            throttled_counter()
                .with_label_values(&["ns", "noisy", "c"])
                .get(),
            15
        );
        assert!(t.paused_until(1).is_none(), "drop never pauses reading");
    }

    #[test]
    fn bytes_limit_and_slow_mode_pause_the_file() {
        let mut t = throttle("bytes_per_second: 1000\naction: slow").unwrap();
        let mut out = Vec::new();
        for i in 0..30 {
            t.process(record(i, &"y".repeat(100)), &mut out);
        }
        assert_eq!(out.len(), 30, "slow drops nothing");
        let until = t.paused_until(1).expect("in debt: paused");
        // 30 × 164 bytes against a 1000-byte bucket at 1000 B/s: about four seconds.
        let wait = until.saturating_duration_since(Instant::now());
        assert!(
            wait > Duration::from_secs(2) && wait <= Duration::from_secs(5),
            "{wait:?}"
        );
        assert_eq!(t.next_deadline(), Some(until));
        assert!(t.paused_until(2).is_none(), "other files read on");
    }

    #[test]
    fn bad_settings() {
        let err = throttle("{}").err().unwrap();
        assert!(
            err.contains("logs.processors[4]: needs records_per_second"),
            "{err}"
        );
        let err = throttle("records_per_second: 0\nburst_seconds: -1")
            .err()
            .unwrap();
        assert!(
            err.contains("logs.processors[4].records_per_second"),
            "{err}"
        );
        assert!(err.contains("logs.processors[4].burst_seconds"), "{err}");
        assert!(throttle("records_per_second: 1\nkey: node").is_err());
    }
}
