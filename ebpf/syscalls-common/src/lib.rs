//! Types shared between the `sys_enter` eBPF program and node-agent. Every type is
//! `#[repr(C)]` (`SysKey`: one transparent u64) with explicit padding-free layouts, because
//! the kernel copies them as bytes.
#![cfg_attr(not(test), no_std)]

/// Key of the `COUNTS` map: (cgroup v2 id, syscall number) packed into one u64, because the
/// kernel hashes and compares every key byte on every syscall: 8 bytes cost ~2.5 ns less
/// per syscall than the former two u64 (`cargo xtask bench syscalls`, bpf_stats, 12-03).
///
/// `cgroup id << NR_BITS | slot`. The slot is the syscall number for 0..2048 (every native
/// x86_64 and aarch64 number), 2048 + n for the x86_64 x32 number `X32_SYSCALL_BIT + n`
/// (n < 2047), and [`SysKey::SLOT_INVALID`] for any other number (none exists: the kernel
/// returns ENOSYS). Cgroup ids fit below 2^52: on 64-bit kernels the id is the kernfs inode
/// number, 32 bits plus a count of its wraparounds (2^20 wraps of 2^32 cgroups would be
/// needed), so [`SysKey::new`] refusing larger ids never happens in practice.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SysKey(u64);

impl SysKey {
    /// Bits of the syscall slot.
    pub const NR_BITS: u32 = 12;
    const SLOT_MASK: u64 = (1 << Self::NR_BITS) - 1;
    /// First slot of the x32 numbers.
    const SLOT_X32: u64 = 1 << (Self::NR_BITS - 1);
    /// Slot of every number that is no syscall.
    pub const SLOT_INVALID: u64 = Self::SLOT_MASK;
    /// `__X32_SYSCALL_BIT` of x86_64.
    pub const X32_SYSCALL_BIT: u64 = 0x4000_0000;
    /// What [`SysKey::nr`] returns for [`SysKey::SLOT_INVALID`].
    pub const NR_INVALID: u64 = u64::MAX;

    /// The key of `nr` (the raw tracepoint's `id`, non-negative) in cgroup `cgroup_id`;
    /// `None` for an id of 2^52 or more.
    #[inline(always)]
    pub const fn new(cgroup_id: u64, nr: u64) -> Option<SysKey> {
        if cgroup_id >> (64 - Self::NR_BITS) != 0 {
            return None;
        }
        let slot = if nr < Self::SLOT_X32 {
            nr
        } else if nr >= Self::X32_SYSCALL_BIT
            && nr - Self::X32_SYSCALL_BIT < Self::SLOT_INVALID - Self::SLOT_X32
        {
            Self::SLOT_X32 + (nr - Self::X32_SYSCALL_BIT)
        } else {
            Self::SLOT_INVALID
        };
        Some(SysKey((cgroup_id << Self::NR_BITS) | slot))
    }

    /// The cgroup v2 id (`bpf_get_current_cgroup_id()`).
    pub const fn cgroup_id(self) -> u64 {
        self.0 >> Self::NR_BITS
    }

    /// The syscall number, [`SysKey::NR_INVALID`] for any number that is no syscall.
    pub const fn nr(self) -> u64 {
        let slot = self.0 & Self::SLOT_MASK;
        if slot < Self::SLOT_X32 {
            slot
        } else if slot == Self::SLOT_INVALID {
            Self::NR_INVALID
        } else {
            Self::X32_SYSCALL_BIT + (slot - Self::SLOT_X32)
        }
    }
}

/// `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;

/// Number of entries of the `FILTER` array (syscall nr → `wire::kind` code to report at
/// `sys_exit`, 0 = not reported; written by user space, so disabled kinds cost one array
/// lookup and syscall numbering stays in user space). Covers every
/// x86_64 and aarch64 syscall number in use today.
pub const FILTER_LEN: u32 = 1024;

/// Default capacity of the `COUNTS` map (overridable from user space at load time).
pub const DEFAULT_COUNTS_ENTRIES: u32 = 16384;

/// Index in the `STATS` per-CPU array: increments that were lost because `COUNTS` was full.
pub const STAT_COUNTS_FULL: u32 = 0;
/// Index in `STATS`: security records dropped because the ring buffer was full.
pub const STAT_EVENTS_DROPPED: u32 = 1;
/// Length of the `STATS` array.
pub const STATS_LEN: u32 = 2;

/// Names of the maps, as user space looks them up (and as they are pinned in bpffs).
pub const MAP_COUNTS: &str = "COUNTS";
pub const MAP_STATS: &str = "STATS";
pub const MAP_FILTER: &str = "FILTER";
pub const MAP_EVENTS: &str = "EVENTS";
/// Name of the raw tracepoint program.
pub const PROG_SYS_ENTER: &str = "sys_enter";
/// Name of the empty program on the same hook (benchmark baseline only).
pub const PROG_SYS_ENTER_NOOP: &str = "sys_enter_noop";
/// Name of the program that only calls the cgroup id helper (benchmark breakdown only).
pub const PROG_SYS_ENTER_CGROUP_ID: &str = "sys_enter_cgroup_id";

/// Names of the security-capture maps and programs.
pub const MAP_OPEN_READ: &str = "OPEN_READ";
pub const MAP_OPEN_WRITE: &str = "OPEN_WRITE";
/// The `#[no_mangle]` read-only global holding [`KernelLayout`].
pub const GLOBAL_LAYOUT: &str = "LAYOUT";
pub const PROG_SYS_EXIT: &str = "sys_exit";
pub const PROG_SCHED_EXEC: &str = "sched_process_exec";
pub const PROG_SCHED_FORK: &str = "sched_process_fork";
pub const PROG_SCHED_EXIT: &str = "sched_process_exit";

/// Key data length of the open-prefix LPM tries (= [`wire::PATH_LEN`]).
pub const PREFIX_KEY_LEN: usize = wire::PATH_LEN;

/// Offsets (bytes) of the kernel structure fields the program reads, resolved by user space
/// from the running kernel's BTF before load (a poor man's CO-RE: aya-ebpf in Rust has no
/// field relocations). [`KernelLayout::UNKNOWN`] = the field does not exist on this kernel,
/// and the program leaves the value at its "unknown" default.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_real_parent: u32,
    pub task_cred: u32,
    pub task_loginuid: u32,
    pub task_signal: u32,
    pub task_mm: u32,
    pub task_exit_code: u32,
    pub signal_tty: u32,
    pub signal_live: u32,
    pub tty_index: u32,
    pub tty_driver: u32,
    pub driver_major: u32,
    pub driver_minor_start: u32,
    pub cred_euid: u32,
    pub cred_egid: u32,
    pub cred_cap_effective: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub bprm_filename: u32,
    pub bprm_argc: u32,
    /// `struct pt_regs` offset of the syscall number at `sys_exit` (`orig_ax`, `syscallno`).
    pub regs_nr: u32,
    /// `struct pt_regs` offsets of the six syscall arguments as they are at `sys_exit`
    /// (x86_64: di si dx r10 r8 r9; arm64: orig_x0, regs[1..6]).
    pub regs_args: [u32; 6],
}

impl KernelLayout {
    pub const UNKNOWN: u32 = u32::MAX;
    /// Every field unknown: what the object carries until user space overrides it.
    pub const UNSET: KernelLayout = KernelLayout {
        task_tgid: Self::UNKNOWN,
        task_pid: Self::UNKNOWN,
        task_real_parent: Self::UNKNOWN,
        task_cred: Self::UNKNOWN,
        task_loginuid: Self::UNKNOWN,
        task_signal: Self::UNKNOWN,
        task_mm: Self::UNKNOWN,
        task_exit_code: Self::UNKNOWN,
        signal_tty: Self::UNKNOWN,
        signal_live: Self::UNKNOWN,
        tty_index: Self::UNKNOWN,
        tty_driver: Self::UNKNOWN,
        driver_major: Self::UNKNOWN,
        driver_minor_start: Self::UNKNOWN,
        cred_euid: Self::UNKNOWN,
        cred_egid: Self::UNKNOWN,
        cred_cap_effective: Self::UNKNOWN,
        mm_arg_start: Self::UNKNOWN,
        mm_arg_end: Self::UNKNOWN,
        bprm_filename: Self::UNKNOWN,
        bprm_argc: Self::UNKNOWN,
        regs_nr: Self::UNKNOWN,
        regs_args: [Self::UNKNOWN; 6],
    };
}

/// The security records, byte for byte the contract of `node-agent-security`'s
/// `event::wire` (kept there with bytemuck proofs; `agent/syscalls` tests that the two
/// agree field by field).
pub mod wire {
    pub const COMM_LEN: usize = super::COMM_LEN;
    pub const PATH_LEN: usize = 256;
    pub const ARGS_LEN: usize = 1024;
    pub const PARAMS_LEN: usize = 128;
    pub const FSTYPE_LEN: usize = 32;
    pub const UNIX_PATH_LEN: usize = 108;
    pub const BPF_NAME_LEN: usize = 16;
    pub const FLAG_TRUNCATED: u16 = 1;
    pub const ID_UNCHANGED: u32 = u32::MAX;

    /// `EventType` codes (never reused).
    pub mod kind {
        pub const EXECVE: u16 = 1;
        pub const EXECVEAT: u16 = 2;
        pub const OPEN: u16 = 3;
        pub const OPENAT: u16 = 4;
        pub const OPENAT2: u16 = 5;
        pub const CONNECT: u16 = 6;
        pub const ACCEPT: u16 = 7;
        pub const ACCEPT4: u16 = 8;
        pub const PTRACE: u16 = 9;
        pub const INIT_MODULE: u16 = 10;
        pub const FINIT_MODULE: u16 = 11;
        pub const MOUNT: u16 = 12;
        pub const SETUID: u16 = 13;
        pub const SETGID: u16 = 14;
        pub const SETREUID: u16 = 15;
        pub const SETREGID: u16 = 16;
        pub const SETRESUID: u16 = 17;
        pub const SETRESGID: u16 = 18;
        pub const BPF: u16 = 19;
        pub const UNSHARE: u16 = 20;
        pub const SETNS: u16 = 21;
        pub const FORK: u16 = 22;
        pub const VFORK: u16 = 23;
        pub const CLONE: u16 = 24;
        pub const CLONE3: u16 = 25;
        pub const PROCEXIT: u16 = 26;
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct RecordHeader {
        pub kind: u16,
        pub flags: u16,
        pub size: u32,
        pub ts_boot_ns: u64,
        pub cgroup_id: u64,
        pub pid: u32,
        pub tid: u32,
        pub ppid: u32,
        pub uid: u32,
        pub gid: u32,
        pub loginuid: u32,
        pub res: i64,
        pub comm: [u8; COMM_LEN],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct ExecRecord {
        pub header: RecordHeader,
        pub tty: u32,
        pub argc: u32,
        pub args_len: u32,
        pub _pad: u32,
        pub cap_effective: u64,
        pub filename: [u8; PATH_LEN],
        pub exe_path: [u8; PATH_LEN],
        pub args: [u8; ARGS_LEN],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct OpenRecord {
        pub header: RecordHeader,
        pub dirfd: i32,
        pub flags: u32,
        pub mode: u32,
        pub _pad: u32,
        pub path: [u8; PATH_LEN],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SocketRecord {
        pub header: RecordHeader,
        pub fd: i32,
        pub family: u16,
        pub protocol: u16,
        pub local_port: u16,
        pub remote_port: u16,
        pub _pad: u32,
        pub local_addr: [u8; 16],
        pub remote_addr: [u8; 16],
        pub unix_path: [u8; UNIX_PATH_LEN],
        pub _pad2: [u8; 4],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct PtraceRecord {
        pub header: RecordHeader,
        pub request: i64,
        pub target_pid: i32,
        pub _pad: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct ModuleRecord {
        pub header: RecordHeader,
        pub fd: i32,
        pub flags: u32,
        pub path: [u8; PATH_LEN],
        pub params: [u8; PARAMS_LEN],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct MountRecord {
        pub header: RecordHeader,
        pub flags: u64,
        pub source: [u8; PATH_LEN],
        pub target: [u8; PATH_LEN],
        pub fstype: [u8; FSTYPE_LEN],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SetIdRecord {
        pub header: RecordHeader,
        pub ids: [u32; 3],
        pub _pad: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct BpfRecord {
        pub header: RecordHeader,
        pub cmd: i32,
        pub prog_type: u32,
        pub prog_name: [u8; BPF_NAME_LEN],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct UnshareRecord {
        pub header: RecordHeader,
        pub flags: u64,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SetnsRecord {
        pub header: RecordHeader,
        pub fd: i32,
        pub nstype: i32,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct ForkRecord {
        pub header: RecordHeader,
        pub child_pid: u32,
        pub child_tid: u32,
        pub clone_flags: u64,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct ExitRecord {
        pub header: RecordHeader,
        pub status: i32,
        pub _pad: u32,
    }

    const _: () = assert!(size_of::<RecordHeader>() == 72);
    const _: () = assert!(size_of::<ExecRecord>() == 72 + 24 + 2 * PATH_LEN + ARGS_LEN);
    const _: () = assert!(size_of::<SocketRecord>() == 232);
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data structs without padding (checked by the size asserts below).
    unsafe impl aya::Pod for super::SysKey {}
    unsafe impl aya::Pod for super::KernelLayout {}
}

const _: () = assert!(core::mem::size_of::<SysKey>() == 8);

#[cfg(test)]
mod tests {
    use super::SysKey;

    #[test]
    fn sys_key_round_trips_every_syscall_number() {
        let x32 = SysKey::X32_SYSCALL_BIT;
        for cgroup_id in [0, 1, 4242, u64::from(u32::MAX), (1 << 52) - 1] {
            for nr in (0..2048).chain(x32..x32 + 2047) {
                let key = SysKey::new(cgroup_id, nr).expect("representable");
                assert_eq!((key.cgroup_id(), key.nr()), (cgroup_id, nr));
            }
            for nr in [
                2048,
                x32 - 1,
                x32 + 2047,
                u64::from(u32::MAX),
                u64::MAX >> 1,
            ] {
                let key = SysKey::new(cgroup_id, nr).expect("representable");
                assert_eq!((key.cgroup_id(), key.nr()), (cgroup_id, SysKey::NR_INVALID));
            }
        }
        assert_eq!(SysKey::new(1 << 52, 39), None);
        assert_eq!(SysKey::new(u64::MAX, 39), None);
        // Distinct (cgroup, syscall) pairs stay distinct keys.
        assert_ne!(SysKey::new(1, 0), SysKey::new(0, 1));
        assert_ne!(SysKey::new(1, 2047), SysKey::new(2, 0));
    }
}
