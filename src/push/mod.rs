//! The push side: the listener actor that deduplicates the grid's events and
//! routes them to subscriptions, the [`inbox::Inbox`] through which the HTTP
//! fallbacks receive them, and the pure parts every transport uses to
//! deliver them (filters, the subscription index, the start-up state of a
//! subscription, the bounded outbox).

use std::sync::atomic::{AtomicU64, Ordering};

pub mod dedup;
pub mod filter;
pub mod inbox;
pub mod index;
pub mod listener;
pub mod outbox;
pub mod subscription;

/// A session's number, unique within the node.
pub type SessionId = u64;
/// A subscription's number within its session; `s<n>` on the wire.
pub type SubId = u32;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A fresh session number: WebSocket connections, SSE streams and held
/// polls all draw from it, so the listener never confuses two of them.
pub fn new_session_id() -> SessionId {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}
