//! `netclass`: node_network_* properties from /sys/class/net/<iface>/ (node_exporter 1.5.0
//! collector/netclass_linux.go over procfs' sysfs.NetClass).

use std::path::PathBuf;

use regex::Regex;

use super::{BuildContext, Collector, CollectorError, MetricSet, procfile};

/// sysfs attribute, metric suffix, counter? — numeric properties exported one-to-one.
const NUMERIC: [(&str, &str, bool); 15] = [
    ("addr_assign_type", "address_assign_type", false),
    ("carrier", "carrier", false),
    ("carrier_changes", "carrier_changes_total", true),
    ("carrier_up_count", "carrier_up_changes_total", true),
    ("carrier_down_count", "carrier_down_changes_total", true),
    ("dev_id", "device_id", false),
    ("dormant", "dormant", false),
    ("flags", "flags", false),
    ("ifindex", "iface_id", false),
    ("iflink", "iface_link", false),
    ("link_mode", "iface_link_mode", false),
    ("mtu", "mtu_bytes", false),
    ("name_assign_type", "name_assign_type", false),
    ("netdev_group", "net_dev_group", false),
    ("tx_queue_len", "transmit_queue_length", false),
];

struct Desc {
    attr: &'static str,
    name: String,
    help: String,
    counter: bool,
}

fn desc(attr: &'static str, suffix: &str, counter: bool) -> Desc {
    Desc {
        attr,
        name: format!("node_network_{suffix}"),
        help: format!("Network device property: {suffix}"),
        counter,
    }
}

pub struct NetclassCollector {
    class_net: PathBuf,
    ignored: Regex,
    ignore_invalid_speed: bool,
    numeric: Vec<Desc>,
    speed: Desc,
    protocol_type: Desc,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(NetclassCollector {
        class_net: ctx.paths.sys_path("class/net"),
        ignored: ctx.options.netclass_ignored_devices.clone(),
        ignore_invalid_speed: ctx.options.netclass_ignore_invalid_speed,
        numeric: NUMERIC.iter().map(|&(a, s, c)| desc(a, s, c)).collect(),
        speed: desc("speed", "speed_bytes", false),
        protocol_type: desc("type", "protocol_type", false),
    }))
}

/// An interface directory. Attributes are read through [`procfile`]'s kept files: after
/// the first scrape each one costs a `pread` instead of a path walk through the class
/// symlink, an open and a close (the bulk of this collector's cost).
struct AttrDir {
    path: PathBuf,
}

impl AttrDir {
    /// The attribute without its trailing newline; `None` when it cannot be read (missing,
    /// EINVAL on a down link's carrier, EPERM...), which procfs treats as "absent".
    fn read(&self, attr: &str) -> Option<String> {
        match procfile::read_proc(self.path.join(attr)) {
            Ok(mut s) => {
                s.truncate(s.trim_end_matches('\n').len());
                Some(s)
            }
            Err(e) => {
                if !e.is_not_found() {
                    tracing::debug!(error = %e, "netclass attribute unreadable");
                }
                None
            }
        }
    }

    fn read_string(&self, attr: &str) -> String {
        self.read(attr).unwrap_or_default()
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)` as procfs uses it: `0x` hex, leading-`0` octal.
pub fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

impl NetclassCollector {
    fn emit_numeric(
        out: &mut MetricSet,
        d: &Desc,
        dir: &AttrDir,
        dev: &str,
        scale: impl Fn(i64) -> Option<f64>,
    ) -> Result<(), CollectorError> {
        let Some(raw) = dir.read(d.attr) else {
            return Ok(());
        };
        let v = parse_int(&raw).ok_or_else(|| {
            CollectorError::parse(
                dir.path.join(d.attr).display().to_string(),
                format!("not an integer: {raw:?}"),
            )
        })?;
        if let Some(v) = scale(v) {
            let labels = [("device", dev)];
            if d.counter {
                out.counter(&d.name, &d.help, &labels, v);
            } else {
                out.gauge(&d.name, &d.help, &labels, v);
            }
        }
        Ok(())
    }
}

impl Collector for NetclassCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let entries = procfile::list_dir(&self.class_net)
            .map_err(|e| CollectorError::io(&self.class_net, e))?;
        for entry in entries {
            // Interfaces are symlinks to directories; bonding_masters is a regular file.
            if entry.file_type.is_file() {
                continue;
            }
            let dev = entry.name.as_str();
            if self.ignored.is_match(dev) {
                continue;
            }
            // An interface that went away between readdir and here reads as all-absent
            // attributes; skip it rather than emit empty series.
            let dir = AttrDir {
                path: self.class_net.join(dev),
            };
            let Some(operstate) = dir.read("operstate") else {
                continue;
            };
            let attr = |a| dir.read_string(a);
            out.gauge(
                "node_network_up",
                "Value is 1 if operstate is 'up', 0 otherwise.",
                &[("device", dev)],
                if operstate == "up" { 1.0 } else { 0.0 },
            );
            out.gauge(
                "node_network_info",
                "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
                &[
                    ("device", dev),
                    ("address", &attr("address")),
                    ("broadcast", &attr("broadcast")),
                    ("duplex", &attr("duplex")),
                    ("operstate", &operstate),
                    ("ifalias", &attr("ifalias")),
                ],
                1.0,
            );
            for d in &self.numeric {
                Self::emit_numeric(out, d, &dir, dev, |v| Some(v as f64))?;
            }
            // Mbit/s → bytes/s. Speed -1 (unknown) gives -125000 unless told to drop it.
            let ignore_invalid = self.ignore_invalid_speed;
            Self::emit_numeric(out, &self.speed, &dir, dev, |v| {
                (v >= 0 || !ignore_invalid).then(|| (v * 1000 * 1000 / 8) as f64)
            })?;
            Self::emit_numeric(out, &self.protocol_type, &dir, dev, |v| Some(v as f64))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus::proto::MetricType;

    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, kind, len, paths, scrape, testdata, value};

    #[test]
    fn parses_go_style_integers() {
        assert_eq!(parse_int("0x1003"), Some(4099));
        assert_eq!(parse_int("-1"), Some(-1));
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int("010"), Some(8));
        assert_eq!(parse_int("1500\n"), Some(1500));
        assert_eq!(parse_int("abc"), None);
    }

    #[test]
    fn emits_properties_from_fixture() {
        let set = scrape(build, &paths("netclass"), &CollectorOptions::default()).unwrap();
        let eth0 = [("device", "eth0")];
        let lo = [("device", "lo")];
        assert_eq!(value(&set, "node_network_up", &eth0), 1.0);
        assert_eq!(value(&set, "node_network_up", &lo), 0.0);
        assert_eq!(value(&set, "node_network_flags", &eth0), 4099.0);
        assert_eq!(value(&set, "node_network_mtu_bytes", &eth0), 1400.0);
        assert_eq!(value(&set, "node_network_speed_bytes", &eth0), -125000.0);
        assert_eq!(value(&set, "node_network_speed_bytes", &lo), 1250000000.0);
        assert_eq!(value(&set, "node_network_protocol_type", &lo), 772.0);
        assert_eq!(
            value(&set, "node_network_carrier_changes_total", &eth0),
            2.0
        );
        assert_eq!(
            kind(&set, "node_network_carrier_changes_total"),
            MetricType::COUNTER
        );
        assert_eq!(kind(&set, "node_network_carrier"), MetricType::GAUGE);
        assert_eq!(
            help(&set, "node_network_iface_id"),
            "Network device property: iface_id"
        );
        // lo's fixture has no carrier file (unreadable on a down link): omitted.
        assert_eq!(len(&set, "node_network_carrier"), 1);
        assert_eq!(
            value(
                &set,
                "node_network_info",
                &[
                    ("device", "lo"),
                    ("address", "00:00:00:00:00:00"),
                    ("broadcast", "00:00:00:00:00:00"),
                    ("duplex", ""),
                    ("ifalias", ""),
                    ("operstate", "unknown"),
                ]
            ),
            1.0
        );
        // bonding_masters is a file, not an interface.
        assert_eq!(len(&set, "node_network_up"), 2);
    }

    #[test]
    fn options_ignore_devices_and_invalid_speed() {
        let options = CollectorOptions {
            netclass_ignored_devices: Regex::new("^lo$").unwrap(),
            netclass_ignore_invalid_speed: true,
            ..CollectorOptions::default()
        };
        let set = scrape(build, &paths("netclass"), &options).unwrap();
        assert_eq!(len(&set, "node_network_up"), 1);
        assert!(!set.contains("node_network_speed_bytes"));
    }

    #[test]
    fn bad_attribute_is_an_error_naming_the_file() {
        let mut p = paths("netclass");
        p.sys = testdata("netclass").join("sys_bad");
        let err = scrape(build, &p, &CollectorOptions::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("mtu"), "{err}");
        p.sys = testdata("netclass").join("missing");
        assert!(scrape(build, &p, &CollectorOptions::default()).is_err());
    }
}
