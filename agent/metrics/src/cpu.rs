//! `cpu`: node_cpu_seconds_total and node_cpu_guest_seconds_total from /proc/stat, plus
//! node_cpu_isolated and the thermal throttle counters from sysfs, and with
//! `--collector.cpu.info` node_cpu_info / node_cpu_flag_info / node_cpu_bug_info from
//! /proc/cpuinfo (node_exporter 1.5.0 collector/cpu_linux.go).
//!
//! The per-CPU lines are parsed by hand rather than with `procfs::KernelStats`: procfs-core
//! keeps CPUs as a plain list and drops the `cpuN` index, but node_exporter (procfs-go 0.8)
//! labels by that index and fills gaps left by offline CPUs with zeroes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// /proc/stat counts in USER_HZ, which the kernel fixes at 100 for user space (procfs-go
/// hard-codes it too), whatever CONFIG_HZ is.
const USER_HZ: f64 = 100.0;

/// An idle counter that drops by this many seconds means the CPU was hot-unplugged and
/// re-added, so its cached counters restart (node_exporter's `jumpBackSeconds`).
const JUMP_BACK_SECONDS: f64 = 3.0;

const SECONDS_HELP: &str = "Seconds the CPUs spent in each mode.";
const GUEST_HELP: &str = "Seconds the CPUs spent in guests (VMs) for each mode.";
const CORE_THROTTLE_HELP: &str = "Number of times this CPU core has been throttled.";
const PACKAGE_THROTTLE_HELP: &str = "Number of times this CPU package has been throttled.";
const INFO_HELP: &str = "CPU information from /proc/cpuinfo.";
const FLAG_INFO_HELP: &str =
    "The `flags` field of CPU information from /proc/cpuinfo taken from the first core.";
const BUG_INFO_HELP: &str =
    "The `bugs` field of CPU information from /proc/cpuinfo taken from the first core.";
const ISOLATED_HELP: &str =
    "Whether each core is isolated, information from /sys/devices/system/cpu/isolated.";

/// One CPU's times in seconds, in /proc/stat column order.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CpuTimes {
    pub user: f64,
    pub nice: f64,
    pub system: f64,
    pub idle: f64,
    pub iowait: f64,
    pub irq: f64,
    pub softirq: f64,
    pub steal: f64,
    pub guest: f64,
    pub guest_nice: f64,
}

impl CpuTimes {
    fn fields_mut(&mut self) -> [&mut f64; 10] {
        [
            &mut self.user,
            &mut self.nice,
            &mut self.system,
            &mut self.idle,
            &mut self.iowait,
            &mut self.irq,
            &mut self.softirq,
            &mut self.steal,
            &mut self.guest,
            &mut self.guest_nice,
        ]
    }

    fn fields(&self) -> [f64; 10] {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
            self.guest,
            self.guest_nice,
        ]
    }
}

pub struct CpuCollector {
    stat_path: PathBuf,
    guest: bool,
    isolated: Vec<u32>,
    /// sysfs `devices/system/cpu`, when some CPU has `thermal_throttle` counters (the
    /// therm_throt driver creates them at boot); otherwise the per-scrape walk is skipped.
    throttle_dir: Option<PathBuf>,
    /// Last emitted values, indexed by CPU number, kept so counters never go backwards.
    cache: Mutex<Vec<CpuTimes>>,
    /// /proc/cpuinfo families, with `--collector.cpu.info`.
    info: Option<InfoOptions>,
}

struct InfoOptions {
    path: PathBuf,
    flags_include: Option<regex::Regex>,
    bugs_include: Option<regex::Regex>,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    // Read once at start, like node_exporter: isolation only changes with a reboot.
    let isolated_path = ctx.paths.sys_path("devices/system/cpu/isolated");
    let isolated = match read_proc(&isolated_path) {
        Ok(text) => parse_cpu_list(text.trim())
            .map_err(|detail| CollectorError::parse(isolated_path.display().to_string(), detail))?,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e),
    };
    let cpu_dir = ctx.paths.sys_path("devices/system/cpu");
    let has_throttle = cpu_dirs(&cpu_dir)
        .unwrap_or_default()
        .iter()
        .any(|(_, dir)| dir.join("thermal_throttle").is_dir());
    Ok(Box::new(CpuCollector {
        stat_path: ctx.paths.proc_path("stat"),
        guest: ctx.options.cpu_guest,
        isolated,
        throttle_dir: has_throttle.then_some(cpu_dir),
        cache: Mutex::new(Vec::new()),
        info: ctx.options.cpu_info.then(|| InfoOptions {
            path: ctx.paths.proc_path("cpuinfo"),
            flags_include: ctx.options.cpu_flags_include.clone(),
            bugs_include: ctx.options.cpu_bugs_include.clone(),
        }),
    }))
}

impl Collector for CpuCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        if let Some(info) = &self.info {
            emit_info(info, out)?;
        }
        let text = read_proc(&self.stat_path)?;
        let current = parse_cpu_stat(&text, &self.stat_path.display().to_string())?;
        // A poisoned lock only means an earlier scrape panicked mid-update; the cache is
        // still a valid (if stale) set of counters.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        update_monotonic(&mut cache, &current);

        for (cpu, times) in cache.iter().enumerate() {
            let label = cpu.to_string();
            for (mode, value) in [
                ("user", times.user),
                ("nice", times.nice),
                ("system", times.system),
                ("idle", times.idle),
                ("iowait", times.iowait),
                ("irq", times.irq),
                ("softirq", times.softirq),
                ("steal", times.steal),
            ] {
                out.counter(
                    "node_cpu_seconds_total",
                    SECONDS_HELP,
                    &[("cpu", &label), ("mode", mode)],
                    value,
                );
            }
            if self.guest {
                // Guest time is already included in user/nice; exported separately.
                out.counter(
                    "node_cpu_guest_seconds_total",
                    GUEST_HELP,
                    &[("cpu", &label), ("mode", "user")],
                    times.guest,
                );
                out.counter(
                    "node_cpu_guest_seconds_total",
                    GUEST_HELP,
                    &[("cpu", &label), ("mode", "nice")],
                    times.guest_nice,
                );
            }
        }
        drop(cache);
        for cpu in &self.isolated {
            out.gauge(
                "node_cpu_isolated",
                ISOLATED_HELP,
                &[("cpu", &cpu.to_string())],
                1.0,
            );
        }
        if let Some(dir) = &self.throttle_dir {
            emit_throttles(dir, out)?;
        }
        Ok(())
    }
}

/// One processor block of /proc/cpuinfo, with the fields node_exporter labels by.
#[derive(Debug, Default, PartialEq)]
pub struct CpuInfo {
    pub processor: String,
    pub vendor_id: String,
    pub family: String,
    pub model: String,
    pub model_name: String,
    pub microcode: String,
    pub stepping: String,
    pub cache_size: String,
    pub physical_id: String,
    pub core_id: String,
    pub flags: Vec<String>,
    pub bugs: Vec<String>,
}

/// Parses /proc/cpuinfo: one block per processor, each starting with a `processor` line.
/// x86 names its features `flags`, arm64 `Features` (procfs-go's per-arch parsers); fields
/// an architecture lacks stay empty, as there.
pub fn parse_cpuinfo(text: &str) -> Result<Vec<CpuInfo>, CollectorError> {
    let mut cpus: Vec<CpuInfo> = Vec::new();
    for line in super::lines(text) {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "processor" {
            cpus.push(CpuInfo {
                processor: value.to_string(),
                ..CpuInfo::default()
            });
            continue;
        }
        // Lines before the first processor (arm's "Processor" model line) are not per CPU.
        let Some(cpu) = cpus.last_mut() else { continue };
        let words = || value.split_whitespace().map(str::to_string).collect();
        match key {
            "vendor_id" => cpu.vendor_id = value.to_string(),
            "cpu family" => cpu.family = value.to_string(),
            "model" => cpu.model = value.to_string(),
            "model name" => cpu.model_name = value.to_string(),
            "microcode" => cpu.microcode = value.to_string(),
            "stepping" => cpu.stepping = value.to_string(),
            "cache size" => cpu.cache_size = value.to_string(),
            "physical id" => cpu.physical_id = value.to_string(),
            "core id" => cpu.core_id = value.to_string(),
            "flags" | "Features" => cpu.flags = words(),
            "bugs" => cpu.bugs = words(),
            _ => {}
        }
    }
    if cpus.is_empty() {
        return Err(CollectorError::parse(
            "/proc/cpuinfo",
            "no \"processor\" line",
        ));
    }
    Ok(cpus)
}

fn emit_info(options: &InfoOptions, out: &mut MetricSet) -> Result<(), CollectorError> {
    let text = read_proc(&options.path)?;
    let cpus = parse_cpuinfo(&text)?;
    for cpu in &cpus {
        out.gauge(
            "node_cpu_info",
            INFO_HELP,
            &[
                ("package", &cpu.physical_id),
                ("core", &cpu.core_id),
                ("cpu", &cpu.processor),
                ("vendor", &cpu.vendor_id),
                ("family", &cpu.family),
                ("model", &cpu.model),
                ("model_name", &cpu.model_name),
                ("microcode", &cpu.microcode),
                ("stepping", &cpu.stepping),
                ("cachesize", &cpu.cache_size),
            ],
            1.0,
        );
    }
    // Flags and bugs of the first CPU, only those the include regexes select (none
    // without a regex, as in node_exporter).
    let first = &cpus[0];
    for (values, include, name, help, label) in [
        (
            &first.flags,
            &options.flags_include,
            "node_cpu_flag_info",
            FLAG_INFO_HELP,
            "flag",
        ),
        (
            &first.bugs,
            &options.bugs_include,
            "node_cpu_bug_info",
            BUG_INFO_HELP,
            "bug",
        ),
    ] {
        let Some(include) = include else { continue };
        for value in values.iter().filter(|v| include.is_match(v)) {
            out.gauge(name, help, &[(label, value)], 1.0);
        }
    }
    Ok(())
}

/// `cpuN` directories under sysfs `devices/system/cpu`, sorted by name as Go's Glob.
fn cpu_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, CollectorError> {
    let mut cpus: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| CollectorError::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let digits = name.strip_prefix("cpu")?;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| (name, e.path()))
        })
        .collect();
    cpus.sort();
    Ok(cpus)
}

/// A sysfs file holding one unsigned integer; `None` if it is missing or unreadable.
fn read_uint(path: &Path) -> Option<u64> {
    read_proc(path).ok()?.trim().parse().ok()
}

/// node_cpu_{core,package}_throttles_total: each counter is read once per core and per
/// package (from the first CPU that has it); CPUs without topology are skipped.
fn emit_throttles(dir: &Path, out: &mut MetricSet) -> Result<(), CollectorError> {
    let mut packages: BTreeMap<u64, u64> = BTreeMap::new();
    let mut cores: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for (_, cpu) in cpu_dirs(dir)? {
        let topology = cpu.join("topology");
        let (Some(package), Some(core)) = (
            read_uint(&topology.join("physical_package_id")),
            read_uint(&topology.join("core_id")),
        ) else {
            continue;
        };
        let throttle = cpu.join("thermal_throttle");
        if !cores.contains_key(&(package, core))
            && let Some(n) = read_uint(&throttle.join("core_throttle_count"))
        {
            cores.insert((package, core), n);
        }
        if !packages.contains_key(&package)
            && let Some(n) = read_uint(&throttle.join("package_throttle_count"))
        {
            packages.insert(package, n);
        }
    }
    for (package, n) in packages {
        out.counter(
            "node_cpu_package_throttles_total",
            PACKAGE_THROTTLE_HELP,
            &[("package", &package.to_string())],
            n as f64,
        );
    }
    for ((package, core), n) in cores {
        out.counter(
            "node_cpu_core_throttles_total",
            CORE_THROTTLE_HELP,
            &[
                ("package", &package.to_string()),
                ("core", &core.to_string()),
            ],
            n as f64,
        );
    }
    Ok(())
}

/// The `cpuN` lines of /proc/stat, indexed by N; CPUs missing from the file (offline)
/// are all-zero entries, as procfs-go 0.8 returns them.
pub fn parse_cpu_stat(text: &str, what: &str) -> Result<Vec<CpuTimes>, CollectorError> {
    let mut cpus: Vec<CpuTimes> = Vec::new();
    for line in super::lines(text) {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut fields = rest.split_ascii_whitespace();
        let id = fields.next().unwrap_or_default();
        if id.is_empty() || rest.starts_with(' ') {
            continue; // the aggregate "cpu " line
        }
        let id: usize = id
            .parse()
            .map_err(|e| CollectorError::parse(what, format!("cpu id in {line:?}: {e}")))?;
        let mut times = CpuTimes::default();
        let mut n = 0;
        for (slot, field) in times.fields_mut().into_iter().zip(fields) {
            let ticks: u64 = field
                .parse()
                .map_err(|e| CollectorError::parse(what, format!("{field:?} in {line:?}: {e}")))?;
            *slot = ticks as f64 / USER_HZ;
            n += 1;
        }
        // Kernels since 2.6.33 print 10 columns; user..idle have always been there.
        if n < 4 {
            return Err(CollectorError::parse(
                what,
                format!("too few columns in {line:?}"),
            ));
        }
        if cpus.len() <= id {
            // Guard against a corrupt huge index allocating without bound.
            if id > 1 << 16 {
                return Err(CollectorError::parse(
                    what,
                    format!("cpu id {id} too large"),
                ));
            }
            cpus.resize(id + 1, CpuTimes::default());
        }
        cpus[id] = times;
    }
    if cpus.is_empty() {
        return Err(CollectorError::parse(what, "no cpuN lines"));
    }
    Ok(cpus)
}

/// Folds a new reading into the cache so each counter only moves forward: a value that went
/// backwards keeps the old one, and an idle drop of ≥3 s resets that CPU (hotplug). A change
/// in the number of CPUs resets the whole cache, as node_exporter 1.5.0 does.
pub fn update_monotonic(cache: &mut Vec<CpuTimes>, new: &[CpuTimes]) {
    if cache.len() != new.len() {
        cache.clear();
        cache.resize(new.len(), CpuTimes::default());
    }
    for (old, new) in cache.iter_mut().zip(new) {
        if old.idle - new.idle >= JUMP_BACK_SECONDS {
            tracing::debug!(
                old = old.idle,
                new = new.idle,
                "CPU idle counter jumped backwards, possible hotplug event, resetting CPU stats"
            );
            *old = CpuTimes::default();
        }
        for (slot, value) in old.fields_mut().into_iter().zip(new.fields()) {
            if value >= *slot {
                *slot = value;
            }
        }
    }
}

/// Above the kernel's largest `CONFIG_NR_CPUS` (8192) with room to spare; bounds what a
/// hostile list such as `0-4000000000` can make us allocate.
const MAX_CPU_ID: u32 = 65_535;

/// A kernel CPU list such as `0-2,5` (empty = none).
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let num = |s: &str| {
            let n = s
                .trim()
                .parse::<u32>()
                .map_err(|e| format!("{part:?}: {e}"))?;
            if n > MAX_CPU_ID {
                return Err(format!("{part:?}: CPU {n} is beyond {MAX_CPU_ID}"));
            }
            Ok(n)
        };
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (num(lo)?, num(hi)?);
                if lo > hi {
                    return Err(format!("{part:?}: empty range"));
                }
                cpus.extend(lo..=hi);
            }
            None => cpus.push(num(part)?),
        }
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, len, paths, scrape, try_value as value};
    use node_agent_core::host::HostPaths;
    use prometheus::proto::MetricType;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/cpu")).join(name)
    }

    fn collector(root: &str, guest: bool) -> Box<dyn Collector> {
        let paths = HostPaths {
            proc: fixture(root).join("proc"),
            sys: fixture(root).join("sys"),
            ..HostPaths::default()
        };
        let options = CollectorOptions {
            cpu_guest: guest,
            ..CollectorOptions::default()
        };
        build(&BuildContext {
            paths: &paths,
            options: &options,
        })
        .unwrap()
    }

    #[test]
    fn emits_eight_modes_and_guest_in_seconds() {
        let c = collector("basic", true);
        let mut set = MetricSet::new();
        c.update(&mut set).unwrap();
        let f = &set.families()[0];
        assert_eq!(f.name(), "node_cpu_seconds_total");
        assert_eq!(f.help(), SECONDS_HELP);
        assert_eq!(f.get_field_type(), MetricType::COUNTER);
        assert_eq!(f.get_metric().len(), 16);
        assert_eq!(
            value(
                &set,
                "node_cpu_seconds_total",
                &[("cpu", "1"), ("mode", "user")]
            ),
            Some(20.01)
        );
        assert_eq!(
            value(
                &set,
                "node_cpu_seconds_total",
                &[("cpu", "0"), ("mode", "steal")]
            ),
            Some(0.08)
        );
        let g = &set.families()[1];
        assert_eq!(g.name(), "node_cpu_guest_seconds_total");
        assert_eq!(g.get_metric().len(), 4);
        assert_eq!(
            value(
                &set,
                "node_cpu_guest_seconds_total",
                &[("cpu", "0"), ("mode", "nice")]
            ),
            Some(0.1)
        );
        // isolated file is "1"
        assert_eq!(value(&set, "node_cpu_isolated", &[("cpu", "1")]), Some(1.0));
        // cpu0 and cpu1 share core 0 of package 0 (hyperthreads); cpu2 lacks topology.
        let cores = set
            .families()
            .iter()
            .find(|f| f.name() == "node_cpu_core_throttles_total")
            .unwrap();
        assert_eq!(cores.get_field_type(), MetricType::COUNTER);
        assert_eq!(cores.get_metric().len(), 1);
        assert_eq!(
            value(
                &set,
                "node_cpu_core_throttles_total",
                &[("package", "0"), ("core", "0")]
            ),
            Some(5.0)
        );
        assert_eq!(
            value(
                &set,
                "node_cpu_package_throttles_total",
                &[("package", "0")]
            ),
            Some(9.0)
        );
        assert!(!set.contains("node_cpu_info"));
    }

    #[test]
    fn guest_can_be_disabled_and_throttles_need_sysfs() {
        let c = collector("offline", false);
        let mut set = MetricSet::new();
        c.update(&mut set).unwrap();
        assert!(!set.contains("node_cpu_guest_seconds_total"));
        assert!(!set.contains("node_cpu_core_throttles_total"));
        assert!(!set.contains("node_cpu_isolated"));
    }

    #[test]
    fn offline_cpu_gap_is_zero_filled() {
        let text = std::fs::read_to_string(fixture("offline/proc/stat")).unwrap();
        let cpus = parse_cpu_stat(&text, "stat").unwrap();
        assert_eq!(cpus.len(), 3);
        assert_eq!(cpus[1], CpuTimes::default());
        assert_eq!(cpus[2].idle, 5.0);
        // Old kernels: only 4 columns, the rest are zero.
        assert_eq!(cpus[0].user, 1.0);
        assert_eq!(cpus[0].steal, 0.0);
    }

    #[test]
    fn counters_are_monotonic_and_reset_on_hotplug() {
        let t = |user, idle| CpuTimes {
            user,
            idle,
            ..CpuTimes::default()
        };
        let mut cache = Vec::new();
        update_monotonic(&mut cache, &[t(10.0, 100.0)]);
        // user goes back a little: keep the old value; idle drops by < 3 s: keep old.
        update_monotonic(&mut cache, &[t(9.0, 98.0)]);
        assert_eq!(cache[0], t(10.0, 100.0));
        // idle drops by ≥ 3 s: hotplug, take the new values.
        update_monotonic(&mut cache, &[t(1.0, 2.0)]);
        assert_eq!(cache[0], t(1.0, 2.0));
        // A CPU appears: the whole cache restarts with the new set.
        update_monotonic(&mut cache, &[t(5.0, 6.0), t(7.0, 8.0)]);
        assert_eq!(cache, vec![t(5.0, 6.0), t(7.0, 8.0)]);
    }

    #[test]
    fn bad_input_is_an_error_naming_the_file() {
        for bad in [
            "cpu  1 2 3 4\ncpu0 1 x 3 4\n",
            "cpu0 1 2\n",
            "intr 1\n",
            "cpuX 1 2 3 4\n",
        ] {
            let err = parse_cpu_stat(bad, "/proc/stat").unwrap_err();
            assert!(err.to_string().contains("/proc/stat"), "{err}");
        }
        let c = collector("missing", true);
        let err = c.update(&mut MetricSet::new()).unwrap_err();
        assert!(err.is_not_found());
    }

    #[test]
    fn scrapes_stay_monotonic_across_a_hotplug() {
        let dir = tempfile::tempdir().unwrap();
        let stat = dir.path().join("stat");
        let c = CpuCollector {
            stat_path: stat.clone(),
            guest: true,
            isolated: Vec::new(),
            throttle_dir: None,
            cache: Mutex::new(Vec::new()),
            info: None,
        };
        let scrape = |text: &str| {
            std::fs::write(&stat, text).unwrap();
            let mut set = MetricSet::new();
            c.update(&mut set).unwrap();
            let user = value(
                &set,
                "node_cpu_seconds_total",
                &[("cpu", "1"), ("mode", "user")],
            );
            let idle = value(
                &set,
                "node_cpu_seconds_total",
                &[("cpu", "1"), ("mode", "idle")],
            );
            (user.unwrap(), idle.unwrap())
        };
        assert_eq!(scrape("cpu0 1 0 0 100\ncpu1 500 0 0 10000\n"), (5.0, 100.0));
        // user jitters back by a tick: the old value is kept.
        assert_eq!(scrape("cpu0 1 0 0 100\ncpu1 499 0 0 10050\n"), (5.0, 100.5));
        // cpu1 was re-plugged: idle restarts near 0, so its counters restart too.
        assert_eq!(scrape("cpu0 1 0 0 100\ncpu1 3 0 0 20\n"), (0.03, 0.2));
    }

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("0-2,5").unwrap(), [0, 1, 2, 5]);
        assert_eq!(parse_cpu_list("").unwrap(), Vec::<u32>::new());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        // The fuzzer's input: a range of billions of CPUs was allocated in full.
        assert!(parse_cpu_list("0-1219658709").is_err());
        assert_eq!(parse_cpu_list("65535").unwrap(), [65535]);
    }

    #[test]
    fn parses_cpuinfo_of_x86_and_arm64() {
        let text = std::fs::read_to_string(fixture("basic/proc/cpuinfo")).unwrap();
        let cpus = parse_cpuinfo(&text).unwrap();
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[1].processor, "1");
        assert_eq!(cpus[1].core_id, "1");
        assert_eq!(
            cpus[0].model_name,
            "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz"
        );
        assert_eq!(cpus[0].cache_size, "8192 KB");
        assert_eq!(cpus[0].microcode, "0xb4");
        assert!(cpus[0].flags.contains(&"sse4_2".to_string()));
        assert_eq!(cpus[0].bugs.len(), 7);

        let arm = "Processor\t: AArch64 Processor rev 4 (aarch64)\n\
                   processor\t: 0\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm crc32\n\
                   CPU implementer\t: 0x41\n\nprocessor\t: 1\nFeatures\t: fp asimd\n";
        let cpus = parse_cpuinfo(arm).unwrap();
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[0].flags, ["fp", "asimd", "evtstrm", "crc32"]);
        assert_eq!(cpus[0].vendor_id, "");
        assert!(parse_cpuinfo("").is_err());
        assert!(parse_cpuinfo("garbage without colons\n").is_err());
    }

    #[test]
    fn cpu_info_families_follow_the_include_regexes() {
        let paths = paths("cpu/basic");
        let options = CollectorOptions {
            cpu_info: true,
            cpu_flags_include: Some(regex::Regex::new("^(aes|avx.*)$").unwrap()),
            ..CollectorOptions::default()
        };
        let set = scrape(build, &paths, &options).unwrap();
        assert_eq!(len(&set, "node_cpu_info"), 2);
        assert_eq!(help(&set, "node_cpu_info"), INFO_HELP);
        assert_eq!(
            value(
                &set,
                "node_cpu_info",
                &[
                    ("package", "0"),
                    ("core", "1"),
                    ("cpu", "1"),
                    ("vendor", "GenuineIntel"),
                    ("family", "6"),
                    ("model", "142"),
                    ("model_name", "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz"),
                    ("microcode", "0xb4"),
                    ("stepping", "10"),
                    ("cachesize", "8192 KB"),
                ],
            ),
            Some(1.0)
        );
        // Flags of the first CPU only, filtered; no bug_info without a bugs regex.
        assert_eq!(len(&set, "node_cpu_flag_info"), 2);
        assert_eq!(
            value(&set, "node_cpu_flag_info", &[("flag", "avx")]),
            Some(1.0)
        );
        assert!(!set.contains("node_cpu_bug_info"));

        let without = scrape(build, &paths, &CollectorOptions::default()).unwrap();
        assert!(!without.contains("node_cpu_info"));
    }
}
