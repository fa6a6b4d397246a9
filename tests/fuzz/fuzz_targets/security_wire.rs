//! The eBPF ring buffer records as the security engine decodes them. The kernel side is
//! ours, but a record from a mismatched program version must be an error, not a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_agent_security::event::{BootClock, wire};

fuzz_target!(|data: &[u8]| {
    let clock = BootClock::with_offset(1_600_000_000_000_000_000);
    if let Ok(event) = wire::decode(data, &clock) {
        // What decodes re-encodes and decodes to the same event.
        let again = wire::encode(&event, &clock);
        let back = wire::decode(&again, &clock).expect("re-encoded event decodes");
        assert_eq!(format!("{back:?}"), format!("{event:?}"));
    }
});
