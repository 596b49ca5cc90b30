//! [`RateLimiter`]: a token bucket for one connection's operations. It holds
//! up to a second's worth of operations and refills continuously, so a
//! client may burst up to its rate and sustain exactly its rate. A client
//! that keeps sending far past it is told apart as abusive.

use std::time::{Duration, Instant};

/// Refusing more than this many seconds' worth of operations within one
/// second is persistent abuse.
const ABUSE_FACTOR: u64 = 10;

pub struct RateLimiter {
    per_second: f64,
    tokens: f64,
    refilled_at: Instant,
    /// Operations refused since `refused_since` (a one-second window).
    refused: u64,
    refused_since: Instant,
}

/// What the limiter says of one more operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    Refused,
    /// Refused, and more than `ABUSE_FACTOR` seconds' worth were refused
    /// within a second: the connection is to be closed (1008).
    Abusive,
}

impl RateLimiter {
    pub fn new(per_second: u32, now: Instant) -> Self {
        RateLimiter {
            per_second: f64::from(per_second),
            tokens: f64::from(per_second),
            refilled_at: now,
            refused: 0,
            refused_since: now,
        }
    }

    /// Whether one more operation may run now.
    pub fn admit(&mut self, now: Instant) -> Verdict {
        if self.try_acquire(now) {
            return Verdict::Admitted;
        }
        if now.saturating_duration_since(self.refused_since) > Duration::from_secs(1) {
            (self.refused_since, self.refused) = (now, 0);
        }
        self.refused += 1;
        if self.refused as f64 > ABUSE_FACTOR as f64 * self.per_second {
            Verdict::Abusive
        } else {
            Verdict::Refused
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

    #[test]
    fn refusing_ten_seconds_worth_within_a_second_is_abuse() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(2, start);
        let verdicts: Vec<_> = (0..23).map(|_| limiter.admit(start)).collect();
        assert_eq!(verdicts[..2], [Verdict::Admitted, Verdict::Admitted]);
        assert!(verdicts[2..22].iter().all(|v| *v == Verdict::Refused));
        assert_eq!(verdicts[22], Verdict::Abusive);
        let later = start + Duration::from_secs(3);
        assert_eq!(limiter.admit(later), Verdict::Admitted, "refilled");
    }
}
