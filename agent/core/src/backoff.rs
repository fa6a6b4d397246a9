//! Exponential backoff with full jitter, interruptible by shutdown: the one retry pacing
//! used by sinks, the delivery side of the log pipeline and the Kubernetes watches.

use std::time::Duration;

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

/// `cancel` fired while waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled while backing off")]
pub struct Cancelled;

/// Backoff state for one retried operation: the ceiling doubles per attempt up to the cap
/// and each sleep is uniform in `0..=ceiling` ("full jitter"), so many agents hitting one
/// receiver after an outage spread out instead of retrying in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial_ms: u64,
    ceiling_ms: u64,
    max_ms: u64,
}

impl Backoff {
    /// Starts at `initial` (at least 1 ms) and never waits longer than `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial_ms = millis(initial).max(1);
        Self {
            initial_ms,
            ceiling_ms: initial_ms,
            max_ms: millis(max).max(1),
        }
    }

    /// The next delay; advances the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling_ms.min(self.max_ms);
        self.ceiling_ms = ceiling.saturating_mul(2).min(self.max_ms);
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }

    /// Back to the first ceiling, after a success.
    pub fn reset(&mut self) {
        self.ceiling_ms = self.initial_ms;
    }

    /// Sleeps for the next delay, or returns [`Cancelled`] as soon as `cancel` fires.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        let delay = self.next_delay();
        tokio::select! {
            _ = cancel.cancelled() => Err(Cancelled),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            ceilings.push(b.ceiling_ms.min(b.max_ms));
            assert!(b.next_delay() <= Duration::from_millis(1000));
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.ceiling_ms, 100);
    }

    #[tokio::test]
    async fn cancel_interrupts_the_wait() {
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let cancel = CancellationToken::new();
        cancel.cancel();
        // With a 60 s ceiling the sleep would almost surely be long; cancel wins at once.
        let r = tokio::time::timeout(Duration::from_secs(5), b.wait(&cancel))
            .await
            .unwrap();
        assert_eq!(r, Err(Cancelled));
    }
}
