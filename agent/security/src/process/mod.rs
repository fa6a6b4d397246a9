//! The process table: what rules know about the process behind an event (`proc.*`,
//! `user.*`, `container.id`) and its ancestors (`proc.pname`, `proc.aname[N]`).
//!
//! It starts from `/proc` ([`ProcessTable::bootstrap`]) and is then kept current by the
//! events themselves: a fork copies the parent into a new entry, a successful exec
//! replaces name, exe, command line, terminal and capabilities, setuid/setgid update the
//! credentials, and an exit marks the entry exited. Exited entries linger (children's
//! lineage and late events still resolve) until `exited_linger` has passed or room is
//! needed. A process the table never saw (its fork was dropped, or it predates a
//! bootstrap race) is read from `/proc` on its first event, with its missing ancestors;
//! if it is already gone, a partial entry is made from the event header.
//!
//! Memory is bounded: at most `max_processes` entries, each with bounded strings. When the
//! table is full, exited entries go first (oldest exit first), then the live entries that
//! have been quiet longest, a sixteenth of the table at a time so that a fork storm costs
//! amortised O(1) per fork. [`TableStats`] counts every eviction.

pub mod container;
pub mod procfs;
pub mod users;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::event::{Event, EventArgs, EventType, ExecArgs};

pub use container::{
    CgroupResolver, ContainerInfo, ContainerMetadata, KubeMetadata, NoMetadata, PodInfo,
    StaticMetadata, container_id_from_cgroup_path, container_info,
};
pub use procfs::{ProcSnapshot, ProcSource, ReadError};
pub use users::UserDb;

/// Bytes kept of a process's joined arguments.
pub const MAX_ARGS_BYTES: usize = 4096;
/// Ancestors walked at most (lineage loops from pid reuse or hostile input end here).
pub const MAX_ANCESTORS: usize = 64;
/// `TASK_COMM_LEN - 1`: the kernel's `comm` length.
const COMM_MAX: usize = 15;

/// One process (thread group).
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    /// `comm`: the executable's name, at most 15 bytes (Falco's `proc.name`).
    pub comm: Arc<str>,
    /// `argv[0]` (Falco's `proc.exe`).
    pub exe: Arc<str>,
    /// Resolved executable path (Falco's `proc.exepath`); empty when unknown.
    pub exe_path: Arc<str>,
    /// `argv[1..]` joined with spaces (Falco's `proc.args`), bounded by [`MAX_ARGS_BYTES`].
    pub args: Arc<str>,
    /// `comm` and `args` (Falco's `proc.cmdline`).
    pub cmdline: Arc<str>,
    /// Number of arguments (`proc.cmdnargs`).
    pub nargs: u32,
    pub args_truncated: bool,
    /// Effective ids.
    pub uid: u32,
    pub gid: u32,
    pub loginuid: u32,
    /// `tty_nr` (0 = no controlling terminal).
    pub tty: u32,
    pub cap_effective: u64,
    /// Start (fork) time, ns since the Unix epoch.
    pub start_ns: u64,
    /// cgroup v2 id the container was resolved from (0 = not known).
    pub cgroup_id: u64,
    /// Full container id; `None` for host processes.
    pub container_id: Option<Arc<str>>,
    /// When it exited.
    pub exited_ns: Option<u64>,
    /// Time of its latest event (the eviction order of live entries).
    pub last_event_ns: u64,
    /// Built from an event header only: exe, args and terminal are unknown.
    pub partial: bool,
}

impl Process {
    /// A process with a name and nothing else (tests, partial entries).
    pub fn new(pid: u32, ppid: u32, comm: &str) -> Process {
        let comm: Arc<str> = Arc::from(truncate(comm, COMM_MAX));
        Process {
            pid,
            ppid,
            exe: comm.clone(),
            cmdline: comm.clone(),
            comm,
            exe_path: Arc::from(""),
            args: Arc::from(""),
            nargs: 0,
            args_truncated: false,
            uid: 0,
            gid: 0,
            loginuid: u32::MAX,
            tty: 0,
            cap_effective: 0,
            start_ns: 0,
            cgroup_id: 0,
            container_id: None,
            exited_ns: None,
            last_event_ns: 0,
            partial: false,
        }
    }

    /// Sets argv-derived fields: `exe` (`argv[0]`), `args`, `cmdline`, `nargs`.
    pub fn set_argv(&mut self, argv: &[String], truncated: bool) {
        if let Some(first) = argv.first().filter(|a| !a.is_empty()) {
            self.exe = Arc::from(truncate(first, MAX_ARGS_BYTES));
        }
        let rest = argv.get(1..).unwrap_or_default();
        let mut args = String::new();
        let mut cut = truncated;
        for arg in rest {
            if args.len() + arg.len() + 1 > MAX_ARGS_BYTES {
                cut = true;
                break;
            }
            if !args.is_empty() {
                args.push(' ');
            }
            args.push_str(arg);
        }
        self.nargs = rest.len() as u32;
        self.args_truncated = cut;
        self.cmdline = if args.is_empty() {
            self.comm.clone()
        } else {
            Arc::from(format!("{} {}", self.comm, args))
        };
        self.args = Arc::from(args);
    }

    fn from_snapshot(s: ProcSnapshot) -> Process {
        let mut p = Process::new(s.pid, s.ppid, &s.comm);
        p.set_argv(&s.argv, s.argv_truncated);
        p.exe_path = Arc::from(s.exe_path);
        p.uid = s.uid;
        p.gid = s.gid;
        p.loginuid = s.loginuid;
        p.tty = s.tty;
        p.cap_effective = s.cap_effective;
        p.start_ns = s.start_ns;
        p.container_id = s.container_id.map(Arc::from);
        p
    }

    fn apply_exec(&mut self, event: &Event, exec: &ExecArgs) {
        let comm = if event.comm.is_empty() {
            exec.filename.rsplit('/').next().unwrap_or_default()
        } else {
            &event.comm
        };
        self.comm = Arc::from(truncate(comm, COMM_MAX));
        self.exe = Arc::from(truncate(&exec.filename, MAX_ARGS_BYTES));
        self.set_argv(&exec.argv, exec.argv_truncated);
        self.exe_path = if !exec.exe_path.is_empty() {
            Arc::from(exec.exe_path.as_str())
        } else if exec.filename.starts_with('/') {
            Arc::from(exec.filename.as_str())
        } else {
            Arc::from("")
        };
        self.tty = exec.tty;
        self.cap_effective = exec.cap_effective;
        self.uid = event.uid;
        self.gid = event.gid;
        self.loginuid = event.loginuid;
        self.partial = false;
    }

    fn from_header(event: &Event) -> Process {
        let mut p = Process::new(event.pid, event.ppid, &event.comm);
        p.uid = event.uid;
        p.gid = event.gid;
        p.loginuid = event.loginuid;
        p.start_ns = event.ts_ns;
        p.partial = true;
        p
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// Limits of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableConfig {
    pub max_processes: usize,
    /// How long an exited process stays resolvable.
    pub exited_linger: Duration,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            max_processes: 32_768,
            exited_linger: Duration::from_secs(60),
        }
    }
}

/// Counters of the table's own bookkeeping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Read from `/proc` at bootstrap.
    pub bootstrapped: u64,
    /// Read from `/proc` on a first event (the fork was not seen).
    pub loaded_late: u64,
    /// Made from an event header because `/proc` no longer had them.
    pub partial: u64,
    pub evicted_exited: u64,
    /// Live entries dropped because the table was full.
    pub evicted_live: u64,
    /// A fork reused the pid of an entry still in the table.
    pub pid_reused: u64,
}

/// The table.
#[derive(Debug)]
pub struct ProcessTable {
    procs: FxHashMap<u32, Process>,
    /// (pid, exit time) in exit order.
    exited: VecDeque<(u32, u64)>,
    config: TableConfig,
    source: Option<ProcSource>,
    cgroups: Option<CgroupResolver>,
    stats: TableStats,
}

/// What a bootstrap read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootstrapReport {
    pub loaded: usize,
    /// Exited while being read.
    pub gone: usize,
    /// Unreadable for another reason.
    pub failed: usize,
    /// Left out because the table was full.
    pub skipped: usize,
}

impl ProcessTable {
    pub fn new(config: TableConfig) -> ProcessTable {
        ProcessTable {
            procs: FxHashMap::default(),
            exited: VecDeque::new(),
            config: TableConfig {
                max_processes: config.max_processes.max(16),
                ..config
            },
            source: None,
            cgroups: None,
            stats: TableStats::default(),
        }
    }

    /// Reads unknown processes from this `/proc`.
    pub fn with_proc(mut self, source: ProcSource) -> ProcessTable {
        self.source = Some(source);
        self
    }

    /// Resolves containers of events by cgroup id.
    pub fn with_cgroups(mut self, resolver: CgroupResolver) -> ProcessTable {
        self.cgroups = Some(resolver);
        self
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.procs.get(&pid)
    }

    /// The parent of `process`, unless the parent's pid was reused by a younger process.
    pub fn parent(&self, process: &Process) -> Option<&Process> {
        if process.ppid == 0 || process.ppid == process.pid {
            return None;
        }
        self.procs
            .get(&process.ppid)
            .filter(|p| p.start_ns <= process.start_ns || process.start_ns == 0)
    }

    /// Ancestors of `pid`, parent first, at most [`MAX_ANCESTORS`].
    pub fn ancestors(&self, pid: u32) -> Ancestors<'_> {
        Ancestors {
            table: self,
            current: self.procs.get(&pid),
            left: MAX_ANCESTORS,
        }
    }

    /// `proc.aname[n]`: 0 is the process itself, 1 its parent, …
    pub fn ancestor(&self, pid: u32, n: usize) -> Option<&Process> {
        if n == 0 {
            return self.get(pid);
        }
        self.ancestors(pid).nth(n - 1)
    }

    /// Adds (or replaces) an entry.
    pub fn insert(&mut self, process: Process) {
        if !self.procs.contains_key(&process.pid) {
            self.make_room();
        }
        self.procs.insert(process.pid, process);
    }

    /// Reads every process from the configured `/proc` (nothing without one).
    pub fn bootstrap(&mut self) -> BootstrapReport {
        let mut report = BootstrapReport::default();
        let Some(source) = self.source.clone() else {
            return report;
        };
        let Ok(pids) = source.pids() else {
            report.failed += 1;
            return report;
        };
        for pid in pids {
            if self.procs.len() >= self.config.max_processes {
                report.skipped += 1;
                continue;
            }
            match self.load(&source, pid) {
                Ok(()) => report.loaded += 1,
                Err(ReadError::Gone(_)) => report.gone += 1,
                Err(ReadError::Other { .. }) => report.failed += 1,
            }
        }
        self.stats.bootstrapped += report.loaded as u64;
        report
    }

    fn load(&mut self, source: &ProcSource, pid: u32) -> Result<(), ReadError> {
        let snapshot = source.read(pid)?;
        let cgroup_path = snapshot.cgroup_path.clone();
        let mut process = Process::from_snapshot(snapshot);
        if let (Some(resolver), Some(path)) = (self.cgroups.as_mut(), cgroup_path)
            && let Some(id) = resolver.cgroup_id_of(&path)
        {
            process.cgroup_id = id;
            resolver.remember(id, process.container_id.clone());
        }
        self.insert(process);
        Ok(())
    }

    /// Marks entries whose process is no longer in `/proc` as exited (their exit events
    /// were dropped). Meant to run every minute or so; O(processes).
    pub fn reconcile(&mut self, now_ns: u64) {
        let Some(source) = &self.source else {
            return;
        };
        let Ok(pids) = source.pids() else {
            return;
        };
        let present: FxHashSet<u32> = pids.into_iter().collect();
        let mut gone = Vec::new();
        for (pid, p) in &mut self.procs {
            if p.exited_ns.is_none() && !present.contains(pid) {
                p.exited_ns = Some(now_ns);
                gone.push(*pid);
            }
        }
        for pid in gone {
            self.push_exited(pid, now_ns);
        }
    }

    /// Updates the table from one event. Call before evaluating rules on it.
    pub fn observe(&mut self, event: &Event) {
        let now = event.ts_ns;
        self.expire(now);
        match &event.args {
            EventArgs::Fork(fork) if event.event_type.is_fork() => {
                self.ensure(event);
                if fork.is_thread() || fork.child_pid == 0 || fork.child_pid == event.pid {
                    return;
                }
                let Some(parent) = self.procs.get(&event.pid) else {
                    return;
                };
                let mut child = parent.clone();
                child.pid = fork.child_pid;
                child.ppid = if fork.flags & libc::CLONE_PARENT as u64 != 0 {
                    parent.ppid
                } else {
                    event.pid
                };
                child.start_ns = now;
                child.last_event_ns = now;
                child.exited_ns = None;
                if self.procs.contains_key(&child.pid) {
                    self.stats.pid_reused += 1;
                }
                self.insert(child);
            }
            EventArgs::Exec(exec) if event.event_type.is_exec() => {
                self.ensure(event);
                if event.res == 0
                    && let Some(p) = self.procs.get_mut(&event.pid)
                {
                    p.apply_exec(event, exec);
                }
            }
            EventArgs::Exit(_) if event.event_type == EventType::Procexit => {
                if let Some(p) = self.procs.get_mut(&event.pid) {
                    p.exited_ns = Some(now);
                    p.last_event_ns = now;
                    self.push_exited(event.pid, now);
                }
                return;
            }
            EventArgs::SetId(ids) if event.res == 0 => {
                self.ensure(event);
                if let (Some(p), Some(target)) = (self.procs.get_mut(&event.pid), ids.target()) {
                    match event.event_type {
                        EventType::Setuid | EventType::Setreuid | EventType::Setresuid => {
                            p.uid = target
                        }
                        _ => p.gid = target,
                    }
                }
            }
            _ => self.ensure(event),
        }
        self.update_container(event);
    }

    /// A process's cgroup can change (runc moves the container's init before it execs):
    /// re-resolve the container whenever an event reports another cgroup.
    fn update_container(&mut self, event: &Event) {
        if event.cgroup_id == 0 {
            return;
        }
        let Some(p) = self.procs.get(&event.pid) else {
            return;
        };
        if p.cgroup_id == event.cgroup_id {
            return;
        }
        let Some(resolver) = self.cgroups.as_mut() else {
            return;
        };
        let container = resolver.resolve(event.cgroup_id, event.pid);
        if let Some(p) = self.procs.get_mut(&event.pid) {
            p.cgroup_id = event.cgroup_id;
            p.container_id = container;
        }
    }

    /// Makes sure the event's process (and, when read from /proc, its ancestors) is known.
    fn ensure(&mut self, event: &Event) {
        if let Some(p) = self.procs.get_mut(&event.pid) {
            p.last_event_ns = event.ts_ns;
            // The kernel reparents orphans; the header's ppid is current.
            if event.ppid != 0 && event.ppid != p.ppid && event.ppid != p.pid {
                p.ppid = event.ppid;
            }
            return;
        }
        let loaded = match self.source.clone() {
            Some(source) => {
                let ok = self.load(&source, event.pid).is_ok();
                if ok {
                    self.stats.loaded_late += 1;
                    self.load_ancestors(&source, event.pid);
                }
                ok
            }
            None => false,
        };
        if !loaded {
            self.stats.partial += 1;
            self.insert(Process::from_header(event));
        }
        if let Some(p) = self.procs.get_mut(&event.pid) {
            p.last_event_ns = event.ts_ns;
        }
    }

    fn load_ancestors(&mut self, source: &ProcSource, pid: u32) {
        let mut current = pid;
        for _ in 0..MAX_ANCESTORS {
            let Some(ppid) = self.procs.get(&current).map(|p| p.ppid) else {
                return;
            };
            if ppid == 0 || ppid == current {
                return;
            }
            if !self.procs.contains_key(&ppid) && self.load(source, ppid).is_err() {
                return;
            }
            current = ppid;
        }
    }

    fn push_exited(&mut self, pid: u32, at: u64) {
        self.exited.push_back((pid, at));
        // Bounded: stale queue entries (replaced pids) cannot pile up either.
        while self.exited.len() > self.config.max_processes {
            if let Some((pid, at)) = self.exited.pop_front() {
                self.remove_if_exited_at(pid, at);
            }
        }
    }

    fn remove_if_exited_at(&mut self, pid: u32, at: u64) -> bool {
        if self
            .procs
            .get(&pid)
            .is_some_and(|p| p.exited_ns == Some(at))
        {
            self.procs.remove(&pid);
            self.stats.evicted_exited += 1;
            return true;
        }
        false
    }

    /// Drops exited entries older than the linger time.
    fn expire(&mut self, now: u64) {
        let linger = self.config.exited_linger.as_nanos() as u64;
        while let Some(&(pid, at)) = self.exited.front() {
            if at.saturating_add(linger) > now {
                break;
            }
            self.exited.pop_front();
            self.remove_if_exited_at(pid, at);
        }
    }

    /// Frees at least one slot when the table is full.
    fn make_room(&mut self) {
        if self.procs.len() < self.config.max_processes {
            return;
        }
        while let Some((pid, at)) = self.exited.pop_front() {
            if self.remove_if_exited_at(pid, at) {
                return;
            }
        }
        // Only live entries: drop the quietest sixteenth.
        let batch = (self.config.max_processes / 16).max(1);
        let mut by_age: Vec<(u64, u32)> = self
            .procs
            .values()
            .map(|p| (p.last_event_ns, p.pid))
            .collect();
        let cut = batch.min(by_age.len());
        if cut == 0 {
            return;
        }
        by_age.select_nth_unstable(cut - 1);
        for (_, pid) in &by_age[..cut] {
            self.procs.remove(pid);
        }
        self.stats.evicted_live += cut as u64;
    }
}

/// Iterator over a process's ancestors.
pub struct Ancestors<'a> {
    table: &'a ProcessTable,
    current: Option<&'a Process>,
    left: usize,
}

impl<'a> Iterator for Ancestors<'a> {
    type Item = &'a Process;

    fn next(&mut self) -> Option<&'a Process> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let parent = self.table.parent(self.current?)?;
        self.current = Some(parent);
        Some(parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ExitArgs, ForkArgs};

    fn fork(parent: u32, child: u32, ts: u64) -> Event {
        let mut e = Event::new(
            EventType::Clone,
            parent,
            EventArgs::Fork(ForkArgs {
                child_pid: child,
                child_tid: child,
                flags: 0,
            }),
        );
        e.ts_ns = ts;
        e
    }

    fn exec(pid: u32, comm: &str, argv: &[&str], ts: u64) -> Event {
        let mut e = Event::new(
            EventType::Execve,
            pid,
            EventArgs::Exec(ExecArgs {
                filename: format!("/usr/bin/{comm}"),
                argv: argv.iter().map(|a| a.to_string()).collect(),
                tty: 34816,
                ..Default::default()
            }),
        );
        e.comm = comm.into();
        e.ts_ns = ts;
        e
    }

    fn exit(pid: u32, ts: u64) -> Event {
        let mut e = Event::new(
            EventType::Procexit,
            pid,
            EventArgs::Exit(ExitArgs { status: 0 }),
        );
        e.ts_ns = ts;
        e
    }

    fn table(max: usize) -> ProcessTable {
        let mut t = ProcessTable::new(TableConfig {
            max_processes: max,
            exited_linger: Duration::from_secs(10),
        });
        t.insert(Process::new(1, 0, "systemd"));
        t
    }

    #[test]
    fn fork_exec_exit_keep_lineage() {
        let mut t = table(100);
        t.observe(&fork(1, 100, 1));
        t.observe(&exec(100, "bash", &["bash"], 2));
        t.observe(&fork(100, 101, 3));
        t.observe(&exec(101, "cat", &["cat", "/etc/shadow"], 4));
        let cat = t.get(101).unwrap();
        assert_eq!(&*cat.comm, "cat");
        assert_eq!(&*cat.cmdline, "cat /etc/shadow");
        assert_eq!(&*cat.args, "/etc/shadow");
        assert_eq!(&*cat.exe, "cat");
        assert_eq!(&*cat.exe_path, "/usr/bin/cat");
        assert_eq!(cat.tty, 34816);
        let names: Vec<&str> = t.ancestors(101).map(|p| &*p.comm).collect();
        assert_eq!(names, vec!["bash", "systemd"]);
        assert_eq!(t.ancestor(101, 0).map(|p| &*p.comm), Some("cat"));
        assert_eq!(t.ancestor(101, 2).map(|p| &*p.comm), Some("systemd"));
        assert_eq!(t.ancestor(101, 3), None);
        // The parent exits: it lingers, so the child's lineage still resolves…
        t.observe(&exit(100, 5));
        assert!(t.get(100).unwrap().exited_ns.is_some());
        assert_eq!(t.ancestor(101, 1).map(|p| &*p.comm), Some("bash"));
        // …until the linger time has passed.
        t.observe(&exec(101, "cat", &["cat"], 5 + 10_000_000_000));
        assert!(t.get(100).is_none());
        assert_eq!(t.stats().evicted_exited, 1);
    }

    #[test]
    fn failed_exec_changes_nothing_and_threads_add_nothing() {
        let mut t = table(100);
        t.observe(&fork(1, 100, 1));
        let mut failed = exec(100, "evil", &["evil"], 2);
        failed.res = -(libc::ENOENT as i64);
        t.observe(&failed);
        assert_eq!(&*t.get(100).unwrap().comm, "systemd");
        let mut thread = fork(100, 100, 3);
        if let EventArgs::Fork(f) = &mut thread.args {
            f.flags = libc::CLONE_THREAD as u64;
            f.child_tid = 555;
        }
        t.observe(&thread);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn unknown_process_without_proc_gets_a_partial_entry() {
        let mut t = table(100);
        let mut e = exec(4000, "x", &["x"], 1);
        e.res = -1;
        e.ppid = 1;
        e.comm = "mystery".into();
        t.observe(&e);
        let p = t.get(4000).unwrap();
        assert!(p.partial);
        assert_eq!(&*p.comm, "mystery");
        assert_eq!(t.ancestor(4000, 1).map(|p| &*p.comm), Some("systemd"));
        assert_eq!(t.stats().partial, 1);
    }

    #[test]
    fn bounded_with_exited_first_then_quietest() {
        let mut t = table(32);
        for pid in 2..=32 {
            t.observe(&fork(1, pid, u64::from(pid)));
        }
        assert_eq!(t.len(), 32);
        t.observe(&exit(5, 100));
        t.observe(&fork(1, 1000, 101));
        assert!(t.get(5).is_none(), "the exited entry went first");
        assert_eq!(t.len(), 32);
        // No exited entries left: the quietest live ones go, a batch at a time.
        t.observe(&fork(1, 1001, 102));
        assert!(t.len() <= 32);
        assert!(t.get(1001).is_some());
        assert!(t.stats().evicted_live >= 1);
        // A fork storm stays bounded.
        for pid in 2000..12_000 {
            t.observe(&fork(1, pid, u64::from(pid)));
            assert!(t.len() <= 32);
        }
    }

    #[test]
    fn pid_reuse_and_lineage_loops_are_safe() {
        let mut t = table(100);
        // A loop 10 → 11 → 10 (pid reuse gone wrong, or hostile /proc): bounded walk.
        let mut a = Process::new(10, 11, "a");
        a.start_ns = 0;
        let mut b = Process::new(11, 10, "b");
        b.start_ns = 0;
        t.insert(a);
        t.insert(b);
        assert_eq!(t.ancestors(10).count(), MAX_ANCESTORS);
        // A parent younger than its child is a reused pid: not an ancestor.
        let mut old = Process::new(20, 21, "child");
        old.start_ns = 100;
        let mut young = Process::new(21, 1, "newcomer");
        young.start_ns = 200;
        t.insert(old);
        t.insert(young);
        assert_eq!(t.ancestors(20).count(), 0);
        // A fork onto an existing pid replaces it and is counted.
        t.observe(&fork(1, 21, 300));
        assert_eq!(t.stats().pid_reused, 1);
    }

    #[test]
    fn setuid_updates_credentials() {
        let mut t = table(100);
        t.observe(&fork(1, 50, 1));
        let mut e = Event::new(
            EventType::Setuid,
            50,
            EventArgs::SetId(crate::event::SetIdArgs {
                real: None,
                effective: Some(1000),
                saved: None,
            }),
        );
        e.ts_ns = 2;
        t.observe(&e);
        assert_eq!(t.get(50).unwrap().uid, 1000);
    }
}
