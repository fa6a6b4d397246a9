//! Field offsets of kernel structures from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), for the eBPF program's `LAYOUT` global.
//!
//! aya-ebpf (Rust) has no CO-RE field relocations, so the program reads kernel structures at
//! offsets that user space resolves here before loading it: the same portability as CO-RE
//! for plain field reads, without compiling against one kernel's headers. A parser of just
//! the BTF type section (struct/union members, modifiers) is all this needs.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use syscalls_common::KernelLayout;

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    type_id: u32,
    /// Bit offset.
    offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name: u32,
    kind: u32,
    /// Referenced type (modifiers, typedefs) or size.
    size_or_type: u32,
    members: Vec<Member>,
}

/// The parsed type section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, Vec<u32>>,
}

fn u32_at(data: &[u8], at: usize) -> anyhow::Result<u32> {
    let bytes = data
        .get(at..at + 4)
        .with_context(|| format!("BTF truncated at byte {at}"))?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

impl Btf {
    /// Reads the kernel's BTF.
    pub fn from_sys_fs() -> anyhow::Result<Btf> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Btf> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&data).with_context(|| format!("parsing BTF {}", path.display()))
    }

    /// Parses little-endian BTF (the only byte order of the targets node-agent supports).
    pub fn parse(data: &[u8]) -> anyhow::Result<Btf> {
        let magic = data.get(..2).map(|m| u16::from_le_bytes([m[0], m[1]]));
        if magic != Some(MAGIC) {
            bail!("not little-endian BTF (magic {magic:x?})");
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_start = hdr_len.saturating_add(type_off);
        let types_end = types_start.saturating_add(type_len);
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .context("string section beyond the file")?
            .to_vec();
        let section = data
            .get(types_start..types_end)
            .context("type section beyond the file")?;
        // Type id 0 is `void`.
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            size_or_type: 0,
            members: Vec::new(),
        }];
        let mut at = 0usize;
        while at < section.len() {
            let name = u32_at(section, at)?;
            let info = u32_at(section, at + 4)?;
            let size_or_type = u32_at(section, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => at += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(section, m + 8)?;
                        members.push(Member {
                            name: u32_at(section, m)?,
                            type_id: u32_at(section, m + 4)?,
                            offset: if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            },
                        });
                    }
                    at += vlen * 12;
                }
                KIND_ENUM | KIND_FUNC_PROTO => at += vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => at += vlen * 12,
                _ => {}
            }
            types.push(Type {
                name,
                kind,
                size_or_type,
                members,
            });
        }
        let mut btf = Btf {
            types,
            strings,
            by_name: HashMap::new(),
        };
        for id in 1..btf.types.len() {
            let t = &btf.types[id];
            if matches!(t.kind, KIND_STRUCT | KIND_UNION) && t.name != 0 {
                let name = btf.name(t.name).to_string();
                btf.by_name.entry(name).or_default().push(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Byte offset of `field` in `struct name`, looking into anonymous struct/union members
    /// (where e.g. `mm_struct` keeps most of its fields). `None` when either is missing.
    pub fn member_offset(&self, name: &str, field: &str) -> Option<u32> {
        self.by_name.get(name)?.iter().find_map(|id| {
            let t = self.types.get(*id as usize)?;
            // Skip empty forward-like definitions.
            (!t.members.is_empty())
                .then(|| self.find(t, field, 0))
                .flatten()
        })
    }

    fn find(&self, t: &Type, field: &str, base_bits: u32) -> Option<u32> {
        for m in &t.members {
            let bits = base_bits + m.offset;
            if m.name != 0 {
                if self.name(m.name) == field {
                    return bits.is_multiple_of(8).then_some(bits / 8);
                }
            } else if let Some(inner) = self.resolve(m.type_id)
                && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some(found) = self.find(inner, field, bits)
            {
                return Some(found);
            }
        }
        None
    }

    /// Everything the eBPF program reads; fields the kernel lacks stay unknown.
    pub fn kernel_layout(&self) -> KernelLayout {
        let off = |s: &str, f: &str| self.member_offset(s, f).unwrap_or(KernelLayout::UNKNOWN);
        let mut layout = KernelLayout {
            task_tgid: off("task_struct", "tgid"),
            task_pid: off("task_struct", "pid"),
            task_real_parent: off("task_struct", "real_parent"),
            task_cred: off("task_struct", "cred"),
            task_loginuid: off("task_struct", "loginuid"),
            task_signal: off("task_struct", "signal"),
            task_mm: off("task_struct", "mm"),
            task_exit_code: off("task_struct", "exit_code"),
            signal_tty: off("signal_struct", "tty"),
            signal_live: off("signal_struct", "live"),
            tty_index: off("tty_struct", "index"),
            tty_driver: off("tty_struct", "driver"),
            driver_major: off("tty_driver", "major"),
            driver_minor_start: off("tty_driver", "minor_start"),
            cred_euid: off("cred", "euid"),
            cred_egid: off("cred", "egid"),
            cred_cap_effective: off("cred", "cap_effective"),
            mm_arg_start: off("mm_struct", "arg_start"),
            mm_arg_end: off("mm_struct", "arg_end"),
            bprm_filename: off("linux_binprm", "filename"),
            bprm_argc: off("linux_binprm", "argc"),
            ..KernelLayout::UNSET
        };
        self.set_syscall_regs(&mut layout);
        layout
    }

    #[cfg(target_arch = "x86_64")]
    fn set_syscall_regs(&self, layout: &mut KernelLayout) {
        let off = |f: &str| {
            self.member_offset("pt_regs", f)
                .unwrap_or(KernelLayout::UNKNOWN)
        };
        layout.regs_nr = off("orig_ax");
        for (i, reg) in ["di", "si", "dx", "r10", "r8", "r9"].iter().enumerate() {
            layout.regs_args[i] = off(reg);
        }
    }

    /// arm64: x0 holds the return value at exit, the first argument is in `orig_x0`.
    #[cfg(target_arch = "aarch64")]
    fn set_syscall_regs(&self, layout: &mut KernelLayout) {
        let off = |f: &str| self.member_offset("user_pt_regs", f);
        let regs = self
            .member_offset("pt_regs", "regs")
            .or_else(|| off("regs"));
        layout.regs_nr = self
            .member_offset("pt_regs", "syscallno")
            .unwrap_or(KernelLayout::UNKNOWN);
        layout.regs_args[0] = self
            .member_offset("pt_regs", "orig_x0")
            .unwrap_or(KernelLayout::UNKNOWN);
        for i in 1..6 {
            layout.regs_args[i] = regs.map_or(KernelLayout::UNKNOWN, |r| r + 8 * i as u32);
        }
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn set_syscall_regs(&self, _layout: &mut KernelLayout) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF, when there is one (CI has it; the eBPF tests need it).
    #[test]
    fn resolves_the_fields_the_program_reads_on_this_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("SKIPPED: no /sys/kernel/btf/vmlinux");
            return;
        };
        let layout = btf.kernel_layout();
        for (name, value) in [
            ("task_tgid", layout.task_tgid),
            ("task_real_parent", layout.task_real_parent),
            ("task_cred", layout.task_cred),
            ("task_signal", layout.task_signal),
            ("task_mm", layout.task_mm),
            ("cred_euid", layout.cred_euid),
            ("mm_arg_start", layout.mm_arg_start),
            ("bprm_filename", layout.bprm_filename),
            ("regs_nr", layout.regs_nr),
            ("regs_arg0", layout.regs_args[0]),
        ] {
            assert_ne!(value, KernelLayout::UNKNOWN, "{name} not found in BTF");
        }
        // tgid follows pid in task_struct; euid follows suid/sgid in cred.
        assert_eq!(layout.task_tgid, layout.task_pid + 4);
        assert!(layout.mm_arg_end > layout.mm_arg_start);
        #[cfg(target_arch = "x86_64")]
        assert_eq!((layout.regs_nr, layout.regs_args[0]), (120, 112));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 255, 255]).is_err());
    }
}
