//! `uname`: node_uname_info from uname(2) (node_exporter 1.5.0 collector/uname.go,
//! uname_linux.go). The kernel reports an unset domain name as "(none)".

use super::{BuildContext, Collector, CollectorError, MetricSet};

pub struct UnameCollector;

pub fn build(_ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(UnameCollector))
}

/// The six uname fields node_exporter labels with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uname {
    pub sysname: String,
    pub release: String,
    pub version: String,
    pub machine: String,
    pub nodename: String,
    pub domainname: String,
}

impl Collector for UnameCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let u =
            nix::sys::utsname::uname().map_err(|e| CollectorError::Other(format!("uname: {e}")))?;
        let s = |v: &std::ffi::OsStr| v.to_string_lossy().into_owned();
        emit(
            &Uname {
                sysname: s(u.sysname()),
                release: s(u.release()),
                version: s(u.version()),
                machine: s(u.machine()),
                nodename: s(u.nodename()),
                domainname: s(u.domainname()),
            },
            out,
        );
        Ok(())
    }
}

pub fn emit(u: &Uname, out: &mut MetricSet) {
    out.gauge(
        "node_uname_info",
        "Labeled system information as provided by the uname system call.",
        &[
            ("sysname", &u.sysname),
            ("release", &u.release),
            ("version", &u.version),
            ("machine", &u.machine),
            ("nodename", &u.nodename),
            ("domainname", &u.domainname),
        ],
        1.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emits_six_labels_sorted() {
        let mut set = MetricSet::new();
        emit(
            &Uname {
                sysname: "Linux".into(),
                release: "6.18.0".into(),
                version: "#1 SMP".into(),
                machine: "x86_64".into(),
                nodename: "node-a".into(),
                domainname: "(none)".into(),
            },
            &mut set,
        );
        let f = &set.families()[0];
        assert_eq!(f.name(), "node_uname_info");
        let labels: Vec<_> = f.get_metric()[0]
            .get_label()
            .iter()
            .map(|l| (l.name(), l.value()))
            .collect();
        assert_eq!(
            labels,
            [
                ("domainname", "(none)"),
                ("machine", "x86_64"),
                ("nodename", "node-a"),
                ("release", "6.18.0"),
                ("sysname", "Linux"),
                ("version", "#1 SMP"),
            ]
        );
    }

    #[test]
    fn live_uname_has_nodename() {
        let mut set = MetricSet::new();
        UnameCollector.update(&mut set).unwrap();
        let m = &set.families()[0].get_metric()[0];
        let sysname = m
            .get_label()
            .iter()
            .find(|l| l.name() == "sysname")
            .unwrap();
        assert_eq!(sysname.value(), "Linux");
        assert!(
            m.get_label()
                .iter()
                .any(|l| l.name() == "nodename" && !l.value().is_empty())
        );
    }
}
