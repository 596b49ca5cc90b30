//! The push side: the listener actor that deduplicates the grid's events and
//! routes them to subscriptions.

pub mod dedup;
pub mod listener;
