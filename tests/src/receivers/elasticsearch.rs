//! An Elasticsearch receiver: `_bulk` NDJSON (action/source pairs, trailing newline and
//! content type required as ES does), per-item results with the `errors` flag, `create`
//! conflicts (409) on an existing `_id`, scripted per-item failures by `_id`, and minimal
//! `_count` / `_search` (match_all, term, match on dotted fields; index wildcards).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::server::{Handler, HttpRequest, Reply, Server};

#[derive(Default)]
struct Store {
    /// (index, id) → source, in id order per index.
    docs: BTreeMap<(String, String), Value>,
    /// Successful writes per `_id` (a second one would be a duplicate delivery).
    writes: HashMap<String, usize>,
    /// Statuses to answer for the next attempts of an `_id`.
    item_script: HashMap<String, VecDeque<u16>>,
    next_auto_id: u64,
    bulk_requests: usize,
    /// 200 answers with these bodies for the next bulk requests, nothing stored.
    canned: VecDeque<String>,
    /// VictoriaLogs-like: a document line longer than this stops the request there; what
    /// came before is stored and the answer is an empty 200.
    max_doc_bytes: Option<usize>,
}

struct Es {
    store: Mutex<Store>,
}

/// A running Elasticsearch receiver.
pub struct EsReceiver {
    server: Server,
    es: Arc<Es>,
}

impl EsReceiver {
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with_tls(None).await
    }

    pub async fn start_with_tls(tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<Self> {
        let es = Arc::new(Es {
            store: Mutex::default(),
        });
        let server = Server::start(Arc::clone(&es) as Arc<dyn Handler>, tls).await?;
        Ok(Self { server, es })
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The next `times` attempts to write `id` answer `status` for that item.
    pub fn fail_item(&self, id: &str, status: u16, times: usize) {
        let mut store = self.es.store.lock().unwrap();
        store
            .item_script
            .entry(id.to_string())
            .or_default()
            .extend(std::iter::repeat_n(status, times));
    }

    /// The next `times` bulk requests are answered 200 with `body` and store nothing.
    pub fn answer_next_bulk(&self, times: usize, body: &str) {
        let mut store = self.es.store.lock().unwrap();
        store
            .canned
            .extend(std::iter::repeat_n(body.to_string(), times));
    }

    /// Behave like VictoriaLogs' `_bulk` on a line longer than `bytes`: keep the documents
    /// before it, drop it and the rest of the request, answer 200 with an empty body.
    pub fn set_max_doc_bytes(&self, bytes: Option<usize>) {
        self.es.store.lock().unwrap().max_doc_bytes = bytes;
    }

    /// Stored documents: (index, id, source).
    pub fn docs(&self) -> Vec<(String, String, Value)> {
        let store = self.es.store.lock().unwrap();
        store
            .docs
            .iter()
            .map(|((i, id), v)| (i.clone(), id.clone(), v.clone()))
            .collect()
    }

    /// `message` of every stored document.
    pub fn messages(&self) -> Vec<String> {
        self.docs()
            .into_iter()
            .filter_map(|(_, _, v)| v["message"].as_str().map(str::to_string))
            .collect()
    }

    /// Successful writes per `_id`.
    pub fn writes(&self) -> HashMap<String, usize> {
        self.es.store.lock().unwrap().writes.clone()
    }

    /// Successful writes of all `_id`s (replays included).
    pub fn write_count(&self) -> usize {
        self.es.store.lock().unwrap().writes.values().sum()
    }

    /// `_bulk` requests that reached the handler.
    pub fn bulk_requests(&self) -> usize {
        self.es.store.lock().unwrap().bulk_requests
    }
}

fn error_body(status: StatusCode, kind: &str, reason: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}, "status": status.as_u16()}),
    )
}

fn item_error(kind: &str, reason: String) -> Value {
    json!({"type": kind, "reason": reason})
}

fn valid_index_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '_', '+'])
        && !name
            .chars()
            .any(|c| c.is_uppercase() || "\\/*?\"<>| ,#:".contains(c))
}

impl Es {
    fn bulk(&self, req: &HttpRequest, url_index: Option<&str>) -> Reply {
        let content_type = req
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !(content_type.starts_with("application/x-ndjson")
            || content_type.starts_with("application/json"))
        {
            return error_body(
                StatusCode::NOT_ACCEPTABLE,
                "media_type_header_exception",
                &format!("Content-Type header [{content_type}] is not supported"),
            );
        }
        if !req.body.ends_with(b"\n") {
            return error_body(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                "The bulk request must be terminated by a newline [\\n]",
            );
        }
        // Parse everything first: a malformed line fails the whole request, as in ES.
        let mut ops = Vec::new();
        let mut lines = req.body.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        while let Some(line) = lines.next() {
            let action: serde_json::Map<String, Value> = match serde_json::from_slice(line) {
                Ok(a) => a,
                Err(e) => {
                    return error_body(
                        StatusCode::BAD_REQUEST,
                        "x_content_parse_exception",
                        &format!("malformed action line: {e}"),
                    );
                }
            };
            let Some((op, meta)) = action.into_iter().next() else {
                return error_body(
                    StatusCode::BAD_REQUEST,
                    "illegal_argument_exception",
                    "empty action",
                );
            };
            if !matches!(op.as_str(), "create" | "index") {
                return error_body(
                    StatusCode::BAD_REQUEST,
                    "illegal_argument_exception",
                    &format!("action [{op}] not supported by this receiver"),
                );
            }
            let Some(source) = lines.next() else {
                return error_body(
                    StatusCode::BAD_REQUEST,
                    "illegal_argument_exception",
                    "source missing for the last action",
                );
            };
            let index = meta
                .get("_index")
                .and_then(Value::as_str)
                .or(url_index)
                .map(str::to_string);
            let Some(index) = index else {
                return error_body(
                    StatusCode::BAD_REQUEST,
                    "action_request_validation_exception",
                    "Validation Failed: 1: index is missing;",
                );
            };
            let id = meta.get("_id").and_then(Value::as_str).map(str::to_string);
            ops.push((
                op,
                index,
                id,
                (serde_json::from_slice::<Value>(source), source.len()),
            ));
        }
        let mut store = self.store.lock().unwrap();
        store.bulk_requests += 1;
        if let Some(body) = store.canned.pop_front() {
            return Reply {
                status: StatusCode::OK,
                content_type: "application/json",
                body: body.into(),
            };
        }
        let mut errors = false;
        let mut items = Vec::with_capacity(ops.len());
        let max_doc = store.max_doc_bytes;
        for (op, index, id, (source, doc_len)) in ops {
            if max_doc.is_some_and(|max| doc_len > max) {
                return Reply::empty(StatusCode::OK);
            }
            let id = id.unwrap_or_else(|| {
                store.next_auto_id += 1;
                format!("auto-{}", store.next_auto_id)
            });
            let scripted = store.item_script.get_mut(&id).and_then(VecDeque::pop_front);
            let (status, result, error) = if let Some(status) = scripted {
                let kind = if status == 429 {
                    "es_rejected_execution_exception"
                } else if status == 400 {
                    "mapper_parsing_exception"
                } else {
                    "exception"
                };
                (
                    status,
                    None,
                    Some(item_error(kind, format!("scripted failure {status}"))),
                )
            } else if !valid_index_name(&index) {
                (
                    400,
                    None,
                    Some(item_error(
                        "invalid_index_name_exception",
                        format!("Invalid index name [{index}]"),
                    )),
                )
            } else {
                match source {
                    Ok(doc @ Value::Object(_)) => {
                        let key = (index.clone(), id.clone());
                        if op == "create" && store.docs.contains_key(&key) {
                            (
                                409,
                                None,
                                Some(item_error(
                                    "version_conflict_engine_exception",
                                    format!(
                                        "[{id}]: version conflict, document already exists (current version [1])"
                                    ),
                                )),
                            )
                        } else {
                            let existed = store.docs.insert(key, doc).is_some();
                            *store.writes.entry(id.clone()).or_default() += 1;
                            if existed {
                                (200, Some("updated"), None)
                            } else {
                                (201, Some("created"), None)
                            }
                        }
                    }
                    Ok(_) => (
                        400,
                        None,
                        Some(item_error(
                            "mapper_parsing_exception",
                            "failed to parse: source is not an object".into(),
                        )),
                    ),
                    Err(e) => (
                        400,
                        None,
                        Some(item_error(
                            "document_parsing_exception",
                            format!("failed to parse: {e}"),
                        )),
                    ),
                }
            };
            let mut item = json!({"_index": index, "_id": id, "status": status});
            if let Some(result) = result {
                item["result"] = json!(result);
                item["_version"] = json!(1);
            }
            if let Some(error) = error {
                errors = true;
                item["error"] = error;
            }
            items.push(json!({ op: item }));
        }
        Reply::json(
            StatusCode::OK,
            &json!({"took": 1, "errors": errors, "items": items}),
        )
    }

    /// Documents of the indices matching `pattern` that match the query in `body`.
    fn matching(&self, pattern: &str, body: &[u8]) -> Result<Vec<(String, String, Value)>, Reply> {
        let query = if body.iter().all(u8::is_ascii_whitespace) {
            json!({"match_all": {}})
        } else {
            let v: Value = serde_json::from_slice(body).map_err(|e| {
                error_body(StatusCode::BAD_REQUEST, "parsing_exception", &e.to_string())
            })?;
            v.get("query").cloned().unwrap_or(json!({"match_all": {}}))
        };
        let store = self.store.lock().unwrap();
        let mut out = Vec::new();
        for ((index, id), doc) in &store.docs {
            if index_matches(pattern, index)
                && query_matches(&query, doc)
                    .map_err(|e| error_body(StatusCode::BAD_REQUEST, "parsing_exception", &e))?
            {
                out.push((index.clone(), id.clone(), doc.clone()));
            }
        }
        Ok(out)
    }
}

fn index_matches(pattern: &str, index: &str) -> bool {
    pattern.split(',').any(|p| {
        if p == "_all" || p == "*" {
            return true;
        }
        match p.split_once('*') {
            None => p == index,
            Some((prefix, suffix)) => {
                index.len() >= prefix.len() + suffix.len()
                    && index.starts_with(prefix)
                    && index.ends_with(suffix)
            }
        }
    })
}

/// A dotted field of a document (`kubernetes.pod.name`), also accepting literal dotted keys.
fn field<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = doc.get(path) {
        return Some(v);
    }
    let (head, tail) = path.split_once('.')?;
    field(doc.get(head)?, tail)
}

fn query_matches(query: &Value, doc: &Value) -> Result<bool, String> {
    let Some((kind, spec)) = query.as_object().and_then(|o| o.iter().next()) else {
        return Err(format!("query {query} not understood"));
    };
    match kind.as_str() {
        "match_all" => Ok(true),
        "term" | "match" => {
            let Some((name, want)) = spec.as_object().and_then(|o| o.iter().next()) else {
                return Err(format!("{kind} needs a field"));
            };
            let want = want
                .get("value")
                .or_else(|| want.get("query"))
                .unwrap_or(want);
            Ok(field(doc, name) == Some(want))
        }
        other => Err(format!(
            "query type [{other}] not supported by this receiver"
        )),
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

impl Handler for Es {
    fn handle(&self, req: &HttpRequest) -> Reply {
        let segments: Vec<&str> = req
            .path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        match (&req.method, segments.as_slice()) {
            (&Method::GET, []) => Reply::json(
                StatusCode::OK,
                &json!({"name": "test-receiver", "cluster_name": "test", "version": {"number": "8.13.0"}, "tagline": "You Know, for Search"}),
            ),
            (&Method::POST | &Method::PUT, ["_bulk"]) => self.bulk(req, None),
            (&Method::POST | &Method::PUT, [index, "_bulk"]) => self.bulk(req, Some(index)),
            (&Method::GET | &Method::POST, [pattern, "_count"]) => {
                match self.matching(pattern, &req.body) {
                    Ok(docs) => Reply::json(StatusCode::OK, &json!({"count": docs.len()})),
                    Err(reply) => reply,
                }
            }
            (&Method::GET | &Method::POST, [pattern, "_search"]) => {
                match self.matching(pattern, &req.body) {
                    Ok(docs) => {
                        let body_size = serde_json::from_slice::<Value>(&req.body)
                            .ok()
                            .and_then(|v| v.get("size").and_then(Value::as_u64));
                        let size = query_param(req.query.as_deref(), "size")
                            .and_then(|s| s.parse().ok())
                            .or(body_size)
                            .unwrap_or(10) as usize;
                        let hits: Vec<Value> = docs.iter().take(size).map(|(i, id, doc)| json!({"_index": i, "_id": id, "_score": 1.0, "_source": doc})).collect();
                        Reply::json(
                            StatusCode::OK,
                            &json!({"took": 1, "timed_out": false, "hits": {"total": {"value": docs.len(), "relation": "eq"}, "hits": hits}}),
                        )
                    }
                    Err(reply) => reply,
                }
            }
            _ => error_body(
                StatusCode::NOT_FOUND,
                "resource_not_found_exception",
                &format!("no handler for {} {}", req.method, req.path),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_indices_and_queries() {
        assert!(index_matches("node-agent-*", "node-agent-2024.01.01"));
        assert!(!index_matches("node-agent-*", "other"));
        assert!(index_matches("a,b", "b"));
        let doc = json!({"kubernetes": {"pod": {"name": "p1"}}, "message": "m"});
        assert!(query_matches(&json!({"term": {"kubernetes.pod.name": "p1"}}), &doc).unwrap());
        assert!(query_matches(&json!({"match": {"message": {"query": "m"}}}), &doc).unwrap());
        assert!(
            !query_matches(
                &json!({"term": {"kubernetes.pod.name": {"value": "p2"}}}),
                &doc
            )
            .unwrap()
        );
        assert!(query_matches(&json!({"range": {}}), &doc).is_err());
    }
}
