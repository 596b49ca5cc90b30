//! The data grid: named caches whose keys hash to segments, each segment
//! owned by one partition actor, routed by the owner tables the cluster's
//! membership actor hands out ([`owners`]).
//!
//! Flow of a write: a front end calls [`Grid::put`]; the grid hashes the key
//! to its segment and sends the write through the cache's
//! [`routing::RoutingTable`] to that segment's [`partition::Partition`]; the
//! partition applies it to its [`segment::Segment`], stamps the version and
//! publishes the resulting [`Event`] to the [`EventSink`] (the listener).

pub mod cache;
mod error;
mod event;
pub mod forward;
mod handle;
pub mod hash;
mod ids;
mod metrics;
mod names;
pub mod owners;
pub mod partition;
pub mod replication;
pub mod routing;
pub mod segment;
pub mod value;

pub use cache::CacheConfig;
pub use error::GridError;
pub use event::{
    now_ms, CacheDeleted, CacheStartedAgain, Event, EventKind, EventSink, Published, Relayed, RelayedItem,
};
pub use handle::{Cache, Creation, Grid, GridLimits, GridSetup, Page, MAX_PAGE};
pub use ids::{Incarnation, OpId, SegmentId, Version, MAX_OP_ID_BYTES};
pub use metrics::GridMetrics;
pub use names::{
    check_prefix, parse_key, wanted, CacheName, Interests, Key, KeyFilter, MAX_INTEREST_FILTERS,
    MAX_KEY_BYTES,
};
pub use segment::{EntryView, Position, Precondition, PutOutcome};
pub use value::{JsonValue, ValueError};
