//! The retry budget: a token bucket per plugin and target host, in the spirit of the AWS SDKs'
//! standard retry mode. Each retry takes a token; tokens refill at a steady rate. When a
//! bucket is empty the retry is not dropped but deferred until its token is earned, so under a
//! total outage retries to one host run at the refill rate instead of multiplying the load.
//! Buckets live in each engine's memory: a budget is per engine process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::BudgetConfig;

pub struct RetryBudget {
    capacity: f64,
    refill_per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    /// Below zero: retries already promised tokens not yet earned.
    tokens: f64,
    at: Instant,
    deferred: u64,
}

/// What taking a token gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// Extra wait before the retry may run (0 when a token was there).
    pub wait_ms: u64,
    /// Tokens left after this one (negative while retries wait for theirs).
    pub tokens: f64,
    /// Retries this bucket has deferred so far.
    pub deferred: u64,
}

impl RetryBudget {
    pub fn new(config: &BudgetConfig) -> Self {
        Self {
            capacity: config.capacity,
            refill_per_second: config.refill_per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for one retry against `key` (plugin and target host).
    pub fn take(&self, key: &str) -> Grant {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &str, now: Instant) -> Grant {
        let mut buckets = self.buckets.lock().unwrap();
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
            deferred: 0,
        });
        let earned = now.saturating_duration_since(b.at).as_secs_f64() * self.refill_per_second;
        b.tokens = (b.tokens + earned).min(self.capacity);
        b.at = now;
        b.tokens -= 1.0;
        let wait_ms = if b.tokens >= 0.0 {
            0
        } else {
            b.deferred += 1;
            // This retry's token is earned once the debt before it is paid off.
            ((-b.tokens) / self.refill_per_second * 1000.0).ceil() as u64
        };
        Grant {
            wait_ms,
            tokens: b.tokens,
            deferred: b.deferred,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_empty_bucket_spaces_retries_at_the_refill_rate() {
        let budget = RetryBudget::new(&BudgetConfig {
            capacity: 2.0,
            refill_per_second: 10.0,
        });
        let t0 = Instant::now();
        assert_eq!(budget.take_at("p@h", t0).wait_ms, 0);
        assert_eq!(budget.take_at("p@h", t0).wait_ms, 0);
        // Empty: the next ones wait 100 ms, 200 ms, ... for their tokens.
        assert_eq!(budget.take_at("p@h", t0).wait_ms, 100);
        let g = budget.take_at("p@h", t0);
        assert_eq!((g.wait_ms, g.deferred), (200, 2));
        // Another host has its own bucket.
        assert_eq!(budget.take_at("p@other", t0).wait_ms, 0);
        // Time refills (never above capacity).
        let later = t0 + Duration::from_secs(10);
        let g = budget.take_at("p@h", later);
        assert_eq!((g.wait_ms, g.tokens), (0, 1.0));
    }
}
