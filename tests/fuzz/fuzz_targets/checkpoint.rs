//! Checkpoint files: whatever is in `<state_dir>/logs-checkpoint.json` (torn, hand-edited,
//! from another version) decodes or is refused, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_agent_logs::checkpoint::decode;
use node_agent_logs::sources::tail::file_id::FileEntry;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<FileEntry>(data);
});
