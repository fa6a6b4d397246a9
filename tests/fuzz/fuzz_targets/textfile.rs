//! The textfile collector's parser (expfmt text format), then the exposition encoder on
//! what it accepted, as a scrape would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_agent_metrics::MetricSet;
use node_agent_metrics::textfile::parse_textfile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((families, _)) = parse_textfile(text) {
        let mut set = MetricSet::new();
        for f in families {
            assert!(!f.get_metric().is_empty(), "empty families are dropped");
            set.extend_family(f);
        }
        let mut out = Vec::new();
        set.encode_text(&mut out);
    }
});
