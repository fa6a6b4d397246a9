//! Kubernetes API server audit events (`audit.k8s.io/v1` `Event`, one JSON object per line,
//! as `--audit-log-path` writes them) mapped to the fields users query. The message stays
//! the whole event, so nothing is lost for those who want the rest.
//!
//! | event | field |
//! | --- | --- |
//! | `auditID` | `audit_id` |
//! | `stage` | `stage` (`RequestReceived`, `ResponseComplete`, …) |
//! | `level` | `audit_level` (`Metadata`, `Request`, `RequestResponse`) |
//! | `verb` | `verb` |
//! | `user.username`, `user.groups` | `user`, `groups` |
//! | `impersonatedUser.username` | `impersonated_user` |
//! | `sourceIPs` | `source_ips` |
//! | `userAgent`, `requestURI` | `user_agent`, `request_uri` |
//! | `objectRef.{resource,subresource,namespace,name,apiGroup,apiVersion}` | `resource`, `subresource`, `object_namespace`, `object_name`, `api_group`, `api_version` |
//! | `responseStatus.code` | `code` |
//! | `annotations["authorization.k8s.io/decision"]` | `decision` |
//!
//! The record's timestamp is `stageTimestamp` (else `requestReceivedTimestamp`).

use serde_json::{Map, Value};

use node_agent_core::record::LogRecord;

/// Why a line is not an audit event.
#[derive(Debug, PartialEq, Eq)]
pub enum NotAnEvent {
    NotJson,
    /// JSON, but not an object with `auditID` and `stage`.
    NotAudit,
}

/// The mapped fields and the event time (ns) of one audit log line.
pub fn map(line: &str) -> Result<(Map<String, Value>, Option<i64>), NotAnEvent> {
    let event: Map<String, Value> = serde_json::from_str(line).map_err(|_| NotAnEvent::NotJson)?;
    if !event.contains_key("auditID") || !event.contains_key("stage") {
        return Err(NotAnEvent::NotAudit);
    }
    let mut out = Map::new();
    let mut put = |key: &str, v: Option<&Value>| {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    };
    let at = |path: &[&str]| -> Option<&Value> {
        let mut v = event.get(path[0])?;
        for k in &path[1..] {
            v = v.get(k)?;
        }
        Some(v)
    };
    put("audit_id", at(&["auditID"]));
    put("stage", at(&["stage"]));
    put("audit_level", at(&["level"]));
    put("verb", at(&["verb"]));
    put("user", at(&["user", "username"]));
    put("groups", at(&["user", "groups"]));
    put("impersonated_user", at(&["impersonatedUser", "username"]));
    put("source_ips", at(&["sourceIPs"]));
    put("user_agent", at(&["userAgent"]));
    put("request_uri", at(&["requestURI"]));
    put("resource", at(&["objectRef", "resource"]));
    put("subresource", at(&["objectRef", "subresource"]));
    put("object_namespace", at(&["objectRef", "namespace"]));
    put("object_name", at(&["objectRef", "name"]));
    put("api_group", at(&["objectRef", "apiGroup"]));
    put("api_version", at(&["objectRef", "apiVersion"]));
    put("code", at(&["responseStatus", "code"]));
    put(
        "decision",
        at(&["annotations"]).and_then(|a| a.get("authorization.k8s.io/decision")),
    );
    let time = at(&["stageTimestamp"])
        .or_else(|| at(&["requestReceivedTimestamp"]))
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .and_then(|t| t.timestamp_nanos_opt());
    Ok((out, time))
}

/// Applies [`map`] to a record: fields and timestamp, or `malformed` when the line is not an
/// audit event (it still ships, raw). Returns whether it was an event.
pub fn decorate(record: &mut LogRecord) -> bool {
    match map(&record.message) {
        Ok((fields, time)) => {
            if let Some(t) = time {
                record.timestamp_nanos = t;
            }
            record.fields = Some(fields);
            true
        }
        Err(_) => {
            record.malformed = true;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `ResponseComplete` event as kube-apiserver 1.30 writes it.
    pub const EVENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"8e2a3a5b-7f0c-4c0e-9d3e-1f1f6c7e9a01","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/secrets/db-password","verb":"get","user":{"username":"system:serviceaccount:prod:app","uid":"5b3c","groups":["system:serviceaccounts","system:serviceaccounts:prod","system:authenticated"]},"sourceIPs":["10.0.3.17"],"userAgent":"app/v1.2 (linux/amd64) kubernetes/abc","objectRef":{"resource":"secrets","namespace":"prod","name":"db-password","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-12-01T10:00:00.123456Z","stageTimestamp":"2026-12-01T10:00:00.125678Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by RoleBinding \"app-secrets/prod\""}}"#;

    #[test]
    fn maps_a_real_event() {
        let (f, t) = map(EVENT).unwrap();
        assert_eq!(f["audit_id"], "8e2a3a5b-7f0c-4c0e-9d3e-1f1f6c7e9a01");
        assert_eq!(f["stage"], "ResponseComplete");
        assert_eq!(f["audit_level"], "Metadata");
        assert_eq!(f["verb"], "get");
        assert_eq!(f["user"], "system:serviceaccount:prod:app");
        assert_eq!(f["groups"][2], "system:authenticated");
        assert_eq!(f["source_ips"], serde_json::json!(["10.0.3.17"]));
        assert_eq!(f["resource"], "secrets");
        assert_eq!(f["object_namespace"], "prod");
        assert_eq!(f["object_name"], "db-password");
        assert_eq!(f["api_version"], "v1");
        assert_eq!(f["code"], 200);
        assert_eq!(f["decision"], "allow");
        assert_eq!(
            f["request_uri"],
            "/api/v1/namespaces/prod/secrets/db-password"
        );
        assert!(!f.contains_key("subresource") && !f.contains_key("impersonated_user"));
        assert_eq!(t, Some(1_796_119_200_125_678_000));
    }

    #[test]
    fn request_received_stage_without_response_and_junk() {
        let line = r#"{"kind":"Event","level":"Request","auditID":"a1","stage":"RequestReceived","verb":"create","user":{"username":"admin"},"impersonatedUser":{"username":"bob"},"sourceIPs":["192.0.2.1","10.0.0.1"],"objectRef":{"resource":"pods","subresource":"exec","namespace":"default","name":"web-0"},"requestReceivedTimestamp":"2026-12-01T10:00:01Z"}"#;
        let (f, t) = map(line).unwrap();
        assert_eq!(f["stage"], "RequestReceived");
        assert_eq!(f["subresource"], "exec");
        assert_eq!(f["impersonated_user"], "bob");
        assert!(!f.contains_key("code"));
        assert_eq!(t, Some(1_796_119_201_000_000_000));
        assert_eq!(map("not json").unwrap_err(), NotAnEvent::NotJson);
        assert_eq!(map(r#"{"a":1}"#).unwrap_err(), NotAnEvent::NotAudit);
        assert_eq!(map("[1,2]").unwrap_err(), NotAnEvent::NotJson);
    }
}
