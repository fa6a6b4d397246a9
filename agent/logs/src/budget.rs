//! `logs.max_pending_bytes`: one process-wide byte budget for what the tail sources hold
//! in memory while it waits to complete — CRI/docker partial lines being joined and
//! multiline groups with the records waiting behind them — across every open file, every
//! source and every delivery lane. Each holder (a tail source's thread) reports its total
//! through its [`BudgetShare`]; when the sum is over the budget, the holder that just grew
//! flushes its oldest pending message as it is (flagged `truncated`, counted in
//! `node_agent_logs_force_flushed_total{reason}`) until the sum fits or it holds nothing.
//! Nothing is dropped: the rest of a flushed message ships as a record of its own.
//!
//! Memory can exceed the budget by what one holder adds between two checks: one read
//! chunk (`logs.read_chunk_bytes`), or one buffer's growth (a joined message's buffer
//! doubles, at most to `logs.max_line_bytes`). The journal source is not a holder: it has
//! no partial lines, and multiline groups over its entries are not counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::metrics::metrics;

/// The shared budget; see the module docs.
#[derive(Debug)]
pub struct PendingBudget {
    max: usize,
    used: AtomicUsize,
    /// High-water mark of `used` (tests and the status page read it).
    peak: AtomicUsize,
}

impl PendingBudget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Bytes all holders report now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The most [`Self::used`] ever was.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    pub fn over(&self) -> bool {
        self.used() > self.max
    }

    fn add(&self, n: usize) {
        let now = self.used.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
        metrics()
            .pending_bytes
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    fn sub(&self, n: usize) {
        let now = self.used.fetch_sub(n, Ordering::Relaxed).saturating_sub(n);
        metrics()
            .pending_bytes
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }
}

/// One holder's part of the budget; what it reports is given back when it is dropped.
#[derive(Debug)]
pub struct BudgetShare {
    budget: Arc<PendingBudget>,
    held: usize,
}

impl BudgetShare {
    pub fn new(budget: Arc<PendingBudget>) -> Self {
        Self { budget, held: 0 }
    }

    /// Reports that this holder now holds `held` bytes.
    pub fn set(&mut self, held: usize) {
        if held > self.held {
            self.budget.add(held - self.held);
        } else if held < self.held {
            self.budget.sub(self.held - held);
        }
        self.held = held;
    }

    /// Whether all holders together are over the budget.
    pub fn over(&self) -> bool {
        self.budget.over()
    }
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_give_back_on_drop() {
        let budget = PendingBudget::new(100);
        let mut a = BudgetShare::new(Arc::clone(&budget));
        let mut b = BudgetShare::new(Arc::clone(&budget));
        a.set(60);
        b.set(30);
        assert!(!a.over());
        b.set(50);
        assert!(a.over() && b.over(), "over for every holder");
        assert_eq!(budget.used(), 110);
        a.set(10);
        assert_eq!(budget.used(), 60);
        drop(b);
        assert_eq!(budget.used(), 10);
        assert_eq!(budget.peak(), 110);
    }
}
