//! `filefd`: node_filefd_{allocated,maximum} from /proc/sys/fs/file-nr (node_exporter 1.5.0
//! collector/filefd_linux.go).
//!
//! Hand-parsed: procfs's `sys::fs` helpers read the fixed /proc path and would ignore the
//! configurable `--path.procfs` root.

use std::path::PathBuf;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

pub struct FilefdCollector {
    path: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(FilefdCollector {
        path: ctx.paths.proc_path("sys/fs/file-nr"),
    }))
}

impl Collector for FilefdCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let text = read_proc(&self.path)?;
        let (allocated, maximum) = parse_file_nr(&text, &self.path.display().to_string())?;
        out.gauge(
            "node_filefd_allocated",
            "File descriptor statistics: allocated.",
            &[],
            allocated,
        );
        out.gauge(
            "node_filefd_maximum",
            "File descriptor statistics: maximum.",
            &[],
            maximum,
        );
        Ok(())
    }
}

/// `allocated unused maximum`; the middle field is always 0 since Linux 2.6.
pub fn parse_file_nr(text: &str, what: &str) -> Result<(f64, f64), CollectorError> {
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    if fields.len() < 3 {
        return Err(CollectorError::parse(
            what,
            format!("unexpected number of file stats in {text:?}"),
        ));
    }
    let num = |s: &str| {
        s.parse::<f64>()
            .map_err(|e| CollectorError::parse(what, format!("invalid value {s:?}: {e}")))
    };
    Ok((num(fields[0])?, num(fields[2])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(file: &str) -> FilefdCollector {
        FilefdCollector {
            path: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/filefd")).join(file),
        }
    }

    #[test]
    fn emits_allocated_and_maximum() {
        let mut set = MetricSet::new();
        collector("file-nr").update(&mut set).unwrap();
        let got: Vec<_> = set
            .families()
            .iter()
            .map(|f| {
                (
                    f.name(),
                    f.help(),
                    f.get_metric()[0].get_gauge().get_value(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "node_filefd_allocated",
                    "File descriptor statistics: allocated.",
                    1024.0
                ),
                (
                    "node_filefd_maximum",
                    "File descriptor statistics: maximum.",
                    1631329.0
                )
            ]
        );
    }

    #[test]
    fn bad_input_is_an_error_naming_the_file() {
        assert!(parse_file_nr("1\t0\n", "file-nr").is_err());
        assert!(parse_file_nr("x\t0\t5\n", "file-nr").is_err());
        assert!(
            collector("absent")
                .update(&mut MetricSet::new())
                .unwrap_err()
                .is_not_found()
        );
    }
}
