//! CRI lines (containerd, CRI-O) and the per-file assembler that joins their partial parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_agent_logs::sources::pods::{assemble::Assembler, cri};
use node_agent_logs::sources::tail::decode::ParseStats;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the join cap, so tiny caps (cuts mid-UTF-8) are covered too.
    let Some((&cap, data)) = data.split_first() else {
        return;
    };
    let max_bytes = usize::from(cap) + 1;
    let mut asm = Assembler::new(max_bytes);
    let mut stats = ParseStats::default();
    let mut out = Vec::new();
    let mut offset = 0u64;
    for line in data.split(|&b| b == b'\n') {
        if let Some(c) = cri::parse(line) {
            assert!(c.message.len() <= line.len());
        }
        let _ = cri::parse_timestamp(line);
        asm.push(offset, line, false, 0, &mut stats, &mut out);
        // A line starting with '!' stands for the pending budget running out here.
        if line.first() == Some(&b'!') && asm.flush_oldest(&mut out) {
            assert!(out.last().is_some_and(|p| p.truncated));
        }
        offset += line.len() as u64 + 1;
    }
    asm.flush(&mut stats, &mut out);
    for p in &out {
        // A message is cut at the cap (invalid UTF-8 may grow by U+FFFD replacement).
        assert!(
            p.message.len() <= 3 * max_bytes,
            "{} > cap {max_bytes}",
            p.message.len()
        );
        assert!(p.offset < offset.max(1));
    }
    assert!(asm.pending_start().is_none());
});
