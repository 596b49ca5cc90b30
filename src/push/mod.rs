//! The push side: the listener actor that deduplicates the grid's events and
//! routes them to subscriptions, and the [`feed::Feed`] through which every
//! transport (WebSocket sessions, SSE streams, long polls) receives and
//! delivers them, with the pure parts it is made of (filters, the
//! subscription index, the start-up state of a subscription, the bounded
//! outbox).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub mod dedup;
pub mod feed;
pub mod filter;
pub mod index;
pub mod listener;
pub mod outbox;
pub mod sequencer;
pub mod subscription;

/// Whether this node can serve its subscribers: in a cluster, a node cut
/// off from the majority tells them ([`Health::Degraded`]) and, once back,
/// catches them up and says so ([`Health::Recovered`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Degraded,
    Recovered,
}

impl Health {
    /// The message's `type` (the SSE event's name).
    pub fn name(self) -> &'static str {
        match self {
            Health::Degraded => "degraded",
            Health::Recovered => "recovered",
        }
    }
}

/// A feed's number, unique within the node.
pub type SessionId = u64;
/// A subscription's number within its feed; `s<n>` on the wire.
pub type SubId = u32;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A fresh feed number: WebSocket connections, SSE streams and held polls
/// all draw from it, so the listener never confuses two of them.
pub fn new_session_id() -> SessionId {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

/// What every transport's delivery shares: how often an idle connection is
/// kept alive, how long a silent client is kept, and the outbox's limits.
#[derive(Clone, Debug)]
pub struct PushSettings {
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub outbox: outbox::OutboxLimits,
}
