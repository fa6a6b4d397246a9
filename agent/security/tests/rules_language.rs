//! The rule language end to end: every operator and field on real events, precedence,
//! lists, macros, append/override, exceptions, outputs, and every load error.

mod common;

use common::*;
use node_agent_security::event::{
    EventArgs, EventType, ExitArgs, ForkArgs, L4Proto, SocketArgs, SocketFamily,
};
use node_agent_security::rules::{
    RuleMatching, RuleSelection, RuleSet, RuleSetBuilder, RuleSource,
};
use node_agent_security::{Alert, Priority};

#[derive(Clone, Copy, Debug)]
enum Ev {
    Exec,
    Open,
    Connect,
    Accept,
    Ptrace,
    Module,
    Mount,
    Setuid,
    Bpf,
    Unshare,
    Setns,
    Fork,
    Exit,
}

/// A world with alice's curl in the web container: runc:[2:INIT] → bash (pts/0,
/// uid 1000) → curl, and one event of `ev` from curl.
fn run(rules: RuleSet, ev: Ev) -> Vec<Alert> {
    let mut w = World::with_rules(rules);
    let init = w.container(WEB);
    let (bash, _) = w.spawn(init, Exec::new("bash", &["bash"]).tty(PTS0).uid(1000));
    let exec = Exec::new("curl", &["curl", "-s", "http://web/Index.HTML"])
        .tty(PTS0)
        .uid(1000)
        .caps(CAP_SYS_ADMIN);
    if let Ev::Exec = ev {
        return w.spawn(bash, exec).1;
    }
    let (curl, _) = w.spawn(bash, exec);
    match ev {
        Ev::Exec => unreachable!(),
        Ev::Open => w.open(
            curl,
            "/etc//ssl/../shadow",
            libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
        ),
        Ev::Connect => w.connect(curl, "10.96.0.1:443"),
        Ev::Accept => {
            let args = EventArgs::Socket(SocketArgs {
                fd: 3,
                family: SocketFamily::Inet6,
                protocol: L4Proto::Tcp,
                local: Some("[2001:db8::1]:8080".parse().unwrap()),
                remote: Some("[2001:db8::2]:51000".parse().unwrap()),
                unix_path: String::new(),
            });
            w.event(curl, EventType::Accept4, args, 7)
        }
        Ev::Ptrace => w.ptrace(curl, 16, 4242),
        Ev::Module => w.finit_module(curl, "/tmp/x.ko"),
        Ev::Mount => w.mount(curl, "/dev/sda1", "/mnt", "ext4"),
        Ev::Setuid => w.setuid(curl, 0),
        Ev::Bpf => w.bpf(curl, 5),
        Ev::Unshare => w.unshare(curl, libc::CLONE_NEWUSER | libc::CLONE_NEWNS),
        Ev::Setns => w.setns(curl),
        Ev::Fork => {
            let args = EventArgs::Fork(ForkArgs {
                child_pid: 9999,
                child_tid: 9999,
                flags: libc::CLONE_VM as u64,
            });
            w.event(curl, EventType::Clone, args, 9999)
        }
        Ev::Exit => w.event(
            curl,
            EventType::Procexit,
            EventArgs::Exit(ExitArgs { status: 256 }),
            0,
        ),
    }
}

fn rule(condition: &str, output: &str) -> RuleSet {
    rules_from(&format!(
        "- rule: R\n  desc: d\n  condition: {}\n  output: {}\n  priority: NOTICE\n  tags: [b, a, b]\n",
        yaml_str(condition),
        yaml_str(output)
    ))
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn holds(condition: &str, ev: Ev) -> bool {
    !run(rule(condition, "x"), ev).is_empty()
}

fn assert_holds(cases: &[(&str, Ev, bool)]) {
    for (condition, ev, want) in cases {
        assert_eq!(holds(condition, *ev), *want, "{condition} on {ev:?}");
    }
}

fn load_err(yaml: &str) -> String {
    match RuleSet::load(&[RuleSource {
        name: "bad.yaml".into(),
        content: yaml.into(),
    }]) {
        Ok(_) => panic!("loaded:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

fn assert_err(yaml: &str, wants: &[&str]) {
    let err = load_err(yaml);
    for want in wants {
        assert!(err.contains(want), "error lacks {want:?}:\n{err}");
    }
}

const R: &str = "  desc: d\n  output: o\n  priority: INFO\n";

#[test]
fn comparison_operators() {
    use Ev::*;
    assert_holds(&[
        ("proc.name = curl", Exec, true),
        ("proc.name == curl", Exec, true),
        ("proc.name = bash", Exec, false),
        ("proc.name != bash", Exec, true),
        ("proc.name != curl", Exec, false),
        ("proc.pid > 1000", Exec, true),
        ("proc.pid >= 100000", Exec, false),
        ("proc.pid < 100000", Exec, true),
        ("proc.pid <= 1", Exec, false),
        ("user.loginuid < 0", Exec, true),
        ("proc.cmdline contains Index", Exec, true),
        ("proc.cmdline contains index", Exec, false),
        ("proc.cmdline icontains index.html", Exec, true),
        ("proc.cmdline bcontains 496e646578", Exec, true),
        ("proc.cmdline bstartswith 6375726c", Exec, true),
        ("proc.cmdline bstartswith 6261", Exec, false),
        ("proc.cmdline startswith \"curl -s\"", Exec, true),
        ("proc.cmdline endswith .HTML", Exec, true),
        ("proc.cmdline endswith .html", Exec, false),
        ("proc.exepath glob '/usr/*/curl'", Exec, true),
        ("proc.exepath glob '/usr/bin/c?rl'", Exec, true),
        ("proc.exepath glob '/*'", Exec, true),
        ("proc.exepath glob '/opt/*'", Exec, false),
        ("proc.exepath iglob '/USR/BIN/CURL'", Exec, true),
        ("proc.cmdline regex 'curl -s http://[a-z]+/.*'", Exec, true),
        ("proc.cmdline regex 'curl'", Exec, false),
        ("proc.name in (wget, curl)", Exec, true),
        ("proc.name in (wget)", Exec, false),
        ("proc.name in ()", Exec, false),
        ("proc.name intersects (curl, x)", Exec, true),
        ("fd.name pmatch (/etc, /root)", Open, true),
        ("fd.name pmatch (/et)", Open, false),
        ("fd.name pmatch (/e*/shad*)", Open, true),
        ("fd.name pmatch (/etc/shadow/more)", Open, false),
        ("proc.pname exists", Exec, true),
        ("k8s.pod.label.missing exists", Exec, false),
        ("fd.sport in (80, 443)", Connect, true),
        ("evt.failed = false", Open, true),
        ("evt.failed in (true)", Open, false),
        ("fd.sip = 10.96.0.1", Connect, true),
        ("fd.sip = 10.96.0.0/12", Connect, true),
        ("fd.sip != 10.96.0.1", Connect, false),
        ("fd.snet in (\"10.0.0.0/8\")", Connect, true),
        ("fd.cnet = \"192.168.0.0/16\"", Connect, false),
        ("fd.sip startswith 10.96.", Connect, true),
        ("evt.arg.flags contains O_TRUNC", Open, true),
        ("evt.arg.flags contains O_APPEND", Open, false),
        ("evt.arg.flags contains O_RDWR", Open, true),
        ("evt.arg.flags icontains o_trunc", Open, true),
        ("evt.arg.flags = \"O_RDWR|O_CREAT|O_TRUNC\"", Open, true),
        ("evt.arg.flags startswith O_RDWR", Open, true),
        ("evt.rawarg.flags > 0", Open, true),
        ("evt.arg.request = PTRACE_ATTACH", Ptrace, true),
        ("evt.arg.request = 16", Ptrace, true),
        ("evt.arg.request != PTRACE_ATTACH", Ptrace, false),
        (
            "evt.arg.request in (PTRACE_SEIZE, PTRACE_ATTACH)",
            Ptrace,
            true,
        ),
        ("evt.arg.request contains ATTACH", Ptrace, true),
        ("evt.rawarg.request = 16", Ptrace, true),
        ("evt.arg.flags contains CLONE_NEWUSER", Unshare, true),
        ("evt.arg.flags contains CLONE_NEWNET", Unshare, false),
        ("evt.arg.cmd = BPF_PROG_LOAD", Bpf, true),
        ("evt.arg.nstype = CLONE_NEWNET", Setns, true),
    ]);
}

#[test]
fn missing_values_make_comparisons_false() {
    use Ev::*;
    // Not an open: fd.name has no value; `!=` is false too, `not` and `exists` see it.
    assert_holds(&[
        ("fd.name = /x", Exec, false),
        ("fd.name != /x", Exec, false),
        ("not fd.name = /x", Exec, true),
        ("not fd.name exists", Exec, true),
        ("container.image.tag != latest", Exec, true),
        ("evt.arg.request exists", Open, false),
        ("user.loginname exists", Exec, false),
    ]);
}

#[test]
fn precedence_and_grouping() {
    use Ev::*;
    assert_holds(&[
        // not > and > or
        (
            "proc.name = x or proc.name = curl and proc.pid > 0",
            Exec,
            true,
        ),
        (
            "(proc.name = x or proc.name = curl) and proc.pid < 0",
            Exec,
            false,
        ),
        (
            "proc.name = x or proc.name = curl and proc.pid < 0",
            Exec,
            false,
        ),
        ("not proc.name = x and proc.name = curl", Exec, true),
        ("not (proc.name = x or proc.name = curl)", Exec, false),
        ("not not proc.name = curl", Exec, true),
        ("proc.name = curl AND NOT proc.pname = x", Exec, true),
        ("evt.dir = < and evt.dir = >", Exec, true),
        ("evt.dir != <", Exec, false),
    ]);
}

#[test]
fn every_field_reads_its_value() {
    use Ev::*;
    let cases: &[(&str, Ev)] = &[
        ("evt.type = execve", Exec),
        ("evt.type = openat", Open),
        ("evt.type = connect", Connect),
        ("evt.type = accept4", Accept),
        ("evt.type = clone", Fork),
        ("evt.type = procexit", Exit),
        ("evt.num > 0", Exec),
        ("evt.time glob '??:??:??.?????????'", Exec),
        ("evt.time.s glob '??:??:??'", Exec),
        ("evt.time.iso8601 startswith 2023-11-14T", Exec),
        ("evt.datetime startswith \"2023-11-14 \"", Exec),
        ("evt.rawtime > 1700000000000000000", Exec),
        ("evt.rawtime.s = 1700000000", Exec),
        ("evt.rawtime.ns > 0", Exec),
        ("evt.res = SUCCESS", Exec),
        ("evt.rawres = 3", Open),
        ("evt.res = EINPROGRESS", Connect),
        ("evt.failed = true", Connect),
        ("evt.is_open_read = true", Open),
        ("evt.is_open_write = true", Open),
        ("evt.hostname = node-1", Exec),
        ("evt.source = syscall", Exec),
        ("evt.args contains \"flags=O_RDWR|O_CREAT|O_TRUNC\"", Open),
        ("evt.arg.filename = /usr/bin/curl", Exec),
        ("evt.arg.args = \"-s http://web/Index.HTML\"", Exec),
        ("evt.arg.exe = curl", Exec),
        ("evt.arg.exepath = /usr/bin/curl", Exec),
        ("evt.arg.tty = 34816", Exec),
        ("evt.arg.name = /etc/shadow", Open),
        ("evt.arg[name] = /etc/shadow", Open),
        ("evt.arg.mode = 420", Open),
        ("evt.arg.dirfd = -100", Open),
        ("evt.arg.fd = 3", Open),
        (
            "evt.arg.tuple = \"10.244.1.7:40112->10.96.0.1:443\"",
            Connect,
        ),
        ("evt.arg.pid = 4242", Ptrace),
        ("evt.arg.name = /tmp/x.ko", Module),
        (
            "evt.arg.dev = /dev/sda1 and evt.arg.dir = /mnt and evt.arg.type = ext4",
            Mount,
        ),
        ("evt.arg.uid = 0 and evt.arg.euid = 0", Setuid),
        ("evt.arg.name = probe and evt.arg.prog_type = 1", Bpf),
        ("evt.arg.fd = 4", Setns),
        (
            "evt.arg.pid = 9999 and evt.arg.flags contains CLONE_VM",
            Fork,
        ),
        ("evt.arg.status = 256", Exit),
        ("proc.name = curl", Exec),
        ("proc.exe = curl", Exec),
        ("proc.exepath = /usr/bin/curl", Exec),
        ("proc.cmdline = \"curl -s http://web/Index.HTML\"", Exec),
        ("proc.args = \"-s http://web/Index.HTML\"", Exec),
        ("proc.cmdnargs = 2", Exec),
        ("proc.tty = 34816", Exec),
        ("proc.pid > 0 and thread.tid > 0", Exec),
        ("proc.ppid > 1000", Exec),
        ("proc.pname = bash", Exec),
        ("proc.pexe = bash", Exec),
        ("proc.pexepath = /usr/bin/bash", Exec),
        ("proc.pcmdline = bash", Exec),
        ("proc.aname[0] = curl", Exec),
        ("proc.aname[1] = bash", Exec),
        ("proc.aname[2] = \"runc:[2:INIT]\"", Exec),
        ("proc.aname[3] = runc", Exec),
        ("proc.aname[4] = containerd-shim", Exec),
        ("proc.aname[5] = systemd", Exec),
        ("not proc.aname[6] exists", Exec),
        ("proc.aname = systemd", Exec),
        ("proc.aname in (containerd-shim)", Exec),
        ("proc.aname != sshd", Exec),
        ("proc.apid[5] = 1", Exec),
        ("proc.aexe[1] = bash", Exec),
        ("proc.aexepath[1] = /usr/bin/bash", Exec),
        ("proc.acmdline[1] = bash", Exec),
        ("proc.duration > 0", Open),
        ("proc.is_exe_from_memfd = false", Exec),
        ("thread.tid > 0", Exec),
        ("thread.cap_effective = CAP_SYS_ADMIN", Exec),
        ("user.uid = 1000", Exec),
        ("user.name = alice", Exec),
        ("user.loginuid = -1", Exec),
        ("group.gid = 1000", Exec),
        ("container.id = aaaaaaaaaaaa", Exec),
        ("container.full_id startswith aaaaaaaaaaaa0123", Exec),
        ("container.name = nginx", Exec),
        ("container.image = docker.io/library/nginx:1.25", Exec),
        ("container.image.repository = docker.io/library/nginx", Exec),
        ("container.image.tag = 1.25", Exec),
        ("not container.image.digest exists", Exec),
        ("not container.privileged exists", Exec),
        ("k8s.ns.name = default", Exec),
        ("k8s.pod.name = web-7d4b9", Exec),
        ("k8s.pod.uid startswith 11111111", Exec),
        ("k8s.pod.label.app = web", Exec),
        ("k8s.pod.label[app] = web", Exec),
        ("k8s.pod.labels = app:web", Exec),
        ("fd.num = 3", Open),
        ("fd.type = file and fd.typechar = f", Open),
        ("fd.name = /etc/shadow", Open),
        ("fd.nameraw = /etc//ssl/../shadow", Open),
        ("fd.directory = /etc", Open),
        ("fd.filename = shadow", Open),
        ("fd.type = ipv4 and fd.typechar = 4", Connect),
        ("fd.name = \"10.244.1.7:40112->10.96.0.1:443\"", Connect),
        ("fd.ip = 10.244.1.7 and fd.ip = 10.96.0.1", Connect),
        ("fd.cip = 10.244.1.7 and fd.lip = 10.244.1.7", Connect),
        ("fd.sip = 10.96.0.1 and fd.rip = 10.96.0.1", Connect),
        ("fd.port = 40112 and fd.port = 443", Connect),
        (
            "fd.cport = 40112 and fd.lport = 40112 and fd.sport = 443 and fd.rport = 443",
            Connect,
        ),
        (
            "fd.net = \"10.96.0.0/16\" and fd.snet = \"10.96.0.0/16\" and fd.rnet = \"10.96.0.0/16\"",
            Connect,
        ),
        (
            "fd.cnet = \"10.244.0.0/16\" and fd.lnet = \"10.244.0.0/16\"",
            Connect,
        ),
        ("fd.l4proto = tcp and fd.sockfamily = ip", Connect),
        // accept: the caller is the server.
        (
            "fd.sip = \"2001:db8::1\" and fd.sport = 8080 and fd.cip = \"2001:db8::2\" and fd.num = 7",
            Accept,
        ),
        (
            "fd.type = ipv6 and fd.lport = 8080 and fd.rport = 51000",
            Accept,
        ),
    ];
    for (condition, ev) in cases {
        assert!(holds(condition, *ev), "{condition} on {ev:?}");
    }
    // Every field of the catalogue resolves (the list documents them).
    for name in node_agent_security::rules::fields::field_names() {
        if name.contains("NAME") || name.contains("KEY") {
            continue;
        }
        node_agent_security::rules::fields::Field::resolve(name, None).unwrap();
    }
}

#[test]
fn outputs_substitute_fields_and_na() {
    let alerts = run(
        rule(
            "evt.type = openat",
            "file=%fd.name. user=%user.name gp=%proc.aname[2] tag=%container.image.tag digest=%container.image.digest 100%% %proc.tty",
        ),
        Ev::Open,
    );
    let a = &alerts[0];
    assert!(
        a.output.ends_with(
            ": Notice file=/etc/shadow. user=alice gp=runc:[2:INIT] tag=1.25 digest=<NA> 100% 34816"
        ),
        "{}",
        a.output
    );
    assert_eq!(a.output_fields["fd.name"], "/etc/shadow");
    assert_eq!(
        a.output_fields["container.image.digest"],
        serde_json::Value::Null
    );
    assert_eq!(a.output_fields["proc.tty"], 34816);
    assert!(a.output_fields["evt.time"].is_u64());
    assert_eq!(&*a.tags, &["a".to_string(), "b".to_string()]);
    let info = run(rule("evt.type = execve", "%container.info"), Ev::Exec);
    assert!(
        info[0].output.ends_with("container_id=aaaaaaaaaaaa container_image=docker.io/library/nginx container_image_tag=1.25 container_name=nginx k8s_ns=default k8s_pod_name=web-7d4b9"),
        "{}",
        info[0].output
    );
}

const LISTS_AND_MACROS: &str = r#"
- rule: Uses things defined later
  desc: d
  condition: spawned and proc.name in (net_tools, '"quoted_tools"') and not excluded
  output: o
  priority: WARNING
- macro: spawned
  condition: evt.type = execve
- list: net_tools
  items: [wget, more_tools]
- list: more_tools
  items: [nc]
- list: quoted_tools
  items: [never]
- macro: excluded
  condition: proc.pname = sshd
"#;

#[test]
fn lists_and_macros_resolve_in_any_order() {
    let set = rules_from(LISTS_AND_MACROS);
    assert!(
        run(set.clone(), Ev::Exec).is_empty(),
        "curl is not a net tool yet"
    );
    // A later file appends (legacy `append: true`) and overrides.
    let more = r#"
- list: more_tools
  items: [curl]
  append: true
- macro: excluded
  condition: or proc.pname = bash
  append: true
"#;
    let set = RuleSetBuilder::new()
        .source(RuleSource {
            name: "a.yaml".into(),
            content: LISTS_AND_MACROS.into(),
        })
        .source(RuleSource {
            name: "b.yaml".into(),
            content: more.into(),
        })
        .build()
        .unwrap();
    assert!(run(set, Ev::Exec).is_empty(), "now excluded: parent bash");
    let replace = r#"
- macro: excluded
  condition: proc.pname = sshd
  override:
    condition: replace
- list: net_tools
  items: [more_tools]
  override:
    items: replace
- list: more_tools
  items: [curl]
  override:
    items: append
"#;
    let set = RuleSetBuilder::new()
        .source(RuleSource {
            name: "a.yaml".into(),
            content: LISTS_AND_MACROS.into(),
        })
        .source(RuleSource {
            name: "c.yaml".into(),
            content: replace.into(),
        })
        .build()
        .unwrap();
    assert_eq!(run(set, Ev::Exec).len(), 1);
    // A quoted item is a literal, never a list.
    let quoted = RuleSetBuilder::new()
        .source(RuleSource {
            name: "a.yaml".into(),
            content: LISTS_AND_MACROS.into(),
        })
        .list("quoted_tools", vec!["curl".into()])
        .build()
        .unwrap();
    assert!(run(quoted, Ev::Exec).is_empty());
    let configured = RuleSetBuilder::new()
        .source(RuleSource {
            name: "a.yaml".into(),
            content: LISTS_AND_MACROS.into(),
        })
        .list("more_tools", vec!["curl".into()])
        .build()
        .unwrap();
    assert_eq!(
        run(configured, Ev::Exec).len(),
        1,
        "configuration replaced the list"
    );
    let err = RuleSetBuilder::new()
        .source(RuleSource {
            name: "a.yaml".into(),
            content: LISTS_AND_MACROS.into(),
        })
        .list("no_such_list", vec![])
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("list 'no_such_list': no list named 'no_such_list'"),
        "{err}"
    );
}

#[test]
fn rule_append_override_and_toggles() {
    let base = "- rule: R\n  desc: base\n  condition: evt.type = execve\n  output: first\n  priority: INFO\n  tags: [x]\n";
    let load = |extra: &str| {
        RuleSetBuilder::new()
            .source(RuleSource {
                name: "a.yaml".into(),
                content: base.into(),
            })
            .source(RuleSource {
                name: "b.yaml".into(),
                content: extra.into(),
            })
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let appended = load("- rule: R\n  condition: and proc.name = nothing\n  append: true\n");
    assert!(run(appended, Ev::Exec).is_empty());
    let overridden = load(
        "- rule: R\n  condition: and proc.name = curl\n  output: second %proc.name\n  priority: CRITICAL\n  tags: [y]\n  override:\n    condition: append\n    output: replace\n    priority: replace\n    tags: append\n",
    );
    let r = overridden.rule("R").unwrap();
    assert_eq!(r.priority, Priority::Critical);
    assert_eq!(&*r.tags, &["x".to_string(), "y".to_string()]);
    let alerts = run(overridden, Ev::Exec);
    assert!(
        alerts[0].output.ends_with("Critical second curl"),
        "{}",
        alerts[0].output
    );
    let disabled = load("- rule: R\n  enabled: false\n");
    assert!(!disabled.rule("R").unwrap().enabled);
    assert!(run(disabled.clone(), Ev::Exec).is_empty());
    let reenabled = RuleSetBuilder::new()
        .source(RuleSource {
            name: "a.yaml".into(),
            content: base.into(),
        })
        .source(RuleSource {
            name: "b.yaml".into(),
            content: "- rule: R\n  enabled: false\n".into(),
        })
        .source(RuleSource {
            name: "c.yaml".into(),
            content: "- rule: R\n  enabled: true\n  override:\n    enabled: replace\n".into(),
        })
        .build()
        .unwrap();
    assert_eq!(run(reenabled, Ev::Exec).len(), 1);
    // A redefinition replaces the rule in place (first-match order is kept).
    let two = "- rule: A\n  desc: d\n  condition: evt.type = execve\n  output: a\n  priority: INFO\n- rule: B\n  desc: d\n  condition: evt.type = execve\n  output: b\n  priority: INFO\n- rule: A\n  desc: d\n  condition: evt.type = execve and proc.name = curl\n  output: a2\n  priority: INFO\n";
    let set = rules_from(two);
    assert_eq!(
        set.rules().iter().map(|r| &*r.name).collect::<Vec<_>>(),
        vec!["A", "B"]
    );
    let mut w = World::with_rules(set);
    let (_, alerts) = w.spawn(1, Exec::new("curl", &["curl"]));
    assert_eq!(names(&alerts), vec!["A", "B"]);
    let mut first = World::with_rules(rules_from(two));
    first.engine = std::mem::replace(&mut first.engine, World::new().engine)
        .with_matching(RuleMatching::First);
    let (_, alerts) = first.spawn(1, Exec::new("curl", &["curl"]));
    assert_eq!(names(&alerts), vec!["A"]);
}

const WITH_EXCEPTIONS: &str = r#"
- list: allowed_tools
  items: [curl]
- rule: R
  desc: d
  condition: evt.type = execve
  output: o
  priority: INFO
  exceptions:
    - name: by_parent_and_name
      fields: [proc.pname, proc.name]
      comps: [=, in]
      values:
        - [sshd, [wget]]
    - name: by_exe
      fields: proc.exepath
    - name: by_cmdline
      fields: [proc.cmdline]
      comps: [startswith]
"#;

#[test]
fn exceptions_build_and_append() {
    let load = |extra: &str| {
        RuleSetBuilder::new()
            .source(RuleSource {
                name: "a.yaml".into(),
                content: WITH_EXCEPTIONS.into(),
            })
            .source(RuleSource {
                name: "b.yaml".into(),
                content: extra.into(),
            })
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(run(rules_from(WITH_EXCEPTIONS), Ev::Exec).len(), 1);
    // Values appended to an existing exception (list names inside expand).
    let by_parent = load(
        "- rule: R\n  exceptions:\n    - name: by_parent_and_name\n      values:\n        - [bash, [allowed_tools]]\n  append: true\n",
    );
    assert!(run(by_parent, Ev::Exec).is_empty());
    let by_exe = load(
        "- rule: R\n  exceptions:\n    - name: by_exe\n      values: [/usr/bin/curl]\n  override:\n    exceptions: append\n",
    );
    assert!(run(by_exe, Ev::Exec).is_empty());
    let by_cmdline = load(
        "- rule: R\n  exceptions:\n    - name: by_cmdline\n      values: [[\"curl -s\"]]\n  append: true\n",
    );
    assert!(run(by_cmdline, Ev::Exec).is_empty());
    // A new exception by append, and exceptions replaced.
    let new = load(
        "- rule: R\n  exceptions:\n    - name: by_user\n      fields: [user.uid]\n      values: [[1000]]\n  append: true\n",
    );
    assert!(run(new, Ev::Exec).is_empty());
    let non_matching = load(
        "- rule: R\n  exceptions:\n    - name: by_user\n      fields: [user.uid, proc.name]\n      comps: [=, =]\n      values: [[1000, wget]]\n  append: true\n",
    );
    assert_eq!(
        run(non_matching, Ev::Exec).len(),
        1,
        "both fields must match"
    );
    let replaced = load(
        "- rule: R\n  exceptions:\n    - name: only\n      fields: proc.name\n      comps: pmatch\n      values: [/nothing]\n  override:\n    exceptions: replace\n",
    );
    assert_eq!(run(replaced, Ev::Exec).len(), 1);
}

#[test]
fn index_by_event_type_and_priority_and_selection() {
    let yaml = "- rule: Exec\n  desc: d\n  condition: evt.type in (execve, execveat) and proc.name = curl\n  output: o\n  priority: WARNING\n  tags: [t1]\n- rule: NotOpen\n  desc: d\n  condition: not evt.type = openat and not evt.type != connect\n  output: o\n  priority: DEBUG\n  tags: [t2]\n- rule: Anything\n  desc: d\n  condition: proc.name = curl\n  output: o\n  priority: INFO\n  warn_evttypes: false\n";
    let mut set = rules_from(yaml);
    assert!(set.warnings().is_empty(), "{:?}", set.warnings());
    assert_eq!(set.candidates(EventType::Execve), 2);
    assert_eq!(set.candidates(EventType::Connect), 2);
    assert_eq!(set.candidates(EventType::Openat), 1);
    set.set_min_priority(Priority::Informational);
    assert_eq!(set.candidates(EventType::Connect), 1);
    let errors = set.select(&RuleSelection {
        disable: vec!["Exec".into(), "Nope".into()],
        enable_tags: vec!["t2".into()],
        disable_tags: vec!["t9".into()],
        enable: vec!["Any*".into()],
    });
    let keys: Vec<_> = errors
        .iter()
        .map(|e| (e.key.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("disable_tags[0]", "no rule has tag 't9'"),
            ("disable[1]", "no rule is named 'Nope'")
        ]
    );
    assert!(!set.rule("Exec").unwrap().enabled);
    assert_eq!(set.candidates(EventType::Execve), 1);
    // Without warn_evttypes: false, a rule on every event is warned about.
    let warned = rules_from(
        "- rule: Anything\n  desc: d\n  condition: proc.name = curl\n  output: o\n  priority: INFO\n",
    );
    assert!(
        warned.warnings()[0]
            .to_string()
            .contains("no evt.type restriction"),
        "{}",
        warned.warnings()[0]
    );
}

#[test]
fn skipped_rules_are_warnings() {
    let set = rules_from(
        "- rule: Audit\n  desc: d\n  condition: ka.verb = create\n  output: o\n  priority: INFO\n  source: k8s_audit\n- rule: Future\n  desc: d\n  condition: evt.type = execve and proc.vpid = 1\n  output: o\n  priority: INFO\n  skip-if-unknown-filter: true\n- rule: Rename\n  desc: d\n  condition: evt.type = rename\n  output: o\n  priority: INFO\n  foo: bar\n- required_engine_version: 0.26.0\n- required_plugin_versions:\n  - name: k8saudit\n    version: 0.1.0\n",
    );
    assert_eq!(set.rules().len(), 1);
    let warnings: Vec<String> = set.warnings().iter().map(ToString::to_string).collect();
    let all = warnings.join("\n");
    for want in [
        "rule 'Audit': source 'k8s_audit' is not captured by node-agent; the rule is skipped",
        "rule 'Future': unknown field 'proc.vpid'; skipped (skip-if-unknown-filter)",
        "rule 'Rename': unknown key 'foo' is ignored",
        "evt.type 'rename' is not captured by node-agent",
        "rule 'Rename': never fires",
    ] {
        assert!(all.contains(want), "missing {want:?} in\n{all}");
    }
}

#[test]
fn condition_errors_name_file_rule_and_position() {
    let err = load_err(
        "# header\n- rule: Shell\n  desc: d\n  condition: evt.type = execve and proc.nme = bash\n  output: o\n  priority: INFO\n",
    );
    assert_eq!(
        err,
        "1 error(s) loading rules\nbad.yaml:2: rule 'Shell': condition: unknown field 'proc.nme' at position 23\n    evt.type = execve and proc.nme = bash\n                          ^"
    );
    let cases: &[(&str, &[&str])] = &[
        (
            "proc.name = bash and",
            &["rule 'X': condition: condition ends where a check was expected at position 21"],
        ),
        (
            "(proc.name = bash",
            &["missing ')' for the '(' at position 1"],
        ),
        (
            "proc.name bash",
            &[
                "expected an operator after field 'proc.name'",
                "position 11",
            ],
        ),
        (
            "nosuchmacro",
            &["unknown macro 'nosuchmacro' at position 1"],
        ),
        (
            "some_list",
            &["unknown macro 'some_list' ('some_list' is a list: use it inside 'in (...)')"],
        ),
        (
            "proc.name in (shell_binarys)",
            &[
                "unknown list 'shell_binarys' (quote it to use it as a literal value; did you mean 'shell_binaries'?) at position 15",
            ],
        ),
        (
            "proc.name in (my_binaries)",
            &["unknown list 'my_binaries' (quote it to use it as a literal value) at position 15"],
        ),
        (
            "proc.name < bash",
            &["operator '<' is not supported for string field proc.name (numeric fields only)"],
        ),
        (
            "proc.pid contains 1",
            &["operator 'contains' is not supported for numeric field proc.pid"],
        ),
        (
            "proc.pid = one",
            &[
                "'one' is not a number (field proc.pid is numeric)",
                "position 12",
            ],
        ),
        ("proc.pid in (1, two)", &["'two' is not a number"]),
        (
            "evt.failed = yes",
            &["'yes' is not true or false (field evt.failed is boolean)"],
        ),
        (
            "fd.sip = kubernetes",
            &["'kubernetes' is not an IP address or CIDR network (field fd.sip)"],
        ),
        (
            "fd.sip pmatch (/x)",
            &["operator 'pmatch' is not supported for IP address field fd.sip"],
        ),
        ("proc.name glob '[a'", &["invalid glob '[a'"]),
        ("proc.name regex '(a'", &["invalid regex '(a'"]),
        (
            "proc.name bcontains xyz",
            &["'bcontains' takes hexadecimal bytes"],
        ),
        (
            "evt.dir contains <",
            &["operator 'contains' is not supported for evt.dir"],
        ),
        (
            "proc.aname[x] = a",
            &["'proc.aname[x]': the index must be a number from 0 to 64"],
        ),
        (
            "proc.name[1] = a",
            &["field 'proc.name' takes no argument (found '[1]')"],
        ),
        (
            "evt.arg.bogus = 1",
            &["'evt.arg.bogus': no captured syscall has an argument 'bogus'"],
        ),
        (
            "evt.arg.request < 1",
            &["operator '<' is not supported for enumerated field evt.arg.request"],
        ),
        (
            "evt.arg.flags > 1",
            &["operator '>' is not supported for flags field evt.arg.flags"],
        ),
    ];
    for (condition, wants) in cases {
        let yaml = format!(
            "- list: some_list\n  items: [a]\n- list: shell_binaries\n  items: [sh]\n- rule: X\n{R}  condition: {}\n",
            yaml_str(condition)
        );
        assert_err(&yaml, wants);
    }
    // An error in a macro is reported once, for the macro; its users say so.
    assert_err(
        "- macro: m\n  condition: proc.nme = x\n- rule: A\n  desc: d\n  condition: m\n  output: o\n  priority: INFO\n- rule: B\n  desc: d\n  condition: evt.type=execve and m\n  output: o\n  priority: INFO\n",
        &[
            "bad.yaml:1: macro 'm': condition: unknown field 'proc.nme' at position 1",
            "rule 'A': condition: macro 'm' has errors (reported with the macro) at position 1",
            "rule 'B': condition: macro 'm' has errors (reported with the macro) at position 21",
            "3 error(s)",
        ],
    );
    assert_err(
        "- macro: a\n  condition: b\n- macro: b\n  condition: a and proc.name = x\n- rule: R\n  desc: d\n  condition: a\n  output: o\n  priority: INFO\n",
        &["macro 'a' refers to itself (a → b → a)"],
    );
    assert_err(
        "- list: a\n  items: [b]\n- list: b\n  items: [a]\n- rule: R\n  desc: d\n  condition: proc.name in (a)\n  output: o\n  priority: INFO\n",
        &["lists refer to each other in a loop (a → b → a)"],
    );
    assert_err(
        "- rule: R\n  desc: d\n  condition: evt.type = execve\n  output: \"file=%fd.nmae\"\n  priority: INFO\n",
        &["bad.yaml:1: rule 'R': output: unknown field '%fd.nmae' at position 6"],
    );
}

#[test]
fn item_errors() {
    let cases: &[(&str, &[&str])] = &[
        (
            "- rule: R\n  condition: [\n",
            &["bad.yaml:3: invalid YAML at line 3 column 1"],
        ),
        ("rule: R\n", &["a rules file is a YAML list of items"]),
        (
            "- just a string\n",
            &["bad.yaml:1: each item must be a mapping"],
        ),
        ("- rules: R\n", &["unknown item with keys [rules]"]),
        (
            "- rule: \"\"\n",
            &["rule: 'rule' must be a non-empty string"],
        ),
        (
            "- rule: R\n  desc: d\n",
            &["rule 'R': missing condition, output, priority"],
        ),
        (
            "- rule: R\n  condition: evt.type=execve\n  output: o\n  priority: SEVERE\n",
            &["unknown priority 'SEVERE'"],
        ),
        (
            "- rule: R\n  condition: evt.type=execve\n  output: o\n  priority: INFO\n  enabled: yes\n",
            &["'enabled' must be true or false"],
        ),
        (
            "- rule: R\n  condition: evt.type=execve\n  output: o\n  priority: INFO\n  tags: t\n",
            &["'tags' must be a list"],
        ),
        (
            "- rule: R\n  enabled: false\n",
            &["rule 'R': sets 'enabled' of a rule that is not defined before it"],
        ),
        (
            "- rule: R\n  condition: and x.y=1\n  append: true\n",
            &["rule 'R': appends to a rule that is not defined before it"],
        ),
        (
            "- macro: m\n  condition: or x.y=1\n  append: true\n",
            &["macro 'm': appends or overrides a macro that is not defined before it"],
        ),
        (
            "- list: l\n  items: [a]\n  override:\n    items: append\n",
            &["list 'l': appends or overrides a list that is not defined before it"],
        ),
        (
            "- list: l\n  items: a\n",
            &["list 'l': 'items' must be a list"],
        ),
        ("- list: l\n", &["list 'l': missing 'items'"]),
        (
            "- list: l\n  items: [[a]]\n",
            &["list items must be strings or numbers"],
        ),
        (
            "- macro: m.x\n  condition: x.y=1\n",
            &["macro names are letters, digits and '_'"],
        ),
        ("- macro: m\n", &["macro 'm': missing 'condition'"]),
    ];
    for (yaml, wants) in cases {
        assert_err(yaml, wants);
    }
    let base =
        "- rule: R\n  desc: d\n  condition: evt.type = execve\n  output: o\n  priority: INFO\n";
    let later: &[(&str, &[&str])] = &[
        (
            "- rule: R\n  condition: and x.y=1\n  append: true\n  override:\n    condition: append\n",
            &["'append' and 'override' cannot be used together"],
        ),
        (
            "- rule: R\n  condition: and x.y=1\n  override:\n    output: replace\n",
            &["override names 'output', but the item has no 'output'"],
        ),
        (
            "- rule: R\n  condition: and x.y=1\n  output: o2\n  override:\n    condition: append\n",
            &["'output' is not in 'override': say whether it is appended or replaced"],
        ),
        (
            "- rule: R\n  priority: INFO\n  override:\n    priority: append\n",
            &["'priority' cannot be appended (allowed: condition, output, desc, tags, exceptions)"],
        ),
        (
            "- rule: R\n  condition: and x.y=1\n  override:\n    condition: merge\n",
            &["override of 'condition' must be 'append' or 'replace'"],
        ),
        (
            "- rule: R\n  output: o2\n  append: true\n",
            &[
                "with 'append: true' only condition and exceptions are appended; 'output' needs 'override'",
            ],
        ),
    ];
    for (extra, wants) in later {
        assert_err(&format!("{base}{extra}"), wants);
    }
    // Several errors are reported together.
    let err = load_err(
        "- rule: A\n  desc: d\n- rule: B\n  desc: d\n  condition: x.y\n  output: o\n  priority: INFO\n- list: l\n",
    );
    assert!(err.starts_with("3 error(s)"), "{err}");
}

#[test]
fn exception_errors() {
    let rule = |exceptions: &str| {
        format!(
            "- rule: R\n  desc: d\n  condition: evt.type = execve\n  output: o\n  priority: INFO\n  exceptions:\n{exceptions}"
        )
    };
    let cases: &[(&str, &[&str])] = &[
        (
            "    - fields: [proc.name]\n",
            &["an exception has no 'name'"],
        ),
        ("    - name: e\n", &["exception 'e' has no 'fields'"]),
        (
            "    - name: e\n      fields: [proc.name]\n    - name: e\n      fields: [proc.name]\n",
            &["exception 'e' is defined twice"],
        ),
        (
            "    - name: e\n      fields: [proc.name, proc.pname]\n      comps: [=]\n      values: [[a, b]]\n",
            &["exception 'e': has 2 fields but 1 comps"],
        ),
        (
            "    - name: e\n      fields: [proc.name, proc.pname]\n      values: [[a]]\n",
            &["exception 'e': value #1 has 1 items, but there are 2 fields"],
        ),
        (
            "    - name: e\n      fields: [proc.name]\n      values: [a]\n",
            &["exception 'e': value #1 must be a list of 1 items"],
        ),
        (
            "    - name: e\n      fields: [proc.name]\n      values: [[[a]]]\n",
            &["gives a list for 'proc.name =', which takes one value"],
        ),
        (
            "    - name: e\n      fields: proc.name\n      comps: '='\n      values: [a]\n",
            &["with a single field, 'comps' must be in, pmatch or intersects"],
        ),
        (
            "    - name: e\n      fields: [proc.name]\n      comps: [like]\n      values: [[a]]\n",
            &["exception 'e': unknown comparison 'like'"],
        ),
        (
            "    - name: e\n      fields: [proc.nme]\n      values: [[a]]\n",
            &["exception 'e': unknown field 'proc.nme'"],
        ),
        (
            "    - name: e\n      fields: [proc.pid]\n      values: [[abc]]\n",
            &["exception 'e': 'abc' is not a number"],
        ),
        (
            "    - name: e\n      fields: [proc.name]\n      values: x\n",
            &["exception 'e': 'values' must be a list"],
        ),
    ];
    for (exceptions, wants) in cases {
        assert_err(&rule(exceptions), wants);
    }
    let base = rule("    - name: e\n      fields: [proc.name]\n");
    assert_err(
        &format!(
            "{base}- rule: R\n  exceptions:\n    - name: e\n      fields: [proc.pname]\n      values: [[x]]\n  append: true\n"
        ),
        &["exception 'e' already exists: append only 'values' to it"],
    );
    assert_err(
        &format!(
            "{base}- rule: R\n  exceptions:\n    - name: new\n      values: [[x]]\n  append: true\n"
        ),
        &["exception 'new' is new and has no 'fields'"],
    );
}

#[test]
fn rules_files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("20-b.yaml"),
        "- list: l\n  items: [curl]\n  append: true\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("10-a.yml"), "- list: l\n  items: []\n- rule: R\n  desc: d\n  condition: evt.type = execve and proc.name in (l)\n  output: o\n  priority: INFO\n").unwrap();
    std::fs::write(dir.path().join("README.md"), "not rules").unwrap();
    let set = RuleSetBuilder::new().path(dir.path()).build().unwrap();
    assert_eq!(run(set, Ev::Exec).len(), 1, "files load in name order");
    let err = RuleSetBuilder::new()
        .path(&dir.path().join("missing.yaml"))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing.yaml: cannot read rules: No such file or directory"),
        "{err}"
    );
    std::fs::write(dir.path().join("bin.yaml"), [0xff, 0xfe, 0x00]).unwrap();
    let err = RuleSetBuilder::new()
        .path(&dir.path().join("bin.yaml"))
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("not UTF-8 text"), "{err}");
}
