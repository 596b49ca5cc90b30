//! The WebSocket messages of the contract: what a client sends
//! ([`ClientRequest`], decoded from either codec by [`super::decode`]) and
//! what the server replies ([`ServerMessage`]); events are
//! [`super::event::EncodedEvent`]s.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::codec::{Format, WireFrame};
use super::position::Positions;
use super::{ErrorCode, SnapshotChunk};
use crate::grid::{CacheName, EntryView, Incarnation, JsonValue, OpId, Position, SegmentId, Version};

/// A request id, echoed in the reply exactly as sent: a number or a string,
/// held in its connection's own form (a reply is encoded in the format its
/// request came in).
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum RequestId {
    /// From a JSON frame: its text, every digit kept.
    Json(JsonValue),
    /// From a MessagePack frame: a 64-bit integer, a double or a string.
    MsgPack(Value),
}

/// A client message after decoding.
#[derive(Debug)]
pub struct ClientRequest {
    pub id: Option<RequestId>,
    pub op: ClientOp,
}

/// The ops of the contract, named by the frame's `op` field.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientOp {
    Subscribe {
        cache: String,
        #[serde(default)]
        filter: FilterSpec,
        #[serde(default = "yes")]
        snapshot: bool,
        #[serde(default)]
        resume: Option<ResumeSpec>,
    },
    Unsubscribe {
        sub: String,
    },
    Get {
        cache: String,
        key: String,
    },
    Put {
        cache: String,
        key: String,
        value: JsonValue,
        #[serde(default)]
        if_version: Option<u64>,
        #[serde(default)]
        if_absent: bool,
        #[serde(default)]
        lifespan_ms: Option<u64>,
        /// The client's name for the write: sent again, it is answered
        /// as the first time instead of being applied twice.
        #[serde(default)]
        op_id: Option<OpId>,
    },
    Remove {
        cache: String,
        key: String,
        #[serde(default)]
        if_version: Option<u64>,
        #[serde(default)]
        op_id: Option<OpId>,
    },
    Ping {},
    /// Presents a token; its grants replace the connection's.
    Auth {
        token: String,
    },
}

fn yes() -> bool {
    true
}

/// `{}`, `{"key":K}` or `{"prefix":P}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    pub key: Option<String>,
    pub prefix: Option<String>,
}

/// `{"positions":{"<segment>":version,...},"incarnation":"<8 hex digits>",
/// "epochs":{"<segment>":epoch,...}}`; the incarnation is the one the
/// snapshot's `done` frame gave, and each epoch the one of the last event
/// (or the `done` frame's) of its segment. Both are optional, for clients
/// that do not track them; a position with no epoch is checked by its
/// version alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeSpec {
    pub positions: HashMap<String, u64>,
    #[serde(default)]
    pub incarnation: Option<Incarnation>,
    #[serde(default)]
    pub epochs: HashMap<String, u64>,
}

impl ResumeSpec {
    /// The positions by segment; a segment left out is at 0.
    pub fn parse_positions(&self) -> Result<Positions, String> {
        let segment_of = |key: &String| {
            key.parse()
                .map(SegmentId)
                .map_err(|_| format!("resume key {key:?} is not a segment number"))
        };
        let epochs = self
            .epochs
            .iter()
            .map(|(segment, epoch)| Ok((segment_of(segment)?, *epoch)))
            .collect::<Result<HashMap<SegmentId, u64>, String>>()?;
        self.positions
            .iter()
            .map(|(segment, version)| {
                let segment = segment_of(segment)?;
                let position = Position {
                    version: Version(*version),
                    epoch: epochs.get(&segment).copied(),
                };
                Ok((segment, position))
            })
            .collect()
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Every server message but `event`, tagged by `type`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Subscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        sub: &'a str,
    },
    Snapshot {
        sub: &'a str,
        entries: &'a [EntryView],
        done: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        positions: Option<&'a BTreeMap<String, u64>>,
        /// With the positions: the incarnation they belong to.
        #[serde(skip_serializing_if = "Option::is_none")]
        incarnation: Option<Incarnation>,
        /// With the positions, in a cluster: the epoch each was written
        /// under.
        #[serde(skip_serializing_if = "Option::is_none")]
        epochs: Option<&'a BTreeMap<String, u64>>,
        #[serde(skip_serializing_if = "is_false")]
        reset: bool,
    },
    Ok {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        version: Version,
        #[serde(skip_serializing_if = "Option::is_none")]
        created: Option<bool>,
    },
    Entry {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        key: &'a str,
        value: &'a JsonValue,
        version: Version,
    },
    Unsubscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        sub: &'a str,
    },
    /// The subscription's cache was deleted; the subscription is over.
    CacheDeleted { sub: &'a str, cache: &'a CacheName },
    /// The node is cut off from the cluster's majority: its subscriptions
    /// stay open but receive nothing until `recovered`.
    Degraded,
    /// The node is back; what its subscriptions missed follows.
    Recovered,
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    Authenticated {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        current_version: Option<Version>,
    },
}

/// One `snapshot` frame; the `done` one carries the snapshot's positions.
pub fn snapshot_frame(format: Format, chunk: &SnapshotChunk) -> WireFrame {
    let positions = chunk.done.then(|| wire_positions(chunk.positions));
    let epochs = chunk
        .done
        .then(|| wire_epochs(chunk.positions))
        .filter(|epochs| !epochs.is_empty());
    format.frame(&ServerMessage::Snapshot {
        sub: chunk.sub,
        entries: chunk.entries,
        done: chunk.done,
        positions: positions.as_ref(),
        incarnation: chunk.done.then_some(chunk.incarnation),
        epochs: epochs.as_ref(),
        reset: chunk.reset,
    })
}

/// The positions of a snapshot's `done` frame: segment numbers as strings,
/// segments never written left out.
pub fn wire_positions(positions: &Positions) -> BTreeMap<String, u64> {
    positions
        .iter()
        .filter(|(_, p)| p.version.0 > 0)
        .map(|(s, p)| (s.0.to_string(), p.version.0))
        .collect()
}

/// The epochs of those positions, where written in a cluster: a node of
/// no cluster writes at epoch 0, which is left out (as from events).
fn wire_epochs(positions: &Positions) -> BTreeMap<String, u64> {
    positions
        .iter()
        .filter(|(_, p)| p.version.0 > 0)
        .filter_map(|(s, p)| p.epoch.filter(|e| *e > 0).map(|e| (s.0.to_string(), e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_are_tagged_by_type() {
        let id = RequestId::Json(JsonValue::parse("4").unwrap());
        let message = ServerMessage::Error {
            id: Some(&id),
            code: ErrorCode::VersionMismatch,
            message: "m",
            current_version: Some(Version(9)),
        };
        let json: Value = serde_json::from_slice(&Format::Json.encode(&message)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"error","id":4,"code":"version_mismatch","message":"m","current_version":9})
        );
        let msgpack: Value = rmp_serde::from_slice(&Format::MsgPack.encode(&message)).unwrap();
        assert_eq!(json, msgpack);
    }
}
