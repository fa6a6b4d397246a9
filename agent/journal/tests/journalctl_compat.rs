//! The reader against journalctl, on journal files written by systemd-journal-remote.

mod common;

use common::raw;
use common::*;
use node_agent_journal::{Cursor, CursorSeek, Filter, IssueKind, Journal, JournalOptions};

const T0: u64 = 1_764_000_000_000_000;

/// Plain, compressed (zstd, the Debian build's), binary, multi-line and repeated fields, in
/// the default compact+keyed-hash layout and in the regular+jenkins one.
#[test]
fn entries_match_journalctl_in_both_layouts() {
    if !tools_present("entries_match_journalctl_in_both_layouts") {
        return;
    }
    let mut entries = node_entries(400, 7, T0);
    // A repeated field name and a 100 KiB message.
    entries[10].fields.push(("TAG".into(), b"a".to_vec()));
    entries[10].fields.push(("TAG".into(), b"b".to_vec()));
    entries[20].fields[0].1 = "y".repeat(100 * 1024).into_bytes();
    entries[30].fields[0].1 = b"\x00\x01binary\xffmessage".to_vec();
    for (name, env) in [
        ("compact", &[][..]),
        (
            "regular",
            &[
                ("SYSTEMD_JOURNAL_COMPACT", "0"),
                ("SYSTEMD_JOURNAL_KEYED_HASH", "0"),
            ][..],
        ),
    ] {
        let dir = tempdir();
        let file = dir.path().join("system.journal");
        write_journal(&file, &entries, env);
        let compressed = raw::count_data_with_flag(&file, raw::FLAG_ZSTD);
        assert!(compressed >= 50, "{name}: only {compressed} zstd objects");
        let (j, ours) = read_dir_all(dir.path());
        assert_same(&ours, &journalctl(&[&dir_arg(dir.path())]));
        assert_eq!(
            j.stats().issues.iter().sum::<u64>(),
            0,
            "{name}: {:?}",
            j.stats()
        );
        assert_eq!(ours[10].fields().filter(|(n, _)| *n == "TAG").count(), 2);
        assert_eq!(ours[20].message().map(<[u8]>::len), Some(100 * 1024));
    }
}

/// LZ4 and XZ objects (Debian's systemd 252 only writes zstd): re-encoded in place by the
/// test; journalctl (real liblz4/liblzma) must still print the same entries, and so must we.
#[test]
fn lz4_and_xz_objects_decode_like_journalctl() {
    if !tools_present("lz4_and_xz_objects_decode_like_journalctl") {
        return;
    }
    let entries = node_entries(200, 11, T0);
    for (flag, name) in [(raw::FLAG_LZ4, "lz4"), (raw::FLAG_XZ, "xz")] {
        for env in [&[][..], &[("SYSTEMD_JOURNAL_COMPACT", "0")][..]] {
            let dir = tempdir();
            let file = dir.path().join("system.journal");
            write_journal(&file, &entries, env);
            let before = journalctl(&[&dir_arg(dir.path())]);
            let n = raw::recompress(&file, flag);
            assert!(n >= 20, "{name}: re-encoded only {n}");
            assert_eq!(raw::count_data_with_flag(&file, raw::FLAG_ZSTD), n);
            let after = journalctl(&[&dir_arg(dir.path())]);
            assert_eq!(
                after, before,
                "{name}: journalctl reads the re-encoded file differently"
            );
            let (j, ours) = read_dir_all(dir.path());
            assert_same(&ours, &after);
            assert_eq!(j.stats().issues.iter().sum::<u64>(), 0, "{name}");
        }
    }
}

/// Several files (archived, current, a user journal, a `.journal~`, a machine-id subdir)
/// with different seqnum sources and interleaved clocks: the same order as journalctl.
#[test]
fn many_entries_across_files_interleave_like_journalctl() {
    if !tools_present("many_entries_across_files_interleave_like_journalctl") {
        return;
    }
    let dir = tempdir();
    let sub = dir.path().join("3d1219c7c4c5404aaa1f6d2a48adfda4");
    std::fs::create_dir(&sub).unwrap();
    let a = node_entries(6000, 1, T0);
    let mut b = node_entries(6000, 2, T0 + 500); // interleaves with a by time
    for e in &mut b {
        e.boot = BOOT2;
    }
    let c = node_entries(3000, 3, T0 + 7_000_000_000);
    let d = node_entries(500, 4, T0 + 250);
    write_journal(&sub.join("system@0123-0001.journal"), &a, &[]);
    write_journal(&sub.join("user-1000.journal"), &b, &[]);
    write_journal(
        &sub.join("system.journal"),
        &c,
        &[("SYSTEMD_JOURNAL_COMPACT", "0")],
    );
    write_journal(&dir.path().join("system@dirty.journal"), &d, &[]);
    std::fs::rename(
        dir.path().join("system@dirty.journal"),
        dir.path().join("system@dirty.journal~"),
    )
    .unwrap();
    let (j, ours) = read_dir_all(dir.path());
    assert_eq!(ours.len(), 15_500);
    assert_same(&ours, &journalctl(&[&dir_arg(dir.path())]));
    // Offline files may be reopened by journald and stay open; none were archived.
    assert_eq!(j.files().len(), 4, "{:?}", j.files());
}

/// Resuming after a saved cursor yields exactly what `journalctl --after-cursor` yields.
#[test]
fn resume_after_cursor_equals_journalctl_after_cursor() {
    if !tools_present("resume_after_cursor_equals_journalctl_after_cursor") {
        return;
    }
    let dir = tempdir();
    write_journal(
        &dir.path().join("system@1.journal"),
        &node_entries(1500, 5, T0),
        &[],
    );
    write_journal(
        &dir.path().join("system.journal"),
        // Interleaved by time, never in the same microsecond as the other file (for such
        // ties journalctl's --after-cursor skips by count, not by position).
        &node_entries(1500, 6, T0 + 500),
        &[],
    );
    let (_, all) = read_dir_all(dir.path());
    for at in [0, 1, 777, 1499, 1500, 2999] {
        let cursor = all[at].cursor();
        let text = cursor.to_string();
        let mut j = Journal::open(options(dir.path()));
        assert_eq!(
            j.seek_after_cursor(&text.parse().unwrap()),
            CursorSeek::Found
        );
        let mut rest = Vec::new();
        while let Some(e) = j.next_entry() {
            rest.push(e);
        }
        let oracle = journalctl(&[&dir_arg(dir.path()), &format!("--after-cursor={text}")]);
        assert_same(&rest, &oracle);
        assert_eq!(rest.len(), all.len() - at - 1);
    }
    // The position survives filtered-out entries: resume from it, nothing repeats.
    let mut j = Journal::open(JournalOptions {
        filter: Filter::new().include_unit("kubelet"),
        ..options(dir.path())
    });
    let first = j.next_entry().unwrap();
    for _ in 0..100 {
        j.next_entry();
    }
    let pos = j.position().unwrap().clone();
    let mut k = Journal::open(JournalOptions {
        filter: Filter::new().include_unit("kubelet"),
        ..options(dir.path())
    });
    k.seek_after_cursor(&pos);
    let next = k.next_entry().unwrap();
    assert!(next.cursor() != first.cursor());
    assert_eq!(j.next_entry().map(|e| e.cursor()), Some(next.cursor()));
}

/// The file holding the cursor was vacuumed: resume at the oldest entry after the cursor's
/// time, and report that entries may have been lost.
#[test]
fn vacuumed_cursor_resumes_after_its_time_and_reports_loss() {
    if !tools_present("vacuumed_cursor_resumes_after_its_time_and_reports_loss") {
        return;
    }
    let dir = tempdir();
    let old = dir.path().join("system@old.journal");
    write_journal(&old, &node_entries(300, 8, T0), &[]);
    write_journal(
        &dir.path().join("system.journal"),
        &node_entries(300, 9, T0 + 150_000),
        &[],
    );
    let (_, all) = read_dir_all(dir.path());
    // A cursor in the old file, then the old file is deleted.
    let at = all
        .iter()
        .position(|e| e.realtime_usec() == T0 + 100_000)
        .unwrap();
    let cursor = all[at].cursor();
    std::fs::remove_file(&old).unwrap();
    let mut j = Journal::open(options(dir.path()));
    let outcome = j.seek_after_cursor(&cursor);
    assert!(
        matches!(outcome, CursorSeek::EntriesMayBeLost { .. }),
        "{outcome:?}"
    );
    assert_eq!(j.stats().issue_count(IssueKind::EntriesMayBeLost), 1);
    let first = j.next_entry().unwrap();
    // Same boot: ordered by monotonic time, the first entry after the cursor's.
    assert!(first.monotonic_usec() > cursor.monotonic.unwrap());
    // journalctl --after-cursor skips the first entry it lands on, assuming it is the
    // cursor's own, so it would lose one more here; --cursor lands where we resume.
    let oracle = journalctl(&[&dir_arg(dir.path()), &format!("--cursor={cursor}")]);
    assert_eq!(
        first.cursor().to_string().as_bytes(),
        oracle[0].get("__CURSOR").unwrap()
    );
    let mut rest = vec![first];
    while let Some(e) = j.next_entry() {
        rest.push(e);
    }
    assert_same(&rest, &oracle);
}

/// Seeking to the tail and to a time.
#[test]
fn seek_tail_and_realtime() {
    if !tools_present("seek_tail_and_realtime") {
        return;
    }
    let dir = tempdir();
    write_journal(
        &dir.path().join("system.journal"),
        &node_entries(1000, 10, T0),
        &[],
    );
    let mut j = Journal::open(options(dir.path()));
    j.seek_tail();
    assert!(j.next_entry().is_none());
    j.seek_realtime(T0 + 500_000);
    let e = j.next_entry().unwrap();
    assert_eq!(e.realtime_usec(), T0 + 500_000);
    let since = journalctl(&[&dir_arg(dir.path()), "--since=@1764000000.5"]);
    let mut rest = vec![e];
    while let Some(e) = j.next_entry() {
        rest.push(e);
    }
    assert_same(&rest, &since);
}

/// `include_units` and the kernel against journalctl's matches; excludes against the rest.
#[test]
fn filter_matches_journalctl_matches() {
    if !tools_present("filter_matches_journalctl_matches") {
        return;
    }
    let dir = tempdir();
    write_journal(
        &dir.path().join("system.journal"),
        &node_entries(2000, 12, T0),
        &[],
    );
    let read = |f: Filter| {
        let mut j = Journal::open(JournalOptions {
            filter: f,
            ..options(dir.path())
        });
        let mut v = Vec::new();
        while let Some(e) = j.next_entry() {
            v.push(e);
        }
        (v, j.stats())
    };
    let (inc, stats) = read(Filter::new().include_unit("kubelet").include_kernel(true));
    let oracle = journalctl(&[
        &dir_arg(dir.path()),
        "_SYSTEMD_UNIT=kubelet.service",
        "+",
        "_TRANSPORT=kernel",
    ]);
    assert!(oracle.len() > 500);
    assert_same(&inc, &oracle);
    assert_eq!(stats.filtered as usize, 2000 - inc.len());

    let (exc, _) = read(
        Filter::new()
            .exclude_unit("kubelet.service")
            .exclude_identifier("sshd"),
    );
    let (all, _) = read(Filter::new());
    let expected: Vec<_> = all
        .into_iter()
        .filter(|e| {
            e.get("_SYSTEMD_UNIT") != Some(b"kubelet.service")
                && e.get("SYSLOG_IDENTIFIER") != Some(b"sshd")
        })
        .map(|e| e.cursor())
        .collect();
    assert_eq!(exc.iter().map(|e| e.cursor()).collect::<Vec<_>>(), expected);
}

#[test]
fn empty_and_missing_directories_read_nothing() {
    let dir = tempdir();
    let (j, all) = read_dir_all(dir.path());
    assert!(all.is_empty());
    assert!(j.take_issues_clone().is_empty());
    let (j, all) = read_dir_all(&dir.path().join("nope"));
    assert!(all.is_empty());
    assert!(j.take_issues_clone().is_empty());
    if !tools_present("empty_and_missing_directories_read_nothing") {
        return;
    }
    write_journal(&dir.path().join("system.journal"), &[], &[]);
    let (j, all) = read_dir_all(dir.path());
    assert!(all.is_empty());
    assert_eq!(j.stats().issues.iter().sum::<u64>(), 0);
    assert!(Cursor::default().to_string().is_empty());
}

trait IssuesClone {
    fn take_issues_clone(self) -> Vec<node_agent_journal::Issue>;
}

impl IssuesClone for Journal {
    fn take_issues_clone(mut self) -> Vec<node_agent_journal::Issue> {
        self.take_issues()
    }
}

/// Vacuuming inside one seqnum source (journald's archived files share it): the cursor's
/// seqnum is older than the oldest file's head, so the gap is reported.
#[test]
fn gap_in_the_same_sequence_is_reported() {
    if !tools_present("gap_in_the_same_sequence_is_reported") {
        return;
    }
    let dir = tempdir();
    let path = dir.path().join("system.journal");
    write_journal(&path, &node_entries(50, 13, T0), &[]);
    let (_, all) = read_dir_all(dir.path());
    let mut cursor = all[0].cursor();
    // As if entries 1..=99 of this sequence were in files that were deleted: the file's
    // head seqnum says 100, the cursor is at 1.
    let mut b = std::fs::read(&path).unwrap();
    b[168..176].copy_from_slice(&101u64.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let mut j = Journal::open(options(dir.path()));
    match j.seek_after_cursor(&cursor) {
        CursorSeek::EntriesMayBeLost { detail } => assert!(detail.contains("2..100"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(j.next_entry().unwrap().cursor(), all[1].cursor());
    // A cursor right before the head is no gap.
    cursor.seqnum = Some(100);
    assert_eq!(j.seek_after_cursor(&cursor), CursorSeek::Found);
}
