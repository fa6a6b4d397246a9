//! `edac`: memory controller error counters from /sys/devices/system/edac/mc/mc<N>
//! (node_exporter 1.5.0 collector/edac_linux.go). The controller's `*_noinfo_count` go to
//! the csrow families with `csrow="unknown"`. No EDAC driver: nothing, and success.

use std::path::{Path, PathBuf};

use super::sysattr::{read_u64, sorted_entries};
use super::{BuildContext, Collector, CollectorError, MetricSet};

pub struct EdacCollector {
    dir: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(EdacCollector {
        dir: ctx.paths.sys_path("devices/system/edac/mc"),
    }))
}

/// Entries of `dir` matching the glob `<prefix>[0-9]*`, with the number after the prefix
/// (the regexp's `([0-9]*)`, possibly empty), sorted by entry name.
fn numbered(dir: &Path, prefix: &str) -> Result<Vec<(String, PathBuf)>, CollectorError> {
    let Some(names) = sorted_entries(dir)? else {
        return Ok(Vec::new());
    };
    Ok(names
        .into_iter()
        .filter_map(|name| {
            let rest = name.strip_prefix(prefix)?;
            if !rest.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((digits, dir.join(name)))
        })
        .collect())
}

/// Counts of one controller: (ce, ce_noinfo, ue, ue_noinfo, [(csrow, ce, ue)]).
pub type McCounts = (u64, u64, u64, u64, Vec<(String, u64, u64)>);

pub fn read_edac(dir: &Path) -> Result<Vec<(String, McCounts)>, CollectorError> {
    let mut out = Vec::new();
    for (mc, path) in numbered(dir, "mc")? {
        let ce = read_u64(&path.join("ce_count"))?;
        let ce_noinfo = read_u64(&path.join("ce_noinfo_count"))?;
        let ue = read_u64(&path.join("ue_count"))?;
        let ue_noinfo = read_u64(&path.join("ue_noinfo_count"))?;
        let mut rows = Vec::new();
        for (row, rpath) in numbered(&path, "csrow")? {
            rows.push((
                row,
                read_u64(&rpath.join("ce_count"))?,
                read_u64(&rpath.join("ue_count"))?,
            ));
        }
        out.push((mc, (ce, ce_noinfo, ue, ue_noinfo, rows)));
    }
    Ok(out)
}

const CE_HELP: &str = "Total correctable memory errors.";
const UE_HELP: &str = "Total uncorrectable memory errors.";
const ROW_CE_HELP: &str = "Total correctable memory errors for this csrow.";
const ROW_UE_HELP: &str = "Total uncorrectable memory errors for this csrow.";

impl Collector for EdacCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        for (mc, (ce, ce_noinfo, ue, ue_noinfo, rows)) in read_edac(&self.dir)? {
            let c = [("controller", mc.as_str())];
            out.counter("node_edac_correctable_errors_total", CE_HELP, &c, ce as f64);
            out.counter(
                "node_edac_uncorrectable_errors_total",
                UE_HELP,
                &c,
                ue as f64,
            );
            let unknown = [("controller", mc.as_str()), ("csrow", "unknown")];
            out.counter(
                "node_edac_csrow_correctable_errors_total",
                ROW_CE_HELP,
                &unknown,
                ce_noinfo as f64,
            );
            out.counter(
                "node_edac_csrow_uncorrectable_errors_total",
                ROW_UE_HELP,
                &unknown,
                ue_noinfo as f64,
            );
            for (row, rce, rue) in rows {
                let l = [("controller", mc.as_str()), ("csrow", row.as_str())];
                out.counter(
                    "node_edac_csrow_correctable_errors_total",
                    ROW_CE_HELP,
                    &l,
                    rce as f64,
                );
                out.counter(
                    "node_edac_csrow_uncorrectable_errors_total",
                    ROW_UE_HELP,
                    &l,
                    rue as f64,
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{assert_same_as_node_exporter, len, paths, scrape, value};

    #[test]
    fn same_as_node_exporter() {
        assert_same_as_node_exporter(
            "edac",
            build,
            &paths("edac"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn controllers_and_csrows() {
        let set = scrape(build, &paths("edac"), &CollectorOptions::default()).unwrap();
        assert_eq!(
            len(&set, "node_edac_correctable_errors_total"),
            2,
            "mc/power is not a controller"
        );
        assert_eq!(
            value(
                &set,
                "node_edac_correctable_errors_total",
                &[("controller", "1")]
            ),
            4294967295.0
        );
        assert_eq!(
            value(
                &set,
                "node_edac_csrow_uncorrectable_errors_total",
                &[("controller", "1"), ("csrow", "unknown")]
            ),
            5.0
        );
        assert_eq!(
            value(
                &set,
                "node_edac_csrow_correctable_errors_total",
                &[("controller", "0"), ("csrow", "0")]
            ),
            2.0
        );
    }

    #[test]
    fn no_edac_is_empty_success_bad_count_an_error() {
        let mut p = paths("edac");
        p.sys = p.sys.join("missing");
        assert!(
            scrape(build, &p, &CollectorOptions::default())
                .unwrap()
                .families()
                .is_empty()
        );
        let dir = tempfile::tempdir().unwrap();
        let mc = dir.path().join("mc0");
        std::fs::create_dir(&mc).unwrap();
        for f in ["ce_count", "ce_noinfo_count", "ue_count"] {
            std::fs::write(mc.join(f), "1\n").unwrap();
        }
        assert!(
            read_edac(dir.path()).unwrap_err().is_not_found(),
            "ue_noinfo_count missing"
        );
        std::fs::write(mc.join("ue_noinfo_count"), "-1\n").unwrap();
        assert!(matches!(
            read_edac(dir.path()),
            Err(CollectorError::Parse { .. })
        ));
    }
}
