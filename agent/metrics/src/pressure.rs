//! `pressure`: PSI stall totals from /proc/pressure/{cpu,io,memory} (node_exporter 1.5.0
//! collector/pressure_linux.go).
//!
//! Each line goes through procfs's `parse_pressure_record`; the files are not read with
//! `CpuPressure::from_read` because kernels before 5.13 print no `full` line for cpu, which
//! procfs rejects but node_exporter accepts (it only exports cpu `some`).

use std::path::PathBuf;

use procfs::{PressureRecord, parse_pressure_record};

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

const RESOURCES: [&str; 3] = ["cpu", "io", "memory"];

pub struct PressureCollector {
    dir: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(PressureCollector {
        dir: ctx.paths.proc_path("pressure"),
    }))
}

/// The `some` and (if printed) `full` records of one resource.
#[derive(Debug)]
pub struct Psi {
    pub some: PressureRecord,
    pub full: Option<PressureRecord>,
}

impl Collector for PressureCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        for resource in RESOURCES {
            let path = self.dir.join(resource);
            let text = match read_proc(&path) {
                Ok(t) => t,
                Err(e) if e.is_not_found() => {
                    tracing::debug!(
                        "pressure information is unavailable, you need a Linux kernel >= 4.20 and/or CONFIG_PSI enabled for your kernel"
                    );
                    return Err(CollectorError::NoData);
                }
                Err(e) => return Err(e),
            };
            let psi = parse_psi(&text, &path.display().to_string())?;
            // Two divisions, exactly as node_exporter does, so the float rounds the same way.
            let secs = |r: &PressureRecord| r.total as f64 / 1000.0 / 1000.0;
            match resource {
                "cpu" => out.counter(
                    "node_pressure_cpu_waiting_seconds_total",
                    "Total time in seconds that processes have waited for CPU time",
                    &[],
                    secs(&psi.some),
                ),
                "io" => {
                    out.counter(
                        "node_pressure_io_waiting_seconds_total",
                        "Total time in seconds that processes have waited due to IO congestion",
                        &[],
                        secs(&psi.some),
                    );
                    out.counter(
                        "node_pressure_io_stalled_seconds_total",
                        "Total time in seconds no process could make progress due to IO congestion",
                        &[],
                        psi.full.as_ref().map_or(0.0, secs),
                    );
                }
                _ => {
                    out.counter(
                        "node_pressure_memory_waiting_seconds_total",
                        "Total time in seconds that processes have waited for memory",
                        &[],
                        secs(&psi.some),
                    );
                    out.counter(
                        "node_pressure_memory_stalled_seconds_total",
                        "Total time in seconds no process could make progress due to memory congestion",
                        &[],
                        psi.full.as_ref().map_or(0.0, secs),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Parses a PSI file: a `some` line and optionally a `full` line.
pub fn parse_psi(text: &str, what: &str) -> Result<Psi, CollectorError> {
    let mut some = None;
    let mut full = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // procfs slices `line[5..]` after checking only for a `some`/`full` prefix, which
        // panics on a bare "full" or a multi-byte character there (found by fuzzing).
        if !(line.starts_with("some ") || line.starts_with("full ")) {
            return Err(CollectorError::parse(
                what,
                format!("{line:?}: expected a `some ` or `full ` record"),
            ));
        }
        let record = parse_pressure_record(line)
            .map_err(|e| CollectorError::parse(what, format!("{line:?}: {e}")))?;
        if line.starts_with("some") {
            some = Some(record);
        } else {
            full = Some(record);
        }
    }
    let some = some.ok_or_else(|| CollectorError::parse(what, "no `some` line"))?;
    Ok(Psi { some, full })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::proto::MetricType;

    fn collector(root: &str) -> PressureCollector {
        PressureCollector {
            dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/pressure"))
                .join(root),
        }
    }

    #[test]
    fn emits_seconds_totals() {
        let mut set = MetricSet::new();
        collector("ok").update(&mut set).unwrap();
        let got: Vec<_> = set
            .families()
            .iter()
            .map(|f| {
                assert_eq!(f.get_field_type(), MetricType::COUNTER);
                (f.name(), f.get_metric()[0].get_counter().get_value())
            })
            .collect();
        assert_eq!(
            got,
            [
                ("node_pressure_cpu_waiting_seconds_total", 1.5),
                ("node_pressure_io_waiting_seconds_total", 0.25),
                ("node_pressure_io_stalled_seconds_total", 7.2988599999999995),
                ("node_pressure_memory_waiting_seconds_total", 3.0),
                ("node_pressure_memory_stalled_seconds_total", 2.0),
            ]
        );
    }

    #[test]
    fn missing_psi_is_no_data_and_garbage_is_an_error() {
        assert!(matches!(
            collector("absent").update(&mut MetricSet::new()),
            Err(CollectorError::NoData)
        ));
        let err = collector("garbage")
            .update(&mut MetricSet::new())
            .unwrap_err();
        assert!(err.to_string().contains("garbage/cpu"), "{err}");
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        // Inputs the fuzzer found: procfs-core slices past the end of these.
        for text in [
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull\n",
            "some\u{e9}x\n",
        ] {
            assert!(parse_psi(text, "cpu").is_err(), "{text:?}");
        }
    }
}
