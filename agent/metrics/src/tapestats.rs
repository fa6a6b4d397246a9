//! `tapestats`: SCSI tape drive statistics from /sys/class/scsi_tape/st<N>/stats
//! (node_exporter 1.5.0 collector/tapestats_linux.go over procfs' `SCSITapeClass`). Only
//! `st<N>` is reported: `nst<N>` and the `st<N>[lma]` mode devices are the same drive.
//! Nanosecond counters are multiplied by 1e-9 (not divided by 1e9), as there, so the
//! floats are identical.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

use super::sysattr::{read_u64, sorted_entries};
use super::{BuildContext, Collector, CollectorError, MetricSet};

static TAPE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^st[0-9]+$").expect("static regex"));

/// The files of stats/, in the order [`TapeStats::values`] holds them.
const FILES: &[&str] = &[
    "in_flight",
    "io_ns",
    "other_cnt",
    "read_byte_cnt",
    "read_cnt",
    "read_ns",
    "resid_cnt",
    "write_byte_cnt",
    "write_cnt",
    "write_ns",
];

#[derive(Debug, Clone, PartialEq)]
pub struct TapeStats {
    pub name: String,
    pub values: [u64; 10],
}

pub struct TapestatsCollector {
    dir: PathBuf,
    ignored: Regex,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(TapestatsCollector {
        dir: ctx.paths.sys_path("class/scsi_tape"),
        ignored: ctx.options.more.tapestats_ignored_devices.clone(),
    }))
}

pub fn read_tapes(dir: &Path) -> Result<Vec<TapeStats>, CollectorError> {
    let Some(names) = sorted_entries(dir)? else {
        return Err(CollectorError::NoData);
    };
    let mut tapes = Vec::new();
    for name in names.into_iter().filter(|n| TAPE.is_match(n)) {
        let stats = dir.join(&name).join("stats");
        let mut values = [0; 10];
        for (v, f) in values.iter_mut().zip(FILES) {
            *v = read_u64(&stats.join(f))?;
        }
        tapes.push(TapeStats { name, values });
    }
    Ok(tapes)
}

const NS: f64 = 0.000000001;

impl Collector for TapestatsCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let tapes = match read_tapes(&self.dir) {
            Err(e) if e.is_not_found() => return Err(CollectorError::NoData),
            other => other?,
        };
        for t in tapes.iter().filter(|t| !self.ignored.is_match(&t.name)) {
            let l = [("device", t.name.as_str())];
            let [
                in_flight,
                io_ns,
                other,
                read_bytes,
                reads,
                read_ns,
                resid,
                written,
                writes,
                write_ns,
            ] = t.values.map(|v| v as f64);
            out.gauge(
                "node_tape_io_now",
                "The number of I/Os currently outstanding to this device.",
                &l,
                in_flight,
            );
            out.counter("node_tape_io_time_seconds_total", "The amount of time spent waiting for all I/O to complete (including read and write). This includes tape movement commands such as seeking between file or set marks and implicit tape movement such as when rewind on close tape devices are used.", &l, io_ns * NS);
            out.counter("node_tape_io_others_total", "The number of I/Os issued to the tape drive other than read or write commands. The time taken to complete these commands uses the following calculation io_time_seconds_total-read_time_seconds_total-write_time_seconds_total", &l, other);
            out.counter(
                "node_tape_read_bytes_total",
                "The number of bytes read from the tape drive.",
                &l,
                read_bytes,
            );
            out.counter(
                "node_tape_reads_completed_total",
                "The number of read requests issued to the tape drive.",
                &l,
                reads,
            );
            out.counter(
                "node_tape_read_time_seconds_total",
                "The amount of time spent waiting for read requests to complete.",
                &l,
                read_ns * NS,
            );
            out.counter("node_tape_residual_total", "The number of times during a read or write we found the residual amount to be non-zero. This should mean that a program is issuing a read larger thean the block size on tape. For write not all data made it to tape.", &l, resid);
            out.counter(
                "node_tape_written_bytes_total",
                "The number of bytes written to the tape drive.",
                &l,
                written,
            );
            out.counter(
                "node_tape_writes_completed_total",
                "The number of write requests issued to the tape drive.",
                &l,
                writes,
            );
            out.counter(
                "node_tape_write_time_seconds_total",
                "The amount of time spent waiting for write requests to complete.",
                &l,
                write_ns * NS,
            );
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
            "tapestats",
            build,
            &paths("tapestats"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn ignored_devices_same_as_node_exporter() {
        let options = CollectorOptions {
            more: crate::config::MoreOptions {
                tapestats_ignored_devices: Regex::new("^st1$").unwrap(),
                ..Default::default()
            },
            ..CollectorOptions::default()
        };
        assert_same_as_node_exporter(
            "tapestats",
            build,
            &paths("tapestats"),
            &options,
            &["--collector.tapestats.ignored-devices=^st1$"],
        );
        let set = scrape(build, &paths("tapestats"), &options).unwrap();
        assert_eq!(len(&set, "node_tape_io_now"), 1);
    }

    #[test]
    fn only_st_devices_and_ns_in_seconds() {
        let set = scrape(build, &paths("tapestats"), &CollectorOptions::default()).unwrap();
        assert_eq!(
            len(&set, "node_tape_io_now"),
            2,
            "nst0 and st0a are the same drives"
        );
        assert_eq!(
            value(
                &set,
                "node_tape_read_time_seconds_total",
                &[("device", "st1")]
            ),
            0.12345678900000001
        );
    }

    #[test]
    fn missing_stat_is_no_data_bad_stat_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let stats = dir.path().join("st0/stats");
        std::fs::create_dir_all(&stats).unwrap();
        assert!(read_tapes(dir.path()).unwrap_err().is_not_found());
        for f in FILES {
            std::fs::write(stats.join(f), "1\n").unwrap();
        }
        assert_eq!(read_tapes(dir.path()).unwrap()[0].values, [1; 10]);
        std::fs::write(stats.join("io_ns"), "-1\n").unwrap();
        assert!(matches!(
            read_tapes(dir.path()),
            Err(CollectorError::Parse { .. })
        ));
        assert!(matches!(
            read_tapes(&dir.path().join("none")),
            Err(CollectorError::NoData)
        ));
    }
}
