//! `stat` collector. TODO(collector helper): port node_exporter 1.5.0 collector/stat*_linux.go.

use super::{BuildContext, Collector, CollectorError, MetricSet};

struct Pending;

pub fn build(_ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(Pending))
}

impl Collector for Pending {
    fn update(&self, _out: &mut MetricSet) -> Result<(), CollectorError> {
        Err(CollectorError::NoData)
    }
}
