//! The fuzzing entry points and the record decoder on mutated input: no panic, whatever
//! the bytes (a deterministic stand-in for a coverage-guided fuzzer run; the same entry
//! points plug into `cargo fuzz`).

use node_agent_security::event::{BootClock, wire};
use node_agent_security::rules::{self, DEFAULT_RULES};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    "(",
    ")",
    " and ",
    " or ",
    " not ",
    "=",
    "!=",
    " in ",
    " pmatch ",
    " glob ",
    " exists",
    ",",
    "\"",
    "'",
    "\\",
    "[",
    "]",
    "%",
    "%proc.name",
    "proc.aname[",
    "evt.type",
    "k8s.pod.label.",
    "- rule: ",
    "\n  condition: ",
    "\n  append: true",
    "\n  override:\n    condition: append",
    "- list: ",
    "items: [",
    "- macro: ",
    "exceptions:\n    - name: e\n      fields: [",
    "values: [[",
    "é",
    "\0",
    "\u{fffd}",
    "*",
    "&a ",
    "*a",
    "<<: ",
    "---\n",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(8) {
        let at = rng.below(data.len() + 1);
        match rng.below(4) {
            0 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                data.splice(at..at, t.iter().copied());
            }
            1 if !data.is_empty() => {
                let end = (at + rng.below(16)).min(data.len());
                data.drain(at.min(end)..end);
            }
            2 => data.insert(at, rng.next() as u8),
            _ => {
                if let Some(b) = data.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
    }
    data
}

#[test]
fn conditions_and_outputs_never_panic() {
    let seeds: &[&[u8]] = &[
        b"evt.type in (execve, execveat) and proc.name in (bash, sh) and not proc.pname exists",
        b"(fd.name pmatch (/etc, /var/*/log) or fd.sip = \"10.0.0.0/8\") and evt.arg.flags contains O_TRUNC",
        b"proc.cmdline regex 'a+b' and proc.aname[2] glob '*x*' and k8s.pod.label[app] = web",
        b"file=%fd.name user=%user.name %container.info %proc.aname[3] 100%%",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let seed = seeds[rng.below(seeds.len())];
        let data = mutate(&mut rng, seed);
        rules::fuzz_parse_condition(&data);
        rules::fuzz_parse_output(&data);
    }
}

#[test]
fn rules_files_never_panic() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let small = "- list: l\n  items: [a, \"b c\"]\n- macro: m\n  condition: proc.name in (l)\n- rule: R\n  desc: d\n  condition: evt.type = execve and m\n  output: \"%proc.name %fd.name\"\n  priority: INFO\n  exceptions:\n    - name: e\n      fields: [proc.name, fd.name]\n      comps: [=, pmatch]\n      values: [[a, [/etc]]]\n- rule: R\n  condition: and not proc.pid = 1\n  append: true\n";
    for i in 0..1_500 {
        // Mostly the small file (fast); now and then the whole default file.
        let seed = if i % 50 == 0 { DEFAULT_RULES } else { small };
        let data = mutate(&mut rng, seed.as_bytes());
        rules::fuzz_load_rules(&data);
    }
}

#[test]
fn kernel_records_never_panic() {
    let clock = BootClock::with_offset(0);
    let mut rng = Rng(42);
    let mut buf = vec![0u8; 4096];
    for _ in 0..50_000 {
        let len = rng.below(buf.len());
        for b in &mut buf[..len] {
            *b = rng.next() as u8;
        }
        // A plausible kind half the time, so payload decoding runs too.
        if len >= 2 && rng.below(2) == 0 {
            let kind = (1 + rng.below(26)) as u16;
            buf[..2].copy_from_slice(&kind.to_ne_bytes());
        }
        let _ = wire::decode(&buf[..len], &clock);
    }
}

/// Found by `cargo xtask fuzz` (target security_wire): a name of 16 invalid UTF-8 bytes
/// decodes to 16 replacement characters, which no longer fit the 16-byte field when
/// re-encoded. What decodes must re-encode and decode, and a second round change nothing.
#[test]
fn fuzz_found_records_round_trip() {
    let clock = BootClock::with_offset(1_600_000_000_000_000_000);
    for data in [&include_bytes!("data/wire-roundtrip-1.bin")[..]] {
        let Ok(event) = wire::decode(data, &clock) else {
            continue;
        };
        let once =
            wire::decode(&wire::encode(&event, &clock), &clock).expect("re-encoded event decodes");
        let twice =
            wire::decode(&wire::encode(&once, &clock), &clock).expect("re-encoded event decodes");
        assert_eq!(format!("{twice:?}"), format!("{once:?}"));
    }
}
