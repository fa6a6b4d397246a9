//! The ordered chain of stages between a source's parser and the batch: each stage is a
//! small module with its own config, a function over records and its counters.
//!
//! Stages run on the source's thread, record by record, in the order configured. A stage
//! may change a record, drop it (it then counts as delivered: the position moves past it
//! with the next batch), split or join records, or hold some back (a multiline group in
//! progress). A stage that holds records says from which offset of which file
//! ([`Stage::held_from`]), and the source never checkpoints past it, so a restart in the
//! middle of a held group re-reads the group instead of losing it.

pub mod config;
pub mod enrich;
pub mod filter;
pub mod matcher;
pub mod multiline;
pub mod parse;
pub mod redact;
pub mod throttle;

use std::time::Instant;

use node_agent_core::record::LogRecord;

/// One processing step.
pub trait Stage: Send {
    /// Name in metrics and config errors.
    fn name(&self) -> &'static str;

    /// Processes one record, pushing what comes out (none, it, or others) to `out`.
    fn process(&mut self, record: LogRecord, out: &mut Vec<LogRecord>);

    /// Releases records held past their deadline (e.g. a multiline flush timeout).
    fn flush_due(&mut self, _now: Instant, _out: &mut Vec<LogRecord>) {}

    /// The file `file_id` ended (finished or truncated): releases what is held for it.
    fn flush_file(&mut self, _file_id: u64, _out: &mut Vec<LogRecord>) {}

    /// Offset of the earliest record still held for `file_id`; positions stay before it.
    fn held_from(&self, _file_id: u64) -> Option<u64> {
        None
    }

    /// When [`Self::flush_due`] next has something to release (or a pause ends).
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Until when the source should not read `file_id` any further (a throttle slowing
    /// that container down instead of dropping).
    fn paused_until(&self, _file_id: u64) -> Option<Instant> {
        None
    }

    /// Bytes held waiting to complete (counted against `logs.max_pending_bytes`).
    fn pending_bytes(&self) -> usize {
        0
    }

    /// When the oldest thing still held began.
    fn oldest_pending(&self) -> Option<Instant> {
        None
    }

    /// Releases the oldest thing held as it is, flagged truncated (the pending budget is
    /// exhausted). `false`: nothing is held.
    fn flush_oldest(&mut self, _out: &mut Vec<LogRecord>) -> bool {
        false
    }
}

/// The configured stages, in order.
#[derive(Default)]
pub struct Chain {
    stages: Vec<Box<dyn Stage>>,
    /// Scratch buffers reused between records (one per stage boundary).
    buffers: [Vec<LogRecord>; 2],
}

impl Chain {
    pub fn new(stages: Vec<Box<dyn Stage>>) -> Self {
        Self {
            stages,
            buffers: Default::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Stage names in order (for the effective-pipeline printout and logs).
    pub fn names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// Runs `record` through every stage; what comes out of the last one goes to `sink`.
    pub fn process(&mut self, record: LogRecord, sink: &mut impl FnMut(LogRecord)) {
        if self.stages.is_empty() {
            sink(record);
            return;
        }
        let [input, output] = &mut self.buffers;
        input.push(record);
        Self::run_from(&mut self.stages, 0, input, output, sink);
    }

    /// Releases what stages hold past their deadlines, through the stages after them.
    pub fn flush_due(&mut self, now: Instant, sink: &mut impl FnMut(LogRecord)) {
        for i in 0..self.stages.len() {
            let [input, output] = &mut self.buffers;
            self.stages[i].flush_due(now, input);
            Self::run_from(&mut self.stages, i + 1, input, output, sink);
        }
    }

    /// Releases everything held for `file_id`, through the stages after each.
    pub fn flush_file(&mut self, file_id: u64, sink: &mut impl FnMut(LogRecord)) {
        for i in 0..self.stages.len() {
            let [input, output] = &mut self.buffers;
            self.stages[i].flush_file(file_id, input);
            Self::run_from(&mut self.stages, i + 1, input, output, sink);
        }
    }

    /// Earliest offset any stage holds for `file_id`.
    pub fn held_from(&self, file_id: u64) -> Option<u64> {
        self.stages
            .iter()
            .filter_map(|s| s.held_from(file_id))
            .min()
    }

    /// Until when `file_id` is not to be read (the latest pause any stage asks for).
    pub fn paused_until(&self, file_id: u64) -> Option<Instant> {
        self.stages
            .iter()
            .filter_map(|s| s.paused_until(file_id))
            .max()
    }

    /// Bytes all stages hold waiting to complete.
    pub fn pending_bytes(&self) -> usize {
        self.stages.iter().map(|s| s.pending_bytes()).sum()
    }

    /// When the oldest thing any stage holds began.
    pub fn oldest_pending(&self) -> Option<Instant> {
        self.stages.iter().filter_map(|s| s.oldest_pending()).min()
    }

    /// Releases the oldest thing any stage holds (see [`Stage::flush_oldest`]), through the
    /// stages after it. `false`: nothing is held.
    pub fn flush_oldest(&mut self, sink: &mut impl FnMut(LogRecord)) -> bool {
        let oldest = self
            .stages
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.oldest_pending().map(|t| (t, i)))
            .min();
        let Some((_, i)) = oldest else {
            return false;
        };
        let [input, output] = &mut self.buffers;
        let flushed = self.stages[i].flush_oldest(input);
        Self::run_from(&mut self.stages, i + 1, input, output, sink);
        flushed
    }

    /// Earliest deadline of any stage.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.stages.iter().filter_map(|s| s.next_deadline()).min()
    }

    /// Feeds `input` (emptied) through stages `from..`, then to `sink`.
    fn run_from(
        stages: &mut [Box<dyn Stage>],
        from: usize,
        input: &mut Vec<LogRecord>,
        output: &mut Vec<LogRecord>,
        sink: &mut impl FnMut(LogRecord),
    ) {
        for stage in stages.iter_mut().skip(from) {
            if input.is_empty() {
                return;
            }
            for record in input.drain(..) {
                stage.process(record, output);
            }
            std::mem::swap(input, output);
        }
        for record in input.drain(..) {
            sink(record);
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;
    use std::sync::Arc;

    use node_agent_core::record::{LogRecord, SourceMeta, Stream};

    /// Metadata of a pod's file (file id 1).
    pub fn meta(namespace: &str, pod: &str, container: &str) -> Arc<SourceMeta> {
        Arc::new(SourceMeta {
            kind: node_agent_core::record::SourceKind::Pod,
            namespace: namespace.into(),
            pod: pod.into(),
            pod_uid: "uid".into(),
            container: container.into(),
            node: "node".into(),
            path: PathBuf::from("/x/0.log"),
            file_id: 1,
            kubernetes: None,
        })
    }

    /// A record of file 1 at `offset`.
    pub fn record(offset: u64, message: &str) -> LogRecord {
        LogRecord::new(
            meta("ns", "pod", "c"),
            0,
            Stream::Stdout,
            offset,
            message.into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::record;
    use super::*;

    /// Drops records whose message is "drop"; holds "hold" until its file ends.
    #[derive(Default)]
    struct Toy {
        held: Vec<LogRecord>,
    }

    impl Stage for Toy {
        fn name(&self) -> &'static str {
            "toy"
        }
        fn process(&mut self, record: LogRecord, out: &mut Vec<LogRecord>) {
            match record.message.as_str() {
                "drop" => {}
                "hold" => self.held.push(record),
                _ => out.push(record),
            }
        }
        fn flush_file(&mut self, _file_id: u64, out: &mut Vec<LogRecord>) {
            out.append(&mut self.held);
        }
        fn held_from(&self, _file_id: u64) -> Option<u64> {
            self.held.first().map(|r| r.offset)
        }
    }

    /// Upper-cases messages.
    struct Upper;

    impl Stage for Upper {
        fn name(&self) -> &'static str {
            "upper"
        }
        fn process(&mut self, mut record: LogRecord, out: &mut Vec<LogRecord>) {
            record.message = record.message.to_uppercase();
            out.push(record);
        }
    }

    #[test]
    fn stages_run_in_order_and_may_drop_or_hold() {
        let mut chain = Chain::new(vec![Box::new(Toy::default()), Box::new(Upper)]);
        assert_eq!(chain.names(), ["toy", "upper"]);
        let mut out = Vec::new();
        for (i, m) in ["a", "drop", "hold", "b"].iter().enumerate() {
            chain.process(record(i as u64 * 10, m), &mut |r| out.push(r.message));
        }
        assert_eq!(out, ["A", "B"]);
        assert_eq!(chain.held_from(1), Some(20));
        // What a stage releases still passes the stages after it.
        chain.flush_file(1, &mut |r| out.push(r.message));
        assert_eq!(out, ["A", "B", "HOLD"]);
        assert_eq!(chain.held_from(1), None);
    }

    #[test]
    fn an_empty_chain_passes_records_through() {
        let mut chain = Chain::default();
        let mut out = Vec::new();
        chain.process(record(0, "x"), &mut |r| out.push(r.message));
        assert_eq!(out, ["x"]);
    }
}
