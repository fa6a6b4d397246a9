//! Types shared between the `sys_enter` eBPF program and node-agent. Every type is
//! `#[repr(C)]` with explicit padding-free layouts, because the kernel copies them as bytes.
#![no_std]

/// Key of the `COUNTS` map: (cgroup v2 id, syscall number). Both u64 so there is no padding
/// (uninitialised padding bytes would make equal keys hash differently).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SysKey {
    /// `bpf_get_current_cgroup_id()`: inode number of the task's cgroup v2 directory.
    pub cgroup_id: u64,
    /// Syscall number of the current architecture.
    pub nr: u64,
}

/// One security-relevant syscall, sent through the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecurityEvent {
    pub cgroup_id: u64,
    pub nr: u64,
    /// Thread id (kernel "pid").
    pub pid: u32,
    /// Process id (kernel "tgid").
    pub tgid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: [u8; COMM_LEN],
}

/// `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;

/// Number of entries of the `FILTER` array (syscall nr → 1 = send an event). Covers every
/// x86_64 and aarch64 syscall number in use today.
pub const FILTER_LEN: u32 = 1024;

/// Default capacity of the `COUNTS` map (overridable from user space at load time).
pub const DEFAULT_COUNTS_ENTRIES: u32 = 16384;

/// Index in the `STATS` per-CPU array: increments that were lost because `COUNTS` was full.
pub const STAT_COUNTS_FULL: u32 = 0;
/// Index in `STATS`: security events dropped because the ring buffer was full.
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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data structs without padding (checked by the size asserts below).
    unsafe impl aya::Pod for super::SysKey {}
    unsafe impl aya::Pod for super::SecurityEvent {}
}

const _: () = assert!(core::mem::size_of::<SysKey>() == 16);
const _: () = assert!(core::mem::size_of::<SecurityEvent>() == 16 + 16 + COMM_LEN);
