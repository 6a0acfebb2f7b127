//! Per-caller rate limit (a token bucket per uid), so one user flooding the helper
//! cannot starve others or pile up polkit dialogs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// `burst` calls at once, then `per_second` on average.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    buckets: HashMap<u32, Bucket>,
}

/// Buckets idle this long are full again and can be forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

impl RateLimiter {
    pub fn new(burst: u32, per_second: f64) -> Self {
        RateLimiter {
            burst: f64::from(burst),
            per_second,
            buckets: HashMap::new(),
        }
    }

    /// Take one call for `uid` at `now`; false when over the limit.
    pub fn allow(&mut self, uid: u32, now: Instant) -> bool {
        if self.buckets.len() > 4096 {
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.at) < FORGET_AFTER);
        }
        let b = self.buckets.entry(uid).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.per_second;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_per_uid() {
        let mut r = RateLimiter::new(3, 2.0);
        let t0 = Instant::now();
        assert!((0..3).all(|_| r.allow(1000, t0)));
        assert!(!r.allow(1000, t0));
        assert!(r.allow(1001, t0), "another user is not affected");
        assert!(!r.allow(1000, t0 + Duration::from_millis(400)));
        assert!(r.allow(1000, t0 + Duration::from_millis(500)));
        assert!((0..3).all(|_| r.allow(1000, t0 + Duration::from_secs(60))));
    }
}
