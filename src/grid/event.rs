//! What the grid tells the world: one [`Event`] per write, built once by the
//! partition that made the write and shared (`Arc`) by everything downstream:
//! the segment's history, the listener, every subscriber that is sent it;
//! and [`CacheDeleted`] when a cache ends.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix::{Message, Recipient};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CacheName, JsonValue, Key, Position, SegmentId, Version};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Created,
    Modified,
    Removed,
    Expired,
}

/// One write. Its wire form for clients is `protocol::event::WireEvent`;
/// between members, its serde form.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    pub id: Uuid,
    pub kind: EventKind,
    pub cache: CacheName,
    pub key: Key,
    #[serde(with = "super::value::optional_text")]
    pub value: Option<JsonValue>,
    pub version: Version,
    pub segment: SegmentId,
    pub ts: u64,
    /// The epoch the write was made under (0 on a single node): with the
    /// version, the event's place in its segment's lineage.
    #[serde(default)]
    pub epoch: u64,
}

impl Event {
    /// Where a client stands once it has this event.
    pub fn position(&self) -> Position {
        Position {
            version: self.version,
            epoch: Some(self.epoch),
        }
    }
}

/// Sent by a partition to the listener side for every event, in version
/// order per segment.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Published(pub Arc<Event>);

/// What another member relayed, in the order its partitions published it:
/// the events its owner copies hold for the receiver's subscribers, and
/// the versions none of their filters match, as skipped ranges (so the
/// receiver's listener knows the versions in between are not missing).
#[derive(Message, Clone, Debug, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct Relayed(pub Vec<RelayedItem>);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RelayedItem {
    Event(Arc<Event>),
    /// Versions `first..=last` of a segment: written, and not wanted.
    Skipped {
        cache: CacheName,
        segment: SegmentId,
        first: Version,
        last: Version,
    },
}

/// Sent by the grid once a cache is deleted, after every event its
/// partitions published: its subscriptions end.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct CacheDeleted(pub CacheName);

/// Sent by the grid once segments of a cache declared lost are placed
/// again, empty, in a new incarnation: what its subscribers hold of them
/// is gone, so each subscription starts again from a reset snapshot.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct CacheStartedAgain(pub CacheName);

/// Where partitions send their events: the listener actor in a node, a
/// collecting actor in tests.
pub type EventSink = Recipient<Published>;

/// Wall-clock milliseconds since the Unix epoch: the `ts` of events and the
/// unit of expiry deadlines.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
