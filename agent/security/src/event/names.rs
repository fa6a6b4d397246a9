//! Symbolic names of syscall arguments, spelled as Falco prints them (`O_WRONLY|O_TRUNC`,
//! `PTRACE_ATTACH`, `ENOENT`, `CAP_SYS_ADMIN`, …), so rules written for Falco match.
//!
//! Values come from `libc` where they differ between architectures (open flags do).

/// A set of bit flags with their names, in the order Falco prints them.
pub struct FlagTable {
    pub names: &'static [(u64, &'static str)],
}

impl FlagTable {
    /// `A|B|C` for the bits set in `value` (unknown bits are left out, as Falco does).
    pub fn render(&self, value: u64, out: &mut String) {
        let mut first = true;
        for (bit, name) in self.names {
            if *bit != 0 && value & bit == *bit {
                if !first {
                    out.push('|');
                }
                out.push_str(name);
                first = false;
            }
        }
    }

    /// The bit of a flag name (`O_TRUNC` → its bit).
    pub fn bit(&self, name: &str) -> Option<u64> {
        self.names
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(bit, _)| *bit)
    }
}

/// A set of enumerated values with their names.
pub struct EnumTable {
    pub names: &'static [(i64, &'static str)],
}

impl EnumTable {
    pub fn name(&self, value: i64) -> Option<&'static str> {
        self.names
            .iter()
            .find(|(v, _)| *v == value)
            .map(|(_, n)| *n)
    }

    pub fn value(&self, name: &str) -> Option<i64> {
        self.names.iter().find(|(_, n)| *n == name).map(|(v, _)| *v)
    }
}

macro_rules! bits {
    ($($name:ident),* $(,)?) => {
        &[$((libc::$name as u64, stringify!($name))),*]
    };
}

/// `open(2)` flags other than the access mode (which [`render_open_flags`] prints first).
pub static OPEN_FLAGS: FlagTable = FlagTable {
    names: bits![
        O_CREAT,
        O_EXCL,
        O_NOCTTY,
        O_TRUNC,
        O_APPEND,
        O_NONBLOCK,
        O_DSYNC,
        O_DIRECT,
        O_LARGEFILE,
        O_DIRECTORY,
        O_NOFOLLOW,
        O_NOATIME,
        O_CLOEXEC,
        O_PATH,
    ],
};

/// Access mode of open flags (`O_ACCMODE`).
pub fn access_mode(flags: u32) -> u32 {
    flags & libc::O_ACCMODE as u32
}

/// Falco's rendering of open flags: the access mode, then the other flags
/// (`O_WRONLY|O_CREAT|O_TRUNC`). `O_TMPFILE` includes `O_DIRECTORY`'s bit, so it is tested
/// as a whole.
pub fn render_open_flags(flags: u32, out: &mut String) {
    out.push_str(match access_mode(flags) as i32 {
        libc::O_WRONLY => "O_WRONLY",
        libc::O_RDWR => "O_RDWR",
        _ => "O_RDONLY",
    });
    let tmpfile = libc::O_TMPFILE as u32;
    let mut rest = u64::from(flags & !(libc::O_ACCMODE as u32));
    if flags & tmpfile == tmpfile {
        out.push_str("|O_TMPFILE");
        rest &= !u64::from(tmpfile);
    }
    if rest != 0 {
        out.push('|');
        OPEN_FLAGS.render(rest, out);
        if out.ends_with('|') {
            out.pop();
        }
    }
}

/// The bit(s) of an open flag name, including the access modes and `O_TMPFILE`.
pub fn open_flag_bits(name: &str) -> Option<OpenFlagTest> {
    match name {
        "O_RDONLY" => Some(OpenFlagTest::AccessMode(libc::O_RDONLY as u32)),
        "O_WRONLY" => Some(OpenFlagTest::AccessMode(libc::O_WRONLY as u32)),
        "O_RDWR" => Some(OpenFlagTest::AccessMode(libc::O_RDWR as u32)),
        "O_TMPFILE" => Some(OpenFlagTest::Bits(libc::O_TMPFILE as u64)),
        _ => OPEN_FLAGS.bit(name).map(OpenFlagTest::Bits),
    }
}

/// How an open flag name is tested against a flags value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFlagTest {
    AccessMode(u32),
    Bits(u64),
}

impl OpenFlagTest {
    pub fn matches(self, flags: u64) -> bool {
        match self {
            OpenFlagTest::AccessMode(mode) => access_mode(flags as u32) == mode,
            OpenFlagTest::Bits(bits) => flags & bits == bits,
        }
    }
}

/// `mount(2)` flags.
pub static MOUNT_FLAGS: FlagTable = FlagTable {
    names: bits![
        MS_RDONLY,
        MS_NOSUID,
        MS_NODEV,
        MS_NOEXEC,
        MS_SYNCHRONOUS,
        MS_REMOUNT,
        MS_MANDLOCK,
        MS_DIRSYNC,
        MS_NOATIME,
        MS_NODIRATIME,
        MS_BIND,
        MS_MOVE,
        MS_REC,
        MS_SILENT,
        MS_POSIXACL,
        MS_UNBINDABLE,
        MS_PRIVATE,
        MS_SLAVE,
        MS_SHARED,
        MS_RELATIME,
        MS_KERNMOUNT,
        MS_I_VERSION,
        MS_STRICTATIME,
        MS_LAZYTIME,
    ],
};

/// `clone(2)`/`unshare(2)` flags.
pub static CLONE_FLAGS: FlagTable = FlagTable {
    names: bits![
        CLONE_FILES,
        CLONE_FS,
        CLONE_NEWCGROUP,
        CLONE_NEWIPC,
        CLONE_NEWNET,
        CLONE_NEWNS,
        CLONE_NEWPID,
        CLONE_NEWUSER,
        CLONE_NEWUTS,
        CLONE_PARENT,
        CLONE_PTRACE,
        CLONE_SIGHAND,
        CLONE_SYSVSEM,
        CLONE_THREAD,
        CLONE_UNTRACED,
        CLONE_VFORK,
        CLONE_VM,
        CLONE_IO,
    ],
};

/// `setns(2)` namespace types (0 = any).
pub static NS_TYPES: EnumTable = EnumTable {
    names: &[
        (0, "0"),
        (libc::CLONE_NEWCGROUP as i64, "CLONE_NEWCGROUP"),
        (libc::CLONE_NEWIPC as i64, "CLONE_NEWIPC"),
        (libc::CLONE_NEWNET as i64, "CLONE_NEWNET"),
        (libc::CLONE_NEWNS as i64, "CLONE_NEWNS"),
        (libc::CLONE_NEWPID as i64, "CLONE_NEWPID"),
        (libc::CLONE_NEWUSER as i64, "CLONE_NEWUSER"),
        (libc::CLONE_NEWUTS as i64, "CLONE_NEWUTS"),
        (0x80, "CLONE_NEWTIME"),
    ],
};

/// `ptrace(2)` requests (numbers from `<linux/ptrace.h>`, shared by x86_64 and aarch64
/// except the register requests, which aarch64 does not implement).
pub static PTRACE_REQUESTS: EnumTable = EnumTable {
    names: &[
        (0, "PTRACE_TRACEME"),
        (1, "PTRACE_PEEKTEXT"),
        (2, "PTRACE_PEEKDATA"),
        (3, "PTRACE_PEEKUSR"),
        (4, "PTRACE_POKETEXT"),
        (5, "PTRACE_POKEDATA"),
        (6, "PTRACE_POKEUSR"),
        (7, "PTRACE_CONT"),
        (8, "PTRACE_KILL"),
        (9, "PTRACE_SINGLESTEP"),
        (12, "PTRACE_GETREGS"),
        (13, "PTRACE_SETREGS"),
        (14, "PTRACE_GETFPREGS"),
        (15, "PTRACE_SETFPREGS"),
        (16, "PTRACE_ATTACH"),
        (17, "PTRACE_DETACH"),
        (18, "PTRACE_GETFPXREGS"),
        (19, "PTRACE_SETFPXREGS"),
        (24, "PTRACE_SYSCALL"),
        (31, "PTRACE_SYSEMU"),
        (32, "PTRACE_SYSEMU_SINGLESTEP"),
        (0x4200, "PTRACE_SETOPTIONS"),
        (0x4201, "PTRACE_GETEVENTMSG"),
        (0x4202, "PTRACE_GETSIGINFO"),
        (0x4203, "PTRACE_SETSIGINFO"),
        (0x4204, "PTRACE_GETREGSET"),
        (0x4205, "PTRACE_SETREGSET"),
        (0x4206, "PTRACE_SEIZE"),
        (0x4207, "PTRACE_INTERRUPT"),
        (0x4208, "PTRACE_LISTEN"),
        (0x4209, "PTRACE_PEEKSIGINFO"),
        (0x420a, "PTRACE_GETSIGMASK"),
        (0x420b, "PTRACE_SETSIGMASK"),
        (0x420c, "PTRACE_SECCOMP_GET_FILTER"),
        (0x420e, "PTRACE_GET_SYSCALL_INFO"),
    ],
};

/// `bpf(2)` commands (`enum bpf_cmd`).
pub static BPF_COMMANDS: EnumTable = EnumTable {
    names: &[
        (0, "BPF_MAP_CREATE"),
        (1, "BPF_MAP_LOOKUP_ELEM"),
        (2, "BPF_MAP_UPDATE_ELEM"),
        (3, "BPF_MAP_DELETE_ELEM"),
        (4, "BPF_MAP_GET_NEXT_KEY"),
        (5, "BPF_PROG_LOAD"),
        (6, "BPF_OBJ_PIN"),
        (7, "BPF_OBJ_GET"),
        (8, "BPF_PROG_ATTACH"),
        (9, "BPF_PROG_DETACH"),
        (10, "BPF_PROG_TEST_RUN"),
        (11, "BPF_PROG_GET_NEXT_ID"),
        (12, "BPF_MAP_GET_NEXT_ID"),
        (13, "BPF_PROG_GET_FD_BY_ID"),
        (14, "BPF_MAP_GET_FD_BY_ID"),
        (15, "BPF_OBJ_GET_INFO_BY_FD"),
        (16, "BPF_PROG_QUERY"),
        (17, "BPF_RAW_TRACEPOINT_OPEN"),
        (18, "BPF_BTF_LOAD"),
        (19, "BPF_BTF_GET_FD_BY_ID"),
        (20, "BPF_TASK_FD_QUERY"),
        (21, "BPF_MAP_LOOKUP_AND_DELETE_ELEM"),
        (22, "BPF_MAP_FREEZE"),
        (23, "BPF_BTF_GET_NEXT_ID"),
        (24, "BPF_MAP_LOOKUP_BATCH"),
        (25, "BPF_MAP_LOOKUP_AND_DELETE_BATCH"),
        (26, "BPF_MAP_UPDATE_BATCH"),
        (27, "BPF_MAP_DELETE_BATCH"),
        (28, "BPF_LINK_CREATE"),
        (29, "BPF_LINK_UPDATE"),
        (30, "BPF_LINK_GET_FD_BY_ID"),
        (31, "BPF_LINK_GET_NEXT_ID"),
        (32, "BPF_ENABLE_STATS"),
        (33, "BPF_ITER_CREATE"),
        (34, "BPF_LINK_DETACH"),
        (35, "BPF_PROG_BIND_MAP"),
        (36, "BPF_TOKEN_CREATE"),
    ],
};

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        &[$((libc::$name as i64, stringify!($name))),*]
    };
}

/// errno values, for `evt.res` (`ENOENT`, `EPERM`, …).
pub static ERRNO: EnumTable = EnumTable {
    names: errnos![
        EPERM,
        ENOENT,
        ESRCH,
        EINTR,
        EIO,
        ENXIO,
        E2BIG,
        ENOEXEC,
        EBADF,
        ECHILD,
        EAGAIN,
        ENOMEM,
        EACCES,
        EFAULT,
        ENOTBLK,
        EBUSY,
        EEXIST,
        EXDEV,
        ENODEV,
        ENOTDIR,
        EISDIR,
        EINVAL,
        ENFILE,
        EMFILE,
        ENOTTY,
        ETXTBSY,
        EFBIG,
        ENOSPC,
        ESPIPE,
        EROFS,
        EMLINK,
        EPIPE,
        EDOM,
        ERANGE,
        EDEADLK,
        ENAMETOOLONG,
        ENOLCK,
        ENOSYS,
        ENOTEMPTY,
        ELOOP,
        ENOMSG,
        EIDRM,
        ENOSTR,
        ENODATA,
        ETIME,
        ENOSR,
        ENOPKG,
        EPROTO,
        EBADMSG,
        EOVERFLOW,
        EILSEQ,
        EUSERS,
        ENOTSOCK,
        EDESTADDRREQ,
        EMSGSIZE,
        EPROTOTYPE,
        ENOPROTOOPT,
        EPROTONOSUPPORT,
        ESOCKTNOSUPPORT,
        EOPNOTSUPP,
        EPFNOSUPPORT,
        EAFNOSUPPORT,
        EADDRINUSE,
        EADDRNOTAVAIL,
        ENETDOWN,
        ENETUNREACH,
        ENETRESET,
        ECONNABORTED,
        ECONNRESET,
        ENOBUFS,
        EISCONN,
        ENOTCONN,
        ESHUTDOWN,
        ETOOMANYREFS,
        ETIMEDOUT,
        ECONNREFUSED,
        EHOSTDOWN,
        EHOSTUNREACH,
        EALREADY,
        EINPROGRESS,
        ESTALE,
        EDQUOT,
        ECANCELED,
        ENOKEY,
        EKEYEXPIRED,
        EKEYREVOKED,
        EKEYREJECTED,
        EOWNERDEAD,
        ENOTRECOVERABLE,
    ],
};

/// Capability names by bit number (`<linux/capability.h>`).
pub static CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Falco's rendering of a capability set: names separated by spaces.
pub fn render_capabilities(caps: u64, out: &mut String) {
    let mut first = true;
    for (bit, name) in CAPABILITIES.iter().enumerate() {
        if caps & (1u64 << bit) != 0 {
            if !first {
                out.push(' ');
            }
            out.push_str(name);
            first = false;
        }
    }
}

/// The bit of a capability name (`CAP_SYS_ADMIN`, case-insensitive, `CAP_` optional).
pub fn capability_bit(name: &str) -> Option<u64> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    CAPABILITIES
        .iter()
        .position(|n| *n == full)
        .map(|bit| 1u64 << bit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_open_flags_like_falco() {
        let mut out = String::new();
        render_open_flags(
            (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC) as u32,
            &mut out,
        );
        assert_eq!(out, "O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC");
        out.clear();
        render_open_flags(0, &mut out);
        assert_eq!(out, "O_RDONLY");
        out.clear();
        render_open_flags((libc::O_RDWR | libc::O_TMPFILE) as u32, &mut out);
        assert_eq!(out, "O_RDWR|O_TMPFILE");
        assert!(
            open_flag_bits("O_TRUNC")
                .unwrap()
                .matches(libc::O_TRUNC as u64)
        );
        assert!(
            !open_flag_bits("O_RDONLY")
                .unwrap()
                .matches(libc::O_RDWR as u64)
        );
    }

    #[test]
    fn capabilities_and_enums() {
        let mut out = String::new();
        render_capabilities((1 << 16) | (1 << 21), &mut out);
        assert_eq!(out, "CAP_SYS_MODULE CAP_SYS_ADMIN");
        assert_eq!(capability_bit("sys_module"), Some(1 << 16));
        assert_eq!(PTRACE_REQUESTS.name(16), Some("PTRACE_ATTACH"));
        assert_eq!(ERRNO.value("EINPROGRESS"), Some(libc::EINPROGRESS as i64));
        assert_eq!(BPF_COMMANDS.value("BPF_PROG_LOAD"), Some(5));
    }
}
