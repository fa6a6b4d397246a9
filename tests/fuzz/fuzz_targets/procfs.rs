//! The procfs/sysfs text parsers of the metrics collectors. The first byte picks the
//! parser, the rest is the file's text: a kernel (or a container faking /proc via a
//! hostPath) may hand us anything, and a scrape must answer an error, never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use node_agent_core::host::HostPaths;
use node_agent_metrics as m;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 24 {
        0 => drop(m::meminfo::parse_meminfo(text, "meminfo")),
        1 => drop(m::stat::parse_stat(text, "stat")),
        2 => drop(m::diskstats::parse_diskstats(text)),
        3 => drop(m::diskstats::parse_udev(text)),
        4 => drop(m::mdadm::parse_mdstat(text)),
        5 => drop(m::netdev::parse_net_dev(text)),
        6 => drop(m::netstat::parse_net_stats(text, "netstat")),
        7 => drop(m::netstat::parse_snmp6(text)),
        8 => drop(m::sockstat::parse_sockstat(text, Path::new("sockstat"))),
        9 => drop(m::softnet::parse_softnet(text)),
        10 => drop(m::schedstat::parse_schedstat(text, "schedstat")),
        11 => drop(m::cpu::parse_cpuinfo(text)),
        12 => drop(m::cpu::parse_cpu_stat(text, "stat")),
        13 => drop(m::cpu::parse_cpu_list(text)),
        14 => drop(m::pressure::parse_psi(text, "cpu")),
        15 => drop(m::loadavg::parse_loadavg(text)),
        16 => drop(m::conntrack::parse_stat(text)),
        17 => drop(m::arp::count_by_device(text)),
        18 => drop(m::filefd::parse_file_nr(text, "file-nr")),
        19 => drop(m::filesystem::parse_mounts(text, &HostPaths::default())),
        20 => drop(m::os::parse_os_release(text, "os-release")),
        21 => drop(m::process::parse_stat(text)),
        22 => drop(m::hwmon::explode_sensor_filename(text)),
        _ => {
            let _ = m::netclass::parse_int(text);
            drop(m::parse_number(text));
            let _ = m::selinux::config_mode(text);
        }
    }
});
