//! The eBPF ring buffer records as the security engine decodes them. The kernel side is
//! ours, but a record from a mismatched program version must be an error, not a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_agent_security::event::{BootClock, wire};

fuzz_target!(|data: &[u8]| {
    let clock = BootClock::with_offset(1_600_000_000_000_000_000);
    if let Ok(event) = wire::decode(data, &clock) {
        // What decodes re-encodes and decodes again. Kernel strings are bytes decoded
        // lossily, and a string with replacement characters may no longer fit its fixed
        // field, so the first round may shorten one; a second round must change nothing.
        let once = wire::decode(&wire::encode(&event, &clock), &clock)
            .expect("re-encoded event decodes");
        let twice = wire::decode(&wire::encode(&once, &clock), &clock)
            .expect("re-encoded event decodes");
        assert_eq!(format!("{twice:?}"), format!("{once:?}"));
    }
});
