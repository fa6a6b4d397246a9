//! `process_*` metrics of the agent itself, as client_golang's process collector exports
//! them for node_exporter (plus `process_threads`, which dashboards built on the prometheus
//! crate expect).
//!
//! Our own rather than the prometheus crate's collector: that one re-opens and re-parses
//! /proc/self/stat and /proc/self/limits and allocates an entry per open file on every
//! scrape, which cost more than several node collectors together. Here /proc/self/stat is
//! a kept file (see `metrics::procfile`), the fd directory stays open and is rewound, the
//! limits come from getrlimit and the start time is computed once.

use std::sync::{Mutex, OnceLock};

use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::resource::{Resource, getrlimit};
use nix::sys::stat::Mode;

use crate::{MetricSet, read_proc};

/// Writes the `process_*` families into `out`; a value that cannot be read is left out.
pub fn collect(out: &mut MetricSet) {
    match read_proc("/proc/self/stat") {
        Ok(text) => match parse_stat(&text) {
            Some(stat) => emit_stat(out, &stat),
            None => tracing::debug!("unexpected /proc/self/stat format"),
        },
        Err(e) => tracing::debug!(error = %e, "reading /proc/self/stat"),
    }
    if let Some(n) = open_fds() {
        out.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            &[],
            n as f64,
        );
    }
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
        out.gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            &[],
            soft as f64,
        );
    }
    // Unlimited is reported as 2^64-1, as client_golang does.
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_AS) {
        out.gauge(
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            &[],
            soft as f64,
        );
    }
}

/// The fields of /proc/self/stat used here, in their raw units.
#[derive(Debug, PartialEq)]
pub struct Stat {
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    pub threads: u64,
    pub start_ticks: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
}

/// Parses /proc/<pid>/stat (proc(5)); the command name may contain spaces and `)`, so
/// fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // Field numbers of proc(5) minus 3 (pid, comm and state come first).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime_ticks: field(14)?,
        stime_ticks: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

fn emit_stat(out: &mut MetricSet, stat: &Stat) {
    let ticks = clock_ticks();
    out.counter(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        &[],
        (stat.utime_ticks + stat.stime_ticks) as f64 / ticks,
    );
    out.gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        &[],
        (stat.rss_pages * page_size()) as f64,
    );
    if let Some(boot) = boot_time() {
        out.gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            &[],
            boot + stat.start_ticks as f64 / ticks,
        );
    }
    out.gauge(
        "process_threads",
        "Number of OS threads in the process.",
        &[],
        stat.threads as f64,
    );
    out.gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        &[],
        stat.vsize_bytes as f64,
    );
}

/// Entries of /proc/self/fd (the directory's own descriptor included, as in
/// client_golang, which also counts while holding it open).
fn open_fds() -> Option<usize> {
    static DIR: Mutex<Option<Dir>> = Mutex::new(None);
    let mut guard = DIR.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        match Dir::open(
            "/proc/self/fd",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(dir) => *guard = Some(dir),
            Err(e) => {
                tracing::debug!(error = %e, "opening /proc/self/fd");
                return None;
            }
        }
    }
    let dir = guard.as_mut()?;
    Some(counted_by_size(dir).unwrap_or_else(|| listed(dir)))
}

/// Since Linux 6.2 the size of a /proc/PID/fd directory is its number of open descriptors
/// (the open `dir` included, as in a listing): one fstat instead of a getdents walk that
/// builds a dentry per descriptor, and the agent keeps ~100 open. Older kernels report 0
/// (impossible for a live process, `dir` is open): `None`, list then.
fn counted_by_size(dir: &Dir) -> Option<usize> {
    let st = nix::sys::stat::fstat(dir).ok()?;
    usize::try_from(st.st_size).ok().filter(|&n| n > 0)
}

fn listed(dir: &mut Dir) -> usize {
    // The iterator rewinds the directory when dropped, so the next scrape lists afresh.
    dir.iter()
        .filter_map(Result::ok)
        .filter(|e| !matches!(e.file_name().to_bytes(), b"." | b".."))
        .count()
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .map_or(100.0, |t| t as f64)
    })
}

fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |p| p as u64)
    })
}

/// `btime` of /proc/stat, read once: the boot time does not change.
fn boot_time() -> Option<f64> {
    static BOOT: OnceLock<Option<f64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "4242 (node agent) x) S 1 4242 4242 0 -1 4194560 2207 0 0 0 \
                    150 37 0 0 20 0 6 0 9876 21311488 2208 18446744073709551615 1 1 0 0 0 0 0 \
                    4096 1090 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime_ticks: 150,
                stime_ticks: 37,
                threads: 6,
                start_ticks: 9876,
                vsize_bytes: 21311488,
                rss_pages: 2208,
            })
        );
        assert_eq!(parse_stat("4242 (truncated) S 1 2"), None);
    }

    #[test]
    fn fd_count_from_size_matches_a_listing() {
        let mut dir = Dir::open(
            "/proc/self/fd",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let Some(_) = counted_by_size(&dir) else {
            return; // kernel before 6.2: the listing is used
        };
        // Other tests open files concurrently: agreeing once shows both count alike.
        let agreed = (0..20).any(|_| {
            let by_size = counted_by_size(&dir);
            let by_listing = listed(&mut dir);
            by_size == Some(by_listing) && counted_by_size(&dir) == by_size
        });
        assert!(agreed);
    }

    #[test]
    fn reports_this_process() {
        let mut set = MetricSet::new();
        collect(&mut set);
        let value = |name: &str| {
            set.families()
                .iter()
                .find(|f| f.name() == name)
                .map(|f| {
                    let m = &f.get_metric()[0];
                    m.get_gauge().get_value().max(m.get_counter().get_value())
                })
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        let _held = std::fs::File::open("/proc/self/status").unwrap();
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_virtual_memory_bytes") > value("process_resident_memory_bytes"));
        assert!(value("process_threads") >= 1.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
        assert!(value("process_virtual_memory_max_bytes") > 0.0);
        // A second collection through the kept files and the rewound directory agrees.
        let mut again = MetricSet::new();
        collect(&mut again);
        assert!(again.contains("process_open_fds"));
    }
}
