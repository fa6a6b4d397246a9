//! `sys_enter` raw tracepoint: counts syscalls per (cgroup v2 id, syscall nr), packed into
//! one u64 key (`SysKey`: the kernel hashes the key on every syscall, 8 bytes cost less). The
//! security capture (exec/fork/exit with process context, filtered opens, connects,
//! ptrace, modules, mounts, set*id, bpf, namespaces) is in `security.rs`.
//!
//! A raw tracepoint (not the classic `raw_syscalls/sys_enter` tracepoint) because it needs
//! no tracefs and skips the perf-event argument copy, so it is the cheapest hook per syscall.
// std (with a dummy main) on the host, so `cargo clippy --workspace` can check this crate.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod security;

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_get_current_cgroup_id,
    macros::{map, raw_tracepoint},
    maps::{Array, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::RawTracePointContext,
};
use syscalls_common::{DEFAULT_COUNTS_ENTRIES, FILTER_LEN, STAT_COUNTS_FULL, STATS_LEN, SysKey};

/// Counters, per CPU so that increments need no atomics. Pinned by name in bpffs so that a
/// new leader after a handover reuses the map and the counters stay monotonic.
#[map]
static COUNTS: PerCpuHashMap<SysKey, u64> = PerCpuHashMap::pinned(DEFAULT_COUNTS_ENTRIES, 0);

/// Lost increments and dropped events (indexes `STAT_*`). Pinned for the same reason.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::pinned(STATS_LEN, 0);

/// Syscall nr → record kind reported at `sys_exit` (0: none). Written by user space.
#[map]
pub(crate) static FILTER: Array<u8> = Array::with_max_entries(FILTER_LEN, 0);

/// Security records (`syscalls_common::wire`) for the leader's security engine. 4 MiB:
/// an exec record is 1.6 KiB, so this holds ~2500 execs of backlog.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Raw tracepoint `sys_enter(struct pt_regs *regs, long id)`.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    try_sys_enter(&ctx).unwrap_or_default()
}

/// Benchmark baseline: an empty program on the same hook separates what the hook itself
/// costs (the tracing slow path of every syscall) from what our program adds.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_noop(_ctx: RawTracePointContext) -> i32 {
    0
}

/// Benchmark breakdown: the cgroup id helper alone, so that the bench can tell what of our
/// cost is the helper and what the counter map.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_cgroup_id(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: helper without arguments, available to raw tracepoints.
    // Returned so that the call is not optimised away (the hook ignores the value).
    unsafe { bpf_get_current_cgroup_id() as i32 }
}

#[inline(always)]
fn try_sys_enter(ctx: &RawTracePointContext) -> Result<i32, i64> {
    let nr: i64 = ctx.arg(1);
    // nr == -1 for a syscall that ptrace/seccomp skipped; it never runs, so don't count it.
    if nr < 0 {
        return Ok(0);
    }
    // SAFETY: helper without arguments, available to raw tracepoints.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    match SysKey::new(cgroup_id, nr as u64) {
        Some(key) => count(&key),
        // A cgroup id of 2^52 or more (see SysKey; never seen): counted as not counted.
        None => bump_stat(STAT_COUNTS_FULL),
    }
    Ok(0)
}

#[inline(always)]
fn count(key: &SysKey) {
    if let Some(value) = COUNTS.get_ptr_mut(key) {
        // SAFETY: per-CPU slot of an existing element; only this CPU writes it.
        unsafe { *value += 1 };
        return;
    }
    // NOEXIST: if another CPU created the element meanwhile, don't overwrite its slot…
    match COUNTS.insert(key, 1, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        Err(_) => match COUNTS.get_ptr_mut(key) {
            // …but add to our own slot of the element it created.
            Some(value) => unsafe { *value += 1 },
            // The map is full: count the loss so user space can expose it.
            None => bump_stat(STAT_COUNTS_FULL),
        },
    }
}

#[inline(always)]
pub(crate) fn bump_stat(index: u32) {
    if let Some(value) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU array slot; only this CPU writes it.
        unsafe { *value += 1 };
    } else {
        let _ = STATS.set(index, 1, u64::from(BPF_ANY));
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: required for bpf_get_current_comm and friends.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

// Host builds (`cargo clippy --workspace` on stable) get a dummy main.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
