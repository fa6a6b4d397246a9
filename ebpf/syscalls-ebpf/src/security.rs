//! Security capture: one `syscalls_common::wire` record per event in `EVENTS`, with the
//! process context Falco rules need (ppid, euid/egid, loginuid, tty, argv, cgroup).
//!
//! Hooks, all raw tracepoints (no tracefs, no kprobes):
//! * `sched_process_exec` / `sched_process_fork` / `sched_process_exit` keep user space's
//!   process table current (threads are skipped in the kernel: only new processes and the
//!   end of a thread group are sent);
//! * `sys_exit` reports the syscalls whose number `FILTER` maps to a record kind, with the
//!   return value. Only enabled kinds are in `FILTER`, so a disabled kind costs one array
//!   lookup, and a program whose kinds are all disabled is not attached at all;
//! * opens are filtered here by path prefix (two LPM tries: any open below a read prefix,
//!   opens for writing below a write prefix), so the common open costs no ring-buffer space.
//!
//! Kernel structures are read with `bpf_probe_read_kernel` at offsets user space resolved
//! from BTF (`LAYOUT`); an unknown offset leaves its value at the contract's "unknown".

use core::ffi::c_void;
use core::ptr::{addr_of, addr_of_mut};

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, generated,
    },
    macros::{map, raw_tracepoint},
    maps::{LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::RawTracePointContext,
};
use syscalls_common::{
    FILTER_LEN, KernelLayout, STAT_EVENTS_DROPPED,
    wire::{
        ARGS_LEN, BPF_NAME_LEN, BpfRecord, ExecRecord, ExitRecord, FLAG_TRUNCATED, FSTYPE_LEN,
        ForkRecord, ID_UNCHANGED, ModuleRecord, MountRecord, OpenRecord, PARAMS_LEN, PATH_LEN,
        PtraceRecord, RecordHeader, SetIdRecord, SetnsRecord, SocketRecord, UNIX_PATH_LEN,
        UnshareRecord, kind,
    },
};

use crate::{EVENTS, FILTER, bump_stat};

/// Field offsets, overridden by user space at load time (read-only data: the verifier sees
/// the constants and drops the branches of unknown fields).
#[unsafe(no_mangle)]
static LAYOUT: KernelLayout = KernelLayout::UNSET;

/// Path prefixes: an open of a path below one of these is reported, whatever its flags.
#[map]
static OPEN_READ: LpmTrie<[u8; PATH_LEN], u8> = LpmTrie::with_max_entries(64, 0);

/// Path prefixes: an open for writing (or creating) below one of these is reported.
#[map]
static OPEN_WRITE: LpmTrie<[u8; PATH_LEN], u8> = LpmTrie::with_max_entries(64, 0);

/// Per-CPU scratch for an open's path, used as the LPM lookup key (too big for the stack
/// next to everything else, and only the matching opens get ring-buffer space).
#[map]
static PATH_SCRATCH: PerCpuArray<Key<[u8; PATH_LEN]>> = PerCpuArray::with_max_entries(1, 0);

macro_rules! off {
    ($($field:tt)+) => {
        // SAFETY: reading a static; volatile so the compiler does not fold the placeholder
        // value (the loader rewrites it before the verifier sees it).
        {
            #[allow(unused_unsafe)]
            let value = unsafe { core::ptr::read_volatile(addr_of!(LAYOUT.$($field)+)) };
            value
        }
    };
}

const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
const O_CREAT: u64 = 0o100;
const AT_FDCWD: i32 = -100;
const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const BPF_PROG_LOAD: u64 = 5;

/// `*(base + off)` from kernel memory; `None` for a NULL base or an unknown field.
#[inline(always)]
fn kread<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == KernelLayout::UNKNOWN {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copes with any address (fails instead of faulting).
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T) }.ok()
}

#[inline(always)]
fn uread<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: as above, for user memory of the current task.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// Copies a NUL-terminated user string into `dst`; true when it may have been cut.
#[inline(always)]
unsafe fn ustr(dst: *mut u8, len: usize, src: u64) -> bool {
    // SAFETY: dst is `len` bytes of a reserved ring-buffer record.
    unsafe { *dst = 0 };
    if src == 0 {
        return false;
    }
    let n =
        unsafe { generated::bpf_probe_read_user_str(dst.cast(), len as u32, src as *const c_void) };
    n >= len as i64
}

/// Same for a kernel string.
#[inline(always)]
unsafe fn kstr(dst: *mut u8, len: usize, src: u64) -> bool {
    unsafe { *dst = 0 };
    if src == 0 {
        return false;
    }
    let n = unsafe {
        generated::bpf_probe_read_kernel_str(dst.cast(), len as u32, src as *const c_void)
    };
    n >= len as i64
}

/// Reserves a `T` in `EVENTS`, counting the drop when the ring buffer is full.
#[inline(always)]
fn reserve<T: 'static>() -> Option<*mut T> {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => Some(entry.as_mut_ptr()),
        None => {
            bump_stat(STAT_EVENTS_DROPPED);
            None
        }
    }
}

#[inline(always)]
fn submit<T>(record: *mut T) {
    // SAFETY: `record` came from a successful bpf_ringbuf_reserve and is submitted once.
    unsafe { generated::bpf_ringbuf_submit(record.cast(), 0) }
}

/// The common header, from the current task.
#[inline(always)]
unsafe fn header(h: *mut RecordHeader, kind: u16, size: usize, res: i64) {
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let ppid = kread::<u64>(task, off!(task_real_parent))
        .and_then(|parent| kread::<u32>(parent, off!(task_tgid)))
        .unwrap_or(0);
    let cred = kread::<u64>(task, off!(task_cred)).unwrap_or(0);
    let uid = kread::<u32>(cred, off!(cred_euid)).unwrap_or(uid_gid as u32);
    let gid = kread::<u32>(cred, off!(cred_egid)).unwrap_or((uid_gid >> 32) as u32);
    let loginuid = kread::<u32>(task, off!(task_loginuid)).unwrap_or(u32::MAX);
    let header = RecordHeader {
        kind,
        flags: 0,
        size: size as u32,
        // SAFETY: helpers without arguments.
        ts_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        ppid,
        uid,
        gid,
        loginuid,
        res,
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    // SAFETY: `h` points into a reserved record.
    unsafe { h.write(header) };
}

#[inline(always)]
unsafe fn set_truncated(h: *mut RecordHeader) {
    unsafe { (*h).flags |= FLAG_TRUNCATED };
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    let bprm: u64 = ctx.arg(2);
    let Some(r) = reserve::<ExecRecord>() else {
        return 0;
    };
    // SAFETY: `r` is a reserved ExecRecord; every field is written before submit (the
    // string arrays up to their NUL, which is all the decoder reads).
    unsafe {
        header(
            addr_of_mut!((*r).header),
            kind::EXECVE,
            size_of::<ExecRecord>(),
            0,
        );
        let task = bpf_get_current_task();
        let signal = kread::<u64>(task, off!(task_signal)).unwrap_or(0);
        let tty = kread::<u64>(signal, off!(signal_tty)).unwrap_or(0);
        let mut tty_nr = 0u32;
        if tty != 0 {
            let index = kread::<i32>(tty, off!(tty_index)).unwrap_or(0) as u32;
            let driver = kread::<u64>(tty, off!(tty_driver)).unwrap_or(0);
            let major = kread::<i32>(driver, off!(driver_major)).unwrap_or(0) as u32;
            let minor = (kread::<i32>(driver, off!(driver_minor_start)).unwrap_or(0) as u32)
                .wrapping_add(index);
            // new_encode_dev, as /proc/PID/stat's tty_nr.
            tty_nr = (major << 8) | (minor & 0xff) | ((minor & !0xff) << 12);
        }
        (*r).tty = tty_nr;
        (*r).argc = kread::<i32>(bprm, off!(bprm_argc)).unwrap_or(0) as u32;
        (*r)._pad = 0;
        let cred = kread::<u64>(task, off!(task_cred)).unwrap_or(0);
        (*r).cap_effective = kread::<u64>(cred, off!(cred_cap_effective)).unwrap_or(0);
        let filename = kread::<u64>(bprm, off!(bprm_filename)).unwrap_or(0);
        if kstr(addr_of_mut!((*r).filename).cast(), PATH_LEN, filename) {
            set_truncated(addr_of_mut!((*r).header));
        }
        (*r).exe_path[0] = 0;
        // argv as the new program sees it: [arg_start, arg_end) of the new mm, already
        // NUL-separated. Read at most ARGS_LEN bytes; the decoder compares with argc.
        let mm = kread::<u64>(task, off!(task_mm)).unwrap_or(0);
        let start = kread::<u64>(mm, off!(mm_arg_start)).unwrap_or(0);
        let end = kread::<u64>(mm, off!(mm_arg_end)).unwrap_or(0);
        let mut len = 0u32;
        if start != 0 && end > start {
            let want = end - start;
            if want > ARGS_LEN as u64 {
                set_truncated(addr_of_mut!((*r).header));
            }
            let n = if want > ARGS_LEN as u64 {
                ARGS_LEN as u32
            } else {
                want as u32
            };
            let rc = generated::bpf_probe_read_user(
                addr_of_mut!((*r).args).cast(),
                n & (2 * ARGS_LEN as u32 - 1),
                start as *const c_void,
            );
            if rc == 0 {
                len = n;
            }
        }
        (*r).args_len = len;
    }
    submit(r);
    0
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`, in the
/// parent's context. New threads are not sent.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let parent: u64 = ctx.arg(0);
    let child: u64 = ctx.arg(1);
    let child_tgid = kread::<u32>(child, off!(task_tgid)).unwrap_or(0);
    let child_pid = kread::<u32>(child, off!(task_pid)).unwrap_or(0);
    let parent_tgid = kread::<u32>(parent, off!(task_tgid)).unwrap_or(0);
    if child_tgid == 0 || child_tgid == parent_tgid {
        return 0;
    }
    let Some(r) = reserve::<ForkRecord>() else {
        return 0;
    };
    // SAFETY: reserved record, fully written.
    unsafe {
        header(
            addr_of_mut!((*r).header),
            kind::CLONE,
            size_of::<ForkRecord>(),
            0,
        );
        (*r).child_pid = child_tgid;
        (*r).child_tid = child_pid;
        (*r).clone_flags = 0;
    }
    submit(r);
    0
}

/// `sched_process_exit(struct task_struct *p, ...)`: only the thread group's end
/// (`signal->live` already dropped to 0).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let last = match kread::<u64>(task, off!(task_signal))
        .and_then(|s| kread::<i32>(s, off!(signal_live)))
    {
        Some(live) => live == 0,
        // Without the field: the group leader's exit stands for the process's.
        None => {
            let pid_tgid = bpf_get_current_pid_tgid();
            pid_tgid >> 32 == pid_tgid & 0xffff_ffff
        }
    };
    if !last {
        return 0;
    }
    let Some(r) = reserve::<ExitRecord>() else {
        return 0;
    };
    // SAFETY: reserved record, fully written.
    unsafe {
        header(
            addr_of_mut!((*r).header),
            kind::PROCEXIT,
            size_of::<ExitRecord>(),
            0,
        );
        (*r).status = kread::<i32>(task, off!(task_exit_code)).unwrap_or(0);
        (*r)._pad = 0;
    }
    submit(r);
    0
}

/// Raw tracepoint `sys_exit(struct pt_regs *regs, long ret)`.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let Some(nr) = kread::<i64>(regs, off!(regs_nr)) else {
        return 0;
    };
    if nr < 0 || nr >= i64::from(FILTER_LEN) {
        return 0;
    }
    let k = match FILTER.get(nr as u32) {
        Some(k) if *k != 0 => u16::from(*k),
        _ => return 0,
    };
    let a0 = kread::<u64>(regs, off!(regs_args[0])).unwrap_or(0);
    let a1 = kread::<u64>(regs, off!(regs_args[1])).unwrap_or(0);
    let a2 = kread::<u64>(regs, off!(regs_args[2])).unwrap_or(0);
    match k {
        kind::OPEN => on_open(k, AT_FDCWD, a0, a1, a2, ret),
        kind::OPENAT => {
            let a3 = kread::<u64>(regs, off!(regs_args[3])).unwrap_or(0);
            on_open(k, a0 as i32, a1, a2, a3, ret)
        }
        kind::OPENAT2 => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let flags = uread::<u64>(a2).unwrap_or(0);
            let mode = uread::<u64>(a2.wrapping_add(8)).unwrap_or(0);
            on_open(k, a0 as i32, a1, flags, mode, ret)
        }
        kind::CONNECT => on_socket(k, a0 as i32, a1, ret),
        kind::ACCEPT | kind::ACCEPT4 => {
            let fd = if ret >= 0 { ret as i32 } else { a0 as i32 };
            on_socket(k, fd, a1, ret)
        }
        kind::PTRACE => {
            if let Some(r) = reserve::<PtraceRecord>() {
                unsafe {
                    header(addr_of_mut!((*r).header), k, size_of::<PtraceRecord>(), ret);
                    (*r).request = a0 as i64;
                    (*r).target_pid = a1 as i32;
                    (*r)._pad = 0;
                }
                submit(r);
            }
        }
        kind::INIT_MODULE | kind::FINIT_MODULE => {
            if let Some(r) = reserve::<ModuleRecord>() {
                unsafe {
                    header(addr_of_mut!((*r).header), k, size_of::<ModuleRecord>(), ret);
                    let (fd, params, flags) = if k == kind::FINIT_MODULE {
                        (a0 as i32, a1, a2 as u32)
                    } else {
                        (-1, a2, 0)
                    };
                    (*r).fd = fd;
                    (*r).flags = flags;
                    (*r).path[0] = 0;
                    if ustr(addr_of_mut!((*r).params).cast(), PARAMS_LEN, params) {
                        set_truncated(addr_of_mut!((*r).header));
                    }
                }
                submit(r);
            }
        }
        kind::MOUNT => {
            let a3 = kread::<u64>(regs, off!(regs_args[3])).unwrap_or(0);
            if let Some(r) = reserve::<MountRecord>() {
                unsafe {
                    header(addr_of_mut!((*r).header), k, size_of::<MountRecord>(), ret);
                    (*r).flags = a3;
                    let mut cut = ustr(addr_of_mut!((*r).source).cast(), PATH_LEN, a0);
                    cut |= ustr(addr_of_mut!((*r).target).cast(), PATH_LEN, a1);
                    cut |= ustr(addr_of_mut!((*r).fstype).cast(), FSTYPE_LEN, a2);
                    if cut {
                        set_truncated(addr_of_mut!((*r).header));
                    }
                }
                submit(r);
            }
        }
        kind::SETUID
        | kind::SETGID
        | kind::SETREUID
        | kind::SETREGID
        | kind::SETRESUID
        | kind::SETRESGID => {
            let ids = match k {
                kind::SETUID | kind::SETGID => [ID_UNCHANGED, a0 as u32, ID_UNCHANGED],
                kind::SETREUID | kind::SETREGID => [a0 as u32, a1 as u32, ID_UNCHANGED],
                _ => [a0 as u32, a1 as u32, a2 as u32],
            };
            if let Some(r) = reserve::<SetIdRecord>() {
                unsafe {
                    header(addr_of_mut!((*r).header), k, size_of::<SetIdRecord>(), ret);
                    (*r).ids = ids;
                    (*r)._pad = 0;
                }
                submit(r);
            }
        }
        kind::BPF => {
            if let Some(r) = reserve::<BpfRecord>() {
                unsafe {
                    header(addr_of_mut!((*r).header), k, size_of::<BpfRecord>(), ret);
                    (*r).cmd = a0 as i32;
                    (*r).prog_type = 0;
                    (*r).prog_name[0] = 0;
                    if a0 == BPF_PROG_LOAD {
                        // union bpf_attr, BPF_PROG_LOAD: prog_type at 0, prog_name at 48.
                        (*r).prog_type = uread::<u32>(a1).unwrap_or(0);
                        if let Some(name) = uread::<[u8; BPF_NAME_LEN]>(a1.wrapping_add(48)) {
                            (*r).prog_name = name;
                            (*r).prog_name[BPF_NAME_LEN - 1] = 0;
                        }
                    }
                }
                submit(r);
            }
        }
        kind::UNSHARE => {
            if let Some(r) = reserve::<UnshareRecord>() {
                unsafe {
                    header(
                        addr_of_mut!((*r).header),
                        k,
                        size_of::<UnshareRecord>(),
                        ret,
                    );
                    (*r).flags = a0;
                }
                submit(r);
            }
        }
        kind::SETNS => {
            if let Some(r) = reserve::<SetnsRecord>() {
                unsafe {
                    header(addr_of_mut!((*r).header), k, size_of::<SetnsRecord>(), ret);
                    (*r).fd = a0 as i32;
                    (*r).nstype = a1 as i32;
                }
                submit(r);
            }
        }
        _ => {}
    }
    0
}

#[inline(always)]
fn on_open(k: u16, dirfd: i32, path: u64, flags: u64, mode: u64, ret: i64) {
    let Some(key) = PATH_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot; only this CPU (and program run) uses it.
    let data: *mut u8 = unsafe { addr_of_mut!((*key).data) }.cast();
    let n = unsafe {
        generated::bpf_probe_read_user_str(data.cast(), PATH_LEN as u32, path as *const c_void)
    };
    if n <= 1 {
        return;
    }
    // The match length: the path without its NUL (the trie matches prefixes of it).
    unsafe { addr_of_mut!((*key).prefix_len).write_unaligned(((n - 1) as u32) * 8) };
    // SAFETY: the key is fully initialised for the first prefix_len bits.
    let key_ref = unsafe { &*key };
    let write = flags & (O_WRONLY | O_RDWR | O_CREAT) != 0;
    let hit = OPEN_READ.get(key_ref).is_some() || (write && OPEN_WRITE.get(key_ref).is_some());
    if !hit {
        return;
    }
    let Some(r) = reserve::<OpenRecord>() else {
        return;
    };
    unsafe {
        header(addr_of_mut!((*r).header), k, size_of::<OpenRecord>(), ret);
        (*r).dirfd = dirfd;
        (*r).flags = flags as u32;
        (*r).mode = mode as u32;
        (*r)._pad = 0;
        generated::bpf_probe_read_kernel(
            addr_of_mut!((*r).path).cast(),
            PATH_LEN as u32,
            data as *const c_void,
        );
        (*r).path[PATH_LEN - 1] = 0;
        if n >= PATH_LEN as i64 {
            set_truncated(addr_of_mut!((*r).header));
        }
    }
    submit(r);
}

#[inline(always)]
fn on_socket(k: u16, fd: i32, addr: u64, ret: i64) {
    let Some(family) = uread::<u16>(addr) else {
        return;
    };
    if family != AF_INET && family != AF_INET6 && family != AF_UNIX {
        return;
    }
    let Some(r) = reserve::<SocketRecord>() else {
        return;
    };
    unsafe {
        header(addr_of_mut!((*r).header), k, size_of::<SocketRecord>(), ret);
        (*r).fd = fd;
        (*r).family = family;
        (*r).protocol = 0;
        (*r).local_port = 0;
        (*r).remote_port = 0;
        (*r)._pad = 0;
        (*r).local_addr = [0; 16];
        (*r).remote_addr = [0; 16];
        (*r).unix_path[0] = 0;
        (*r)._pad2 = [0; 4];
        match family {
            AF_INET => {
                // struct sockaddr_in: port at 2 (network order), address at 4.
                (*r).remote_port = uread::<u16>(addr + 2).unwrap_or(0);
                if let Some(ip) = uread::<[u8; 4]>(addr + 4) {
                    let mut v6 = [0u8; 16];
                    v6[0] = ip[0];
                    v6[1] = ip[1];
                    v6[2] = ip[2];
                    v6[3] = ip[3];
                    (*r).remote_addr = v6;
                }
            }
            AF_INET6 => {
                // struct sockaddr_in6: port at 2, flowinfo at 4, address at 8.
                (*r).remote_port = uread::<u16>(addr + 2).unwrap_or(0);
                (*r).remote_addr = uread::<[u8; 16]>(addr + 8).unwrap_or([0; 16]);
            }
            _ => {
                if ustr(addr_of_mut!((*r).unix_path).cast(), UNIX_PATH_LEN, addr + 2) {
                    set_truncated(addr_of_mut!((*r).header));
                }
            }
        }
    }
    submit(r);
}
