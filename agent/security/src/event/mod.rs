//! The event the rule engine evaluates: one record per captured syscall (or scheduler
//! event, for fork/exit), with its arguments and result.
//!
//! Each event carries both what the syscall was asked to do (arguments, captured at entry)
//! and what it did (the return value, at exit); Falco splits these into an enter (`>`) and
//! an exit (`<`) event, node-agent sends one record. The process context (name, parent,
//! command line, container…) is not copied into each event: it lives in the
//! [`ProcessTable`](crate::process::ProcessTable), which fork/exec/exit events keep current.
//!
//! Events arrive from the kernel as the fixed-size records of [`wire`] and are decoded
//! into [`Event`]; tests and other sources build [`Event`]s directly.

pub mod names;
pub mod wire;

use std::net::SocketAddr;

/// What happened. The numbers are the `kind` of a [`wire::RecordHeader`]; never reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum EventType {
    Execve = 1,
    Execveat = 2,
    Open = 3,
    Openat = 4,
    Openat2 = 5,
    Connect = 6,
    Accept = 7,
    Accept4 = 8,
    Ptrace = 9,
    InitModule = 10,
    FinitModule = 11,
    Mount = 12,
    Setuid = 13,
    Setgid = 14,
    Setreuid = 15,
    Setregid = 16,
    Setresuid = 17,
    Setresgid = 18,
    Bpf = 19,
    Unshare = 20,
    Setns = 21,
    Fork = 22,
    Vfork = 23,
    Clone = 24,
    Clone3 = 25,
    /// The process (thread group) ended; Falco calls it `procexit`.
    Procexit = 26,
}

impl EventType {
    /// Every event type, in code order.
    pub const ALL: [EventType; 26] = [
        EventType::Execve,
        EventType::Execveat,
        EventType::Open,
        EventType::Openat,
        EventType::Openat2,
        EventType::Connect,
        EventType::Accept,
        EventType::Accept4,
        EventType::Ptrace,
        EventType::InitModule,
        EventType::FinitModule,
        EventType::Mount,
        EventType::Setuid,
        EventType::Setgid,
        EventType::Setreuid,
        EventType::Setregid,
        EventType::Setresuid,
        EventType::Setresgid,
        EventType::Bpf,
        EventType::Unshare,
        EventType::Setns,
        EventType::Fork,
        EventType::Vfork,
        EventType::Clone,
        EventType::Clone3,
        EventType::Procexit,
    ];

    /// The name rules use in `evt.type` (Falco's).
    pub fn name(self) -> &'static str {
        match self {
            EventType::Execve => "execve",
            EventType::Execveat => "execveat",
            EventType::Open => "open",
            EventType::Openat => "openat",
            EventType::Openat2 => "openat2",
            EventType::Connect => "connect",
            EventType::Accept => "accept",
            EventType::Accept4 => "accept4",
            EventType::Ptrace => "ptrace",
            EventType::InitModule => "init_module",
            EventType::FinitModule => "finit_module",
            EventType::Mount => "mount",
            EventType::Setuid => "setuid",
            EventType::Setgid => "setgid",
            EventType::Setreuid => "setreuid",
            EventType::Setregid => "setregid",
            EventType::Setresuid => "setresuid",
            EventType::Setresgid => "setresgid",
            EventType::Bpf => "bpf",
            EventType::Unshare => "unshare",
            EventType::Setns => "setns",
            EventType::Fork => "fork",
            EventType::Vfork => "vfork",
            EventType::Clone => "clone",
            EventType::Clone3 => "clone3",
            EventType::Procexit => "procexit",
        }
    }

    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.iter().copied().find(|t| t.name() == name)
    }

    pub fn from_code(code: u16) -> Option<EventType> {
        EventType::ALL.iter().copied().find(|t| *t as u16 == code)
    }

    /// A new process (or thread) was created.
    pub fn is_fork(self) -> bool {
        matches!(
            self,
            EventType::Fork | EventType::Vfork | EventType::Clone | EventType::Clone3
        )
    }

    pub fn is_exec(self) -> bool {
        matches!(self, EventType::Execve | EventType::Execveat)
    }

    pub fn is_open(self) -> bool {
        matches!(
            self,
            EventType::Open | EventType::Openat | EventType::Openat2
        )
    }

    fn bit(self) -> u64 {
        1u64 << (self as u16)
    }
}

/// A set of event types, as a bit mask (rules are indexed by the types they can match).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct EventTypeSet(u64);

impl EventTypeSet {
    pub const EMPTY: EventTypeSet = EventTypeSet(0);

    pub fn all() -> EventTypeSet {
        EventType::ALL.iter().fold(Self::EMPTY, |s, t| s.with(*t))
    }

    pub fn only(t: EventType) -> EventTypeSet {
        EventTypeSet(t.bit())
    }

    pub fn with(self, t: EventType) -> EventTypeSet {
        EventTypeSet(self.0 | t.bit())
    }

    pub fn contains(self, t: EventType) -> bool {
        self.0 & t.bit() != 0
    }

    pub fn union(self, other: EventTypeSet) -> EventTypeSet {
        EventTypeSet(self.0 | other.0)
    }

    pub fn intersection(self, other: EventTypeSet) -> EventTypeSet {
        EventTypeSet(self.0 & other.0)
    }

    pub fn complement(self) -> EventTypeSet {
        EventTypeSet(Self::all().0 & !self.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn is_all(self) -> bool {
        self == Self::all()
    }

    pub fn iter(self) -> impl Iterator<Item = EventType> {
        EventType::ALL
            .into_iter()
            .filter(move |t| self.contains(*t))
    }
}

/// One event, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_type: EventType,
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Process id (kernel tgid), in the host's pid namespace.
    pub pid: u32,
    /// Thread id (kernel pid).
    pub tid: u32,
    /// Parent's process id at the time of the event (0 when the source does not know).
    pub ppid: u32,
    /// Effective uid and gid of the caller when the syscall was made.
    pub uid: u32,
    pub gid: u32,
    /// Audit login uid (`u32::MAX` when unset, printed as -1).
    pub loginuid: u32,
    /// cgroup v2 id (inode of the cgroup directory) of the caller; 0 when unknown.
    pub cgroup_id: u64,
    /// The caller's `comm` (at most 15 bytes; after an exec, the new program's).
    pub comm: String,
    /// Return value: ≥ 0 on success, `-errno` on failure.
    pub res: i64,
    pub args: EventArgs,
}

impl Event {
    /// An event with empty context, for sources and tests that fill fields one by one.
    pub fn new(event_type: EventType, pid: u32, args: EventArgs) -> Event {
        Event {
            event_type,
            ts_ns: 0,
            pid,
            tid: pid,
            ppid: 0,
            uid: 0,
            gid: 0,
            loginuid: u32::MAX,
            cgroup_id: 0,
            comm: String::new(),
            res: 0,
            args,
        }
    }
}

/// The syscall arguments that rules look at, per kind of event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventArgs {
    Exec(ExecArgs),
    Open(OpenArgs),
    /// connect, accept, accept4.
    Socket(SocketArgs),
    Ptrace(PtraceArgs),
    /// init_module, finit_module.
    Module(ModuleArgs),
    Mount(MountArgs),
    /// setuid, setgid, setreuid, setregid, setresuid, setresgid.
    SetId(SetIdArgs),
    Bpf(BpfArgs),
    Unshare(UnshareArgs),
    Setns(SetnsArgs),
    /// fork, vfork, clone, clone3 (reported in the parent's context).
    Fork(ForkArgs),
    Exit(ExitArgs),
}

/// A successful exec replaces the process image: the process table takes name, exe and
/// command line from here.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecArgs {
    /// The path given to execve (may be relative).
    pub filename: String,
    /// argv, bounded (see [`wire::ARGS_LEN`]); `argv[0]` is what Falco calls `proc.exe`.
    pub argv: Vec<String>,
    /// Some arguments did not fit and were left out.
    pub argv_truncated: bool,
    /// Resolved path of the executable (`/proc/PID/exe`); empty when unknown.
    pub exe_path: String,
    /// Controlling terminal as `tty_nr` of `/proc/PID/stat` (0 = none).
    pub tty: u32,
    /// Effective capabilities after the exec.
    pub cap_effective: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpenArgs {
    /// Directory fd the path is relative to (`AT_FDCWD` = -100 for open(2)).
    pub dirfd: i32,
    /// The path as given.
    pub path: String,
    pub flags: u32,
    pub mode: u32,
}

/// Address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketFamily {
    #[default]
    Inet,
    Inet6,
    Unix,
    Other(u16),
}

impl SocketFamily {
    pub fn from_raw(family: u16) -> SocketFamily {
        match i32::from(family) {
            libc::AF_INET => SocketFamily::Inet,
            libc::AF_INET6 => SocketFamily::Inet6,
            libc::AF_UNIX => SocketFamily::Unix,
            _ => SocketFamily::Other(family),
        }
    }
}

/// Transport protocol (`sk->sk_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L4Proto {
    #[default]
    Unknown,
    Tcp,
    Udp,
    Icmp,
    Raw,
}

impl L4Proto {
    pub fn from_raw(protocol: u16) -> L4Proto {
        match i32::from(protocol) {
            libc::IPPROTO_TCP => L4Proto::Tcp,
            libc::IPPROTO_UDP => L4Proto::Udp,
            libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6 => L4Proto::Icmp,
            libc::IPPROTO_RAW => L4Proto::Raw,
            _ => L4Proto::Unknown,
        }
    }

    pub fn name(self) -> Option<&'static str> {
        match self {
            L4Proto::Unknown => None,
            L4Proto::Tcp => Some("tcp"),
            L4Proto::Udp => Some("udp"),
            L4Proto::Icmp => Some("icmp"),
            L4Proto::Raw => Some("raw"),
        }
    }
}

/// connect: the caller is the client, `remote` the server. accept: the caller is the
/// server, `remote` the client.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SocketArgs {
    /// The socket (connect) or the listening socket (accept; the new fd is `res`).
    pub fd: i32,
    pub family: SocketFamily,
    pub protocol: L4Proto,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// `sun_path` of a unix socket.
    pub unix_path: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PtraceArgs {
    pub request: i64,
    pub target_pid: i32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModuleArgs {
    /// finit_module's fd (-1 for init_module).
    pub fd: i32,
    /// Path of the module file when the source could resolve the fd; empty otherwise.
    pub path: String,
    /// Module parameters (`uargs`).
    pub params: String,
    pub flags: u32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MountArgs {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub flags: u64,
}

/// New ids; `None` = left unchanged (-1). setuid/setgid set `effective` (and the others
/// when the caller is privileged, which the kernel decides: rules see the request).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SetIdArgs {
    pub real: Option<u32>,
    pub effective: Option<u32>,
    pub saved: Option<u32>,
}

impl SetIdArgs {
    /// The id the caller asked to run as: the effective one, else the real one.
    pub fn target(&self) -> Option<u32> {
        self.effective.or(self.real)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct BpfArgs {
    pub cmd: i64,
    /// `prog_type` of BPF_PROG_LOAD (0 otherwise).
    pub prog_type: u32,
    pub prog_name: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct UnshareArgs {
    pub flags: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SetnsArgs {
    pub fd: i32,
    pub nstype: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ForkArgs {
    /// The new process's id (tgid); equal to the parent's for a new thread.
    pub child_pid: u32,
    pub child_tid: u32,
    pub flags: u64,
}

impl ForkArgs {
    /// A new thread in the same process, not a new process.
    pub fn is_thread(&self) -> bool {
        self.flags & libc::CLONE_THREAD as u64 != 0
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExitArgs {
    /// Exit status as wait(2) reports it.
    pub status: i32,
}

/// Converts the kernel's boot-time clock (`bpf_ktime_get_boot_ns`) to wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootClock {
    /// `CLOCK_REALTIME - CLOCK_BOOTTIME`, nanoseconds.
    offset_ns: i128,
}

impl BootClock {
    /// Reads both clocks now. Taken once at startup: a later wall-clock step (NTP) shifts
    /// event times by the step, which is what `journalctl` and Falco do too.
    pub fn now() -> std::io::Result<BootClock> {
        use nix::time::{ClockId, clock_gettime};
        let to_ns = |ts: nix::sys::time::TimeSpec| {
            i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec())
        };
        let boot = clock_gettime(ClockId::CLOCK_BOOTTIME).map_err(std::io::Error::from)?;
        let real = clock_gettime(ClockId::CLOCK_REALTIME).map_err(std::io::Error::from)?;
        Ok(BootClock {
            offset_ns: to_ns(real) - to_ns(boot),
        })
    }

    /// A clock with a fixed offset (tests).
    pub fn with_offset(offset_ns: i128) -> BootClock {
        BootClock { offset_ns }
    }

    pub fn to_unix_ns(self, boot_ns: u64) -> u64 {
        (i128::from(boot_ns) + self.offset_ns).clamp(0, i128::from(u64::MAX)) as u64
    }

    /// The inverse of [`BootClock::to_unix_ns`] (encoding records for tests and replay).
    pub fn to_boot_ns(self, unix_ns: u64) -> u64 {
        (i128::from(unix_ns) - self.offset_ns).clamp(0, i128::from(u64::MAX)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_names_and_codes_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::from_name(t.name()), Some(t));
            assert_eq!(EventType::from_code(t as u16), Some(t));
        }
        assert_eq!(EventType::from_code(0), None);
        assert_eq!(EventType::from_name("exit"), None);
    }

    #[test]
    fn type_sets() {
        let all = EventTypeSet::all();
        assert!(all.is_all());
        let exec = EventTypeSet::only(EventType::Execve);
        assert_eq!(exec.complement().union(exec), all);
        assert!(exec.complement().intersection(exec).is_empty());
        assert_eq!(exec.iter().collect::<Vec<_>>(), vec![EventType::Execve]);
    }

    #[test]
    fn boot_clock_converts() {
        let clock = BootClock::with_offset(1_000);
        assert_eq!(clock.to_unix_ns(5), 1_005);
        let negative = BootClock::with_offset(-10);
        assert_eq!(negative.to_unix_ns(5), 0);
        let real = BootClock::now().unwrap();
        assert!(real.to_unix_ns(0) > 1_600_000_000_000_000_000);
    }
}
