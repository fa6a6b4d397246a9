//! Loads and attaches the `sys_enter` program with its counter maps pinned in bpffs, and
//! opens those pinned maps for reading.
//!
//! Pinning is what keeps the counters monotonic across a handover: the maps declared
//! `pinned` in the eBPF crate (`COUNTS`, `STATS`) live at `<pin_path>/<NAME>`; aya reuses
//! an existing pin instead of creating a new map, so the new leader's program increments
//! the very map the old leader's program did. The pins are never removed by the agent
//! (removing them is how an operator resets the counters).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{Array, Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};
use node_agent_security::event::{EventType, EventTypeSet};
use syscalls_common::{
    FILTER_LEN, GLOBAL_LAYOUT, KernelLayout, MAP_COUNTS, MAP_FILTER, MAP_OPEN_READ, MAP_OPEN_WRITE,
    MAP_STATS, PREFIX_KEY_LEN, PROG_SCHED_EXEC, PROG_SCHED_EXIT, PROG_SCHED_FORK, PROG_SYS_ENTER,
    PROG_SYS_EXIT, STAT_COUNTS_FULL, STAT_EVENTS_DROPPED, SysKey,
};
use tokio_util::sync::CancellationToken;

use super::SyscallsConfig;
use super::support;

/// The eBPF object built by `agent/build.rs`.
#[cfg(syscalls_ebpf_object)]
static OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/syscalls"
)));
#[cfg(not(syscalls_ebpf_object))]
static OBJECT: Option<&[u8]> = None;

/// bpffs magic (`BPF_FS_MAGIC` in linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// What the security capture sends through `EVENTS` (see `ebpf/syscalls-ebpf/src/security.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSettings {
    /// Record kinds to send; the others cost nothing (their hook is not attached, or their
    /// syscall is absent from `FILTER`).
    pub kinds: EventTypeSet,
    /// Any open below one of these is sent.
    pub open_read_prefixes: Vec<String>,
    /// Opens for writing or creating below one of these are sent.
    pub open_write_prefixes: Vec<String>,
}

impl CaptureSettings {
    /// What a security engine needs, minus what the configuration switched off.
    pub fn from_security(
        config: &node_agent_security::config::SecurityConfig,
        required: EventTypeSet,
    ) -> Self {
        let mut kinds = required;
        for name in &config.kernel.disabled_events {
            if let Some(t) = EventType::from_name(name) {
                kinds = kinds.intersection(EventTypeSet::only(t).complement());
            }
        }
        CaptureSettings {
            kinds,
            open_read_prefixes: config.kernel.open_read_prefixes.clone(),
            open_write_prefixes: config.kernel.open_write_prefixes.clone(),
        }
    }
}

/// The attached program; dropping it detaches the program (the pinned maps stay).
pub struct LoadedProgram {
    ebpf: Ebpf,
    pin_path: PathBuf,
    program: String,
    /// The capture programs attached, by name (bench: their run time).
    capture: Vec<&'static str>,
}

impl LoadedProgram {
    /// Loads the program, reusing or creating the pinned maps, and attaches the counting
    /// program to the `sys_enter` raw tracepoint.
    pub fn load(config: &SyscallsConfig) -> anyhow::Result<Self> {
        Self::load_program(config, PROG_SYS_ENTER, None)
    }

    /// [`Self::load`] plus the security capture programs `capture` asks for.
    pub fn load_with_capture(
        config: &SyscallsConfig,
        capture: &CaptureSettings,
    ) -> anyhow::Result<Self> {
        Self::load_program(config, PROG_SYS_ENTER, Some(capture))
    }

    /// Benchmarks only: attaches the empty program on the same hook instead, to measure
    /// the cost of the hook itself.
    pub fn load_baseline(config: &SyscallsConfig) -> anyhow::Result<Self> {
        Self::load_program(config, syscalls_common::PROG_SYS_ENTER_NOOP, None)
    }

    /// Benchmarks only: attaches a program that only calls the cgroup id helper, to split
    /// our cost into the helper and the counter map.
    pub fn load_cgroup_id_only(config: &SyscallsConfig) -> anyhow::Result<Self> {
        Self::load_program(config, syscalls_common::PROG_SYS_ENTER_CGROUP_ID, None)
    }

    fn load_program(
        config: &SyscallsConfig,
        name: &str,
        capture: Option<&CaptureSettings>,
    ) -> anyhow::Result<Self> {
        let object = OBJECT
            .context("this node-agent was built with AYA_BUILD_SKIP, without the eBPF object")?;
        ensure_bpffs(&config.pin_path)?;
        raise_memlock_limit();
        check_pinned_counts(config);
        let layout = match capture {
            Some(_) => super::btf::Btf::from_sys_fs()
                .context("kernel BTF for the security capture")?
                .kernel_layout(),
            None => KernelLayout::UNSET,
        };
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&config.pin_path)
            .map_max_entries(MAP_COUNTS, config.map_entries)
            .override_global(GLOBAL_LAYOUT, &layout, true)
            .load(object)
            .context("loading the eBPF object (maps + BTF)")?;
        let mut attached = Vec::new();
        if let Some(capture) = capture {
            attached = attach_capture(&mut ebpf, capture)?;
        }
        let program: &mut RawTracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?
            .try_into()
            .with_context(|| format!("{name} is not a raw tracepoint program"))?;
        program
            .load()
            .with_context(|| format!("loading {name} (verifier)"))?;
        program
            .attach("sys_enter")
            .context("attaching the sys_enter raw tracepoint")?;
        Ok(Self {
            ebpf,
            pin_path: config.pin_path.clone(),
            program: name.to_string(),
            capture: attached,
        })
    }

    /// Security records dropped so far because the ring buffer was full (`STATS[1]`).
    pub fn events_dropped(&self) -> anyhow::Result<u64> {
        let stats: PerCpuArray<_, u64> = self
            .ebpf
            .map(MAP_STATS)
            .context("STATS map missing")?
            .try_into()
            .context("STATS is not a per-CPU array")?;
        let values = stats
            .get(&STAT_EVENTS_DROPPED, 0)
            .context("reading the STATS map")?;
        Ok(values.iter().sum())
    }

    /// Run time and count summed over the capture programs (benchmarks).
    pub fn capture_run_stats(&self) -> anyhow::Result<(std::time::Duration, u64)> {
        let mut total = (std::time::Duration::ZERO, 0);
        for name in &self.capture {
            let info = self
                .ebpf
                .program(name)
                .context("program missing")?
                .info()
                .context("reading program info")?;
            total.0 += info.run_time();
            total.1 += info.run_count();
        }
        Ok(total)
    }

    /// Where the counter maps are pinned.
    pub fn pin_path(&self) -> &Path {
        &self.pin_path
    }

    /// Total run time and run count of the program, as kept by the kernel while
    /// [`enable_run_time_stats`] is held (benchmarks).
    pub fn run_stats(&self) -> anyhow::Result<(std::time::Duration, u64)> {
        let info = self
            .ebpf
            .program(&self.program)
            .context("program missing")?
            .info()
            .context("reading program info")?;
        Ok((info.run_time(), info.run_count()))
    }

    /// Takes the ring buffer of security records (once).
    pub fn take_events(&mut self) -> Option<Map> {
        self.ebpf.take_map(syscalls_common::MAP_EVENTS)
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (64 KiB by default), far too little
/// for the counter map; later kernels use memcg accounting and ignore it. Best effort: needs
/// CAP_SYS_RESOURCE to raise the hard limit, and load reports EPERM clearly otherwise.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid, initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot lift RLIMIT_MEMLOCK (only matters before Linux 5.11)"
        );
    }
}

/// Fills `FILTER` (syscall nr → record kind) and the open-prefix tries, then loads and
/// attaches the capture programs `capture` needs. Returns their names.
fn attach_capture(ebpf: &mut Ebpf, capture: &CaptureSettings) -> anyhow::Result<Vec<&'static str>> {
    let mut filter: Array<_, u8> = ebpf
        .map_mut(MAP_FILTER)
        .context("FILTER map missing from the object")?
        .try_into()
        .context("FILTER is not an array")?;
    let mut any_syscall = false;
    for kind in capture.kinds.iter() {
        // exec, fork and exit come from the sched tracepoints, not from sys_exit.
        if kind.is_exec() || kind.is_fork() || kind == EventType::Procexit {
            continue;
        }
        // Absent on this architecture (open on arm64): nothing to report.
        let Some(nr) = super::names::syscall_nr(kind.name()) else {
            continue;
        };
        let index = u32::try_from(nr)
            .ok()
            .filter(|i| *i < FILTER_LEN)
            .with_context(|| format!("syscall number {nr} beyond the filter's {FILTER_LEN}"))?;
        filter
            .set(index, kind as u16 as u8, 0)
            .context("writing the FILTER map")?;
        any_syscall = true;
    }
    for (map, prefixes) in [
        (MAP_OPEN_READ, &capture.open_read_prefixes),
        (MAP_OPEN_WRITE, &capture.open_write_prefixes),
    ] {
        let mut trie: LpmTrie<_, [u8; PREFIX_KEY_LEN], u8> = ebpf
            .map_mut(map)
            .with_context(|| format!("{map} map missing from the object"))?
            .try_into()
            .with_context(|| format!("{map} is not an LPM trie"))?;
        for prefix in prefixes {
            let bytes = prefix.as_bytes();
            if bytes.is_empty() || bytes.len() >= PREFIX_KEY_LEN {
                bail!(
                    "open prefix {prefix:?}: must be 1 to {} bytes",
                    PREFIX_KEY_LEN - 1
                );
            }
            let mut data = [0u8; PREFIX_KEY_LEN];
            data[..bytes.len()].copy_from_slice(bytes);
            let key = LpmKey::new(bytes.len() as u32 * 8, data);
            trie.insert(&key, 1, 0)
                .with_context(|| format!("adding {prefix:?} to {map}"))?;
        }
    }
    let mut wanted = Vec::new();
    if any_syscall {
        wanted.push((PROG_SYS_EXIT, "sys_exit"));
    }
    if capture.kinds.iter().any(EventType::is_exec) {
        wanted.push((PROG_SCHED_EXEC, "sched_process_exec"));
    }
    if capture.kinds.iter().any(EventType::is_fork) {
        wanted.push((PROG_SCHED_FORK, "sched_process_fork"));
    }
    if capture.kinds.contains(EventType::Procexit) {
        wanted.push((PROG_SCHED_EXIT, "sched_process_exit"));
    }
    let mut attached = Vec::new();
    for (name, tracepoint) in wanted {
        let program: &mut RawTracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?
            .try_into()
            .with_context(|| format!("{name} is not a raw tracepoint program"))?;
        program
            .load()
            .with_context(|| format!("loading {name} (verifier)"))?;
        program
            .attach(tracepoint)
            .with_context(|| format!("attaching the {tracepoint} raw tracepoint"))?;
        attached.push(name);
    }
    Ok(attached)
}

/// A reused pin keeps its old capacity; say so instead of silently ignoring the setting. A
/// pin whose layout does not match this build (an upgrade changed the key) cannot be reused:
/// it is unpinned, so the counters restart instead of the program failing to load forever.
fn check_pinned_counts(config: &SyscallsConfig) {
    let path = config.pin_path.join(MAP_COUNTS);
    let Ok(info) = aya::maps::MapInfo::from_pin(&path) else {
        return;
    };
    let expected_key = std::mem::size_of::<SysKey>() as u32;
    let expected_value = std::mem::size_of::<u64>() as u32;
    if info.key_size() != expected_key || info.value_size() != expected_value {
        tracing::warn!(
            path = %path.display(),
            key_size = info.key_size(),
            value_size = info.value_size(),
            "pinned counter map has another layout (older agent?); unpinning it, counters restart"
        );
        for map in [MAP_COUNTS, MAP_STATS] {
            let _ = std::fs::remove_file(config.pin_path.join(map));
        }
        return;
    }
    if info.max_entries() != config.map_entries {
        tracing::warn!(
            path = %path.display(),
            pinned = info.max_entries(),
            configured = config.map_entries,
            "reusing the pinned counter map with its old capacity (remove the pin to resize; counters restart)"
        );
    }
}

/// Makes sure `pin_path` is a directory on bpffs, mounting bpffs on its mount point
/// (`/sys/fs/bpf` for the default) when nothing is mounted there and we may mount.
pub fn ensure_bpffs(pin_path: &Path) -> anyhow::Result<()> {
    let mount_point = bpffs_mount_point(pin_path);
    if !is_bpffs(&mount_point) {
        std::fs::create_dir_all(&mount_point)
            .with_context(|| format!("creating {}", mount_point.display()))?;
        mount_bpffs(&mount_point).with_context(|| {
            format!(
                "{} is not bpffs and mounting it failed (mount a bpffs hostPath there, or set syscalls.pin_path)",
                mount_point.display()
            )
        })?;
        tracing::info!(path = %mount_point.display(), "mounted bpffs");
    }
    std::fs::create_dir_all(pin_path)
        .with_context(|| format!("creating the pin directory {}", pin_path.display()))?;
    Ok(())
}

/// The bpffs mount the pin directory is expected on: the deepest existing ancestor that is
/// bpffs, or else `/sys/fs/bpf` when the path is below it, or else the parent directory.
fn bpffs_mount_point(pin_path: &Path) -> PathBuf {
    if let Some(existing) = pin_path.ancestors().find(|p| p.exists())
        && is_bpffs(existing)
    {
        return existing.to_path_buf();
    }
    let standard = Path::new("/sys/fs/bpf");
    if pin_path.starts_with(standard) {
        return standard.to_path_buf();
    }
    pin_path.parent().unwrap_or(pin_path).to_path_buf()
}

fn mount_bpffs(target: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let target = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[allow(
    clippy::unnecessary_cast,
    reason = "f_type is i64 or i32 depending on the target"
)]
fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

/// The pinned maps, opened read-only by the collector of any pod.
pub struct PinnedMaps {
    counts: PerCpuHashMap<MapData, SysKey, u64>,
    stats: PerCpuArray<MapData, u64>,
    capacity: u32,
}

/// Rows of the counter map: (cgroup id, syscall nr, count summed over CPUs).
pub type CountRow = (u64, u64, u64);

impl PinnedMaps {
    /// Opens `<pin_path>/COUNTS` and `<pin_path>/STATS`.
    pub fn open(pin_path: &Path) -> anyhow::Result<Self> {
        let open = |name: &str| -> anyhow::Result<Map> {
            let path = pin_path.join(name);
            let data = MapData::from_pin(&path).with_context(|| {
                format!(
                    "opening pinned map {} (is the syscalls program loaded by the leader?)",
                    path.display()
                )
            })?;
            Map::from_map_data(data).with_context(|| format!("pinned map {}", path.display()))
        };
        let counts_map = open(MAP_COUNTS)?;
        let capacity = match &counts_map {
            Map::PerCpuHashMap(data) => data.info().map(|i| i.max_entries()).unwrap_or(0),
            _ => 0,
        };
        Ok(Self {
            counts: counts_map
                .try_into()
                .context("pinned COUNTS is not a per-CPU hash map")?,
            stats: open(MAP_STATS)?
                .try_into()
                .context("pinned STATS is not a per-CPU array")?,
            capacity,
        })
    }

    /// Every (cgroup, syscall) count, summed over CPUs. An entry deleted while we iterate
    /// is skipped (the iteration restarts from the next key, as the kernel API does).
    pub fn counts(&self) -> anyhow::Result<Vec<CountRow>> {
        let mut rows = Vec::new();
        for item in self.counts.iter() {
            let (key, values) = match item {
                Ok(entry) => entry,
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(err) => return Err(err).context("reading the COUNTS map"),
            };
            rows.push((key.cgroup_id(), key.nr(), values.iter().sum()));
        }
        Ok(rows)
    }

    /// Increments lost because the counter map was full (or the cgroup id did not fit `SysKey`).
    pub fn counts_lost(&self) -> anyhow::Result<u64> {
        self.stat(STAT_COUNTS_FULL)
    }

    /// Security events dropped because the ring buffer was full.
    pub fn events_dropped(&self) -> anyhow::Result<u64> {
        self.stat(STAT_EVENTS_DROPPED)
    }

    fn stat(&self, index: u32) -> anyhow::Result<u64> {
        let values: PerCpuValues<u64> =
            self.stats.get(&index, 0).context("reading the STATS map")?;
        Ok(values.iter().sum())
    }

    /// Leader only: drops entries of cgroups that no longer exist (see `gc.rs`).
    pub fn collect_garbage(
        &mut self,
        attribution: &mut super::cgroups::Attribution,
    ) -> anyhow::Result<super::gc::GcStats> {
        super::gc::collect(&mut self.counts, attribution)
    }

    /// `max_entries` of the counter map.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }
}

/// Leader: check support, load + attach, run the security capture (when enabled), hold
/// until `shutdown`. An unsupported host or a failed load is logged and the agent keeps
/// running without it; a broken security configuration is an error (it was validated at
/// startup, so this is a rules file that changed or an unusable output).
pub async fn run_leader(
    options: &super::SyscallsOptions,
    paths: &node_agent_core::host::HostPaths,
    security: Option<super::security::SecurityOptions>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let syscalls = &options.config;
    let containers = std::sync::Arc::clone(&options.containers);
    if let Err(reason) = support::check(paths) {
        tracing::warn!(%reason, "syscall monitoring disabled: eBPF not supported here");
        shutdown.cancelled().await;
        return Ok(());
    }
    let security = security.filter(|s| s.config.enabled).map(|mut s| {
        s.config = super::security::with_v2_cgroup_root(s.config, paths);
        s
    });
    let capture = match &security {
        Some(options) => {
            let capture = super::security::Capture::with_metadata(
                &options.config,
                &tokio::runtime::Handle::current(),
                options.alerts.clone(),
                std::sync::Arc::new(node_agent_security::process::KubeMetadata::new(containers)),
            )?;
            let settings = CaptureSettings::from_security(
                &options.config,
                capture.engine.required_event_types(),
            );
            Some((capture, settings))
        }
        None => None,
    };
    let loaded = match &capture {
        Some((_, settings)) => LoadedProgram::load_with_capture(syscalls, settings),
        None => LoadedProgram::load(syscalls),
    };
    let mut program = match loaded {
        Ok(program) => program,
        Err(err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "syscall monitoring disabled: cannot load the eBPF program"
            );
            shutdown.cancelled().await;
            return Ok(());
        }
    };
    tracing::info!(
        pin_path = %program.pin_path().display(),
        security = capture.is_some(),
        "syscall monitoring attached"
    );
    let reader = match (capture, program.take_events()) {
        (Some((capture, _)), Some(map)) => Some(super::security::capture::spawn(map, capture)?),
        (Some(_), None) => bail!("EVENTS ring buffer missing from the eBPF object"),
        _ => None,
    };
    let sources_for_gc = options.attribution_sources(paths);
    let gc = tokio::spawn(run_gc(
        program.pin_path().to_path_buf(),
        sources_for_gc,
        syscalls.gc_interval,
        shutdown.clone(),
    ));
    shutdown.cancelled().await;
    // Detach first, so the reader drains a ring buffer that no longer fills.
    drop(program);
    if let Some(reader) = reader {
        let _ = tokio::task::spawn_blocking(move || reader.stop()).await;
    }
    let _ = gc.await;
    tracing::info!("syscall monitoring detached (pinned counters kept for the next leader)");
    Ok(())
}

/// Leader: every `interval`, removes map entries of dead cgroups.
async fn run_gc(
    pin_path: PathBuf,
    sources: super::cgroups::AttributionSources,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    if sources.cgroup_root.is_none() {
        tracing::warn!("no cgroup v2 root: counter map entries of dead cgroups are never removed");
        return;
    }
    let mut state = PinnedMaps::open(&pin_path).map(|maps| {
        let mut attribution = super::cgroups::Attribution::new(sources, std::time::Duration::ZERO);
        let _ = attribution.refresh();
        (maps, attribution)
    });
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let (mut maps, mut attribution) = match state {
            Ok(state) => state,
            Err(err) => {
                tracing::error!(
                    error = format!("{err:#}"),
                    "counter map garbage collection disabled"
                );
                return;
            }
        };
        // Walking the cgroup tree is blocking file-system work.
        let pass = tokio::task::spawn_blocking(move || {
            let result = maps.collect_garbage(&mut attribution);
            (maps, attribution, result)
        })
        .await;
        state = match pass {
            Ok((maps, attribution, result)) => {
                match result {
                    Ok(stats) => tracing::debug!(?stats, "counter map garbage collected"),
                    Err(err) => tracing::warn!(
                        error = format!("{err:#}"),
                        "counter map garbage collection failed"
                    ),
                }
                Ok((maps, attribution))
            }
            Err(err) => Err(anyhow::anyhow!("garbage collection task failed: {err}")),
        };
    }
}

/// Makes the kernel account run time of BPF programs until the returned fd is dropped
/// (`kernel.bpf_stats_enabled`; costs a little per run, so only for benchmarks).
pub fn enable_run_time_stats() -> anyhow::Result<std::os::fd::OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")
}

/// Fails unless the current build embeds the eBPF object.
pub fn require_object() -> anyhow::Result<()> {
    if OBJECT.is_none() {
        bail!("built without the eBPF object (AYA_BUILD_SKIP)");
    }
    Ok(())
}
