//! Ordered acknowledgements. Batches complete out of order (several are in flight), but a
//! position may only move once every earlier batch is confirmed too: otherwise a crash
//! after a later ack would skip the records of an earlier, unconfirmed batch. Updates are
//! therefore applied strictly in batch order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::SystemTime;

use crate::position::{Position, Update};

/// A registered batch: acked yet, its updates, its coverage time.
type Pending<P> = (bool, Vec<Update<P>>, Option<SystemTime>);

/// Tracks in-flight batches of one source and the positions confirmed so far.
#[derive(Debug)]
pub struct AckTracker<P: Position> {
    next_seq: u64,
    /// seq → batch; the smallest seq is the oldest unconfirmed batch.
    pending: BTreeMap<u64, Pending<P>>,
    committed: HashMap<P::Key, P>,
    /// The coverage time of the newest applied batch that had one
    /// ([`crate::checkpoint::Loaded::covered_until`]).
    covered_until: Option<SystemTime>,
    /// Content ids of the streams most recently forgotten (confirmed to their end), newest
    /// last, at most [`MAX_FINISHED`].
    finished: VecDeque<u64>,
    dirty: bool,
}

/// Forgotten streams remembered by content: a rotated file is compressed at the next
/// rotation, so only the last few per container matter; this covers a full node.
pub const MAX_FINISHED: usize = 4096;

impl<P: Position> Default for AckTracker<P> {
    fn default() -> Self {
        Self::new(HashMap::new())
    }
}

impl<P: Position> AckTracker<P> {
    /// Starts from positions loaded from a checkpoint.
    pub fn new(committed: HashMap<P::Key, P>) -> Self {
        Self {
            next_seq: 0,
            pending: BTreeMap::new(),
            committed,
            covered_until: None,
            finished: VecDeque::new(),
            dirty: false,
        }
    }

    /// Starts from the finished content ids of the loaded checkpoint.
    pub fn with_finished(mut self, finished: Vec<u64>) -> Self {
        self.finished = finished.into_iter().collect();
        while self.finished.len() > MAX_FINISHED {
            self.finished.pop_front();
        }
        self
    }

    /// Content ids of recently forgotten streams, oldest first.
    pub fn finished(&self) -> Vec<u64> {
        self.finished.iter().copied().collect()
    }

    /// Starts from the coverage time of the loaded checkpoint.
    pub fn with_covered_until(mut self, covered_until: Option<SystemTime>) -> Self {
        self.covered_until = covered_until;
        self
    }

    /// Registers a batch's updates and the coverage time that holds once it and every
    /// earlier batch are applied; returns its sequence number.
    pub fn register(&mut self, updates: Vec<Update<P>>, covered_until: Option<SystemTime>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(seq, (false, updates, covered_until));
        seq
    }

    /// See [`crate::checkpoint::Loaded::covered_until`].
    pub fn covered_until(&self) -> Option<SystemTime> {
        self.covered_until
    }

    /// Marks `seq` confirmed and applies every confirmed batch at the head, in order.
    pub fn ack(&mut self, seq: u64) {
        if let Some(slot) = self.pending.get_mut(&seq) {
            slot.0 = true;
        }
        while let Some(entry) = self.pending.first_entry() {
            if !entry.get().0 {
                break;
            }
            let (_, updates, covered) = entry.remove();
            if let Some(t) = covered {
                self.covered_until = Some(self.covered_until.map_or(t, |c| c.max(t)));
            }
            for update in updates {
                match update {
                    Update::Advance(e) => {
                        self.committed.insert(e.key(), e);
                    }
                    Update::Forget(key) => {
                        if let Some(id) = self.committed.remove(&key).and_then(|p| p.content_id()) {
                            self.finished.push_back(id);
                            if self.finished.len() > MAX_FINISHED {
                                self.finished.pop_front();
                            }
                        }
                    }
                }
                self.dirty = true;
            }
        }
    }

    /// Batches registered but not yet applied (acked out of order ones included).
    pub fn unapplied(&self) -> usize {
        self.pending.len()
    }

    pub fn committed(&self) -> &HashMap<P::Key, P> {
        &self.committed
    }

    /// Whether positions changed since the last [`Self::mark_saved`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn mark_saved(&mut self) {
        self.dirty = false;
    }

    /// Marks positions unsaved again (a background save taken earlier failed).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::tail::file_id::{FileEntry as Entry, FileKey, Fingerprint};

    fn adv(inode: u64, offset: u64) -> Update<Entry> {
        Update::Advance(Entry {
            dev: 1,
            inode,
            offset,
            fingerprint: Fingerprint { len: 0, hash: 0 },
            path: "/x".into(),
            head: None,
        })
    }

    fn offset(t: &AckTracker<Entry>, inode: u64) -> Option<u64> {
        t.committed()
            .get(&FileKey { dev: 1, inode })
            .map(|e| e.offset)
    }

    #[test]
    fn later_ack_waits_for_earlier_batch() {
        let mut t = AckTracker::default();
        let a = t.register(vec![adv(7, 100)], None);
        let b = t.register(vec![adv(7, 200), adv(8, 50)], None);
        t.ack(b);
        assert_eq!(offset(&t, 7), None, "b must not apply before a");
        assert_eq!(offset(&t, 8), None);
        assert!(!t.is_dirty());
        t.ack(a);
        assert_eq!(offset(&t, 7), Some(200));
        assert_eq!(offset(&t, 8), Some(50));
        assert!(t.is_dirty());
        assert_eq!(t.unapplied(), 0);
    }

    #[test]
    fn truncation_moves_offset_back_and_forget_removes() {
        let mut t = AckTracker::default();
        let a = t.register(vec![adv(7, 5000)], None);
        let b = t.register(vec![adv(7, 10)], None);
        let c = t.register(vec![Update::Forget(FileKey { dev: 1, inode: 7 })], None);
        t.ack(a);
        t.ack(b);
        assert_eq!(offset(&t, 7), Some(10));
        t.ack(c);
        assert_eq!(offset(&t, 7), None);
    }
}
