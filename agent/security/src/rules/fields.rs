//! The fields a condition or an output can read, and how each is extracted from an event
//! and its process context.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::event::names::{self, FlagTable};
use crate::event::{Event, EventArgs, EventType, SocketFamily};
use crate::process::{
    ContainerInfo, ContainerMetadata, MAX_ANCESTORS, Process, ProcessTable, UserDb,
};

/// What a field's values are, which decides the operators it takes and how the right side
/// of a comparison is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Str,
    Int,
    Bool,
    /// An IP address; compared with addresses or CIDR networks.
    Ip,
    /// The network of an address (`fd.snet`); compared with CIDR networks.
    Net,
    /// Bit flags printed as `A|B`; `contains NAME` tests a flag.
    Flags,
    /// A number with a symbolic name (`PTRACE_ATTACH`); compared by name or number.
    Enum,
}

/// Which flag table a flags value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    Open,
    Mount,
    Clone,
}

impl FlagKind {
    fn table(self) -> &'static FlagTable {
        match self {
            FlagKind::Open => &names::OPEN_FLAGS,
            FlagKind::Mount => &names::MOUNT_FLAGS,
            FlagKind::Clone => &names::CLONE_FLAGS,
        }
    }

    pub fn render(self, bits: u64, out: &mut String) {
        match self {
            FlagKind::Open => names::render_open_flags(bits as u32, out),
            other => other.table().render(bits, out),
        }
    }
}

/// One extracted value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(&'a str),
    Owned(String),
    Int(i64),
    Bool(bool),
    Ip(IpAddr),
    Flags(u64, FlagKind),
    Enum(i64, Option<&'static str>),
}

impl Value<'_> {
    /// The value as Falco prints it.
    pub fn as_text(&self) -> Cow<'_, str> {
        match self {
            Value::Str(s) => Cow::Borrowed(s),
            Value::Owned(s) => Cow::Borrowed(s.as_str()),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Ip(ip) => Cow::Owned(ip.to_string()),
            Value::Flags(bits, kind) => {
                let mut out = String::new();
                kind.render(*bits, &mut out);
                Cow::Owned(out)
            }
            Value::Enum(raw, name) => match name {
                Some(n) => Cow::Borrowed(n),
                None => Cow::Owned(raw.to_string()),
            },
        }
    }

    /// The value in an alert's `output_fields` (numbers stay numbers, as in Falco).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            other => serde_json::Value::String(other.as_text().into_owned()),
        }
    }
}

/// Whose process fields a `proc.*` field reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Current,
    Parent,
    /// `proc.aname[N]`: 0 is the process, 1 its parent…
    Ancestor(usize),
    /// `proc.aname` without index: true when any ancestor (not the process) matches.
    AnyAncestor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcAttr {
    Pid,
    Ppid,
    Name,
    Exe,
    ExePath,
    Cmdline,
    Args,
    Cmdnargs,
    Tty,
}

/// Which end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Either (a comparison is true when client or server matches).
    Any,
    Client,
    Server,
    Local,
    Remote,
}

/// Syscall arguments (`evt.arg.NAME`), with the event types that have them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    Filename,
    Args,
    Exe,
    ExePath,
    Tty,
    Name,
    Flags,
    Mode,
    Dirfd,
    Fd,
    Tuple,
    Request,
    Pid,
    Uargs,
    Dev,
    Dir,
    Type,
    Uid,
    Gid,
    Ruid,
    Euid,
    Suid,
    Rgid,
    Egid,
    Sgid,
    Cmd,
    ProgType,
    Nstype,
    Status,
}

const ARG_NAMES: &[(&str, Arg)] = &[
    ("filename", Arg::Filename),
    ("args", Arg::Args),
    ("exe", Arg::Exe),
    ("exepath", Arg::ExePath),
    ("tty", Arg::Tty),
    ("name", Arg::Name),
    ("path", Arg::Name),
    ("flags", Arg::Flags),
    ("mode", Arg::Mode),
    ("dirfd", Arg::Dirfd),
    ("fd", Arg::Fd),
    ("tuple", Arg::Tuple),
    ("request", Arg::Request),
    ("pid", Arg::Pid),
    ("uargs", Arg::Uargs),
    ("dev", Arg::Dev),
    ("dir", Arg::Dir),
    ("type", Arg::Type),
    ("uid", Arg::Uid),
    ("gid", Arg::Gid),
    ("ruid", Arg::Ruid),
    ("euid", Arg::Euid),
    ("suid", Arg::Suid),
    ("rgid", Arg::Rgid),
    ("egid", Arg::Egid),
    ("sgid", Arg::Sgid),
    ("cmd", Arg::Cmd),
    ("prog_type", Arg::ProgType),
    ("nstype", Arg::Nstype),
    ("status", Arg::Status),
];

impl Arg {
    fn field_type(self, raw: bool) -> FieldType {
        use Arg::*;
        match self {
            Flags if !raw => FieldType::Flags,
            Request | Cmd | Nstype if !raw => FieldType::Enum,
            Filename | Args | Exe | ExePath | Name | Tuple | Uargs | Dev | Dir | Type => {
                FieldType::Str
            }
            _ => FieldType::Int,
        }
    }
}

/// A field, resolved from its name.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldKind {
    EvtType,
    EvtDir,
    EvtNum,
    EvtTime,
    EvtTimeS,
    EvtTimeIso8601,
    EvtDatetime,
    EvtRawTime,
    EvtRawTimeS,
    EvtRawTimeNs,
    EvtRes,
    EvtRawRes,
    EvtFailed,
    EvtIsOpenRead,
    EvtIsOpenWrite,
    EvtHostname,
    EvtSource,
    EvtArgs,
    EvtArg(Arg, bool),
    Proc(ProcAttr, Who),
    ProcDuration,
    ProcIsExeFromMemfd,
    ThreadTid,
    ThreadCapEffective,
    UserUid,
    UserName,
    UserLoginUid,
    UserLoginName,
    GroupGid,
    GroupName,
    ContainerId,
    ContainerFullId,
    ContainerName,
    ContainerImage,
    ContainerImageRepository,
    ContainerImageTag,
    ContainerImageDigest,
    ContainerPrivileged,
    K8sNsName,
    K8sPodName,
    K8sPodUid,
    K8sPodLabel(String),
    K8sPodLabels,
    K8sWorkloadKind,
    K8sWorkloadName,
    FdNum,
    FdType,
    FdTypeChar,
    FdName,
    FdNameRaw,
    FdDirectory,
    FdFilename,
    FdIp(Side),
    FdPort(Side),
    FdNet(Side),
    FdL4Proto,
    FdSockFamily,
}

/// A resolved field with the name it was written as (for outputs).
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub kind: FieldKind,
    pub name: Arc<str>,
}

/// Why a field name was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    Unknown(String),
    Invalid(String),
}

impl FieldError {
    pub fn message(&self) -> String {
        match self {
            FieldError::Unknown(name) => format!("unknown field '{name}'"),
            FieldError::Invalid(message) => message.clone(),
        }
    }
}

/// Fields without an argument.
const SIMPLE: &[(&str, FieldKind)] = &[
    ("evt.type", FieldKind::EvtType),
    ("evt.dir", FieldKind::EvtDir),
    ("evt.num", FieldKind::EvtNum),
    ("evt.time", FieldKind::EvtTime),
    ("evt.time.s", FieldKind::EvtTimeS),
    ("evt.time.iso8601", FieldKind::EvtTimeIso8601),
    ("evt.datetime", FieldKind::EvtDatetime),
    ("evt.rawtime", FieldKind::EvtRawTime),
    ("evt.rawtime.s", FieldKind::EvtRawTimeS),
    ("evt.rawtime.ns", FieldKind::EvtRawTimeNs),
    ("evt.res", FieldKind::EvtRes),
    ("evt.rawres", FieldKind::EvtRawRes),
    ("evt.failed", FieldKind::EvtFailed),
    ("evt.is_open_read", FieldKind::EvtIsOpenRead),
    ("evt.is_open_write", FieldKind::EvtIsOpenWrite),
    ("evt.hostname", FieldKind::EvtHostname),
    ("evt.source", FieldKind::EvtSource),
    ("evt.args", FieldKind::EvtArgs),
    ("proc.pid", FieldKind::Proc(ProcAttr::Pid, Who::Current)),
    ("proc.ppid", FieldKind::Proc(ProcAttr::Ppid, Who::Current)),
    ("proc.name", FieldKind::Proc(ProcAttr::Name, Who::Current)),
    ("proc.exe", FieldKind::Proc(ProcAttr::Exe, Who::Current)),
    (
        "proc.exepath",
        FieldKind::Proc(ProcAttr::ExePath, Who::Current),
    ),
    (
        "proc.cmdline",
        FieldKind::Proc(ProcAttr::Cmdline, Who::Current),
    ),
    ("proc.args", FieldKind::Proc(ProcAttr::Args, Who::Current)),
    (
        "proc.cmdnargs",
        FieldKind::Proc(ProcAttr::Cmdnargs, Who::Current),
    ),
    ("proc.tty", FieldKind::Proc(ProcAttr::Tty, Who::Current)),
    ("proc.pname", FieldKind::Proc(ProcAttr::Name, Who::Parent)),
    ("proc.pexe", FieldKind::Proc(ProcAttr::Exe, Who::Parent)),
    (
        "proc.pexepath",
        FieldKind::Proc(ProcAttr::ExePath, Who::Parent),
    ),
    (
        "proc.pcmdline",
        FieldKind::Proc(ProcAttr::Cmdline, Who::Parent),
    ),
    ("proc.duration", FieldKind::ProcDuration),
    ("proc.is_exe_from_memfd", FieldKind::ProcIsExeFromMemfd),
    ("thread.tid", FieldKind::ThreadTid),
    ("thread.cap_effective", FieldKind::ThreadCapEffective),
    ("user.uid", FieldKind::UserUid),
    ("user.name", FieldKind::UserName),
    ("user.loginuid", FieldKind::UserLoginUid),
    ("user.loginname", FieldKind::UserLoginName),
    ("group.gid", FieldKind::GroupGid),
    ("group.name", FieldKind::GroupName),
    ("container.id", FieldKind::ContainerId),
    ("container.full_id", FieldKind::ContainerFullId),
    ("container.name", FieldKind::ContainerName),
    ("container.image", FieldKind::ContainerImage),
    (
        "container.image.repository",
        FieldKind::ContainerImageRepository,
    ),
    ("container.image.tag", FieldKind::ContainerImageTag),
    ("container.image.digest", FieldKind::ContainerImageDigest),
    ("container.privileged", FieldKind::ContainerPrivileged),
    ("k8s.ns.name", FieldKind::K8sNsName),
    ("k8s.pod.name", FieldKind::K8sPodName),
    ("k8s.pod.uid", FieldKind::K8sPodUid),
    ("k8s.pod.labels", FieldKind::K8sPodLabels),
    // Not Falco's (its k8smeta plugin has k8smeta.deployment.name &c.): the resolved
    // workload, as the log records' `workload`/`workload_kind`.
    ("k8s.workload.kind", FieldKind::K8sWorkloadKind),
    ("k8s.workload.name", FieldKind::K8sWorkloadName),
    ("fd.num", FieldKind::FdNum),
    ("fd.type", FieldKind::FdType),
    ("fd.typechar", FieldKind::FdTypeChar),
    ("fd.name", FieldKind::FdName),
    ("fd.nameraw", FieldKind::FdNameRaw),
    ("fd.directory", FieldKind::FdDirectory),
    ("fd.filename", FieldKind::FdFilename),
    ("fd.ip", FieldKind::FdIp(Side::Any)),
    ("fd.cip", FieldKind::FdIp(Side::Client)),
    ("fd.sip", FieldKind::FdIp(Side::Server)),
    ("fd.lip", FieldKind::FdIp(Side::Local)),
    ("fd.rip", FieldKind::FdIp(Side::Remote)),
    ("fd.port", FieldKind::FdPort(Side::Any)),
    ("fd.cport", FieldKind::FdPort(Side::Client)),
    ("fd.sport", FieldKind::FdPort(Side::Server)),
    ("fd.lport", FieldKind::FdPort(Side::Local)),
    ("fd.rport", FieldKind::FdPort(Side::Remote)),
    ("fd.net", FieldKind::FdNet(Side::Any)),
    ("fd.cnet", FieldKind::FdNet(Side::Client)),
    ("fd.snet", FieldKind::FdNet(Side::Server)),
    ("fd.lnet", FieldKind::FdNet(Side::Local)),
    ("fd.rnet", FieldKind::FdNet(Side::Remote)),
    ("fd.l4proto", FieldKind::FdL4Proto),
    ("fd.sockfamily", FieldKind::FdSockFamily),
];

/// Lineage fields that take an index (`proc.aname[2]`) or none (any ancestor).
const LINEAGE: &[(&str, ProcAttr)] = &[
    ("proc.aname", ProcAttr::Name),
    ("proc.apid", ProcAttr::Pid),
    ("proc.aexe", ProcAttr::Exe),
    ("proc.aexepath", ProcAttr::ExePath),
    ("proc.acmdline", ProcAttr::Cmdline),
];

/// Every field name, for documentation and suggestions.
pub fn field_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = SIMPLE.iter().map(|(n, _)| *n).collect();
    names.extend(LINEAGE.iter().map(|(n, _)| *n));
    names.extend(["evt.arg.NAME", "evt.rawarg.NAME", "k8s.pod.label.KEY"]);
    names
}

impl Field {
    /// Resolves `name` (with its `[arg]`, if any).
    pub fn resolve(name: &str, arg: Option<&str>) -> Result<Field, FieldError> {
        let display: Arc<str> = match arg {
            Some(a) => Arc::from(format!("{name}[{a}]")),
            None => Arc::from(name),
        };
        let kind = Self::resolve_kind(name, arg)?;
        Ok(Field {
            kind,
            name: display,
        })
    }

    fn resolve_kind(name: &str, arg: Option<&str>) -> Result<FieldKind, FieldError> {
        if let Some((_, kind)) = SIMPLE.iter().find(|(n, _)| *n == name) {
            if let Some(arg) = arg {
                return Err(FieldError::Invalid(format!(
                    "field '{name}' takes no argument (found '[{arg}]')"
                )));
            }
            return Ok(kind.clone());
        }
        if let Some((_, attr)) = LINEAGE.iter().find(|(n, _)| *n == name) {
            let who = match arg {
                None => Who::AnyAncestor,
                Some(a) => match a.trim().parse::<usize>() {
                    Ok(n) if n <= MAX_ANCESTORS => Who::Ancestor(n),
                    _ => {
                        return Err(FieldError::Invalid(format!(
                            "'{name}[{a}]': the index must be a number from 0 to {MAX_ANCESTORS}"
                        )));
                    }
                },
            };
            return Ok(FieldKind::Proc(*attr, who));
        }
        if name == "k8s.pod.label" {
            return match arg {
                Some(key) if !key.is_empty() => Ok(FieldKind::K8sPodLabel(key.to_string())),
                _ => Err(FieldError::Invalid(
                    "'k8s.pod.label' needs a label key: k8s.pod.label[KEY] or k8s.pod.label.KEY"
                        .to_string(),
                )),
            };
        }
        if let Some(key) = name.strip_prefix("k8s.pod.label.")
            && arg.is_none()
        {
            return Ok(FieldKind::K8sPodLabel(key.to_string()));
        }
        for (prefix, raw) in [("evt.arg", false), ("evt.rawarg", true)] {
            let arg_name = match (name.strip_prefix(prefix), arg) {
                (Some(""), Some(a)) => Some(a),
                (Some(rest), None) => rest.strip_prefix('.'),
                _ => None,
            };
            if let Some(arg_name) = arg_name {
                return match ARG_NAMES.iter().find(|(n, _)| *n == arg_name) {
                    Some((_, a)) => Ok(FieldKind::EvtArg(*a, raw)),
                    None => Err(FieldError::Invalid(format!(
                        "'{name}': no captured syscall has an argument '{arg_name}' (known: {})",
                        ARG_NAMES
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))),
                };
            }
        }
        Err(FieldError::Unknown(name.to_string()))
    }

    /// Fields with several values per event: any ancestor, either end of a connection.
    pub fn is_multi_valued(&self) -> bool {
        matches!(
            self.kind,
            FieldKind::Proc(_, Who::AnyAncestor)
                | FieldKind::FdIp(Side::Any)
                | FieldKind::FdPort(Side::Any)
                | FieldKind::FdNet(Side::Any)
        )
    }

    pub fn field_type(&self) -> FieldType {
        use FieldKind::*;
        match &self.kind {
            EvtNum | EvtRawTime | EvtRawTimeS | EvtRawTimeNs | EvtRawRes | ProcDuration
            | ThreadTid | UserUid | UserLoginUid | GroupGid | FdNum | FdPort(_) => FieldType::Int,
            Proc(ProcAttr::Pid | ProcAttr::Ppid | ProcAttr::Cmdnargs | ProcAttr::Tty, _) => {
                FieldType::Int
            }
            EvtFailed | EvtIsOpenRead | EvtIsOpenWrite | ProcIsExeFromMemfd
            | ContainerPrivileged => FieldType::Bool,
            FdIp(_) => FieldType::Ip,
            FdNet(_) => FieldType::Net,
            EvtArg(arg, raw) => arg.field_type(*raw),
            _ => FieldType::Str,
        }
    }

    /// Calls `f` with each value of the field (none when missing, one for most fields,
    /// several for "any" fields); stops and returns true as soon as `f` does.
    pub fn any_value(&self, ctx: &EvalCtx<'_>, f: &mut dyn FnMut(&Value<'_>) -> bool) -> bool {
        match &self.kind {
            FieldKind::Proc(attr, Who::AnyAncestor) => {
                let Some(p) = ctx.process else {
                    return false;
                };
                ctx.table.ancestors(p.pid).any(|a| f(&proc_attr(a, *attr)))
            }
            FieldKind::FdIp(Side::Any)
            | FieldKind::FdPort(Side::Any)
            | FieldKind::FdNet(Side::Any) => {
                let Some((client, server)) = ctx.endpoints() else {
                    return false;
                };
                let pick = |a: SocketAddr| match self.kind {
                    FieldKind::FdPort(_) => Value::Int(i64::from(a.port())),
                    _ => Value::Ip(a.ip()),
                };
                client.is_some_and(|a| f(&pick(a))) || server.is_some_and(|a| f(&pick(a)))
            }
            _ => match self.extract(ctx) {
                Some(v) => f(&v),
                None => false,
            },
        }
    }

    /// The field's (first) value, `None` when missing.
    pub fn first_value<'c>(&self, ctx: &'c EvalCtx<'_>) -> Option<Value<'c>> {
        match &self.kind {
            FieldKind::Proc(attr, Who::AnyAncestor) => {
                let p = ctx.process?;
                ctx.table
                    .ancestors(p.pid)
                    .next()
                    .map(|a| proc_attr(a, *attr))
            }
            // Outputs print the server end, the remote end of a connect.
            FieldKind::FdIp(Side::Any) => ctx.endpoints()?.1.map(|a| Value::Ip(a.ip())),
            FieldKind::FdNet(Side::Any) => ctx.endpoints()?.1.map(|a| Value::Ip(a.ip())),
            FieldKind::FdPort(Side::Any) => {
                ctx.endpoints()?.1.map(|a| Value::Int(i64::from(a.port())))
            }
            _ => self.extract(ctx),
        }
    }

    fn extract<'c>(&self, ctx: &'c EvalCtx<'_>) -> Option<Value<'c>> {
        use FieldKind::*;
        let event = ctx.event;
        Some(match &self.kind {
            EvtType => Value::Str(event.event_type.name()),
            EvtDir => Value::Str("<"),
            EvtNum => Value::Int(ctx.event_num as i64),
            EvtTime => Value::Owned(format_time(event.ts_ns, "%H:%M:%S%.9f")),
            EvtTimeS => Value::Owned(format_time(event.ts_ns, "%H:%M:%S")),
            EvtTimeIso8601 => Value::Owned(format_time(event.ts_ns, "%Y-%m-%dT%H:%M:%S%.9fZ")),
            EvtDatetime => Value::Owned(format_time(event.ts_ns, "%Y-%m-%d %H:%M:%S%.9f")),
            EvtRawTime => Value::Int(event.ts_ns as i64),
            EvtRawTimeS => Value::Int((event.ts_ns / 1_000_000_000) as i64),
            EvtRawTimeNs => Value::Int((event.ts_ns % 1_000_000_000) as i64),
            EvtRes => Value::Str(res_name(event.res)),
            EvtRawRes => Value::Int(event.res),
            EvtFailed => Value::Bool(event.res < 0),
            EvtIsOpenRead | EvtIsOpenWrite => {
                let EventArgs::Open(open) = &event.args else {
                    return None;
                };
                let mode = names::access_mode(open.flags) as i32;
                Value::Bool(match self.kind {
                    EvtIsOpenRead => mode == libc::O_RDONLY || mode == libc::O_RDWR,
                    _ => mode == libc::O_WRONLY || mode == libc::O_RDWR,
                })
            }
            EvtHostname => Value::Str(ctx.hostname),
            EvtSource => Value::Str("syscall"),
            EvtArgs => Value::Owned(render_args(ctx)),
            EvtArg(arg, raw) => return arg_value(ctx, *arg, *raw),
            Proc(attr, who) => {
                let p = match who {
                    Who::Current => ctx.process?,
                    Who::Parent => ctx.table.parent(ctx.process?)?,
                    Who::Ancestor(n) => ctx.table.ancestor(ctx.process?.pid, *n)?,
                    Who::AnyAncestor => return self.first_value(ctx),
                };
                proc_attr(p, *attr)
            }
            ProcDuration => {
                let p = ctx.process?;
                if p.start_ns == 0 {
                    return None;
                }
                Value::Int(event.ts_ns.saturating_sub(p.start_ns) as i64)
            }
            ProcIsExeFromMemfd => Value::Bool(ctx.process?.exe_path.starts_with("/memfd:")),
            ThreadTid => Value::Int(i64::from(event.tid)),
            ThreadCapEffective => {
                let mut out = String::new();
                names::render_capabilities(ctx.process?.cap_effective, &mut out);
                Value::Owned(out)
            }
            UserUid => Value::Int(i64::from(event.uid)),
            UserName => Value::Str(ctx.users.user_name(event.uid)?),
            UserLoginUid => Value::Int(loginuid(event.loginuid)),
            UserLoginName => {
                if event.loginuid == u32::MAX {
                    return None;
                }
                Value::Str(ctx.users.user_name(event.loginuid)?)
            }
            GroupGid => Value::Int(i64::from(event.gid)),
            GroupName => Value::Str(ctx.users.group_name(event.gid)?),
            ContainerId => match ctx.container_id() {
                Some(id) => Value::Str(id.get(..12).unwrap_or(id)),
                None => Value::Str("host"),
            },
            ContainerFullId => Value::Str(ctx.container_id().unwrap_or("host")),
            ContainerName => match ctx.container_id() {
                None => Value::Str("host"),
                Some(_) => Value::Str(ctx.container()?.name.as_deref()?),
            },
            ContainerImage => Value::Str(ctx.container()?.image.as_deref()?),
            ContainerImageRepository => Value::Str(ctx.container()?.image_repository.as_deref()?),
            ContainerImageTag => Value::Str(ctx.container()?.image_tag.as_deref()?),
            ContainerImageDigest => Value::Str(ctx.container()?.image_digest.as_deref()?),
            ContainerPrivileged => Value::Bool(ctx.container()?.privileged?),
            K8sNsName => Value::Str(&ctx.container()?.k8s.as_ref()?.namespace),
            K8sPodName => Value::Str(&ctx.container()?.k8s.as_ref()?.name),
            K8sPodUid => Value::Str(&ctx.container()?.k8s.as_ref()?.uid),
            K8sPodLabel(key) => Value::Str(ctx.container()?.k8s.as_ref()?.labels.get(key)?),
            K8sWorkloadKind => Value::Str(&ctx.container()?.k8s.as_ref()?.workload.as_ref()?.0),
            K8sWorkloadName => Value::Str(&ctx.container()?.k8s.as_ref()?.workload.as_ref()?.1),
            K8sPodLabels => {
                let pod = ctx.container()?.k8s.as_ref()?;
                let mut out = String::new();
                for (i, (k, v)) in pod.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}:{v}");
                }
                Value::Owned(out)
            }
            FdNum => Value::Int(match &event.args {
                EventArgs::Open(_) => event.res.max(-1),
                EventArgs::Socket(s) => match event.event_type {
                    EventType::Connect => i64::from(s.fd),
                    _ => event.res.max(-1),
                },
                EventArgs::Module(m) if m.fd >= 0 => i64::from(m.fd),
                _ => return None,
            }),
            FdType => Value::Str(fd_type(event)?.0),
            FdTypeChar => Value::Str(fd_type(event)?.1),
            FdName => Value::Str(ctx.fd_name()?),
            FdNameRaw => Value::Str(match &event.args {
                EventArgs::Open(open) => &open.path,
                _ => ctx.fd_name()?,
            }),
            FdDirectory => {
                let name = ctx.fd_path()?;
                Value::Str(match name.rfind('/') {
                    Some(0) => "/",
                    Some(i) => &name[..i],
                    None => return None,
                })
            }
            FdFilename => {
                let name = ctx.fd_path()?;
                Value::Str(name.rsplit('/').next()?)
            }
            FdIp(side) | FdNet(side) => Value::Ip(ctx.endpoint(*side)?.ip()),
            FdPort(side) => Value::Int(i64::from(ctx.endpoint(*side)?.port())),
            FdL4Proto => match &event.args {
                EventArgs::Socket(s) => Value::Str(s.protocol.name()?),
                _ => return None,
            },
            FdSockFamily => match &event.args {
                EventArgs::Socket(s) => Value::Str(match s.family {
                    SocketFamily::Inet | SocketFamily::Inet6 => "ip",
                    SocketFamily::Unix => "unix",
                    SocketFamily::Other(_) => return None,
                }),
                _ => return None,
            },
        })
    }
}

fn proc_attr(p: &Process, attr: ProcAttr) -> Value<'_> {
    match attr {
        ProcAttr::Pid => Value::Int(i64::from(p.pid)),
        ProcAttr::Ppid => Value::Int(i64::from(p.ppid)),
        ProcAttr::Name => Value::Str(&p.comm),
        ProcAttr::Exe => Value::Str(&p.exe),
        ProcAttr::ExePath => Value::Str(&p.exe_path),
        ProcAttr::Cmdline => Value::Str(&p.cmdline),
        ProcAttr::Args => Value::Str(&p.args),
        ProcAttr::Cmdnargs => Value::Int(i64::from(p.nargs)),
        ProcAttr::Tty => Value::Int(i64::from(p.tty)),
    }
}

fn loginuid(raw: u32) -> i64 {
    if raw == u32::MAX { -1 } else { i64::from(raw) }
}

/// `evt.res`: `SUCCESS`, or the errno name of a failure.
fn res_name(res: i64) -> &'static str {
    if res >= 0 {
        return "SUCCESS";
    }
    names::ERRNO.name(-res).unwrap_or("E?")
}

fn fd_type(event: &Event) -> Option<(&'static str, &'static str)> {
    match &event.args {
        EventArgs::Open(open) if open.flags & libc::O_DIRECTORY as u32 != 0 => {
            Some(("directory", "d"))
        }
        EventArgs::Open(_) | EventArgs::Module(_) => Some(("file", "f")),
        EventArgs::Socket(s) => Some(match s.family {
            SocketFamily::Inet => ("ipv4", "4"),
            SocketFamily::Inet6 => ("ipv6", "6"),
            SocketFamily::Unix => ("unix", "u"),
            SocketFamily::Other(_) => return None,
        }),
        _ => None,
    }
}

fn format_time(ts_ns: u64, format: &str) -> String {
    let secs = (ts_ns / 1_000_000_000) as i64;
    let nanos = (ts_ns % 1_000_000_000) as u32;
    match chrono::DateTime::from_timestamp(secs, nanos) {
        Some(t) => t.format(format).to_string(),
        None => String::new(),
    }
}

fn arg_value<'c>(ctx: &'c EvalCtx<'_>, arg: Arg, raw: bool) -> Option<Value<'c>> {
    let event = ctx.event;
    let int = |v: i64| Some(Value::Int(v));
    let id = |v: Option<u32>| v.map(|v| Value::Int(i64::from(v)));
    match (&event.args, arg) {
        (EventArgs::Exec(e), Arg::Filename) => Some(Value::Str(&e.filename)),
        (EventArgs::Exec(_), Arg::Args) => Some(Value::Str(&ctx.process?.args)),
        (EventArgs::Exec(e), Arg::Exe) => e.argv.first().map(|a| Value::Str(a.as_str())),
        (EventArgs::Exec(e), Arg::ExePath) => Some(Value::Str(&e.exe_path)),
        (EventArgs::Exec(e), Arg::Tty) => int(i64::from(e.tty)),
        (EventArgs::Open(_) | EventArgs::Module(_), Arg::Name) => Some(Value::Str(ctx.fd_name()?)),
        (EventArgs::Bpf(b), Arg::Name) => Some(Value::Str(&b.prog_name)),
        (EventArgs::Open(o), Arg::Flags) if raw => int(i64::from(o.flags)),
        (EventArgs::Open(o), Arg::Flags) => Some(Value::Flags(u64::from(o.flags), FlagKind::Open)),
        (EventArgs::Open(o), Arg::Mode) => int(i64::from(o.mode)),
        (EventArgs::Open(o), Arg::Dirfd) => int(i64::from(o.dirfd)),
        (EventArgs::Open(_), Arg::Fd) => int(event.res.max(-1)),
        (EventArgs::Socket(s), Arg::Fd) => int(i64::from(s.fd)),
        (EventArgs::Socket(_), Arg::Tuple) => Some(Value::Str(ctx.fd_name()?)),
        (EventArgs::Ptrace(p), Arg::Request) if raw => int(p.request),
        (EventArgs::Ptrace(p), Arg::Request) => Some(Value::Enum(
            p.request,
            names::PTRACE_REQUESTS.name(p.request),
        )),
        (EventArgs::Ptrace(p), Arg::Pid) => int(i64::from(p.target_pid)),
        (EventArgs::Module(m), Arg::Fd) => int(i64::from(m.fd)),
        (EventArgs::Module(m), Arg::Uargs) => Some(Value::Str(&m.params)),
        (EventArgs::Module(m), Arg::Flags) => int(i64::from(m.flags)),
        (EventArgs::Mount(m), Arg::Dev) => Some(Value::Str(&m.source)),
        (EventArgs::Mount(m), Arg::Dir) => Some(Value::Str(&m.target)),
        (EventArgs::Mount(m), Arg::Type) => Some(Value::Str(&m.fstype)),
        (EventArgs::Mount(m), Arg::Flags) if raw => int(m.flags as i64),
        (EventArgs::Mount(m), Arg::Flags) => Some(Value::Flags(m.flags, FlagKind::Mount)),
        (EventArgs::SetId(s), Arg::Uid) if is_uid_call(event.event_type) => id(s.target()),
        (EventArgs::SetId(s), Arg::Gid) if !is_uid_call(event.event_type) => id(s.target()),
        (EventArgs::SetId(s), Arg::Ruid) if is_uid_call(event.event_type) => id(s.real),
        (EventArgs::SetId(s), Arg::Euid) if is_uid_call(event.event_type) => id(s.effective),
        (EventArgs::SetId(s), Arg::Suid) if is_uid_call(event.event_type) => id(s.saved),
        (EventArgs::SetId(s), Arg::Rgid) if !is_uid_call(event.event_type) => id(s.real),
        (EventArgs::SetId(s), Arg::Egid) if !is_uid_call(event.event_type) => id(s.effective),
        (EventArgs::SetId(s), Arg::Sgid) if !is_uid_call(event.event_type) => id(s.saved),
        (EventArgs::Bpf(b), Arg::Cmd) if raw => int(b.cmd),
        (EventArgs::Bpf(b), Arg::Cmd) => Some(Value::Enum(b.cmd, names::BPF_COMMANDS.name(b.cmd))),
        (EventArgs::Bpf(b), Arg::ProgType) => int(i64::from(b.prog_type)),
        (EventArgs::Unshare(u), Arg::Flags) if raw => int(u.flags as i64),
        (EventArgs::Unshare(u), Arg::Flags) => Some(Value::Flags(u.flags, FlagKind::Clone)),
        (EventArgs::Fork(f), Arg::Flags) if raw => int(f.flags as i64),
        (EventArgs::Fork(f), Arg::Flags) => Some(Value::Flags(f.flags, FlagKind::Clone)),
        (EventArgs::Fork(f), Arg::Pid) => int(i64::from(f.child_pid)),
        (EventArgs::Setns(s), Arg::Fd) => int(i64::from(s.fd)),
        (EventArgs::Setns(s), Arg::Nstype) if raw => int(s.nstype),
        (EventArgs::Setns(s), Arg::Nstype) => {
            Some(Value::Enum(s.nstype, names::NS_TYPES.name(s.nstype)))
        }
        (EventArgs::Exit(x), Arg::Status) => int(i64::from(x.status)),
        _ => None,
    }
}

fn is_uid_call(t: EventType) -> bool {
    matches!(
        t,
        EventType::Setuid | EventType::Setreuid | EventType::Setresuid
    )
}

/// `evt.args`: `name=value` pairs of the event's arguments.
fn render_args(ctx: &EvalCtx<'_>) -> String {
    let names: &[(&str, Arg)] = match &ctx.event.args {
        EventArgs::Exec(_) => &[
            ("filename", Arg::Filename),
            ("exepath", Arg::ExePath),
            ("tty", Arg::Tty),
        ],
        EventArgs::Open(_) => &[
            ("name", Arg::Name),
            ("flags", Arg::Flags),
            ("mode", Arg::Mode),
        ],
        EventArgs::Socket(_) => &[("fd", Arg::Fd), ("tuple", Arg::Tuple)],
        EventArgs::Ptrace(_) => &[("request", Arg::Request), ("pid", Arg::Pid)],
        EventArgs::Module(_) => &[("fd", Arg::Fd), ("name", Arg::Name), ("uargs", Arg::Uargs)],
        EventArgs::Mount(_) => &[
            ("dev", Arg::Dev),
            ("dir", Arg::Dir),
            ("type", Arg::Type),
            ("flags", Arg::Flags),
        ],
        EventArgs::SetId(_) => &[("uid", Arg::Uid), ("gid", Arg::Gid)],
        EventArgs::Bpf(_) => &[("cmd", Arg::Cmd), ("name", Arg::Name)],
        EventArgs::Unshare(_) | EventArgs::Fork(_) => &[("flags", Arg::Flags)],
        EventArgs::Setns(_) => &[("fd", Arg::Fd), ("nstype", Arg::Nstype)],
        EventArgs::Exit(_) => &[("status", Arg::Status)],
    };
    let mut out = format!("res={}", ctx.event.res);
    for (name, arg) in names {
        if let Some(v) = arg_value(ctx, *arg, false) {
            let _ = write!(out, " {name}={}", v.as_text());
        }
    }
    out
}

/// Lexically normalised absolute path: `//`, `.` and `..` removed (what Falco's `fd.name`
/// shows; `fd.nameraw` keeps the path as given).
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let clean = path.starts_with('/')
        && !path.contains("//")
        && !path.split('/').any(|c| c == "." || c == "..")
        && (path.len() == 1 || !path.ends_with('/'));
    if clean || !path.starts_with('/') {
        return Cow::Borrowed(path);
    }
    let mut parts: Vec<&str> = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Cow::Owned(format!("/{}", parts.join("/")))
}

/// Everything a field may read for one event.
pub struct EvalCtx<'a> {
    pub event: &'a Event,
    pub table: &'a ProcessTable,
    pub users: &'a UserDb,
    pub metadata: &'a dyn ContainerMetadata,
    pub hostname: &'a str,
    /// Sequence number of the event (`evt.num`).
    pub event_num: u64,
    process: Option<&'a Process>,
    container: OnceCell<Option<Arc<ContainerInfo>>>,
    fd_name: OnceCell<Option<String>>,
}

impl<'a> EvalCtx<'a> {
    pub fn new(
        event: &'a Event,
        table: &'a ProcessTable,
        users: &'a UserDb,
        metadata: &'a dyn ContainerMetadata,
        hostname: &'a str,
        event_num: u64,
    ) -> EvalCtx<'a> {
        EvalCtx {
            event,
            table,
            users,
            metadata,
            hostname,
            event_num,
            process: table.get(event.pid),
            container: OnceCell::new(),
            fd_name: OnceCell::new(),
        }
    }

    pub fn process(&self) -> Option<&'a Process> {
        self.process
    }

    fn container_id(&self) -> Option<&'a str> {
        self.process?.container_id.as_deref()
    }

    /// The event's container as the metadata knows it (`None` for host processes and
    /// containers it does not know).
    pub fn container(&self) -> Option<&ContainerInfo> {
        self.container
            .get_or_init(|| self.container_id().and_then(|id| self.metadata.lookup(id)))
            .as_deref()
    }

    /// The path of a file event, normalised.
    fn fd_path(&self) -> Option<&str> {
        match &self.event.args {
            EventArgs::Open(_) | EventArgs::Module(_) => self.fd_name(),
            EventArgs::Socket(s) if s.family == SocketFamily::Unix => self.fd_name(),
            _ => None,
        }
    }

    fn fd_name(&self) -> Option<&str> {
        self.fd_name
            .get_or_init(|| match &self.event.args {
                EventArgs::Open(open) => Some(normalize_path(&open.path).into_owned()),
                EventArgs::Module(m) if !m.path.is_empty() => {
                    Some(normalize_path(&m.path).into_owned())
                }
                EventArgs::Socket(s) => match s.family {
                    SocketFamily::Unix => Some(s.unix_path.clone()),
                    _ => {
                        let (client, server) = self.endpoints()?;
                        let fmt = |a: Option<SocketAddr>| match a {
                            Some(a) => format!("{}:{}", a.ip(), a.port()),
                            None => "<NA>".to_string(),
                        };
                        Some(format!("{}->{}", fmt(client), fmt(server)))
                    }
                },
                _ => None,
            })
            .as_deref()
    }

    /// (client, server) of a socket event.
    fn endpoints(&self) -> Option<(Option<SocketAddr>, Option<SocketAddr>)> {
        let EventArgs::Socket(s) = &self.event.args else {
            return None;
        };
        if !matches!(s.family, SocketFamily::Inet | SocketFamily::Inet6) {
            return None;
        }
        Some(match self.event.event_type {
            EventType::Connect => (s.local, s.remote),
            _ => (s.remote, s.local),
        })
    }

    fn endpoint(&self, side: Side) -> Option<SocketAddr> {
        let (client, server) = self.endpoints()?;
        let EventArgs::Socket(s) = &self.event.args else {
            return None;
        };
        match side {
            Side::Client => client,
            Side::Server | Side::Any => server,
            Side::Local => s.local,
            Side::Remote => s.remote,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_and_rejects_bad_ones() {
        assert_eq!(
            Field::resolve("proc.aname", Some("2")).unwrap().kind,
            FieldKind::Proc(ProcAttr::Name, Who::Ancestor(2))
        );
        assert_eq!(
            Field::resolve("proc.aname", None).unwrap().kind,
            FieldKind::Proc(ProcAttr::Name, Who::AnyAncestor)
        );
        assert_eq!(
            Field::resolve("k8s.pod.label.app", None).unwrap().kind,
            FieldKind::K8sPodLabel("app".into())
        );
        assert_eq!(
            Field::resolve("k8s.pod.label", Some("app.kubernetes.io/name"))
                .unwrap()
                .kind,
            FieldKind::K8sPodLabel("app.kubernetes.io/name".into())
        );
        assert_eq!(
            Field::resolve("evt.arg.flags", None).unwrap().field_type(),
            FieldType::Flags
        );
        assert_eq!(
            Field::resolve("evt.rawarg.flags", None)
                .unwrap()
                .field_type(),
            FieldType::Int
        );
        assert_eq!(
            Field::resolve("evt.arg", Some("request")).unwrap().kind,
            FieldKind::EvtArg(Arg::Request, false)
        );
        assert_eq!(
            Field::resolve("proc.nme", None),
            Err(FieldError::Unknown("proc.nme".into()))
        );
        assert!(Field::resolve("proc.aname", Some("x")).is_err());
        assert!(Field::resolve("proc.aname", Some("1000")).is_err());
        assert!(Field::resolve("proc.name", Some("1")).is_err());
        assert!(
            Field::resolve("evt.arg.nonsense", None)
                .unwrap_err()
                .message()
                .contains("no captured syscall")
        );
        assert!(Field::resolve("k8s.pod.label", None).is_err());
        assert!(field_names().contains(&"proc.aname"));
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize_path("/etc/passwd"), "/etc/passwd");
        assert_eq!(normalize_path("/etc//./x/../shadow"), "/etc/shadow");
        assert_eq!(normalize_path("/../../etc/"), "/etc");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path("relative/../x"), "relative/../x");
    }

    #[test]
    fn res_names() {
        assert_eq!(res_name(3), "SUCCESS");
        assert_eq!(res_name(-(libc::ENOENT as i64)), "ENOENT");
        assert_eq!(res_name(-100_000), "E?");
    }
}
