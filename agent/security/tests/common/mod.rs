//! A small world of processes and containers, driven by the events the kernel side sends.
#![allow(dead_code)]

use std::sync::Arc;

use node_agent_security::SecurityEngine;
use node_agent_security::alert::{Alert, NoMetrics};
use node_agent_security::event::{
    BpfArgs, Event, EventArgs, EventType, ExecArgs, ForkArgs, L4Proto, ModuleArgs, MountArgs,
    OpenArgs, PtraceArgs, SetIdArgs, SetnsArgs, SocketArgs, SocketFamily, UnshareArgs,
};
use node_agent_security::process::{
    ContainerInfo, PodInfo, Process, ProcessTable, StaticMetadata, TableConfig, UserDb,
};
use node_agent_security::rules::{RuleMatching, RuleSet, RuleSetBuilder, RuleSource};

/// Container of the nginx pod in namespace `default`.
pub const WEB: &str = "aaaaaaaaaaaa0123456789abcdef0123456789abcdef0123456789abcdef0123";
/// Container of a pod in `kube-system`.
pub const SYSTEM: &str = "bbbbbbbbbbbb0123456789abcdef0123456789abcdef0123456789abcdef0123";
/// The API server's service address in the test cluster.
pub const API_SERVER: &str = "10.96.0.1";
pub const PTS0: u32 = 136 << 8;
pub const CAP_SYS_ADMIN: u64 = 1 << 21;
pub const CAP_SYS_MODULE: u64 = 1 << 16;

pub fn require_all() -> bool {
    std::env::var("NODE_AGENT_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Skips (or, in CI, fails) a test whose environment is missing.
pub fn skip(reason: &str) {
    if require_all() {
        panic!("NODE_AGENT_REQUIRE_ALL=1 and {reason}");
    }
    eprintln!("skipped: {reason}");
}

pub fn metadata() -> StaticMetadata {
    let mut m = StaticMetadata::default();
    m.insert(
        ContainerInfo {
            id: WEB.into(),
            name: Some("nginx".into()),
            image: Some("docker.io/library/nginx:1.25".into()),
            k8s: Some(PodInfo {
                namespace: "default".into(),
                name: "web-7d4b9".into(),
                uid: "11111111-2222-3333-4444-555555555555".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .with_image_parts(),
    );
    m.insert(
        ContainerInfo {
            id: SYSTEM.into(),
            name: Some("coredns".into()),
            image: Some("registry.k8s.io/coredns/coredns:v1.11.1".into()),
            k8s: Some(PodInfo {
                namespace: "kube-system".into(),
                name: "coredns-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .with_image_parts(),
    );
    m
}

pub fn default_rules() -> RuleSet {
    RuleSetBuilder::new()
        .defaults()
        .list("k8s_api_server_addresses", vec![API_SERVER.to_string()])
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn rules_from(yaml: &str) -> RuleSet {
    RuleSet::load(&[RuleSource {
        name: "test.yaml".into(),
        content: yaml.into(),
    }])
    .unwrap_or_else(|e| panic!("{e}"))
}

/// An engine over a synthetic process tree (no /proc): systemd (1), containerd-shim (10)
/// and runc (11) on the host; each container's init is a child of the shim.
pub struct World {
    pub engine: SecurityEngine,
    next_pid: u32,
    pub ts: u64,
}

/// What a process runs: name, argv, exe path.
pub struct Exec<'a> {
    pub comm: &'a str,
    pub argv: &'a [&'a str],
    pub exe_path: &'a str,
    pub tty: u32,
    pub uid: u32,
    pub caps: u64,
}

impl<'a> Exec<'a> {
    pub fn new(comm: &'a str, argv: &'a [&'a str]) -> Exec<'a> {
        Exec {
            comm,
            argv,
            exe_path: "",
            tty: 0,
            uid: 0,
            caps: 0,
        }
    }

    pub fn tty(mut self, tty: u32) -> Self {
        self.tty = tty;
        self
    }

    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = uid;
        self
    }

    pub fn caps(mut self, caps: u64) -> Self {
        self.caps = caps;
        self
    }

    pub fn exe_path(mut self, path: &'a str) -> Self {
        self.exe_path = path;
        self
    }
}

impl World {
    pub fn new() -> World {
        World::with_rules(default_rules())
    }

    pub fn with_rules(rules: RuleSet) -> World {
        World::with_metadata(rules, Arc::new(metadata()))
    }

    pub fn with_metadata(
        rules: RuleSet,
        metadata: Arc<dyn node_agent_security::process::ContainerMetadata>,
    ) -> World {
        let mut table = ProcessTable::new(TableConfig::default());
        let mut systemd = Process::new(1, 0, "systemd");
        systemd.start_ns = 1;
        table.insert(systemd);
        let mut shim = Process::new(10, 1, "containerd-shim");
        shim.start_ns = 2;
        table.insert(shim);
        let mut runc = Process::new(11, 10, "runc");
        runc.start_ns = 3;
        table.insert(runc);
        let users = UserDb::from_contents(
            "root:x:0:0::/root:/bin/bash\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\nalice:x:1000:1000::/home/alice:/bin/bash\n",
            "root:x:0:\n",
        );
        let engine = SecurityEngine::new(rules, table, users, metadata, Arc::new(NoMetrics))
            .with_matching(RuleMatching::All)
            .with_hostname("node-1");
        World {
            engine,
            next_pid: 1000,
            ts: 1_700_000_000_000_000_000,
        }
    }

    fn tick(&mut self) -> u64 {
        self.ts += 1_000;
        self.ts
    }

    /// A container's first process (as runc leaves it), child of runc.
    pub fn container(&mut self, container_id: &str) -> u32 {
        let pid = self.next_pid;
        self.next_pid += 1;
        let mut p = Process::new(pid, 11, "runc:[2:INIT]");
        p.container_id = Some(Arc::from(container_id));
        p.start_ns = self.tick();
        self.engine.table_mut().insert(p);
        pid
    }

    /// `pid` execs (in place, as runc's init execs the container's program).
    pub fn exec(&mut self, pid: u32, exec: Exec<'_>) -> Vec<Alert> {
        let parent = self.engine.table().get(pid).map_or(0, |p| p.ppid);
        let filename = if exec.exe_path.is_empty() {
            format!("/usr/bin/{}", exec.comm)
        } else {
            exec.exe_path.to_string()
        };
        let mut e = Event::new(
            EventType::Execve,
            pid,
            EventArgs::Exec(ExecArgs {
                filename: filename.clone(),
                argv: exec.argv.iter().map(|a| a.to_string()).collect(),
                argv_truncated: false,
                exe_path: filename,
                tty: exec.tty,
                cap_effective: exec.caps,
            }),
        );
        e.comm = exec.comm.into();
        e.uid = exec.uid;
        e.gid = exec.uid;
        e.ppid = parent;
        e.ts_ns = self.tick();
        self.send(e)
    }

    /// fork of `parent` then exec; returns the new pid and the exec's alerts.
    pub fn spawn(&mut self, parent: u32, exec: Exec<'_>) -> (u32, Vec<Alert>) {
        let child = self.next_pid;
        self.next_pid += 1;
        let mut fork = Event::new(
            EventType::Clone,
            parent,
            EventArgs::Fork(ForkArgs {
                child_pid: child,
                child_tid: child,
                flags: libc::SIGCHLD as u64,
            }),
        );
        fork.ts_ns = self.tick();
        self.send(fork);
        let filename = if exec.exe_path.is_empty() {
            format!("/usr/bin/{}", exec.comm)
        } else {
            exec.exe_path.to_string()
        };
        let mut e = Event::new(
            EventType::Execve,
            child,
            EventArgs::Exec(ExecArgs {
                filename: filename.clone(),
                argv: exec.argv.iter().map(|a| a.to_string()).collect(),
                argv_truncated: false,
                exe_path: filename,
                tty: exec.tty,
                cap_effective: exec.caps,
            }),
        );
        e.comm = exec.comm.into();
        e.uid = exec.uid;
        e.gid = exec.uid;
        e.ppid = parent;
        e.ts_ns = self.tick();
        (child, self.send(e))
    }

    /// An event of `pid`, with its current credentials.
    pub fn event(
        &mut self,
        pid: u32,
        event_type: EventType,
        args: EventArgs,
        res: i64,
    ) -> Vec<Alert> {
        let mut e = Event::new(event_type, pid, args);
        if let Some(p) = self.engine.table().get(pid) {
            e.uid = p.uid;
            e.gid = p.gid;
            e.comm = p.comm.to_string();
            e.ppid = p.ppid;
        }
        e.res = res;
        e.ts_ns = self.tick();
        self.send(e)
    }

    pub fn send(&mut self, mut event: Event) -> Vec<Alert> {
        let mut alerts = Vec::new();
        self.engine.handle(&mut event, &mut alerts);
        alerts
    }

    pub fn open(&mut self, pid: u32, path: &str, flags: i32) -> Vec<Alert> {
        let args = EventArgs::Open(OpenArgs {
            dirfd: libc::AT_FDCWD,
            path: path.into(),
            flags: flags as u32,
            mode: 0o644,
        });
        self.event(pid, EventType::Openat, args, 3)
    }

    pub fn connect(&mut self, pid: u32, remote: &str) -> Vec<Alert> {
        let args = EventArgs::Socket(SocketArgs {
            fd: 3,
            family: SocketFamily::Inet,
            protocol: L4Proto::Tcp,
            local: Some("10.244.1.7:40112".parse().unwrap()),
            remote: Some(remote.parse().unwrap()),
            unix_path: String::new(),
        });
        self.event(pid, EventType::Connect, args, -(libc::EINPROGRESS as i64))
    }

    pub fn ptrace(&mut self, pid: u32, request: i64, target: i32) -> Vec<Alert> {
        let args = EventArgs::Ptrace(PtraceArgs {
            request,
            target_pid: target,
        });
        self.event(pid, EventType::Ptrace, args, 0)
    }

    pub fn finit_module(&mut self, pid: u32, path: &str) -> Vec<Alert> {
        let args = EventArgs::Module(ModuleArgs {
            fd: 3,
            path: path.into(),
            params: String::new(),
            flags: 0,
        });
        self.event(pid, EventType::FinitModule, args, 0)
    }

    pub fn setuid(&mut self, pid: u32, uid: u32) -> Vec<Alert> {
        let args = EventArgs::SetId(SetIdArgs {
            real: None,
            effective: Some(uid),
            saved: None,
        });
        self.event(pid, EventType::Setuid, args, 0)
    }

    pub fn mount(&mut self, pid: u32, source: &str, target: &str, fstype: &str) -> Vec<Alert> {
        let args = EventArgs::Mount(MountArgs {
            source: source.into(),
            target: target.into(),
            fstype: fstype.into(),
            flags: 0,
        });
        self.event(pid, EventType::Mount, args, 0)
    }

    pub fn setns(&mut self, pid: u32) -> Vec<Alert> {
        let args = EventArgs::Setns(SetnsArgs {
            fd: 4,
            nstype: libc::CLONE_NEWNET as i64,
        });
        self.event(pid, EventType::Setns, args, 0)
    }

    pub fn unshare(&mut self, pid: u32, flags: i32) -> Vec<Alert> {
        let args = EventArgs::Unshare(UnshareArgs {
            flags: flags as u64,
        });
        self.event(pid, EventType::Unshare, args, 0)
    }

    pub fn bpf(&mut self, pid: u32, cmd: i64) -> Vec<Alert> {
        let args = EventArgs::Bpf(BpfArgs {
            cmd,
            prog_type: 1,
            prog_name: "probe".into(),
        });
        self.event(pid, EventType::Bpf, args, 5)
    }
}

pub fn fired(alerts: &[Alert], rule: &str) -> bool {
    alerts.iter().any(|a| &*a.rule == rule)
}

pub fn names(alerts: &[Alert]) -> Vec<&str> {
    alerts.iter().map(|a| &*a.rule).collect()
}
