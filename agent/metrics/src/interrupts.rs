//! `interrupts` (off by default): node_interrupts_total{cpu,type,info,devices} from
//! /proc/interrupts (node_exporter 1.5.0 collector/interrupts_linux.go). Numbered IRQs get
//! the chip as `info` and the rest of the line as `devices`; named ones (LOC, NMI, …) the
//! description as `info`. Lines without a value for every CPU (ERR, MIS) are skipped, and
//! a repeated name keeps its last line, as node_exporter's map does.

use std::path::PathBuf;

use super::{BuildContext, Collector, CollectorError, MetricSet, parse_number, read_proc};

#[derive(Debug, Clone, PartialEq)]
pub struct Interrupt {
    pub name: String,
    pub info: String,
    pub devices: String,
    pub values: Vec<f64>,
}

pub struct InterruptsCollector {
    path: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(InterruptsCollector {
        path: ctx.paths.proc_path("interrupts"),
    }))
}

pub fn parse_interrupts(text: &str) -> Result<Vec<Interrupt>, CollectorError> {
    let mut lines = text.lines();
    let cpus = lines.next().map_or(0, |l| l.split_whitespace().count());
    let mut out: Vec<Interrupt> = Vec::new();
    for line in lines {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() < cpus + 2 {
            continue;
        }
        let name = parts[0]
            .strip_suffix(':')
            .unwrap_or(&parts[0][..parts[0].len().saturating_sub(1)]);
        let values = parts[1..=cpus]
            .iter()
            .map(|v| {
                parse_number(v).map_err(|_| {
                    CollectorError::parse(
                        "/proc/interrupts",
                        format!("invalid value {v} in interrupts"),
                    )
                })
            })
            .collect::<Result<Vec<f64>, _>>()?;
        let (info, devices) = if name.parse::<i64>().is_ok() {
            (parts[cpus + 1].to_string(), parts[cpus + 2..].join(" "))
        } else {
            (parts[cpus + 1..].join(" "), String::new())
        };
        let irq = Interrupt {
            name: name.to_string(),
            info,
            devices,
            values,
        };
        match out.iter_mut().find(|i| i.name == irq.name) {
            Some(existing) => *existing = irq,
            None => out.push(irq),
        }
    }
    Ok(out)
}

impl Collector for InterruptsCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let text = read_proc(&self.path)?;
        let mut cpu = String::new();
        for irq in parse_interrupts(&text)? {
            for (n, v) in irq.values.iter().enumerate() {
                cpu.clear();
                cpu.push_str(&n.to_string());
                out.counter(
                    "node_interrupts_total",
                    "Interrupt details.",
                    &[
                        ("cpu", &cpu),
                        ("type", &irq.name),
                        ("info", &irq.info),
                        ("devices", &irq.devices),
                    ],
                    *v,
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
            "interrupts",
            build,
            &paths("interrupts"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn numbered_and_named_interrupts() {
        let set = scrape(build, &paths("interrupts"), &CollectorOptions::default()).unwrap();
        assert_eq!(
            len(&set, "node_interrupts_total"),
            10 * 2,
            "ERR and MIS have one value for two CPUs"
        );
        let l = [
            ("cpu", "1"),
            ("type", "25"),
            ("info", "PCI-MSI"),
            ("devices", "49153-edge virtio0-input.0, virtio0-output.0"),
        ];
        assert_eq!(value(&set, "node_interrupts_total", &l), 13450.0);
        let loc = [
            ("cpu", "0"),
            ("type", "LOC"),
            ("info", "Local timer interrupts"),
            ("devices", ""),
        ];
        assert_eq!(value(&set, "node_interrupts_total", &loc), 2373139.0);
    }

    #[test]
    fn odd_lines() {
        let irqs =
            parse_interrupts("CPU0\n 0: 1 IO-APIC timer\n 0: 2 IO-APIC timer2\nERR: 3\n").unwrap();
        assert_eq!(irqs.len(), 1);
        assert_eq!(
            (irqs[0].values[0], irqs[0].devices.as_str()),
            (2.0, "timer2"),
            "last line wins"
        );
        assert!(parse_interrupts("CPU0\n 0: x IO-APIC timer\n").is_err());
        assert!(parse_interrupts("").unwrap().is_empty());
        let mut p = paths("interrupts");
        p.proc = p.proc.join("missing");
        assert!(scrape(build, &p, &CollectorOptions::default()).is_err());
    }
}
