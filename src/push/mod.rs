//! The push side: the listener actor that deduplicates the grid's events and
//! routes them to subscriptions, and the pure parts a session uses to
//! deliver them (filters, the subscription index, the start-up state of a
//! subscription, the bounded outbox).

pub mod dedup;
pub mod filter;
pub mod index;
pub mod listener;
pub mod outbox;
pub mod subscription;

/// A session's number, unique within the node.
pub type SessionId = u64;
/// A subscription's number within its session; `s<n>` on the wire.
pub type SubId = u32;
