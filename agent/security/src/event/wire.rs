//! The records the kernel side writes to the events ring buffer, and their decoding.
//!
//! Every record starts with a [`RecordHeader`] whose `kind` is an [`EventType`] code and
//! whose `size` is the record's size in bytes; the payload type follows from the kind
//! (table in [`payload_size`]). Records are `#[repr(C)]`, padding-free (bytemuck's derive
//! proves it at compile time) and fixed-size, so the eBPF program can
//! `EVENTS.reserve::<ExecRecord>()` and fill it in place. Strings are NUL-terminated within
//! their array (what `bpf_probe_read_{user,kernel}_str` writes); a string that did not fit
//! is cut and the header's [`FLAG_TRUNCATED`] is set. Nothing here uses `std`, so the types
//! can move to `ebpf/syscalls-common` unchanged.
//!
//! A record longer than its type (a newer kernel side with appended fields) decodes; a
//! shorter one, or an unknown kind, is a [`DecodeError`] that the reader counts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytemuck::{Pod, Zeroable};

use super::{
    BootClock, BpfArgs, Event, EventArgs, EventType, ExecArgs, ExitArgs, ForkArgs, L4Proto,
    ModuleArgs, MountArgs, OpenArgs, PtraceArgs, SetIdArgs, SetnsArgs, SocketArgs, SocketFamily,
    UnshareArgs,
};

/// `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;
/// Paths (open, exec filename and exe, mount source/target, module file).
pub const PATH_LEN: usize = 256;
/// argv, NUL-separated.
pub const ARGS_LEN: usize = 1024;
/// Module parameters.
pub const PARAMS_LEN: usize = 128;
pub const FSTYPE_LEN: usize = 32;
/// `sizeof(sun_path)`.
pub const UNIX_PATH_LEN: usize = 108;
/// `BPF_OBJ_NAME_LEN`.
pub const BPF_NAME_LEN: usize = 16;

/// A string or argv did not fit its array and was cut.
pub const FLAG_TRUNCATED: u16 = 1;

/// An id argument that is left unchanged (`-1` in setresuid and friends).
pub const ID_UNCHANGED: u32 = u32::MAX;

/// First bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RecordHeader {
    /// [`EventType`] code.
    pub kind: u16,
    /// `FLAG_*`.
    pub flags: u16,
    /// Size of the whole record in bytes.
    pub size: u32,
    /// `bpf_ktime_get_boot_ns()`.
    pub ts_boot_ns: u64,
    /// `bpf_get_current_cgroup_id()`.
    pub cgroup_id: u64,
    /// `bpf_get_current_pid_tgid() >> 32` (tgid).
    pub pid: u32,
    /// `bpf_get_current_pid_tgid() as u32`.
    pub tid: u32,
    /// `task->real_parent->tgid`.
    pub ppid: u32,
    /// `task->cred->euid`, `egid`.
    pub uid: u32,
    pub gid: u32,
    /// `task->loginuid` (`u32::MAX` when unset).
    pub loginuid: u32,
    /// Syscall return value (0 for fork/exit).
    pub res: i64,
    /// `bpf_get_current_comm()`; after an exec, the new program's.
    pub comm: [u8; COMM_LEN],
}

/// execve/execveat, sent at syscall exit (or `sched_process_exec`) so that `comm`, exe and
/// credentials are the new program's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ExecRecord {
    pub header: RecordHeader,
    /// `tty_nr` encoding of the controlling terminal (major << 8 | minor, as
    /// `/proc/PID/stat`; 0 = none): `signal->tty->driver->major/minor_start + index`.
    pub tty: u32,
    /// The real argc (more than fit in `args` when truncated).
    pub argc: u32,
    /// Bytes of `args` in use.
    pub args_len: u32,
    pub _pad: u32,
    /// `cred->cap_effective`.
    pub cap_effective: u64,
    /// The path given to exec.
    pub filename: [u8; PATH_LEN],
    /// `d_path` of `mm->exe_file` (empty when unavailable).
    pub exe_path: [u8; PATH_LEN],
    /// argv strings, each NUL-terminated.
    pub args: [u8; ARGS_LEN],
}

/// open/openat/openat2 (for write, or of a path below a sensitive prefix: the kernel side
/// filters), sent at exit: `res` is the new fd or `-errno`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct OpenRecord {
    pub header: RecordHeader,
    /// `AT_FDCWD` (-100) for open(2).
    pub dirfd: i32,
    pub flags: u32,
    pub mode: u32,
    pub _pad: u32,
    pub path: [u8; PATH_LEN],
}

/// connect/accept/accept4, sent at exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct SocketRecord {
    pub header: RecordHeader,
    pub fd: i32,
    /// `AF_INET`, `AF_INET6`, `AF_UNIX`.
    pub family: u16,
    /// `sk->sk_protocol` (`IPPROTO_TCP`…).
    pub protocol: u16,
    /// Ports in network byte order, as in `struct sockaddr_in`.
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: u32,
    /// IPv4 in the first 4 bytes, IPv6 in all 16.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub unix_path: [u8; UNIX_PATH_LEN],
    pub _pad2: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct PtraceRecord {
    pub header: RecordHeader,
    pub request: i64,
    pub target_pid: i32,
    pub _pad: u32,
}

/// init_module/finit_module.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ModuleRecord {
    pub header: RecordHeader,
    /// finit_module's fd, -1 for init_module.
    pub fd: i32,
    pub flags: u32,
    /// `d_path` of the fd's file, when resolvable.
    pub path: [u8; PATH_LEN],
    pub params: [u8; PARAMS_LEN],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct MountRecord {
    pub header: RecordHeader,
    pub flags: u64,
    pub source: [u8; PATH_LEN],
    pub target: [u8; PATH_LEN],
    pub fstype: [u8; FSTYPE_LEN],
}

/// setuid/setgid: `ids = [ID_UNCHANGED, id, ID_UNCHANGED]`; setre*: `[r, e, ID_UNCHANGED]`;
/// setres*: `[r, e, s]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct SetIdRecord {
    pub header: RecordHeader,
    pub ids: [u32; 3],
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BpfRecord {
    pub header: RecordHeader,
    pub cmd: i32,
    /// `attr->prog_type` for BPF_PROG_LOAD.
    pub prog_type: u32,
    pub prog_name: [u8; BPF_NAME_LEN],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct UnshareRecord {
    pub header: RecordHeader,
    pub flags: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct SetnsRecord {
    pub header: RecordHeader,
    pub fd: i32,
    pub nstype: i32,
}

/// fork/vfork/clone/clone3 (or `sched_process_fork`), in the parent's context.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ForkRecord {
    pub header: RecordHeader,
    pub child_pid: u32,
    pub child_tid: u32,
    pub clone_flags: u64,
}

/// The thread group ended (`sched_process_exit` of the last thread, `signal->live == 0`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ExitRecord {
    pub header: RecordHeader,
    /// `task->exit_code` (wait status).
    pub status: i32,
    pub _pad: u32,
}

const _: () = assert!(size_of::<RecordHeader>() == 72);
const _: () = assert!(size_of::<ExecRecord>() == 72 + 24 + 2 * PATH_LEN + ARGS_LEN);
const _: () = assert!(size_of::<SocketRecord>() == 232);

/// Why a record was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than a header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    #[error("{kind} record of {len} bytes is shorter than its {want} bytes")]
    Truncated {
        kind: &'static str,
        len: usize,
        want: usize,
    },
}

/// Size of the record type carrying `kind`.
pub fn payload_size(kind: EventType) -> usize {
    use EventType::*;
    match kind {
        Execve | Execveat => size_of::<ExecRecord>(),
        Open | Openat | Openat2 => size_of::<OpenRecord>(),
        Connect | Accept | Accept4 => size_of::<SocketRecord>(),
        Ptrace => size_of::<PtraceRecord>(),
        InitModule | FinitModule => size_of::<ModuleRecord>(),
        Mount => size_of::<MountRecord>(),
        Setuid | Setgid | Setreuid | Setregid | Setresuid | Setresgid => size_of::<SetIdRecord>(),
        Bpf => size_of::<BpfRecord>(),
        Unshare => size_of::<UnshareRecord>(),
        Setns => size_of::<SetnsRecord>(),
        Fork | Vfork | Clone | Clone3 => size_of::<ForkRecord>(),
        Procexit => size_of::<ExitRecord>(),
    }
}

fn read<T: Pod>(bytes: &[u8], kind: EventType) -> Result<T, DecodeError> {
    let want = size_of::<T>();
    let record = bytes.get(..want).ok_or(DecodeError::Truncated {
        kind: kind.name(),
        len: bytes.len(),
        want,
    })?;
    // Ring buffer records are 8-byte aligned by contract, not by type: read unaligned.
    Ok(bytemuck::pod_read_unaligned(record))
}

/// Bytes up to the first NUL, as text (invalid UTF-8 replaced).
fn text(bytes: &[u8]) -> String {
    let end = memchr::memchr(0, bytes).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn argv(args: &[u8], args_len: u32) -> Vec<String> {
    let used = &args[..(args_len as usize).min(args.len())];
    let used = used.strip_suffix(&[0]).unwrap_or(used);
    if used.is_empty() {
        return Vec::new();
    }
    used.split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn id(raw: u32) -> Option<u32> {
    (raw != ID_UNCHANGED).then_some(raw)
}

fn socket_addr(family: SocketFamily, addr: [u8; 16], port_be: u16) -> Option<SocketAddr> {
    // All zero: the kernel side did not know this end (the local end of a connect is
    // chosen by the kernel after the syscall's arguments were read). Unknown, not 0.0.0.0.
    if port_be == 0 && addr == [0; 16] {
        return None;
    }
    let port = u16::from_be(port_be);
    let ip = match family {
        SocketFamily::Inet => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        SocketFamily::Inet6 => {
            let v6 = Ipv6Addr::from(addr);
            // A v4 peer of a dual-stack socket: show it as v4, as Falco does.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8], clock: &BootClock) -> Result<Event, DecodeError> {
    let header: RecordHeader = bytes
        .get(..size_of::<RecordHeader>())
        .map(bytemuck::pod_read_unaligned)
        .ok_or(DecodeError::Short(bytes.len()))?;
    let kind = EventType::from_code(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    use EventType::*;
    let args = match kind {
        Execve | Execveat => {
            let r: ExecRecord = read(bytes, kind)?;
            let argv = argv(&r.args, r.args_len);
            EventArgs::Exec(ExecArgs {
                filename: text(&r.filename),
                argv_truncated: (argv.len() as u64) < u64::from(r.argc)
                    || r.header.flags & FLAG_TRUNCATED != 0,
                argv,
                exe_path: text(&r.exe_path),
                tty: r.tty,
                cap_effective: r.cap_effective,
            })
        }
        Open | Openat | Openat2 => {
            let r: OpenRecord = read(bytes, kind)?;
            EventArgs::Open(OpenArgs {
                dirfd: r.dirfd,
                path: text(&r.path),
                flags: r.flags,
                mode: r.mode,
            })
        }
        Connect | Accept | Accept4 => {
            let r: SocketRecord = read(bytes, kind)?;
            let family = SocketFamily::from_raw(r.family);
            EventArgs::Socket(SocketArgs {
                fd: r.fd,
                family,
                protocol: L4Proto::from_raw(r.protocol),
                local: socket_addr(family, r.local_addr, r.local_port),
                remote: socket_addr(family, r.remote_addr, r.remote_port),
                unix_path: text(&r.unix_path),
            })
        }
        Ptrace => {
            let r: PtraceRecord = read(bytes, kind)?;
            EventArgs::Ptrace(PtraceArgs {
                request: r.request,
                target_pid: r.target_pid,
            })
        }
        InitModule | FinitModule => {
            let r: ModuleRecord = read(bytes, kind)?;
            EventArgs::Module(ModuleArgs {
                fd: r.fd,
                path: text(&r.path),
                params: text(&r.params),
                flags: r.flags,
            })
        }
        Mount => {
            let r: MountRecord = read(bytes, kind)?;
            EventArgs::Mount(MountArgs {
                source: text(&r.source),
                target: text(&r.target),
                fstype: text(&r.fstype),
                flags: r.flags,
            })
        }
        Setuid | Setgid | Setreuid | Setregid | Setresuid | Setresgid => {
            let r: SetIdRecord = read(bytes, kind)?;
            EventArgs::SetId(SetIdArgs {
                real: id(r.ids[0]),
                effective: id(r.ids[1]),
                saved: id(r.ids[2]),
            })
        }
        Bpf => {
            let r: BpfRecord = read(bytes, kind)?;
            EventArgs::Bpf(BpfArgs {
                cmd: i64::from(r.cmd),
                prog_type: r.prog_type,
                prog_name: text(&r.prog_name),
            })
        }
        Unshare => {
            let r: UnshareRecord = read(bytes, kind)?;
            EventArgs::Unshare(UnshareArgs { flags: r.flags })
        }
        Setns => {
            let r: SetnsRecord = read(bytes, kind)?;
            EventArgs::Setns(SetnsArgs {
                fd: r.fd,
                nstype: i64::from(r.nstype),
            })
        }
        Fork | Vfork | Clone | Clone3 => {
            let r: ForkRecord = read(bytes, kind)?;
            EventArgs::Fork(ForkArgs {
                child_pid: r.child_pid,
                child_tid: r.child_tid,
                flags: r.clone_flags,
            })
        }
        Procexit => {
            let r: ExitRecord = read(bytes, kind)?;
            EventArgs::Exit(ExitArgs { status: r.status })
        }
    };
    Ok(Event {
        event_type: kind,
        ts_ns: clock.to_unix_ns(header.ts_boot_ns),
        pid: header.pid,
        tid: header.tid,
        ppid: header.ppid,
        uid: header.uid,
        gid: header.gid,
        loginuid: header.loginuid,
        cgroup_id: header.cgroup_id,
        comm: text(&header.comm),
        res: header.res,
        args,
    })
}

/// Copies `text` into a NUL-terminated array; true when it had to be cut.
fn put_str<const N: usize>(dst: &mut [u8; N], text: &str) -> bool {
    let bytes = text.as_bytes();
    let n = bytes.len().min(N - 1);
    dst[..n].copy_from_slice(&bytes[..n]);
    dst[n] = 0;
    n < bytes.len()
}

fn put_addr(family: SocketFamily, addr: Option<SocketAddr>) -> ([u8; 16], u16) {
    match addr {
        // A v4 peer of a v6 socket was decoded from its mapped form: write that form back.
        Some(SocketAddr::V4(a)) if family == SocketFamily::Inet6 => {
            (a.ip().to_ipv6_mapped().octets(), a.port().to_be())
        }
        Some(SocketAddr::V4(a)) => {
            let mut out = [0u8; 16];
            out[..4].copy_from_slice(&a.ip().octets());
            (out, a.port().to_be())
        }
        Some(SocketAddr::V6(a)) => (a.ip().octets(), a.port().to_be()),
        None => ([0; 16], 0),
    }
}

/// Encodes an event as the kernel side would (tests, benchmarks, replay). Times are
/// written as boot-clock times under `clock`.
pub fn encode(event: &Event, clock: &BootClock) -> Vec<u8> {
    let mut header = RecordHeader {
        kind: event.event_type as u16,
        flags: 0,
        size: payload_size(event.event_type) as u32,
        ts_boot_ns: clock.to_boot_ns(event.ts_ns),
        cgroup_id: event.cgroup_id,
        pid: event.pid,
        tid: event.tid,
        ppid: event.ppid,
        uid: event.uid,
        gid: event.gid,
        loginuid: event.loginuid,
        res: event.res,
        comm: [0; COMM_LEN],
    };
    let mut truncated = put_str(&mut header.comm, &event.comm);
    let mut record = match &event.args {
        EventArgs::Exec(a) => {
            let mut r = ExecRecord::zeroed();
            r.tty = a.tty;
            r.cap_effective = a.cap_effective;
            r.argc = a.argv.len() as u32;
            // The flag is how a decoded event says its argv was cut: keep it.
            truncated |= a.argv_truncated;
            truncated |= put_str(&mut r.filename, &a.filename);
            truncated |= put_str(&mut r.exe_path, &a.exe_path);
            let mut used = 0usize;
            for arg in &a.argv {
                let bytes = arg.as_bytes();
                if used + bytes.len() + 1 > ARGS_LEN {
                    truncated = true;
                    break;
                }
                r.args[used..used + bytes.len()].copy_from_slice(bytes);
                used += bytes.len() + 1;
            }
            r.args_len = used as u32;
            r.header = header;
            bytemuck::bytes_of(&r).to_vec()
        }
        EventArgs::Open(a) => {
            let mut r = OpenRecord::zeroed();
            r.dirfd = a.dirfd;
            r.flags = a.flags;
            r.mode = a.mode;
            truncated |= put_str(&mut r.path, &a.path);
            r.header = header;
            bytemuck::bytes_of(&r).to_vec()
        }
        EventArgs::Socket(a) => {
            let mut r = SocketRecord::zeroed();
            r.fd = a.fd;
            r.family = match a.family {
                SocketFamily::Inet => libc::AF_INET as u16,
                SocketFamily::Inet6 => libc::AF_INET6 as u16,
                SocketFamily::Unix => libc::AF_UNIX as u16,
                SocketFamily::Other(f) => f,
            };
            r.protocol = match a.protocol {
                L4Proto::Tcp => libc::IPPROTO_TCP as u16,
                L4Proto::Udp => libc::IPPROTO_UDP as u16,
                L4Proto::Icmp => libc::IPPROTO_ICMP as u16,
                L4Proto::Raw => libc::IPPROTO_RAW as u16,
                L4Proto::Unknown => 0,
            };
            (r.local_addr, r.local_port) = put_addr(a.family, a.local);
            (r.remote_addr, r.remote_port) = put_addr(a.family, a.remote);
            truncated |= put_str(&mut r.unix_path, &a.unix_path);
            r.header = header;
            bytemuck::bytes_of(&r).to_vec()
        }
        EventArgs::Ptrace(a) => {
            let mut r = PtraceRecord::zeroed();
            r.request = a.request;
            r.target_pid = a.target_pid;
            r.header = header;
            bytemuck::bytes_of(&r).to_vec()
        }
        EventArgs::Module(a) => {
            let mut r = ModuleRecord::zeroed();
            r.fd = a.fd;
            r.flags = a.flags;
            truncated |= put_str(&mut r.path, &a.path);
            truncated |= put_str(&mut r.params, &a.params);
            r.header = header;
            bytemuck::bytes_of(&r).to_vec()
        }
        EventArgs::Mount(a) => {
            let mut r = MountRecord::zeroed();
            r.flags = a.flags;
            truncated |= put_str(&mut r.source, &a.source);
            truncated |= put_str(&mut r.target, &a.target);
            truncated |= put_str(&mut r.fstype, &a.fstype);
            r.header = header;
            bytemuck::bytes_of(&r).to_vec()
        }
        EventArgs::SetId(a) => {
            let mut r = SetIdRecord::zeroed();
            r.ids = [
                a.real.unwrap_or(ID_UNCHANGED),
                a.effective.unwrap_or(ID_UNCHANGED),
                a.saved.unwrap_or(ID_UNCHANGED),
            ];
            r.header = header;
            bytemuck::bytes_of(&r).to_vec()
        }
        EventArgs::Bpf(a) => {
            let mut r = BpfRecord::zeroed();
            r.cmd = a.cmd as i32;
            r.prog_type = a.prog_type;
            truncated |= put_str(&mut r.prog_name, &a.prog_name);
            r.header = header;
            bytemuck::bytes_of(&r).to_vec()
        }
        EventArgs::Unshare(a) => {
            let mut r = UnshareRecord::zeroed();
            r.flags = a.flags;
            r.header = header;
            bytemuck::bytes_of(&r).to_vec()
        }
        EventArgs::Setns(a) => {
            let mut r = SetnsRecord::zeroed();
            r.fd = a.fd;
            r.nstype = a.nstype as i32;
            r.header = header;
            bytemuck::bytes_of(&r).to_vec()
        }
        EventArgs::Fork(a) => {
            let mut r = ForkRecord::zeroed();
            r.child_pid = a.child_pid;
            r.child_tid = a.child_tid;
            r.clone_flags = a.flags;
            r.header = header;
            bytemuck::bytes_of(&r).to_vec()
        }
        EventArgs::Exit(a) => {
            let mut r = ExitRecord::zeroed();
            r.status = a.status;
            r.header = header;
            bytemuck::bytes_of(&r).to_vec()
        }
    };
    if truncated {
        // flags is the second u16 of the header, at offset 2.
        let flags = u16::from_ne_bytes([record[2], record[3]]) | FLAG_TRUNCATED;
        record[2..4].copy_from_slice(&flags.to_ne_bytes());
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(event_type: EventType, args: EventArgs) -> Event {
        Event {
            event_type,
            ts_ns: 1_700_000_000_123_456_789,
            pid: 4242,
            tid: 4243,
            ppid: 1,
            uid: 1000,
            gid: 1000,
            loginuid: u32::MAX,
            cgroup_id: 77,
            comm: "bash".into(),
            res: 0,
            args,
        }
    }

    #[test]
    fn every_record_kind_round_trips() {
        let clock = BootClock::with_offset(1_600_000_000_000_000_000);
        let events = vec![
            sample(
                EventType::Execve,
                EventArgs::Exec(ExecArgs {
                    filename: "/bin/bash".into(),
                    argv: vec!["bash".into(), "".into(), "-c".into(), "id".into()],
                    argv_truncated: false,
                    exe_path: "/usr/bin/bash".into(),
                    tty: 34816,
                    cap_effective: 1 << 21,
                }),
            ),
            sample(
                EventType::Openat,
                EventArgs::Open(OpenArgs {
                    dirfd: -100,
                    path: "/etc/shadow".into(),
                    flags: 0o1101,
                    mode: 0o644,
                }),
            ),
            sample(
                EventType::Connect,
                EventArgs::Socket(SocketArgs {
                    fd: 3,
                    family: SocketFamily::Inet6,
                    protocol: L4Proto::Tcp,
                    local: Some("[2001:db8::1]:40000".parse().unwrap()),
                    remote: Some("[2001:db8::2]:443".parse().unwrap()),
                    unix_path: String::new(),
                }),
            ),
            sample(
                EventType::Ptrace,
                EventArgs::Ptrace(PtraceArgs {
                    request: 16,
                    target_pid: 99,
                }),
            ),
            sample(
                EventType::FinitModule,
                EventArgs::Module(ModuleArgs {
                    fd: 4,
                    path: "/tmp/x.ko".into(),
                    params: "debug=1".into(),
                    flags: 0,
                }),
            ),
            sample(
                EventType::Mount,
                EventArgs::Mount(MountArgs {
                    source: "/dev/sda1".into(),
                    target: "/mnt".into(),
                    fstype: "ext4".into(),
                    flags: 1,
                }),
            ),
            sample(
                EventType::Setresuid,
                EventArgs::SetId(SetIdArgs {
                    real: Some(0),
                    effective: None,
                    saved: Some(5),
                }),
            ),
            sample(
                EventType::Bpf,
                EventArgs::Bpf(BpfArgs {
                    cmd: 5,
                    prog_type: 1,
                    prog_name: "xdp".into(),
                }),
            ),
            sample(
                EventType::Unshare,
                EventArgs::Unshare(UnshareArgs { flags: 0x10000000 }),
            ),
            sample(
                EventType::Setns,
                EventArgs::Setns(SetnsArgs { fd: 5, nstype: 0 }),
            ),
            sample(
                EventType::Clone,
                EventArgs::Fork(ForkArgs {
                    child_pid: 5000,
                    child_tid: 5000,
                    flags: 0,
                }),
            ),
            sample(
                EventType::Procexit,
                EventArgs::Exit(ExitArgs { status: 256 }),
            ),
        ];
        for event in events {
            let bytes = encode(&event, &clock);
            assert_eq!(bytes.len(), payload_size(event.event_type));
            assert_eq!(
                decode(&bytes, &clock),
                Ok(event.clone()),
                "{:?}",
                event.event_type
            );
            // A longer record (newer kernel side) still decodes.
            let mut longer = bytes.clone();
            longer.extend_from_slice(&[0; 16]);
            assert_eq!(decode(&longer, &clock), Ok(event.clone()));
            // A cut one does not, and says why.
            let err = decode(&bytes[..bytes.len() - 1], &clock).unwrap_err();
            assert!(matches!(err, DecodeError::Truncated { .. }), "{err}");
        }
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        let clock = BootClock::with_offset(0);
        assert_eq!(decode(&[], &clock), Err(DecodeError::Short(0)));
        let mut header = RecordHeader::zeroed();
        header.kind = 999;
        assert_eq!(
            decode(bytemuck::bytes_of(&header), &clock),
            Err(DecodeError::UnknownKind(999))
        );
        // Strings without a NUL and an args_len beyond the array are bounded.
        let mut r = ExecRecord::zeroed();
        r.header.kind = EventType::Execve as u16;
        r.filename = [b'a'; PATH_LEN];
        r.args = [b'x'; ARGS_LEN];
        r.args_len = u32::MAX;
        r.argc = 3;
        let event = decode(bytemuck::bytes_of(&r), &clock).unwrap();
        let EventArgs::Exec(exec) = event.args else {
            panic!("not an exec");
        };
        assert_eq!(exec.filename.len(), PATH_LEN);
        assert_eq!(exec.argv, vec!["x".repeat(ARGS_LEN)]);
        assert!(exec.argv_truncated);
    }

    #[test]
    fn long_strings_are_cut_and_flagged() {
        let clock = BootClock::with_offset(0);
        let event = sample(
            EventType::Execve,
            EventArgs::Exec(ExecArgs {
                filename: "f".repeat(1000),
                argv: vec!["a".repeat(600), "b".repeat(600)],
                ..Default::default()
            }),
        );
        let bytes = encode(&event, &clock);
        let decoded = decode(&bytes, &clock).unwrap();
        let EventArgs::Exec(exec) = decoded.args else {
            panic!("not an exec");
        };
        assert_eq!(exec.filename.len(), PATH_LEN - 1);
        assert_eq!(exec.argv.len(), 1);
        assert!(exec.argv_truncated);
    }

    #[test]
    fn v4_mapped_peers_show_as_v4() {
        let mapped = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets();
        let addr = socket_addr(SocketFamily::Inet6, mapped, 443u16.to_be()).unwrap();
        assert_eq!(addr, "10.1.2.3:443".parse().unwrap());
    }

    /// Found by the `security_wire` fuzz target (CI, 12-03): what decodes must re-encode to
    /// a record that decodes the same, or replay and the rule tests see other events.
    #[test]
    fn decoded_events_re_encode_stably() {
        let clock = BootClock::with_offset(0);
        let stable = |bytes: &[u8]| {
            let once = decode(bytes, &clock).unwrap();
            let twice = decode(&encode(&once, &clock), &clock).unwrap();
            let thrice = decode(&encode(&twice, &clock), &clock).unwrap();
            assert_eq!(thrice, twice);
            twice
        };

        // A v4-mapped peer of a v6 socket, all-zero mapped address included.
        let mut r = SocketRecord::zeroed();
        r.header.kind = EventType::Connect as u16;
        r.family = libc::AF_INET6 as u16;
        r.remote_addr = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets();
        r.remote_port = 443u16.to_be();
        r.local_addr = Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets();
        let event = decode(bytemuck::bytes_of(&r), &clock).unwrap();
        assert_eq!(decode(&encode(&event, &clock), &clock), Ok(event));
        let EventArgs::Socket(socket) = stable(bytemuck::bytes_of(&r)).args else {
            panic!("not a socket");
        };
        assert_eq!(socket.remote, Some("10.1.2.3:443".parse().unwrap()));
        assert_eq!(socket.local, Some("0.0.0.0:0".parse().unwrap()));

        // argv filling the whole array without a final NUL: re-encoding drops the last
        // argument, and the event must keep saying it was cut.
        let mut r = ExecRecord::zeroed();
        r.header.kind = EventType::Execve as u16;
        r.args = [b'x'; ARGS_LEN];
        r.args[10] = 0;
        r.args_len = ARGS_LEN as u32;
        r.argc = 2;
        let EventArgs::Exec(exec) = stable(bytemuck::bytes_of(&r)).args else {
            panic!("not an exec");
        };
        assert_eq!(exec.argv, vec!["x".repeat(10)]);
        assert!(exec.argv_truncated);

        // A 4-byte character cut by the array's end.
        let mut r = ExecRecord::zeroed();
        r.header.kind = EventType::Execve as u16;
        r.filename = [b'f'; PATH_LEN];
        r.filename[PATH_LEN - 5..PATH_LEN - 1].copy_from_slice("\u{1F600}".as_bytes());
        let EventArgs::Exec(exec) = stable(bytemuck::bytes_of(&r)).args else {
            panic!("not an exec");
        };
        assert!(exec.argv_truncated);
    }
}
