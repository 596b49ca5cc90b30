//! pushgrid: an in-memory data grid whose every change is pushed live to
//! browsers over WebSockets.
//!
//! The flow of a write: a client's request reaches a front end (`web`), which
//! calls the [`grid::Grid`]; the grid routes it to the partition actor that
//! owns the key's segment; the partition applies it and publishes an event
//! to the listener (`push`), which deduplicates it and routes it to the
//! subscriptions it concerns.

pub mod auth;
pub mod capacity;
pub mod client;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod fuzzing;
pub mod grid;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod push;
pub mod web;
