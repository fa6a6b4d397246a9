//! `infiniband`: InfiniBand HCAs from /sys/class/infiniband/<device>/ports/<port>
//! (node_exporter 1.5.0 collector/infiniband_linux.go over procfs' `InfiniBandClass`):
//! port state, physical state and rate as gauges, `counters/` and (before kernel 4.5)
//! `counters_ext/` as counters. The data counters count 4-octet words per lane and are
//! multiplied by 4, as procfs does; `N/A (no PMA)` counters are left out.
//!
//! Differences, both following later node_exporter releases: a device without `board_id`,
//! or a port without `counters/` (Intel irdma), is still reported, where 1.5.0 drops the
//! whole collector.

use std::path::{Path, PathBuf};

use super::sysattr::{parse_uint_base0, read_string, sorted_entries};
use super::{BuildContext, Collector, CollectorError, MetricSet};

struct Counter {
    dir: &'static str,
    file: &'static str,
    name: &'static str,
    help: &'static str,
    scale: u64,
}

const COUNTERS: &[Counter] = &[
    Counter {
        dir: "counters",
        file: "excessive_buffer_overrun_errors",
        name: "node_infiniband_excessive_buffer_overrun_errors_total",
        help: "Number of times that OverrunErrors consecutive flow control update periods occurred, each having at least one overrun error.",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "link_downed",
        name: "node_infiniband_link_downed_total",
        help: "Number of times the link failed to recover from an error state and went down",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "link_error_recovery",
        name: "node_infiniband_link_error_recovery_total",
        help: "Number of times the link successfully recovered from an error state",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "local_link_integrity_errors",
        name: "node_infiniband_local_link_integrity_errors_total",
        help: "Number of times that the count of local physical errors exceeded the threshold specified by LocalPhyErrors.",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "multicast_rcv_packets",
        name: "node_infiniband_multicast_packets_received_total",
        help: "Number of multicast packets received (including errors)",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "multicast_xmit_packets",
        name: "node_infiniband_multicast_packets_transmitted_total",
        help: "Number of multicast packets transmitted (including errors)",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "port_rcv_constraint_errors",
        name: "node_infiniband_port_constraint_errors_received_total",
        help: "Number of packets received on the switch physical port that are discarded",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "port_rcv_data",
        name: "node_infiniband_port_data_received_bytes_total",
        help: "Number of data octets received on all links",
        scale: 4,
    },
    Counter {
        dir: "counters",
        file: "port_rcv_discards",
        name: "node_infiniband_port_discards_received_total",
        help: "Number of inbound packets discarded by the port because the port is down or congested",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "port_rcv_errors",
        name: "node_infiniband_port_errors_received_total",
        help: "Number of packets containing an error that were received on this port",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "port_rcv_packets",
        name: "node_infiniband_port_packets_received_total",
        help: "Number of packets received on all VLs by this port (including errors)",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "port_rcv_remote_physical_errors",
        name: "node_infiniband_port_receive_remote_physical_errors_total",
        help: "Number of packets marked with the EBP (End of Bad Packet) delimiter received on the port.",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "port_rcv_switch_relay_errors",
        name: "node_infiniband_port_receive_switch_relay_errors_total",
        help: "Number of packets that could not be forwarded by the switch.",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "port_xmit_constraint_errors",
        name: "node_infiniband_port_constraint_errors_transmitted_total",
        help: "Number of packets not transmitted from the switch physical port",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "port_xmit_data",
        name: "node_infiniband_port_data_transmitted_bytes_total",
        help: "Number of data octets transmitted on all links",
        scale: 4,
    },
    Counter {
        dir: "counters",
        file: "port_xmit_discards",
        name: "node_infiniband_port_discards_transmitted_total",
        help: "Number of outbound packets discarded by the port because the port is down or congested",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "port_xmit_packets",
        name: "node_infiniband_port_packets_transmitted_total",
        help: "Number of packets transmitted on all VLs from this port (including errors)",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "port_xmit_wait",
        name: "node_infiniband_port_transmit_wait_total",
        help: "Number of ticks during which the port had data to transmit but no data was sent during the entire tick",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "symbol_error",
        name: "node_infiniband_symbol_error_total",
        help: "Number of minor link errors detected on one or more physical lanes.",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "unicast_rcv_packets",
        name: "node_infiniband_unicast_packets_received_total",
        help: "Number of unicast packets received (including errors)",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "unicast_xmit_packets",
        name: "node_infiniband_unicast_packets_transmitted_total",
        help: "Number of unicast packets transmitted (including errors)",
        scale: 1,
    },
    Counter {
        dir: "counters",
        file: "VL15_dropped",
        name: "node_infiniband_vl15_dropped_total",
        help: "Number of incoming VL15 packets dropped due to resource limitations.",
        scale: 1,
    },
    Counter {
        dir: "counters_ext",
        file: "port_multicast_rcv_packets",
        name: "node_infiniband_legacy_multicast_packets_received_total",
        help: "Number of multicast packets received",
        scale: 1,
    },
    Counter {
        dir: "counters_ext",
        file: "port_multicast_xmit_packets",
        name: "node_infiniband_legacy_multicast_packets_transmitted_total",
        help: "Number of multicast packets transmitted",
        scale: 1,
    },
    Counter {
        dir: "counters_ext",
        file: "port_rcv_data_64",
        name: "node_infiniband_legacy_data_received_bytes_total",
        help: "Number of data octets received on all links",
        scale: 4,
    },
    Counter {
        dir: "counters_ext",
        file: "port_rcv_packets_64",
        name: "node_infiniband_legacy_packets_received_total",
        help: "Number of data packets received on all links",
        scale: 1,
    },
    Counter {
        dir: "counters_ext",
        file: "port_unicast_rcv_packets",
        name: "node_infiniband_legacy_unicast_packets_received_total",
        help: "Number of unicast packets received",
        scale: 1,
    },
    Counter {
        dir: "counters_ext",
        file: "port_unicast_xmit_packets",
        name: "node_infiniband_legacy_unicast_packets_transmitted_total",
        help: "Number of unicast packets transmitted",
        scale: 1,
    },
    Counter {
        dir: "counters_ext",
        file: "port_xmit_data_64",
        name: "node_infiniband_legacy_data_transmitted_bytes_total",
        help: "Number of data octets transmitted on all links",
        scale: 4,
    },
    Counter {
        dir: "counters_ext",
        file: "port_xmit_packets_64",
        name: "node_infiniband_legacy_packets_transmitted_total",
        help: "Number of data packets received on all links",
        scale: 1,
    },
];

#[derive(Debug, Clone, PartialEq)]
pub struct IbPort {
    pub port: u32,
    pub state_id: u32,
    pub phys_state_id: u32,
    pub rate: u64,
    /// Values of [`COUNTERS`] that the port has, in order.
    pub counters: Vec<Option<u64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IbDevice {
    pub name: String,
    pub board_id: String,
    pub firmware_version: String,
    pub hca_type: String,
    pub ports: Vec<IbPort>,
}

pub struct InfinibandCollector {
    dir: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(InfinibandCollector {
        dir: ctx.paths.sys_path("class/infiniband"),
    }))
}

fn parse_err(path: &Path, detail: impl std::fmt::Display) -> CollectorError {
    CollectorError::parse(path.display().to_string(), detail)
}

/// `4: ACTIVE` → 4.
pub fn parse_state(path: &Path, s: &str) -> Result<u32, CollectorError> {
    let parts: Vec<&str> = s.split(':').collect();
    let [id, _name] = parts.as_slice() else {
        return Err(parse_err(
            path,
            format!("failed to split {s:?} into 'ID: NAME'"),
        ));
    };
    id.trim()
        .parse()
        .map_err(|_| parse_err(path, format!("failed to convert {:?} into uint", id.trim())))
}

/// `40 Gb/sec (4X QDR)` → bytes per second, with procfs' float32 parse and truncation.
pub fn parse_rate(path: &Path, s: &str) -> Result<u64, CollectorError> {
    let Some((gbps, _)) = s.split_once(' ') else {
        return Err(parse_err(path, format!("failed to split {s:?}")));
    };
    let v: f32 = gbps
        .trim()
        .parse()
        .map_err(|_| parse_err(path, format!("failed to convert {gbps:?}")))?;
    Ok((f64::from(v) * 125_000_000.0) as u64)
}

fn read_counters(port_path: &Path) -> Result<Vec<Option<u64>>, CollectorError> {
    let mut values = vec![None; COUNTERS.len()];
    for dir in ["counters", "counters_ext"] {
        let dpath = port_path.join(dir);
        let Some(files) = sorted_entries(&dpath)? else {
            continue;
        };
        for file in files {
            let Some(i) = COUNTERS.iter().position(|c| c.dir == dir && c.file == file) else {
                continue;
            };
            let fpath = dpath.join(&file);
            if !std::fs::symlink_metadata(&fpath).is_ok_and(|m| m.is_file()) {
                continue;
            }
            let text = match read_string(&fpath) {
                Err(CollectorError::Io { source, .. })
                    if matches!(
                        source.raw_os_error(),
                        Some(
                            libc::ENOENT
                                | libc::EACCES
                                | libc::EPERM
                                | libc::EOPNOTSUPP
                                | libc::EINVAL
                        )
                    ) =>
                {
                    continue;
                }
                other => other?,
            };
            match parse_uint_base0(&text) {
                Ok(v) => values[i] = Some(v.wrapping_mul(COUNTERS[i].scale)),
                // Older mlx4 firmware without a performance management agent.
                Err(_) if text.contains("N/A (no PMA)") => {}
                Err(e) => return Err(parse_err(&fpath, e)),
            }
        }
    }
    Ok(values)
}

fn read_port(dev_path: &Path, port: &str) -> Result<IbPort, CollectorError> {
    let path = dev_path.join("ports").join(port);
    let number = port
        .parse()
        .map_err(|_| parse_err(&path, format!("failed to convert {port:?} into uint")))?;
    let state = path.join("state");
    let phys = path.join("phys_state");
    let rate = path.join("rate");
    Ok(IbPort {
        port: number,
        state_id: parse_state(&state, &read_string(&state)?)?,
        phys_state_id: parse_state(&phys, &read_string(&phys)?)?,
        rate: parse_rate(&rate, &read_string(&rate)?)?,
        counters: read_counters(&path)?,
    })
}

fn optional(path: &Path) -> Result<String, CollectorError> {
    match read_string(path) {
        Err(e) if e.is_not_found() => Ok(String::new()),
        other => other,
    }
}

/// Every device of the class, by name, with its ports in number order.
pub fn read_infiniband(dir: &Path) -> Result<Vec<IbDevice>, CollectorError> {
    let Some(names) = sorted_entries(dir)? else {
        return Err(CollectorError::NoData);
    };
    let mut devices = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let Some(ports) = sorted_entries(&path.join("ports"))? else {
            return Err(CollectorError::NoData);
        };
        let mut ports = ports
            .iter()
            .map(|p| read_port(&path, p))
            .collect::<Result<Vec<_>, _>>()?;
        ports.sort_by_key(|p| p.port);
        devices.push(IbDevice {
            firmware_version: read_string(&path.join("fw_ver"))?,
            board_id: optional(&path.join("board_id"))?,
            hca_type: optional(&path.join("hca_type"))?,
            name,
            ports,
        });
    }
    Ok(devices)
}

impl Collector for InfinibandCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let devices = match read_infiniband(&self.dir) {
            // A required attribute missing: node_exporter reports no data, not an error.
            Err(e) if e.is_not_found() => return Err(CollectorError::NoData),
            other => other?,
        };
        for d in &devices {
            out.gauge(
                "node_infiniband_info",
                "Non-numeric data from /sys/class/infiniband/<device>, value is always 1.",
                &[
                    ("device", &d.name),
                    ("board_id", &d.board_id),
                    ("firmware_version", &d.firmware_version),
                    ("hca_type", &d.hca_type),
                ],
                1.0,
            );
            for p in &d.ports {
                let port = p.port.to_string();
                let labels = [("device", d.name.as_str()), ("port", port.as_str())];
                out.gauge("node_infiniband_state_id", "State of the InfiniBand port (0: no change, 1: down, 2: init, 3: armed, 4: active, 5: act defer)", &labels, f64::from(p.state_id));
                out.gauge("node_infiniband_physical_state_id", "Physical state of the InfiniBand port (0: no change, 1: sleep, 2: polling, 3: disable, 4: shift, 5: link up, 6: link error recover, 7: phytest)", &labels, f64::from(p.phys_state_id));
                out.gauge(
                    "node_infiniband_rate_bytes_per_second",
                    "Maximum signal transfer rate",
                    &labels,
                    p.rate as f64,
                );
                for (c, v) in COUNTERS.iter().zip(&p.counters) {
                    if let Some(v) = v {
                        out.counter(c.name, c.help, &labels, *v as f64);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{assert_same_as_node_exporter, paths, scrape, try_value, value};

    #[test]
    fn same_as_node_exporter() {
        assert_same_as_node_exporter(
            "infiniband",
            build,
            &paths("infiniband"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn ports_counters_and_odd_values() {
        let set = scrape(build, &paths("infiniband"), &CollectorOptions::default()).unwrap();
        let p2 = [("device", "mlx4_0"), ("port", "2")];
        assert_eq!(
            value(&set, "node_infiniband_port_data_received_bytes_total", &p2),
            4294967295.0 * 4.0
        );
        assert_eq!(
            try_value(&set, "node_infiniband_unicast_packets_received_total", &p2),
            None,
            "N/A (no PMA)"
        );
        assert_eq!(
            value(&set, "node_infiniband_rate_bytes_per_second", &p2),
            1.25e9
        );
        let p1 = [("device", "mlx4_0"), ("port", "1")];
        assert_eq!(
            value(
                &set,
                "node_infiniband_legacy_data_received_bytes_total",
                &p1
            ),
            120012.0
        );
        assert_eq!(
            value(&set, "node_infiniband_vl15_dropped_total", &p1),
            2222.0
        );
    }

    #[test]
    fn optional_and_required_files() {
        let dir = tempfile::tempdir().unwrap();
        let port = dir.path().join("irdma0/ports/1");
        std::fs::create_dir_all(&port).unwrap();
        std::fs::write(dir.path().join("irdma0/fw_ver"), "1.0\n").unwrap();
        std::fs::write(port.join("state"), "4: ACTIVE\n").unwrap();
        std::fs::write(port.join("phys_state"), "5: LinkUp\n").unwrap();
        std::fs::write(port.join("rate"), "2.5 Gb/sec (1X SDR)\n").unwrap();
        // No board_id, no counters directory.
        let d = read_infiniband(dir.path()).unwrap();
        assert_eq!(
            (d[0].board_id.as_str(), d[0].ports[0].rate),
            ("", 312_500_000)
        );
        assert!(d[0].ports[0].counters.iter().all(Option::is_none));
        std::fs::write(port.join("state"), "ACTIVE\n").unwrap();
        assert!(matches!(
            read_infiniband(dir.path()),
            Err(CollectorError::Parse { .. })
        ));
        std::fs::remove_file(port.join("state")).unwrap();
        assert!(read_infiniband(dir.path()).unwrap_err().is_not_found());
        let p = node_agent_core::host::HostPaths {
            sys: dir.path().join("none"),
            ..node_agent_core::host::HostPaths::default()
        };
        assert!(matches!(
            scrape(build, &p, &CollectorOptions::default()),
            Err(CollectorError::NoData)
        ));
    }
}
