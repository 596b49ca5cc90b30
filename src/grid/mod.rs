//! The data grid: named caches whose keys hash to segments, each segment
//! owned by one partition actor, and the membership actor that says which
//! member owns which segment.
//!
//! Flow of a write: a front end calls [`Grid::put`]; the grid hashes the key
//! to its segment and sends the write to that segment's [`partition::Partition`];
//! the partition applies it to its [`segment::Segment`], stamps the version and
//! publishes the resulting [`Event`] to the [`EventSink`] (the listener).

pub mod cache;
mod error;
mod event;
pub mod hash;
pub mod membership;
mod names;
pub mod partition;
mod router;
pub mod segment;
pub mod topology;

pub use cache::CacheConfig;
pub use error::GridError;
pub use event::{now_ms, Event, EventKind, EventSink, JsonValue, Published, SegmentId, Version};
pub use names::{parse_key, CacheName, Key, MAX_KEY_BYTES};
pub use router::{Cache, Creation, Grid, GridSetup, Page, MAX_PAGE};
pub use segment::{EntryView, Precondition, PutOutcome};
