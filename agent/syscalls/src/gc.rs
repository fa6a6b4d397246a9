//! Leader: removes counter-map entries of cgroups that no longer exist, so the bounded map
//! does not fill up with history as pods come and go.
//!
//! * A dead container's entries are deleted: its series end, as the container did.
//! * A dead host cgroup's entries (a finished systemd unit, an ssh session…) are added into
//!   the entry (cgroup id [`RETIRED_HOST_CGROUP_ID`], nr) before deletion, which the
//!   collector counts as host too, so the host series never go backwards.
//!
//! Order matters: the key snapshot is taken *before* the cgroup tree is walked, so a cgroup
//! created meanwhile is in the walk and never mistaken for a dead one.

use aya::maps::{MapData, PerCpuHashMap, PerCpuValues};
use syscalls_common::SysKey;

use super::cgroups::{Attribution, Owner, RETIRED_HOST_CGROUP_ID};

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcStats {
    /// Entries of dead containers, deleted.
    pub container_entries: usize,
    /// Entries of dead host cgroups, folded into the retired-host entries.
    pub host_entries: usize,
}

/// One pass over `counts`. `attribution` must have been refreshed earlier (it provides the
/// owners of cgroups that have died since); it is refreshed again here.
pub fn collect(
    counts: &mut PerCpuHashMap<MapData, SysKey, u64>,
    attribution: &mut Attribution,
) -> anyhow::Result<GcStats> {
    let keys: Vec<SysKey> = counts
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.cgroup_id() != RETIRED_HOST_CGROUP_ID)
        .collect();
    let owners: Vec<Owner> = keys
        .iter()
        .map(|k| attribution.owner(k.cgroup_id()))
        .collect();
    if !attribution.refresh() {
        // Without a complete view of the live cgroups nothing can be called dead.
        return Ok(GcStats::default());
    }
    let mut stats = GcStats::default();
    for (key, owner) in keys.iter().zip(owners) {
        if attribution.is_known(key.cgroup_id()) {
            continue;
        }
        match owner {
            Owner::Container(_) => stats.container_entries += 1,
            Owner::Host => {
                retire_host_entry(counts, key)?;
                stats.host_entries += 1;
            }
        }
        match counts.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(stats)
}

/// Adds `key`'s per-CPU values into (RETIRED_HOST_CGROUP_ID, key.nr()).
fn retire_host_entry(
    counts: &mut PerCpuHashMap<MapData, SysKey, u64>,
    key: &SysKey,
) -> anyhow::Result<()> {
    let dead = match counts.get(key, 0) {
        Ok(values) => values,
        Err(aya::maps::MapError::KeyNotFound) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    // Id 0 is always representable, and nr() maps back to the same slot.
    let retired_key = SysKey::new(RETIRED_HOST_CGROUP_ID, key.nr())
        .ok_or_else(|| anyhow::anyhow!("retired-host key out of range"))?;
    let mut sums: Vec<u64> = dead.iter().copied().collect();
    match counts.get(&retired_key, 0) {
        Ok(retired) => {
            for (sum, value) in sums.iter_mut().zip(retired.iter()) {
                *sum += *value;
            }
        }
        Err(aya::maps::MapError::KeyNotFound) => {}
        Err(err) => return Err(err.into()),
    }
    counts.insert(retired_key, PerCpuValues::try_from(sums)?, 0)?;
    Ok(())
}
