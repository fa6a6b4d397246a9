//! `processes` (off by default): process and thread counts from /proc/<pid>/stat and
//! /proc/<pid>/task/<tid>/stat plus the kernel limits (node_exporter 1.5.0
//! collector/processes_linux.go). A process or thread that exits while being read is
//! skipped, as there. Files are read directly rather than kept open: there can be
//! thousands and each is read once per scrape.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::sysattr::read_u64;
use super::{BuildContext, Collector, CollectorError, MetricSet};

/// (state, num_threads) of a stat line; the command may contain spaces and `)`.
pub fn parse_state_threads(text: &str) -> Option<(String, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the command: state, ppid, …, num_threads is the 18th.
    let state = fields.first()?.to_string();
    let threads = fields.get(17)?.parse().ok()?;
    Some((state, threads))
}

#[derive(Debug, Default, PartialEq)]
pub struct ProcessCounts {
    pub pids: u64,
    pub threads: u64,
    pub states: BTreeMap<String, u64>,
    pub thread_states: BTreeMap<String, u64>,
}

pub struct ProcessesCollector {
    proc: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(ProcessesCollector {
        proc: ctx.paths.proc.clone(),
    }))
}

/// Numeric entries of a /proc or task directory.
fn numeric_entries(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Gone between listing and reading: not an error.
fn vanished(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// `Ok(None)` when the task is gone.
fn read_stat(path: &Path) -> Result<Option<(String, u64)>, CollectorError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_state_threads(&text)
            .map(Some)
            .ok_or_else(|| CollectorError::parse(path.display().to_string(), "malformed stat")),
        Err(e) if vanished(&e) => Ok(None),
        Err(e) => Err(CollectorError::io(path, e)),
    }
}

pub fn count_processes(proc: &Path) -> Result<ProcessCounts, CollectorError> {
    let mut c = ProcessCounts::default();
    for pid in numeric_entries(proc).map_err(|e| CollectorError::io(proc, e))? {
        let dir = proc.join(pid.to_string());
        let Some((state, threads)) = read_stat(&dir.join("stat"))? else {
            continue;
        };
        c.pids += 1;
        c.threads += threads;
        let task = dir.join("task");
        let tids = match numeric_entries(&task) {
            Ok(t) => t,
            Err(e) if vanished(&e) => Vec::new(),
            Err(e) => return Err(CollectorError::io(&task, e)),
        };
        for tid in tids {
            // The main thread is counted with its process's state.
            let tstate = if tid == pid {
                Some(state.clone())
            } else {
                read_stat(&task.join(tid.to_string()).join("stat"))?.map(|(s, _)| s)
            };
            if let Some(s) = tstate {
                *c.thread_states.entry(s).or_default() += 1;
            }
        }
        *c.states.entry(state).or_default() += 1;
    }
    Ok(c)
}

impl Collector for ProcessesCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let c = count_processes(&self.proc)?;
        out.gauge(
            "node_processes_threads",
            "Allocated threads in system",
            &[],
            c.threads as f64,
        );
        let max_threads = read_u64(&self.proc.join("sys/kernel/threads-max"))?;
        out.gauge(
            "node_processes_max_threads",
            "Limit of threads in the system",
            &[],
            max_threads as f64,
        );
        for (state, n) in &c.states {
            out.gauge(
                "node_processes_state",
                "Number of processes in each state.",
                &[("state", state)],
                *n as f64,
            );
        }
        for (state, n) in &c.thread_states {
            out.gauge(
                "node_processes_threads_state",
                "Number of threads in each state.",
                &[("thread_state", state)],
                *n as f64,
            );
        }
        let pid_max = read_u64(&self.proc.join("sys/kernel/pid_max"))?;
        out.gauge("node_processes_pids", "Number of PIDs", &[], c.pids as f64);
        out.gauge(
            "node_processes_max_processes",
            "Number of max PIDs limit",
            &[],
            pid_max as f64,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{assert_same_as_node_exporter, paths, scrape, value};

    #[test]
    fn same_as_node_exporter() {
        assert_same_as_node_exporter(
            "processes",
            build,
            &paths("processes"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn counts_processes_threads_and_states() {
        let set = scrape(build, &paths("processes"), &CollectorOptions::default()).unwrap();
        assert_eq!(
            value(&set, "node_processes_pids", &[]),
            3.0,
            "self is not a pid"
        );
        assert_eq!(value(&set, "node_processes_threads", &[]), 5.0);
        assert_eq!(
            value(
                &set,
                "node_processes_threads_state",
                &[("thread_state", "D")]
            ),
            1.0
        );
        assert_eq!(value(&set, "node_processes_state", &[("state", "Z")]), 1.0);
        assert_eq!(
            parse_state_threads("7 (a) b) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 9 0"),
            Some(("S".into(), 9))
        );
    }

    #[test]
    fn vanished_tasks_are_skipped_malformed_fail() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("5")).unwrap(); // exited: no stat
        assert_eq!(count_processes(dir.path()).unwrap().pids, 0);
        std::fs::create_dir_all(dir.path().join("6")).unwrap();
        std::fs::write(dir.path().join("6/stat"), "6 (x) S 1\n").unwrap();
        assert!(matches!(
            count_processes(dir.path()),
            Err(CollectorError::Parse { .. })
        ));
    }
}
