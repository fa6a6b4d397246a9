//! Per-rule token buckets: a rule may alert `burst` times at once and `rate` times per
//! second on average; alerts beyond that are suppressed and counted.
//!
//! Time is the events' own timestamps, so a replay behaves as the live stream did and
//! tests need no clock; time that goes backwards (events from other CPUs arriving a little
//! out of order) adds no tokens.

use std::sync::Arc;

use rustc_hash::FxHashMap;

/// A rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub rate: f64,
    /// Bucket size.
    pub burst: u32,
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last_ns: u64,
    limit: RateLimit,
    suppressed: u64,
}

/// What the limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Emit; `suppressed_before` alerts of this rule were held back since the last one.
    Allow {
        suppressed_before: u64,
    },
    Suppress,
}

/// The limiter. Buckets are made per rule name on first use (bounded by the rules loaded).
#[derive(Debug, Clone, Default)]
pub struct RateLimiter {
    default: Option<RateLimit>,
    per_rule: FxHashMap<Arc<str>, Option<RateLimit>>,
    buckets: FxHashMap<Arc<str>, Bucket>,
}

impl RateLimiter {
    /// `default` applies to every rule (`None`: unlimited).
    pub fn new(default: Option<RateLimit>) -> RateLimiter {
        RateLimiter {
            default,
            ..RateLimiter::default()
        }
    }

    /// A rule's own limit (`None`: unlimited).
    pub fn set_rule_limit(&mut self, rule: &str, limit: Option<RateLimit>) {
        self.per_rule.insert(Arc::from(rule), limit);
        self.buckets.remove(rule);
    }

    pub fn allow(&mut self, rule: &Arc<str>, now_ns: u64) -> Decision {
        let limit = match self.per_rule.get(rule) {
            Some(own) => *own,
            None => self.default,
        };
        let Some(limit) = limit else {
            return Decision::Allow {
                suppressed_before: 0,
            };
        };
        let bucket = self.buckets.entry(rule.clone()).or_insert_with(|| Bucket {
            tokens: f64::from(limit.burst),
            last_ns: now_ns,
            limit,
            suppressed: 0,
        });
        if now_ns > bucket.last_ns {
            let elapsed = (now_ns - bucket.last_ns) as f64 / 1e9;
            bucket.tokens =
                (bucket.tokens + elapsed * bucket.limit.rate).min(f64::from(bucket.limit.burst));
            bucket.last_ns = now_ns;
        }
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            let suppressed_before = std::mem::take(&mut bucket.suppressed);
            Decision::Allow { suppressed_before }
        } else {
            bucket.suppressed += 1;
            Decision::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn burst_then_rate() {
        let mut l = RateLimiter::new(Some(RateLimit {
            rate: 2.0,
            burst: 3,
        }));
        let r: Arc<str> = Arc::from("rule");
        let allowed = (0..10)
            .filter(|_| matches!(l.allow(&r, 100 * SEC), Decision::Allow { .. }))
            .count();
        assert_eq!(allowed, 3, "the burst");
        // Half a second later one token is back, and the 7 suppressed are reported.
        assert_eq!(
            l.allow(&r, 100 * SEC + SEC / 2),
            Decision::Allow {
                suppressed_before: 7
            }
        );
        assert_eq!(l.allow(&r, 100 * SEC + SEC / 2), Decision::Suppress);
        // Time going backwards adds nothing.
        assert_eq!(l.allow(&r, 50 * SEC), Decision::Suppress);
        // A long pause refills to the burst, not beyond.
        let allowed = (0..10)
            .filter(|_| matches!(l.allow(&r, 1000 * SEC), Decision::Allow { .. }))
            .count();
        assert_eq!(allowed, 3);
    }

    #[test]
    fn per_rule_limits_and_unlimited() {
        let mut l = RateLimiter::new(None);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        l.set_rule_limit(
            "b",
            Some(RateLimit {
                rate: 0.0,
                burst: 1,
            }),
        );
        for _ in 0..100 {
            assert!(matches!(l.allow(&a, 0), Decision::Allow { .. }));
        }
        assert!(matches!(l.allow(&b, 0), Decision::Allow { .. }));
        assert_eq!(l.allow(&b, SEC), Decision::Suppress);
    }
}
