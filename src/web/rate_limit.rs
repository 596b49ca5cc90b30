//! [`RateLimiter`]: a token bucket for one connection's operations. It holds
//! up to a second's worth of operations and refills continuously, so a
//! client may burst up to its rate and sustain exactly its rate.

use std::time::Instant;

pub struct RateLimiter {
    per_second: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimiter {
    pub fn new(per_second: u32, now: Instant) -> Self {
        RateLimiter {
            per_second: f64::from(per_second),
            tokens: f64::from(per_second),
            refilled_at: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_up_to_the_rate_then_refills_at_it() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, start);
        assert_eq!((0..20).filter(|_| limiter.try_acquire(start)).count(), 10);
        assert!(!limiter.try_acquire(start + Duration::from_millis(50)));
        assert!(limiter.try_acquire(start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(10);
        assert_eq!(
            (0..20).filter(|_| limiter.try_acquire(later)).count(),
            10,
            "never more than a second's worth"
        );
    }
}
