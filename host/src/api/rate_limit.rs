//! Per-caller request rates (`[api] rate_limit_per_second`, `rate_limit_burst`): a token bucket
//! for each token (the open API's one caller has one too), in this process's memory. Past it a
//! request is refused with 429 `rate_limited` and `Retry-After`, before any work is done for it.
//! Buckets exist only for callers that authenticated, so their number is bounded by the tokens
//! configured.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::service::ApiError;

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: f64, burst: u32) -> Option<Self> {
        (per_second > 0.0).then(|| Self {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one request from the bucket of `caller` (a token's digest), or says when the
    /// next one will be allowed.
    pub fn admit(&self, caller: &[u8; 32]) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(*caller).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refilled = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / self.per_second).ceil().max(1.0) as u64;
        Err(ApiError::new(
            "rate_limited",
            format!(
                "more than {} requests per second (api.rate_limit_per_second) from this caller; \
                 try again in {wait} s",
                self.per_second
            ),
        )
        .retry_after(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(0.5, 3).unwrap();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        for _ in 0..3 {
            limiter.admit(&a).unwrap();
        }
        let refused = limiter.admit(&a).unwrap_err();
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.retry_after_secs, Some(2));
        // Another caller has its own bucket.
        limiter.admit(&b).unwrap();
        assert!(RateLimiter::new(0.0, 10).is_none());
    }
}
