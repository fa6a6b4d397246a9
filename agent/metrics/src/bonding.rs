//! `bonding`: node_bonding_{slaves,active}{master} from /sys/class/net/bonding_masters
//! (node_exporter 1.5.0 collector/bonding_linux.go).

use std::path::{Path, PathBuf};

use super::{BuildContext, Collector, CollectorError, MetricSet, procfile, read_proc};

pub struct BondingCollector {
    class_net: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(BondingCollector {
        class_net: ctx.paths.sys_path("class/net"),
    }))
}

/// (master, configured slaves, slaves with mii_status "up").
pub type BondStatus = (String, u32, u32);

impl Collector for BondingCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        for (master, slaves, active) in read_bonding(&self.class_net)? {
            let labels = [("master", master.as_str())];
            out.gauge(
                "node_bonding_slaves",
                "Number of configured slaves per bonding interface.",
                &labels,
                f64::from(slaves),
            );
            out.gauge(
                "node_bonding_active",
                "Number of active slaves per bonding interface.",
                &labels,
                f64::from(active),
            );
        }
        Ok(())
    }
}

pub fn read_bonding(class_net: &Path) -> Result<Vec<BondStatus>, CollectorError> {
    let masters = match read_proc(class_net.join("bonding_masters")) {
        Err(e) if e.is_not_found() => return Err(CollectorError::NoData),
        other => other?,
    };
    // Bond devices can be renamed: the listing forgets kept files of a changed name.
    procfile::list_dir(class_net).map_err(|e| CollectorError::io(class_net, e))?;
    let mut status = Vec::new();
    for master in masters.split_whitespace() {
        let slaves = read_proc(class_net.join(master).join("bonding/slaves"))?;
        let (mut total, mut active) = (0, 0);
        for slave in slaves.split_whitespace() {
            let lower = class_net
                .join(master)
                .join(format!("lower_{slave}/bonding_slave/mii_status"));
            let state = match read_proc(&lower) {
                Err(e) if e.is_not_found() => {
                    // Some older kernels use a slave_ prefix.
                    read_proc(
                        class_net
                            .join(master)
                            .join(format!("slave_{slave}/bonding_slave/mii_status")),
                    )?
                }
                other => other?,
            };
            total += 1;
            if state.trim() == "up" {
                active += 1;
            }
        }
        status.push((master.to_string(), total, active));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, paths, scrape, testdata, value};

    #[test]
    fn counts_slaves_and_active_slaves() {
        let set = scrape(build, &paths("bonding"), &CollectorOptions::default()).unwrap();
        assert_eq!(
            value(&set, "node_bonding_slaves", &[("master", "bond0")]),
            2.0
        );
        assert_eq!(
            value(&set, "node_bonding_active", &[("master", "bond0")]),
            1.0
        );
        // bond1 uses the old slave_ prefix.
        assert_eq!(
            value(&set, "node_bonding_slaves", &[("master", "bond1")]),
            1.0
        );
        assert_eq!(
            value(&set, "node_bonding_active", &[("master", "bond1")]),
            1.0
        );
        assert_eq!(
            help(&set, "node_bonding_active"),
            "Number of active slaves per bonding interface."
        );
    }

    #[test]
    fn no_bonding_is_no_data_broken_tree_is_error() {
        let mut p = paths("bonding");
        p.sys = testdata("bonding").join("missing");
        assert!(matches!(
            scrape(build, &p, &CollectorOptions::default()),
            Err(CollectorError::NoData)
        ));
        p.sys = testdata("bonding").join("sys_broken");
        let err = scrape(build, &p, &CollectorOptions::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("mii_status"), "{err}");
    }
}
