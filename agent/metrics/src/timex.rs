//! `timex`: kernel clock discipline state from adjtimex(2) (node_exporter 1.5.0
//! collector/timex.go).

use super::{BuildContext, Collector, CollectorError, MetricSet};

/// adjtimex return value meaning the clock is not synchronized.
const TIME_ERROR: i32 = 5;
/// Status bit: offset and jitter are in nanoseconds instead of microseconds.
const STA_NANO: i64 = 0x2000;
const NANO_SECONDS: f64 = 1e9;
const MICRO_SECONDS: f64 = 1e6;
/// Frequencies are ppm with a 16-bit fraction (see NOTES in adjtimex(2)).
const PPM16FRAC: f64 = 1e6 * 65536.0;

pub struct TimexCollector;

pub fn build(_ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(TimexCollector))
}

/// The `struct timex` fields node_exporter exports, plus the call's return state.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Timex {
    pub state: i32,
    pub offset: i64,
    pub freq: i64,
    pub maxerror: i64,
    pub esterror: i64,
    pub status: i64,
    pub constant: i64,
    pub tick: i64,
    pub ppsfreq: i64,
    pub jitter: i64,
    pub shift: i64,
    pub stabil: i64,
    pub jitcnt: i64,
    pub calcnt: i64,
    pub errcnt: i64,
    pub stbcnt: i64,
    pub tai: i64,
}

impl Collector for TimexCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        emit(&read_timex()?, out);
        Ok(())
    }
}

/// Reads the clock state with adjtimex(2) in read-only mode (`modes` = 0).
fn read_timex() -> Result<Timex, CollectorError> {
    // SAFETY: `timex` is plain data; all-zero means "modes = 0", i.e. only read.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid, exclusively borrowed timex for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut t) };
    if state < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::PermissionDenied {
            tracing::debug!(error = %err, "Not collecting timex metrics");
            return Err(CollectorError::NoData);
        }
        return Err(CollectorError::Other(format!(
            "failed to retrieve adjtimex stats: {err}"
        )));
    }
    Ok(Timex {
        state,
        offset: t.offset as i64,
        freq: t.freq as i64,
        maxerror: t.maxerror as i64,
        esterror: t.esterror as i64,
        status: i64::from(t.status),
        constant: t.constant as i64,
        tick: t.tick as i64,
        ppsfreq: t.ppsfreq as i64,
        jitter: t.jitter as i64,
        shift: i64::from(t.shift),
        stabil: t.stabil as i64,
        jitcnt: t.jitcnt as i64,
        calcnt: t.calcnt as i64,
        errcnt: t.errcnt as i64,
        stbcnt: t.stbcnt as i64,
        tai: i64::from(t.tai),
    })
}

pub fn emit(t: &Timex, out: &mut MetricSet) {
    let divisor = if t.status & STA_NANO != 0 {
        NANO_SECONDS
    } else {
        MICRO_SECONDS
    };
    let sync = if t.state == TIME_ERROR { 0.0 } else { 1.0 };
    let g = |out: &mut MetricSet, name: &str, help: &str, v: f64| out.gauge(name, help, &[], v);
    let c = |out: &mut MetricSet, name: &str, help: &str, v: f64| out.counter(name, help, &[], v);
    g(
        out,
        "node_timex_sync_status",
        "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
        sync,
    );
    g(
        out,
        "node_timex_offset_seconds",
        "Time offset in between local system and reference clock.",
        t.offset as f64 / divisor,
    );
    g(
        out,
        "node_timex_frequency_adjustment_ratio",
        "Local clock frequency adjustment.",
        1.0 + t.freq as f64 / PPM16FRAC,
    );
    g(
        out,
        "node_timex_maxerror_seconds",
        "Maximum error in seconds.",
        t.maxerror as f64 / MICRO_SECONDS,
    );
    g(
        out,
        "node_timex_estimated_error_seconds",
        "Estimated error in seconds.",
        t.esterror as f64 / MICRO_SECONDS,
    );
    g(
        out,
        "node_timex_status",
        "Value of the status array bits.",
        t.status as f64,
    );
    g(
        out,
        "node_timex_loop_time_constant",
        "Phase-locked loop time constant.",
        t.constant as f64,
    );
    g(
        out,
        "node_timex_tick_seconds",
        "Seconds between clock ticks.",
        t.tick as f64 / MICRO_SECONDS,
    );
    g(
        out,
        "node_timex_pps_frequency_hertz",
        "Pulse per second frequency.",
        t.ppsfreq as f64 / PPM16FRAC,
    );
    g(
        out,
        "node_timex_pps_jitter_seconds",
        "Pulse per second jitter.",
        t.jitter as f64 / divisor,
    );
    g(
        out,
        "node_timex_pps_shift_seconds",
        "Pulse per second interval duration.",
        t.shift as f64,
    );
    g(
        out,
        "node_timex_pps_stability_hertz",
        "Pulse per second stability, average of recent frequency changes.",
        t.stabil as f64 / PPM16FRAC,
    );
    c(
        out,
        "node_timex_pps_jitter_total",
        "Pulse per second count of jitter limit exceeded events.",
        t.jitcnt as f64,
    );
    c(
        out,
        "node_timex_pps_calibration_total",
        "Pulse per second count of calibration intervals.",
        t.calcnt as f64,
    );
    c(
        out,
        "node_timex_pps_error_total",
        "Pulse per second count of calibration errors.",
        t.errcnt as f64,
    );
    c(
        out,
        "node_timex_pps_stability_exceeded_total",
        "Pulse per second count of stability limit exceeded events.",
        t.stbcnt as f64,
    );
    g(
        out,
        "node_timex_tai_offset_seconds",
        "International Atomic Time (TAI) offset.",
        t.tai as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use prometheus::proto::MetricType;

    fn value(set: &MetricSet, name: &str) -> f64 {
        fixtures::value(set, name, &[])
    }

    #[test]
    fn scales_like_node_exporter() {
        let mut set = MetricSet::new();
        emit(
            &Timex {
                state: 0,
                offset: 1_500,
                freq: 65536 * 10,
                maxerror: 250_000,
                esterror: 16,
                status: 1,
                constant: 7,
                tick: 10_000,
                jitcnt: 3,
                tai: 37,
                ..Timex::default()
            },
            &mut set,
        );
        assert_eq!(set.families().len(), 17);
        assert_eq!(value(&set, "node_timex_sync_status"), 1.0);
        assert_eq!(value(&set, "node_timex_offset_seconds"), 0.0015);
        assert_eq!(
            value(&set, "node_timex_frequency_adjustment_ratio"),
            1.00001
        );
        assert_eq!(value(&set, "node_timex_maxerror_seconds"), 0.25);
        assert_eq!(value(&set, "node_timex_tick_seconds"), 0.01);
        assert_eq!(value(&set, "node_timex_tai_offset_seconds"), 37.0);
        assert_eq!(value(&set, "node_timex_pps_jitter_total"), 3.0);
        let jit = set
            .families()
            .iter()
            .find(|f| f.name() == "node_timex_pps_jitter_total")
            .unwrap();
        assert_eq!(jit.get_field_type(), MetricType::COUNTER);

        // STA_NANO: offset in ns; TIME_ERROR: not synchronized.
        let mut set = MetricSet::new();
        emit(
            &Timex {
                state: TIME_ERROR,
                offset: 1_500,
                status: STA_NANO,
                ..Timex::default()
            },
            &mut set,
        );
        assert_eq!(value(&set, "node_timex_sync_status"), 0.0);
        assert_eq!(value(&set, "node_timex_offset_seconds"), 0.0000015);
    }

    #[test]
    fn live_adjtimex_reads() {
        let mut set = MetricSet::new();
        TimexCollector.update(&mut set).unwrap();
        assert!(value(&set, "node_timex_tick_seconds") > 0.0);
    }
}
