//! Follow mode against a live systemd-journal-remote: appends to the online file, rotation
//! (archive + rename + new file), and vacuuming.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::raw;
use common::*;
use node_agent_journal::{Entry, Journal};

const T0: u64 = 1_764_000_000_000_000;

fn spawn_writer(path: &Path) -> Child {
    Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", path.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start systemd-journal-remote")
}

fn feed(w: &mut Child, entries: &[Input]) {
    let stdin = w.stdin.as_mut().expect("writer stdin");
    stdin.write_all(&export_bytes(entries)).unwrap();
    stdin.flush().unwrap();
}

/// Reads until `want` entries in total were collected (refreshing directories as a
/// follower would), or panics after 30 s.
fn collect_until(j: &mut Journal, got: &mut Vec<Entry>, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < want {
        while let Some(e) = j.next_entry() {
            got.push(e);
        }
        if got.len() >= want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {want} entries seen",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(20));
        j.refresh();
    }
    assert_eq!(got.len(), want, "more entries than written");
}

#[test]
fn follows_appends_rotation_and_vacuum() {
    if !tools_present("follows_appends_rotation_and_vacuum") {
        return;
    }
    let dir = tempdir();
    let current = dir.path().join("system.journal");
    let batches: Vec<Vec<Input>> = (0..4)
        .map(|b| node_entries(300, 40 + b, T0 + b * 300_000))
        .collect();

    let mut w = spawn_writer(&current);
    feed(&mut w, &batches[0]);
    let mut j = Journal::open(options(dir.path()));
    let mut got = Vec::new();
    collect_until(&mut j, &mut got, 300);
    let state = std::fs::read(&current).unwrap()[16];
    assert_eq!(state, 1, "the writer's file is online while it writes");

    // Appended while we hold the file open: seen without a rescan.
    feed(&mut w, &batches[1]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 600 && Instant::now() < deadline {
        while let Some(e) = j.next_entry() {
            got.push(e);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(got.len(), 600, "appends seen through the open handle");

    // Rotation as journald does it: archive, rename, start a new file.
    drop(w.stdin.take());
    assert!(w.wait().unwrap().success());
    raw::set_state(&current, 2);
    let archived = dir
        .path()
        .join("system@0001-0000000000000001-0005e2c4a0000000.journal");
    std::fs::rename(&current, &archived).unwrap();
    let mut w2 = spawn_writer(&current);
    feed(&mut w2, &batches[2]);
    collect_until(&mut j, &mut got, 900);
    assert_eq!(
        j.stats().files_opened,
        2,
        "the renamed file is followed, not reopened"
    );

    // Vacuum the archived file; new entries keep coming from the current one.
    std::fs::remove_file(&archived).unwrap();
    feed(&mut w2, &batches[3]);
    collect_until(&mut j, &mut got, 1200);
    assert_eq!(j.files(), vec![current.clone()]);
    drop(w2.stdin.take());
    assert!(w2.wait().unwrap().success());
    while let Some(e) = j.next_entry() {
        got.push(e);
    }

    // Exactly the input, in order, once.
    let want: Vec<u64> = batches.iter().flatten().map(|e| e.realtime).collect();
    let seen: Vec<u64> = got.iter().map(Entry::realtime_usec).collect();
    assert_eq!(seen, want);
    assert_eq!(
        j.stats().issues.iter().sum::<u64>(),
        0,
        "{:?}",
        j.take_issues()
    );
    // And what remains on disk equals journalctl's view of it.
    assert_same(&got[600..], &journalctl(&[&dir_arg(dir.path())]));
}

/// A file vacuumed while it is being read is still read to its end through the open
/// handle, then closed.
#[test]
fn vacuumed_file_is_read_to_the_end_then_closed() {
    if !tools_present("vacuumed_file_is_read_to_the_end_then_closed") {
        return;
    }
    let dir = tempdir();
    let old = dir.path().join("system@old.journal");
    write_journal(&old, &node_entries(500, 50, T0), &[]);
    raw::set_state(&old, 2);
    write_journal(
        &dir.path().join("system.journal"),
        &node_entries(500, 51, T0 + 1_000_000),
        &[],
    );
    let mut j = Journal::open(options(dir.path()));
    let mut got: Vec<Entry> = (0..100).filter_map(|_| j.next_entry()).collect();
    std::fs::remove_file(&old).unwrap();
    j.refresh();
    while let Some(e) = j.next_entry() {
        got.push(e);
    }
    assert_eq!(got.len(), 1000);
    assert_eq!(j.stats().files_closed, 1);
    assert_eq!(j.files().len(), 1);
}
