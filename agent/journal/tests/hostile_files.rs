//! Truncated, corrupt and garbage files: skipped or read up to the damage, counted, and
//! never stopping the other files; the fuzz entry point survives mutations.

mod common;

use std::collections::HashMap;

use common::raw;
use common::*;
use node_agent_journal::{IssueKind, parse_file_bytes};

const T0: u64 = 1_764_000_000_000_000;

/// A file truncated mid-arena, one with garbage bytes in the middle, a non-journal file, a
/// header-only stub, and a healthy file: the healthy one is read whole, the damaged ones up
/// to (or around) the damage, and each problem is counted by kind.
#[test]
fn damaged_files_are_counted_and_the_rest_is_read() {
    if !tools_present("damaged_files_are_counted_and_the_rest_is_read") {
        return;
    }
    let dir = tempdir();
    let good = node_entries(2000, 21, T0);
    let cut = node_entries(2000, 22, T0 + 300);
    let garbled = node_entries(2000, 23, T0 + 600);
    write_journal(&dir.path().join("good.journal"), &good, &[]);
    let truncated = dir.path().join("truncated.journal");
    write_journal(&truncated, &cut, &[]);
    let corrupt = dir.path().join("garbled.journal");
    write_journal(&corrupt, &garbled, &[]);

    // The oracle before the damage: every entry we return must be one of these, unchanged.
    let mut originals: HashMap<String, Vec<(String, Vec<u8>)>> = HashMap::new();
    for e in journalctl(&[&dir_arg(dir.path())]) {
        let c = String::from_utf8(e.get("__CURSOR").unwrap().to_vec()).unwrap();
        let fields = e
            .fields
            .into_iter()
            .filter(|(n, _)| !n.starts_with("__") && n != "_BOOT_ID")
            .collect();
        originals.insert(c, fields);
    }

    // Truncate at 60% of the entries' part (after the hash tables; the header still
    // claims the whole arena).
    let (start, used) = (raw::content_start(&truncated), raw::used_end(&truncated));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap();
    f.set_len(start + (used - start) * 6 / 10).unwrap();
    // 8 KiB of garbage in the middle of the entries' part.
    let mut b = std::fs::read(&corrupt).unwrap();
    let (start, used) = (raw::content_start(&corrupt), raw::used_end(&corrupt));
    let mid = (start + (used - start) / 2) as usize;
    let mut rng = Rng(99);
    for byte in &mut b[mid..mid + 8192] {
        *byte = rng.next() as u8;
    }
    std::fs::write(&corrupt, &b).unwrap();
    std::fs::write(
        dir.path().join("notes.journal"),
        b"this is not a journal file at all",
    )
    .unwrap();
    std::fs::write(dir.path().join("stub.journal"), &b[..100]).unwrap();

    let (mut j, ours) = read_dir_all(dir.path());
    let stats = j.stats();
    let issues = j.take_issues();
    let from = |prefix: u64| {
        ours.iter()
            .filter(|e| e.realtime_usec() % 1000 == prefix)
            .count()
    };
    assert_eq!(from(0), 2000, "every entry of the healthy file");
    let t = from(300);
    let g = from(600);
    assert!(
        (500..2000).contains(&t),
        "truncated file read up to the cut: {t} {issues:#?}"
    );
    assert!(
        (500..2000).contains(&g),
        "garbled file read around the damage: {g}"
    );
    for e in &ours {
        let c = e.cursor().to_string();
        let want = originals
            .get(&c)
            .unwrap_or_else(|| panic!("invented entry {c}"));
        let got: Vec<(String, Vec<u8>)> = e
            .fields()
            .filter(|(n, _)| *n != "_BOOT_ID")
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect();
        // A damaged DATA object costs its field only; what is returned is never altered.
        assert!(got.iter().all(|f| want.contains(f)), "altered entry {c}");
    }
    assert_eq!(stats.issue_count(IssueKind::NotJournal), 1, "{issues:#?}");
    assert!(stats.issue_count(IssueKind::Truncated) >= 2, "{issues:#?}");
    assert!(
        stats.issue_count(IssueKind::Corrupt) + stats.issue_count(IssueKind::Decompress) >= 1,
        "{issues:#?}"
    );
    assert!(
        issues
            .iter()
            .any(|i| i.path.as_deref() == Some(&*truncated))
    );
    assert!(issues.iter().any(|i| i.path.as_deref() == Some(&*corrupt)));

    // A rescan does not report the same broken files again (they did not change).
    j.refresh();
    assert!(j.next_entry().is_none());
    assert!(j.take_issues().is_empty());
}

/// The fuzz entry point on a real file and on thousands of mutations of it: no panic, no
/// hang, and the unmutated file parses whole.
#[test]
fn parse_file_bytes_survives_mutations() {
    if !tools_present("parse_file_bytes_survives_mutations") {
        return;
    }
    for env in [&[][..], &[("SYSTEMD_JOURNAL_COMPACT", "0")][..]] {
        let dir = tempdir();
        let path = dir.path().join("system.journal");
        write_journal(&path, &node_entries(60, 31, T0), env);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(raw::used_end(&path) as usize);
        let start = raw::content_start(&path);
        let clean = parse_file_bytes(&bytes);
        // One issue: the file is shorter than its header says (cut after the tail object).
        assert_eq!((clean.entries, clean.issues), (60, 1));

        // Mutations land in the entries' part (the hash tables, a few MiB here, are never
        // read by this reader) or in the header.
        let mut rng = Rng(12345);
        let pos = |rng: &mut Rng, len: usize| -> usize {
            if rng.below(10) == 0 {
                rng.below(272) as usize
            } else {
                start as usize + rng.below((len - start as usize) as u64) as usize
            }
        };
        for round in 0..1000 {
            let mut m = bytes.clone();
            match round % 4 {
                0 => m.truncate(pos(&mut rng, bytes.len())),
                1 => {
                    for _ in 0..1 + rng.below(8) {
                        let at = pos(&mut rng, m.len());
                        m[at] = rng.next() as u8;
                    }
                }
                2 => {
                    // Plausible-looking offsets and sizes in random places.
                    let at = pos(&mut rng, m.len()) & !7;
                    let v = [
                        0u64,
                        8,
                        u64::MAX,
                        rng.below(bytes.len() as u64 * 2),
                        1 << 40,
                    ];
                    let v = v[rng.below(v.len() as u64) as usize].to_le_bytes();
                    let end = (at + 8).min(m.len());
                    m[at..end].copy_from_slice(&v[..end - at]);
                }
                _ => {
                    let at = pos(&mut rng, m.len());
                    let n = (rng.below(512) as usize).min(m.len() - at);
                    for b in &mut m[at..at + n] {
                        *b = rng.next() as u8;
                    }
                }
            }
            let s = parse_file_bytes(&m);
            assert!(s.entries <= 60 + 5, "round {round}: {s:?}");
        }
    }
}

/// Hostile bytes without any tool: empty, signature only, header with absurd sizes.
#[test]
fn parse_file_bytes_on_synthetic_garbage() {
    assert_eq!(parse_file_bytes(&[]).entries, 0);
    assert_eq!(parse_file_bytes(b"LPKSHHRH").entries, 0);
    let mut h = vec![0u8; 4096];
    h[..8].copy_from_slice(b"LPKSHHRH");
    h[88..96].copy_from_slice(&272u64.to_le_bytes()); // header_size
    h[96..104].copy_from_slice(&(1u64 << 50).to_le_bytes()); // arena far past the file
    h[152..160].copy_from_slice(&u64::MAX.to_le_bytes()); // n_entries
    h[176..184].copy_from_slice(&272u64.to_le_bytes()); // entry array at 272
    // An entry array object pointing at itself as its next array and as every entry.
    h[272] = 6;
    h[280..288].copy_from_slice(&(1u64 << 20).to_le_bytes());
    h[288..296].copy_from_slice(&272u64.to_le_bytes());
    for k in 0..100 {
        let at = 296 + k * 8;
        h[at..at + 8].copy_from_slice(&272u64.to_le_bytes());
    }
    let s = parse_file_bytes(&h);
    assert_eq!(s.entries, 0);
    assert!(s.issues >= 1);
}
