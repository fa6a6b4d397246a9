//! What receivers answer: Elasticsearch bulk responses (per-item verdicts) and the error
//! bodies of Loki and ES that end up in logs and dead letters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_agent_sinks::fuzzing::{es_bulk_response, http_response};

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let status = 100 + u16::from_le_bytes(*head) % 500;
    let _ = http_response(status, body);
    let _ = es_bulk_response(body, usize::from(head[0] % 8));
});
