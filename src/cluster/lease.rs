//! Leases: a member acts on its segments only while the majority backs it.
//!
//! The leader of the topology log holds a lease while a majority of voters
//! acknowledged it within [`Lease::term`]; it grants every other member of
//! the topology a lease for what remains of its own, measured by the
//! member from before it asked, so no grant outlives the leader's backing.
//! The term is half the failure timeout, and the majority gives up on a
//! member (and hands its segments to others) only after about the whole
//! failure timeout without hearing it, so a member cut off from the
//! majority has stopped acting on its segments before anyone takes them.
//!
//! Checking a lease is one atomic load and a clock read: it sits on the
//! write path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What the leader grants: how long its own lease still runs, and the
/// topology epoch it grants at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    pub remaining_ms: u64,
    pub epoch: u64,
}

/// This member's lease: until when it may act.
#[derive(Clone)]
pub struct Lease {
    /// The clock leases are measured on.
    origin: Instant,
    /// Microseconds after `origin` when the lease runs out; 0: none held.
    until_micros: Arc<AtomicU64>,
    /// Given up for good: the member is leaving the cluster.
    surrendered: Arc<AtomicBool>,
    term: Duration,
}

impl Lease {
    pub fn new(failure_timeout: Duration) -> Self {
        Lease {
            origin: Instant::now(),
            until_micros: Arc::new(AtomicU64::new(0)),
            surrendered: Arc::new(AtomicBool::new(false)),
            term: failure_timeout / 2,
        }
    }

    /// How long a lease runs at most.
    pub fn term(&self) -> Duration {
        self.term
    }

    pub fn holds(&self) -> bool {
        let until = self.until_micros.load(Ordering::Acquire);
        until != 0 && (self.origin.elapsed().as_micros() as u64) < until && !self.is_surrendered()
    }

    /// Gives the lease up for good: from now on the member acts on no
    /// segment (it is leaving the cluster).
    pub fn surrender(&self) {
        self.surrendered.store(true, Ordering::Release);
    }

    pub fn is_surrendered(&self) -> bool {
        self.surrendered.load(Ordering::Acquire)
    }

    /// Extends the lease to `valid_for` after `asked_at`, never shortening
    /// one already held for longer.
    pub fn extend(&self, asked_at: Instant, valid_for: Duration) {
        let valid_for = valid_for.min(self.term);
        let until = asked_at.saturating_duration_since(self.origin) + valid_for;
        self.until_micros
            .fetch_max(until.as_micros().max(1) as u64, Ordering::AcqRel);
    }

    /// The grant a leader that a majority acknowledged `since_quorum_ack`
    /// ago can give: none once its own lease has run out.
    pub fn grant(&self, since_quorum_ack: Option<Duration>, epoch: u64) -> Option<LeaseGrant> {
        let remaining = self.term.checked_sub(since_quorum_ack?)?;
        (!remaining.is_zero()).then_some(LeaseGrant {
            remaining_ms: remaining.as_millis() as u64,
            epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_out_and_grants_never_outlive_the_leaders_backing() {
        let lease = Lease::new(Duration::from_millis(200));
        assert!(!lease.holds(), "none held at first");
        lease.extend(Instant::now(), Duration::from_secs(60));
        assert!(lease.holds());
        std::thread::sleep(Duration::from_millis(120));
        assert!(!lease.holds(), "capped at half the failure timeout");
        lease.extend(Instant::now(), Duration::from_secs(60));
        lease.surrender();
        assert!(!lease.holds(), "a surrendered lease is not held");

        assert_eq!(lease.grant(None, 3), None, "never acknowledged");
        assert_eq!(lease.grant(Some(Duration::from_millis(100)), 3), None);
        assert_eq!(
            lease.grant(Some(Duration::from_millis(40)), 3),
            Some(LeaseGrant {
                remaining_ms: 60,
                epoch: 3
            })
        );
    }
}
