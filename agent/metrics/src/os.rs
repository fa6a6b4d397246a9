//! `os`: node_os_info and node_os_version from os-release (node_exporter 1.5.0
//! collector/os_release.go). Reads `<rootfs>/etc/os-release`, falling back to
//! `<rootfs>/usr/lib/os-release`, and re-parses only when the file's mtime changes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// The os-release keys behind node_os_info's labels, in label order.
const INFO_KEYS: [(&str, &str); 12] = [
    ("build_id", "BUILD_ID"),
    ("id", "ID"),
    ("id_like", "ID_LIKE"),
    ("image_id", "IMAGE_ID"),
    ("image_version", "IMAGE_VERSION"),
    ("name", "NAME"),
    ("pretty_name", "PRETTY_NAME"),
    ("variant", "VARIANT"),
    ("variant_id", "VARIANT_ID"),
    ("version", "VERSION"),
    ("version_codename", "VERSION_CODENAME"),
    ("version_id", "VERSION_ID"),
];

const INFO_HELP: &str = "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.";
const VERSION_HELP: &str = "Metric containing the major.minor part of the OS version.";

pub struct OsCollector {
    files: [PathBuf; 2],
    cache: Mutex<Option<Cached>>,
}

/// Parsed release info of one file at one mtime.
#[derive(Debug, Clone, PartialEq)]
pub struct OsRelease {
    /// Label values in [`INFO_KEYS`] order ("" when the key is absent).
    pub info: [String; 12],
    /// The numeric major.minor of VERSION_ID, 0 if it has none.
    pub version: f64,
}

struct Cached {
    path: PathBuf,
    mtime: SystemTime,
    release: OsRelease,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(OsCollector {
        files: [
            ctx.paths.rootfs_path("/etc/os-release"),
            ctx.paths.rootfs_path("/usr/lib/os-release"),
        ],
        cache: Mutex::new(None),
    }))
}

impl Collector for OsCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = false;
        for path in &self.files {
            let mtime = match std::fs::metadata(path).and_then(|m| m.modified()) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(CollectorError::io(path, e)),
            };
            found = true;
            if cache
                .as_ref()
                .is_some_and(|c| &c.path == path && c.mtime == mtime)
            {
                break;
            }
            let release = parse_os_release(&read_proc(path)?, &path.display().to_string())?;
            *cache = Some(Cached {
                path: path.clone(),
                mtime,
                release,
            });
            break;
        }
        let Some(cached) = cache.as_ref().filter(|_| found) else {
            tracing::debug!("no os-release file found");
            return Err(CollectorError::NoData);
        };
        emit(&cached.release, out);
        Ok(())
    }
}

pub fn emit(r: &OsRelease, out: &mut MetricSet) {
    let labels: Vec<(&str, &str)> = INFO_KEYS
        .iter()
        .zip(&r.info)
        .map(|((label, _), value)| (*label, value.as_str()))
        .collect();
    out.gauge("node_os_info", INFO_HELP, &labels, 1.0);
    if r.version > 0.0 {
        out.gauge(
            "node_os_version",
            VERSION_HELP,
            &[
                ("id", &r.info[1]),
                ("id_like", &r.info[2]),
                ("name", &r.info[5]),
            ],
            r.version,
        );
    }
}

/// Parses os-release (shell-style `KEY=value` lines, values optionally quoted).
pub fn parse_os_release(text: &str, what: &str) -> Result<OsRelease, CollectorError> {
    let env = parse_env(text).map_err(|detail| CollectorError::parse(what, detail))?;
    let info = INFO_KEYS.map(|(_, key)| env.get(key).cloned().unwrap_or_default());
    Ok(OsRelease {
        version: major_minor(&info[11]),
        info,
    })
}

/// `^[0-9]+\.?[0-9]*` of VERSION_ID as a number ("22.04.1" → 22.04, "rolling" → 0).
fn major_minor(version_id: &str) -> f64 {
    let b = version_id.as_bytes();
    let mut end = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if end == 0 {
        return 0.0;
    }
    if b.get(end) == Some(&b'.') {
        end += 1;
        end += b[end..].iter().take_while(|c| c.is_ascii_digit()).count();
    }
    version_id[..end].parse().unwrap_or(0.0)
}

/// The env-file dialect of os-release(5), as hashicorp/go-envparse reads it: comments and
/// blank lines, optional `export `, unquoted values, "double" quotes with backslash
/// escapes, 'single' quotes taken literally.
fn parse_env(text: &str) -> Result<HashMap<String, String>, String> {
    let mut env = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, raw) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: no '=' in {line:?}", n + 1))?;
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            return Err(format!("line {}: invalid key {key:?}", n + 1));
        }
        let value = unquote(raw.trim()).ok_or_else(|| format!("line {}: bad quoting", n + 1))?;
        env.insert(key.to_string(), value);
    }
    Ok(env)
}

fn unquote(raw: &str) -> Option<String> {
    if let Some(inner) = raw.strip_prefix('\'') {
        return inner.strip_suffix('\'').map(str::to_string);
    }
    let (inner, quoted) = match raw.strip_prefix('"') {
        Some(inner) => (inner.strip_suffix('"')?, true),
        None => (raw, false),
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '#' if !quoted => break, // trailing comment on an unquoted value
            c => out.push(c),
        }
    }
    Some(if quoted {
        out
    } else {
        out.trim_end().to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(root: &str) -> OsCollector {
        let base = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/os")).join(root);
        OsCollector {
            files: [base.join("etc/os-release"), base.join("usr/lib/os-release")],
            cache: Mutex::new(None),
        }
    }

    fn labels(m: &prometheus::proto::Metric) -> Vec<(&str, &str)> {
        m.get_label()
            .iter()
            .map(|l| (l.name(), l.value()))
            .collect()
    }

    #[test]
    fn emits_info_with_twelve_labels_and_version() {
        let c = collector("debian");
        for _ in 0..2 {
            // second scrape is served from the mtime cache
            let mut set = MetricSet::new();
            c.update(&mut set).unwrap();
            let info = &set.families()[0];
            assert_eq!(info.name(), "node_os_info");
            assert_eq!(info.help(), INFO_HELP);
            let l = labels(&info.get_metric()[0]);
            assert_eq!(l.len(), 12);
            assert!(l.contains(&("pretty_name", "Debian GNU/Linux 12 (bookworm)")));
            assert!(l.contains(&("version_codename", "bookworm")));
            assert!(l.contains(&("variant", "")));
            assert!(l.contains(&("build_id", "it's \"quoted\"")));
            let v = &set.families()[1];
            assert_eq!(v.name(), "node_os_version");
            assert_eq!(
                labels(&v.get_metric()[0]),
                [
                    ("id", "debian"),
                    ("id_like", ""),
                    ("name", "Debian GNU/Linux")
                ]
            );
            assert_eq!(v.get_metric()[0].get_gauge().get_value(), 12.0);
        }
    }

    #[test]
    fn falls_back_to_usr_lib_and_skips_non_numeric_version() {
        let mut set = MetricSet::new();
        collector("usrlib").update(&mut set).unwrap();
        assert_eq!(set.families().len(), 1);
        assert!(labels(&set.families()[0].get_metric()[0]).contains(&("id", "arch")));
    }

    #[test]
    fn missing_is_no_data_and_garbage_is_an_error() {
        assert!(matches!(
            collector("absent").update(&mut MetricSet::new()),
            Err(CollectorError::NoData)
        ));
        let err = collector("garbage")
            .update(&mut MetricSet::new())
            .unwrap_err();
        assert!(err.to_string().contains("os-release"), "{err}");
    }

    #[test]
    fn version_numbers() {
        assert_eq!(major_minor("22.04.1"), 22.04);
        assert_eq!(major_minor("12"), 12.0);
        assert_eq!(major_minor("7."), 7.0);
        assert_eq!(major_minor("rolling"), 0.0);
        assert_eq!(major_minor(""), 0.0);
    }
}
