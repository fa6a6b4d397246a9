//! Configuration: the YAML file and the command line. Bad input is an error naming the key,
//! never a panic (an abort at start is a crash loop on every node).
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_agent::config::{Config, FileConfig, parse_duration};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 3 {
        0 => drop(FileConfig::parse(text)),
        // Flags, one per line.
        1 => drop(Config::from_args(
            std::iter::once("node-agent").chain(text.lines()),
        )),
        _ => drop(parse_duration(text)),
    }
});
