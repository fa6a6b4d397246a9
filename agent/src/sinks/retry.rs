//! Exponential backoff with full jitter, interruptible by shutdown.

use std::time::Duration;

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use super::SinkError;
use super::config::RetryOptions;

/// Backoff state for one delivery: the ceiling doubles per attempt up to the cap and each
/// sleep is uniform in `0..=ceiling` ("full jitter"), so many agents hitting one receiver
/// after an outage spread out instead of retrying in lockstep.
pub struct Backoff {
    ceiling_ms: u64,
    max_ms: u64,
}

impl Backoff {
    pub fn new(options: RetryOptions) -> Self {
        Self {
            ceiling_ms: options.initial_backoff_ms.max(1),
            max_ms: options.max_backoff_ms.max(1),
        }
    }

    /// The next delay; advances the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling_ms.min(self.max_ms);
        self.ceiling_ms = ceiling.saturating_mul(2).min(self.max_ms);
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }

    /// Sleeps for the next delay, or returns `Cancelled` as soon as `cancel` fires.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> Result<(), SinkError> {
        let delay = self.next_delay();
        tokio::select! {
            _ = cancel.cancelled() => Err(SinkError::Cancelled),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let mut b = Backoff::new(RetryOptions {
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
        });
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            ceilings.push(b.ceiling_ms.min(b.max_ms));
            assert!(b.next_delay() <= Duration::from_millis(1000));
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
    }

    #[tokio::test]
    async fn cancel_interrupts_the_wait() {
        let mut b = Backoff::new(RetryOptions {
            initial_backoff_ms: 60_000,
            max_backoff_ms: 60_000,
        });
        b.ceiling_ms = 60_000;
        let cancel = CancellationToken::new();
        cancel.cancel();
        // With a 60 s ceiling the sleep would almost surely be long; cancel wins at once.
        let r = tokio::time::timeout(Duration::from_secs(5), b.wait(&cancel))
            .await
            .unwrap();
        assert!(matches!(r, Err(SinkError::Cancelled)));
    }
}
