//! What the grid tells the world: one [`Event`] per write, built once by the
//! partition that made the write and shared (`Arc`) by everything downstream:
//! the segment's history, the listener, every session that pushes it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix::{Message, Recipient};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{CacheName, Key};

/// An entry's version: the segment sequence number of its last write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub u64);

/// A segment's number within its cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SegmentId(pub u32);

/// A stored value: validated, compact JSON text, so that reads and JSON
/// pushes copy bytes instead of re-encoding a tree. Cloning shares the text.
///
/// It serializes as itself into JSON, and is transcoded into the target's own
/// types for binary formats (MessagePack), so a msgpack client sees a
/// msgpack map where a JSON client sees a JSON object.
#[derive(Clone, Debug)]
pub struct JsonValue(Arc<RawValue>);

impl JsonValue {
    pub fn from_raw(raw: Box<RawValue>) -> Self {
        JsonValue(Arc::from(raw))
    }

    /// Validates `text` as one JSON value.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<Box<RawValue>>(text).map(JsonValue::from_raw)
    }

    /// Encodes an already-parsed value (a MessagePack client's) as JSON text.
    pub fn from_value(value: &serde_json::Value) -> Self {
        JsonValue::from_raw(
            serde_json::value::to_raw_value(value).expect("a serde_json::Value always encodes"),
        )
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl Serialize for JsonValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.0.serialize(serializer)
        } else {
            let mut json = serde_json::Deserializer::from_str(self.0.get());
            serde_transcode::transcode(&mut json, serializer)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Created,
    Modified,
    Removed,
    Expired,
}

/// One write. Its wire form is `protocol::ws::WireEvent`.
#[derive(Debug)]
pub struct Event {
    pub id: Uuid,
    pub kind: EventKind,
    pub cache: CacheName,
    pub key: Key,
    pub value: Option<JsonValue>,
    pub version: Version,
    pub segment: SegmentId,
    pub ts: u64,
}

/// Sent by a partition to the listener side for every event, in version
/// order per segment.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Published(pub Arc<Event>);

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
