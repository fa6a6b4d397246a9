//! Journal files: the pure-Rust reader walks any bytes as one file, without panicking,
//! looping or allocating past its caps.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = node_agent_journal::parse_file_bytes(data);
});
