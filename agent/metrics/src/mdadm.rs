//! `mdadm`: node_md_* from /proc/mdstat (node_exporter 1.5.0 collector/mdadm_linux.go over
//! procfs' MDStat). Hand-parsed: procfs-core has no mdstat parser; this follows Go procfs'
//! `parseMDStat` line by line.

use std::path::PathBuf;
use std::sync::LazyLock;

use regex::Regex;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// `<size> blocks ... [<total>/<active>] [UU_]`, last match on the line (greedy `.*`).
static STATUS_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(\d+) blocks .*\[(\d+)/(\d+)\] \[([U_]+)\]").expect("static regex")
});
/// `(<synced>/<total>)` on a recovery/resync/check line.
static RECOVERY_BLOCKS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\((\d+)/\d+\)").expect("static regex"));

#[derive(Debug, Clone, PartialEq)]
pub struct MdStat {
    pub name: String,
    /// active, inactive, recovering, resyncing or checking.
    pub state: String,
    pub disks_active: i64,
    pub disks_failed: i64,
    pub disks_spare: i64,
    pub disks_total: i64,
    pub blocks_total: i64,
    pub blocks_synced: i64,
}

pub struct MdadmCollector {
    path: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(MdadmCollector {
        path: ctx.paths.proc_path("mdstat"),
    }))
}

const STATE_HELP: &str = "Indicates the state of md-device.";

impl Collector for MdadmCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let text = match read_proc(&self.path) {
            Err(e) if e.is_not_found() => return Err(CollectorError::NoData),
            other => other?,
        };
        for md in parse_mdstat(&text)? {
            let dev = md.name.as_str();
            let labels = [("device", dev)];
            out.gauge(
                "node_md_disks_required",
                "Total number of disks of device.",
                &labels,
                md.disks_total as f64,
            );
            for (state, v) in [
                ("active", md.disks_active),
                ("failed", md.disks_failed),
                ("spare", md.disks_spare),
            ] {
                out.gauge(
                    "node_md_disks",
                    "Number of active/failed/spare disks of device.",
                    &[("device", dev), ("state", state)],
                    v as f64,
                );
            }
            for (label, state) in [
                ("active", "active"),
                ("inactive", "inactive"),
                ("recovering", "recovering"),
                ("resync", "resyncing"),
                ("check", "checking"),
            ] {
                let v = if md.state == state { 1.0 } else { 0.0 };
                out.gauge(
                    "node_md_state",
                    STATE_HELP,
                    &[("device", dev), ("state", label)],
                    v,
                );
            }
            out.gauge(
                "node_md_blocks",
                "Total number of blocks on device.",
                &labels,
                md.blocks_total as f64,
            );
            out.gauge(
                "node_md_blocks_synced",
                "Number of blocks synced on device.",
                &labels,
                md.blocks_synced as f64,
            );
        }
        Ok(())
    }
}

fn err(detail: impl std::fmt::Display) -> CollectorError {
    CollectorError::parse("/proc/mdstat", detail)
}

fn int(s: &str, line: &str) -> Result<i64, CollectorError> {
    s.parse()
        .map_err(|e| err(format!("{s:?} in {line:?}: {e}")))
}

pub fn parse_mdstat(text: &str) -> Result<Vec<MdStat>, CollectorError> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut mds = Vec::new();
    for (i, &line) in lines.iter().enumerate() {
        if line.trim().is_empty()
            || line.starts_with(' ')
            || line.starts_with("Personalities")
            || line.starts_with("unused")
        {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 {
            return Err(err(format!(
                "not enough fields in mdline (expected at least 3): {line:?}"
            )));
        }
        let name = fields[0];
        let mut state = fields[2].to_string();
        if lines.len() <= i + 3 {
            return Err(err(format!("too few lines for md device {name}")));
        }
        let failed = line.matches("(F)").count() as i64;
        let spare = line.matches("(S)").count() as i64;
        let status = lines[i + 1];
        let size_str = status
            .split_whitespace()
            .next()
            .ok_or_else(|| err(format!("unexpected status line {status:?}")))?;
        let size = int(size_str, status)?;
        let (active, total) = if line.contains("raid0") || line.contains("linear") {
            // Only member disks carry a [n] index on the device line.
            let n = line.matches('[').count() as i64;
            (n, n)
        } else if line.contains("inactive") {
            (0, 0)
        } else {
            let caps = STATUS_LINE.captures(status).ok_or_else(|| {
                err(format!(
                    "couldn't find all the substring matches: {status:?}"
                ))
            })?;
            (int(&caps[3], status)?, int(&caps[2], status)?)
        };

        let sync_idx = if lines[i + 2].contains("bitmap") {
            i + 3
        } else {
            i + 2
        };
        let sync = lines[sync_idx];
        let mut synced = size;
        let recovering = sync.contains("recovery");
        let resyncing = sync.contains("resync");
        let checking = sync.contains("check");
        if recovering || resyncing || checking {
            state = if recovering {
                "recovering"
            } else if checking {
                "checking"
            } else {
                "resyncing"
            }
            .to_string();
            synced = if sync.contains("PENDING") || sync.contains("DELAYED") {
                0
            } else {
                let caps = RECOVERY_BLOCKS.captures(sync).ok_or_else(|| {
                    err(format!("no synced blocks in sync line of {name}: {sync:?}"))
                })?;
                int(&caps[1], sync)?
            };
        }
        mds.push(MdStat {
            name: name.to_string(),
            state,
            disks_active: active,
            disks_failed: failed,
            disks_spare: spare,
            disks_total: total,
            blocks_total: size,
            blocks_synced: synced,
        });
    }
    Ok(mds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, len, paths, scrape, testdata, value};

    fn md(set: &MetricSet, name: &str, dev: &str) -> f64 {
        value(set, name, &[("device", dev)])
    }

    #[test]
    fn parses_mdstat_fixture() {
        let text = std::fs::read_to_string(testdata("mdadm").join("proc/mdstat")).unwrap();
        let mds = parse_mdstat(&text).unwrap();
        let names: Vec<_> = mds.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["md3", "md127", "md0", "md4", "md6", "md8"]);
        let md3 = &mds[0];
        assert_eq!(
            (md3.state.as_str(), md3.disks_active, md3.disks_total),
            ("active", 8, 8)
        );
        assert_eq!((md3.disks_failed, md3.disks_spare), (1, 2));
        assert_eq!(
            (md3.blocks_total, md3.blocks_synced),
            (5853468288, 5853468288)
        );
        assert_eq!(mds[1].state, "inactive");
        assert_eq!(mds[1].disks_spare, 1);
        assert_eq!(
            (mds[2].disks_active, mds[2].disks_total),
            (2, 2),
            "raid0 counts [n]"
        );
        assert_eq!(
            (mds[3].state.as_str(), mds[3].blocks_synced),
            ("recovering", 1468000)
        );
        assert_eq!(
            (mds[4].state.as_str(), mds[4].blocks_synced),
            ("resyncing", 0),
            "PENDING"
        );
        assert_eq!(
            (mds[5].state.as_str(), mds[5].blocks_synced),
            ("checking", 2000)
        );
    }

    #[test]
    fn emits_md_families() {
        let set = scrape(build, &paths("mdadm"), &CollectorOptions::default()).unwrap();
        assert_eq!(md(&set, "node_md_disks_required", "md3"), 8.0);
        assert_eq!(
            value(
                &set,
                "node_md_disks",
                &[("device", "md3"), ("state", "failed")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &set,
                "node_md_state",
                &[("device", "md3"), ("state", "active")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &set,
                "node_md_state",
                &[("device", "md4"), ("state", "recovering")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &set,
                "node_md_state",
                &[("device", "md4"), ("state", "active")]
            ),
            0.0
        );
        assert_eq!(
            value(
                &set,
                "node_md_state",
                &[("device", "md6"), ("state", "resync")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &set,
                "node_md_state",
                &[("device", "md8"), ("state", "check")]
            ),
            1.0
        );
        assert_eq!(md(&set, "node_md_blocks_synced", "md4"), 1468000.0);
        assert_eq!(len(&set, "node_md_state"), 6 * 5);
        assert_eq!(
            help(&set, "node_md_disks"),
            "Number of active/failed/spare disks of device."
        );
    }

    #[test]
    fn missing_is_no_data_malformed_is_error() {
        let mut p = paths("mdadm");
        p.proc = testdata("mdadm").join("missing");
        assert!(matches!(
            scrape(build, &p, &CollectorOptions::default()),
            Err(CollectorError::NoData)
        ));
        assert!(
            parse_mdstat("Personalities : [raid1]\nunused devices: <none>\n")
                .unwrap()
                .is_empty()
        );
        let err = parse_mdstat("md0 : active raid1 sda[0]\n").unwrap_err();
        assert!(err.to_string().contains("/proc/mdstat"), "{err}");
        assert!(parse_mdstat("md0 :\n").is_err());
        assert!(parse_mdstat("md0 : active raid1 sda[0]\n  x blocks\n\n\n").is_err());
        assert!(parse_mdstat("md0 : active raid1 sda[0]\n  100 blocks [2/1]\n\n\n").is_err());
    }
}
