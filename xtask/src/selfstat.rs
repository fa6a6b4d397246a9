//! CPU time and memory of the benchmark process itself.

/// User + system CPU seconds used by this process so far.
pub fn cpu_seconds() -> f64 {
    let u = usage();
    u.user + u.sys
}

/// What this process used so far, user and system CPU apart: the kernel's share
/// (syscalls, page faults, loopback TCP) tells copies and allocations from encoding.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub user: f64,
    pub sys: f64,
    pub minor_faults: u64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, earlier: Usage) -> Usage {
        Usage {
            user: self.user - earlier.user,
            sys: self.sys - earlier.sys,
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
        }
    }
}

pub fn usage() -> Usage {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        user: tv(ru.ru_utime),
        sys: tv(ru.ru_stime),
        minor_faults: ru.ru_minflt as u64,
    }
}

/// A kB field of /proc/self/status, e.g. `status_kib("VmHWM:")`.
pub fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
