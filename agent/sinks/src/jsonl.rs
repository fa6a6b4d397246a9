//! The JSON-lines shape of a record (stdout, file and dead-letter sinks).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use node_agent_core::record::{LogRecord, SourceKind, SourceMeta};

use crate::kubernetes::{Kubernetes, Style};

/// RFC 3339 with nanoseconds in UTC (`2024-05-01T12:00:00.123456789Z`).
pub fn rfc3339_nanos(timestamp_nanos: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(timestamp_nanos)
        .to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// RFC 3339 timestamps of records in a row, as [`rfc3339_nanos`] gives them: records of a
/// batch mostly share their second, so chrono formats the date and time of day once per
/// second and only the nanoseconds are written per record (chrono per record was a
/// tenth of the file and Elasticsearch sinks' instructions).
#[derive(Default)]
pub struct Rfc3339Nanos {
    second: Option<i64>,
    /// `2024-05-01T12:00:00` of `second`.
    prefix: String,
}

impl Rfc3339Nanos {
    pub fn format(&mut self, timestamp_nanos: i64) -> String {
        let nanos = timestamp_nanos.rem_euclid(1_000_000_000);
        // The whole second as nanoseconds: below i64's range in the last second before
        // its start (1677), which chrono formats as it comes.
        let Some(whole) = timestamp_nanos.checked_sub(nanos) else {
            return rfc3339_nanos(timestamp_nanos);
        };
        if self.second != Some(whole) {
            let mut full = rfc3339_nanos(whole);
            full.truncate(full.len().saturating_sub(".000000000Z".len()));
            self.prefix = full;
            self.second = Some(whole);
        }
        let mut out = String::with_capacity(self.prefix.len() + 11);
        out.push_str(&self.prefix);
        out.push('.');
        let mut digits = [b'0'; 9];
        let mut n = nanos;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend(digits.iter().map(|&d| char::from(d)));
        out.push('Z');
        out
    }
}

/// A record as one flat JSON object, borrowing from the record.
#[derive(Serialize)]
pub struct JsonRecord<'a> {
    pub timestamp: String,
    /// The source kind: `pod`, `journal`, `file`, `audit`, `security`.
    pub source: &'static str,
    pub node: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub pod_uid: &'a str,
    pub container: &'a str,
    pub stream: &'static str,
    pub path: std::borrow::Cow<'a, str>,
    pub offset: u64,
    pub message: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub malformed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// Pod records with cached metadata: the same `kubernetes` object as the
    /// Elasticsearch documents (keys not de-dotted; the container's image and ids under
    /// `kubernetes.container`). Without metadata it would only repeat the flat fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Kubernetes<'a>>,
}

const STYLE: Style = Style {
    dedot: false,
    container_details: true,
};

/// The nested object is due for records of pods whose metadata the cache knew.
fn has_metadata(source: &SourceMeta) -> bool {
    source.kind == SourceKind::Pod && source.kubernetes.is_some()
}

impl<'a> From<&'a LogRecord> for JsonRecord<'a> {
    fn from(r: &'a LogRecord) -> Self {
        Self::with_path(
            r,
            rfc3339_nanos(r.timestamp_nanos),
            r.source.path.to_string_lossy(),
        )
    }
}

impl<'a> JsonRecord<'a> {
    /// `r` with its formatted `timestamp` and its source's `path` given: converting the
    /// path (a UTF-8 check) once per run of a source's records instead of per record.
    fn with_path(r: &'a LogRecord, timestamp: String, path: std::borrow::Cow<'a, str>) -> Self {
        Self {
            timestamp,
            source: r.source.kind.as_str(),
            node: &r.source.node,
            namespace: &r.source.namespace,
            pod: &r.source.pod,
            pod_uid: &r.source.pod_uid,
            container: &r.source.container,
            stream: r.stream.as_str(),
            path,
            offset: r.offset,
            message: &r.message,
            truncated: r.truncated,
            malformed: r.malformed,
            fields: r.fields.as_ref(),
            kubernetes: has_metadata(&r.source).then(|| Kubernetes::new(&r.source, STYLE)),
        }
    }
}

/// Appends `records` as JSON lines to `out`.
///
/// The `kubernetes` object depends only on the record's source and is most of an
/// enriched line (tens of labels and annotations): it is serialised once per run of
/// records from one source and spliced in, as the Elasticsearch encoder does.
pub fn encode(records: &[LogRecord], out: &mut Vec<u8>) {
    let mut run: Option<(*const SourceMeta, Vec<u8>)> = None;
    let mut path: Option<(*const SourceMeta, std::borrow::Cow<'_, str>)> = None;
    let mut timestamps = Rfc3339Nanos::default();
    for r in records {
        let key = std::sync::Arc::as_ptr(&r.source);
        let path = match &mut path {
            Some((k, p)) if *k == key => p.clone(),
            slot => slot
                .insert((key, r.source.path.to_string_lossy()))
                .1
                .clone(),
        };
        let mut line = JsonRecord::with_path(r, timestamps.format(r.timestamp_nanos), path);
        let Some(kubernetes) = line.kubernetes.take() else {
            // Serializing borrowed strings and a JSON map into a Vec cannot fail.
            serde_json::to_writer(&mut *out, &line).expect("JSON into Vec");
            out.push(b'\n');
            continue;
        };
        if run.as_ref().is_none_or(|(k, _)| *k != key) {
            let mut fields = b",\"kubernetes\":".to_vec();
            serde_json::to_writer(&mut fields, &kubernetes).expect("JSON into Vec");
            run = Some((key, fields));
        }
        serde_json::to_writer(&mut *out, &line).expect("JSON into Vec");
        // `{…}` → `{…,"kubernetes":{…}}`: the object is the line's last key.
        out.pop();
        out.extend_from_slice(run.as_ref().map(|(_, f)| f.as_slice()).unwrap_or_default());
        out.extend_from_slice(b"}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_nanosecond_timestamps_in_utc() {
        assert_eq!(
            rfc3339_nanos(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
    }

    /// The per-second cache writes what chrono writes, across second boundaries, before
    /// the epoch and at the ends of the range.
    #[test]
    fn cached_timestamps_match_chrono() {
        let mut cache = Rfc3339Nanos::default();
        let base = 1_700_000_000_999_999_990;
        let mut stamps: Vec<i64> = (0..40).map(|i| base + i).collect();
        stamps.extend([
            0,
            1,
            -1,
            -1_000_000_000,
            -999_999_999,
            123_456_789,
            i64::MIN,
            i64::MAX,
            base,
        ]);
        for ts in stamps {
            assert_eq!(cache.format(ts), rfc3339_nanos(ts), "{ts}");
        }
    }

    #[test]
    fn pod_records_carry_the_nested_kubernetes_object() {
        let source = std::sync::Arc::new(crate::kubernetes::tests::enriched_source());
        let r = LogRecord::new(
            source,
            0,
            node_agent_core::record::Stream::Stdout,
            7,
            "hi".into(),
        );
        let mut out = Vec::new();
        encode(std::slice::from_ref(&r), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["pod"], "web-7d4b9c8f6-x2k4p", "the flat fields stay");
        assert_eq!(v["kubernetes"]["labels"]["app"], "web");
        assert_eq!(v["kubernetes"]["deployment"]["name"], "web");
        assert_eq!(v["kubernetes"]["container"]["id"], "c0ffee");
        assert_eq!(
            v["kubernetes"]["node"]["labels"]["topology.kubernetes.io/zone"],
            "eu-1a"
        );
    }

    #[test]
    fn lines_are_each_record_serialised_alone_and_plain_pods_have_no_nested_object() {
        use node_agent_core::record::Stream;
        let enriched = std::sync::Arc::new(crate::kubernetes::tests::enriched_source());
        let mut plain = crate::kubernetes::tests::enriched_source();
        plain.kubernetes = None;
        let plain = std::sync::Arc::new(plain);
        let records: Vec<LogRecord> = [&enriched, &enriched, &plain, &enriched]
            .into_iter()
            .enumerate()
            .map(|(i, s)| LogRecord::new(s.clone(), 0, Stream::Stdout, i as u64, format!("m{i}")))
            .collect();
        let mut out = Vec::new();
        encode(&records, &mut out);
        let lines: Vec<&[u8]> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), records.len());
        for (line, r) in lines.iter().zip(&records) {
            let alone = serde_json::to_vec(&JsonRecord::from(r)).unwrap();
            assert_eq!(
                String::from_utf8_lossy(line),
                String::from_utf8_lossy(&alone)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(lines[2]).unwrap();
        assert_eq!(v["pod"], "web-7d4b9c8f6-x2k4p");
        assert!(
            v.get("kubernetes").is_none(),
            "no metadata: only the flat fields"
        );
    }
}
