//! Docker json-file lines, alone and through the assembler (which tries docker first).
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_agent_logs::sources::pods::{assemble::Assembler, docker};
use node_agent_logs::sources::tail::decode::ParseStats;

fuzz_target!(|data: &[u8]| {
    let mut asm = Assembler::new(64);
    let mut stats = ParseStats::default();
    let mut out = Vec::new();
    let mut offset = 0u64;
    for line in data.split(|&b| b == b'\n') {
        if let Some(d) = docker::parse(line) {
            assert!(!d.message.ends_with('\n') || d.partial);
        }
        asm.push(offset, line, false, 0, &mut stats, &mut out);
        offset += line.len() as u64 + 1;
    }
    asm.flush(&mut stats, &mut out);
});
