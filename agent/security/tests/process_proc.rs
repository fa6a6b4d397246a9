//! The process table on the real /proc of the test process and its children, and on a
//! hostile fake /proc.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::skip;
use node_agent_security::event::{Event, EventArgs, EventType, OpenArgs};
use node_agent_security::process::{ProcSource, ProcessTable, ReadError, TableConfig};

fn table() -> ProcessTable {
    ProcessTable::new(TableConfig::default()).with_proc(ProcSource::new("/proc"))
}

fn comm_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_string())
}

/// The `sleep` under `sh -c 'sleep 1'`: the shell itself when it exec'd sleep in place,
/// else its child.
fn find_sleep(sh: u32) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if comm_of(sh).as_deref() == Some("sleep") {
            return Some(sh);
        }
        let children =
            std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children")).unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            if comm_of(child).as_deref() == Some("sleep") {
                return Some(child);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn bootstrap_reads_this_process_and_its_ancestors() {
    let mut t = table();
    let report = t.bootstrap();
    assert!(report.loaded > 1, "{report:?}");
    let me = std::process::id();
    let p = t.get(me).expect("this process");
    assert_eq!(p.comm.as_ref(), comm_of(me).unwrap());
    let exe = std::env::current_exe().unwrap();
    assert_eq!(p.exe_path.as_ref(), exe.to_string_lossy());
    assert_eq!(p.uid, nix::unistd::geteuid().as_raw());
    let argv0 = std::env::args().next().unwrap();
    assert_eq!(p.exe.as_ref(), argv0);
    // The lineage ends at init (pid 1) or at the pid namespace's top.
    let lineage: Vec<u32> = t.ancestors(me).map(|a| a.pid).collect();
    assert_eq!(lineage.first(), Some(&p.ppid));
    if Path::new("/proc/1/stat").exists() {
        assert_eq!(lineage.last(), Some(&1), "{lineage:?}");
    }
}

#[test]
fn a_child_found_on_its_first_event_brings_its_ancestors() {
    let child = match Command::new("sh")
        .args(["-c", "sleep 1"])
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return skip(&format!("cannot run sh: {e}")),
    };
    let sh = child.id();
    let mut child = scopeguard(child);
    let Some(sleep) = find_sleep(sh) else {
        return skip("no sleep process appeared under sh");
    };
    // An empty table: the first event of the sleep reads it, and its ancestors, from /proc.
    let mut t = table();
    let mut event = Event::new(
        EventType::Openat,
        sleep,
        EventArgs::Open(OpenArgs {
            dirfd: libc::AT_FDCWD,
            path: "/etc/ld.so.cache".into(),
            flags: 0,
            mode: 0,
        }),
    );
    event.comm = "sleep".into();
    event.ts_ns = now_ns();
    t.observe(&event);
    let p = t.get(sleep).expect("loaded from /proc");
    assert!(!p.partial);
    assert_eq!(p.comm.as_ref(), "sleep");
    assert_eq!(p.cmdline.as_ref(), "sleep 1");
    assert_eq!(p.args.as_ref(), "1");
    assert!(p.exe_path.ends_with("sleep"), "{}", p.exe_path);
    let lineage: Vec<(u32, String)> = t
        .ancestors(sleep)
        .map(|a| (a.pid, a.comm.to_string()))
        .collect();
    let me = std::process::id();
    assert!(lineage.iter().any(|(pid, _)| *pid == me), "{lineage:?}");
    if sleep != sh {
        assert_eq!(lineage[0], (sh, "sh".to_string()), "{lineage:?}");
        assert_eq!(t.ancestor(sleep, 2).map(|a| a.pid), Some(me));
    } else {
        assert_eq!(t.ancestor(sleep, 1).map(|a| a.pid), Some(me));
    }
    assert_eq!(t.stats().loaded_late, 1);
    // Once it has exited, /proc says gone, and reconciling marks the entry exited.
    child.0.kill().ok();
    child.0.wait().ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{sleep}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(
        ProcSource::new("/proc").read(sleep),
        Err(ReadError::Gone(_))
    ));
    t.reconcile(now_ns());
    assert!(t.get(sleep).unwrap().exited_ns.is_some());
}

struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scopeguard(child: std::process::Child) -> Guard {
    Guard(child)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn stat_line(pid: u32, comm: &str, ppid: u32) -> String {
    // 52 fields as Linux 6.x writes them; tty_nr (7) = pts/0, starttime (22) = 100 ticks.
    let mut fields = vec![
        pid.to_string(),
        format!("({comm})"),
        "S".into(),
        ppid.to_string(),
        pid.to_string(),
        pid.to_string(),
        "34816".into(),
    ];
    fields.extend((8..=52).map(|i| {
        if i == 22 {
            "100".to_string()
        } else {
            "0".to_string()
        }
    }));
    fields.join(" ") + "\n"
}

#[test]
fn hostile_proc_contents_do_not_panic() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::write(r.join("stat"), "cpu 0 0 0 0\nbtime 1700000000\n").unwrap();
    let put = |pid: &str, name: &str, content: &[u8]| {
        std::fs::create_dir_all(r.join(pid)).unwrap();
        std::fs::write(r.join(pid).join(name), content).unwrap();
    };
    // A comm with parentheses, spaces and a newline (any process can set that).
    put("100", "stat", stat_line(100, "a) (b\nc", 1).as_bytes());
    put("100", "cmdline", b"evil\0--x\0\xff\xfe\0");
    put("100", "status", b"Name:\tnope\nUid:\tx y\n");
    put("100", "loginuid", b"notanumber");
    put("100", "cgroup", b"0::/kubepods/besteffort/pod1/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n");
    // Garbage, empty, truncated and missing stat files.
    put("101", "stat", b"\x00\x01garbage");
    put("102", "cmdline", b"x");
    put("103", "stat", b"");
    put("104", "stat", b"104 (x");
    // A parent loop and a huge cmdline.
    put("105", "stat", stat_line(105, "loop", 106).as_bytes());
    put("106", "stat", stat_line(106, "loop2", 105).as_bytes());
    let mut huge = b"big\0".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    put("105", "cmdline", &huge);
    std::fs::create_dir_all(r.join("self-ish")).unwrap();
    std::fs::create_dir_all(r.join("4294967295")).unwrap();

    let mut t = ProcessTable::new(TableConfig::default()).with_proc(ProcSource::new(r));
    let report = t.bootstrap();
    assert_eq!(report.loaded, 3, "{report:?}");
    assert_eq!(report.loaded + report.gone + report.failed, 8, "{report:?}");
    let weird = t.get(100).unwrap();
    assert_eq!(weird.comm.as_ref(), "a) (b\nc");
    assert_eq!(weird.tty, 34816);
    assert_eq!(weird.uid, 0, "unparseable status reads as 0");
    assert_eq!(weird.loginuid, u32::MAX);
    assert_eq!(weird.args.as_ref(), "--x \u{fffd}\u{fffd}");
    assert_eq!(
        weird.start_ns,
        1_700_000_000_000_000_000 + 100 * 1_000_000_000 / procfs::ticks_per_second()
    );
    assert_eq!(
        weird.container_id.as_deref(),
        Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    );
    let big = t.get(105).unwrap();
    assert!(big.args_truncated);
    assert!(big.args.len() <= 4096);
    // The loop is walked a bounded number of times.
    assert!(t.ancestors(105).count() <= node_agent_security::process::MAX_ANCESTORS);
}
