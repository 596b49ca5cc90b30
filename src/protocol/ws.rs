//! The WebSocket messages of the contract and their two codecs: JSON text
//! frames (`pushgrid.v1.json`) and MessagePack binary frames
//! (`pushgrid.v1.msgpack`), with the same field names and values.
//!
//! Client frames decode in two steps, into a generic value and then into a
//! typed [`ClientOp`], so that a frame with a bad op still has its `id`
//! echoed in the error. Server messages are [`ServerMessage`]s, except
//! events: an event is encoded once per format ([`EncodedEvent`]) and each
//! subscriber's frame only wraps those shared bytes with its `sub`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::depth::{json_within_depth, value_depth};
use super::ErrorCode;
use crate::grid::{EntryView, Event, EventKind, JsonValue, SegmentId, Version};

/// A connection's codec, chosen by subprotocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    MsgPack,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::Json, Format::MsgPack];

    pub fn subprotocol(self) -> &'static str {
        match self {
            Format::Json => "pushgrid.v1.json",
            Format::MsgPack => "pushgrid.v1.msgpack",
        }
    }

    pub fn from_subprotocol(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.subprotocol() == name)
    }

    /// Encodes one message as a frame's payload.
    pub fn encode(self, message: &impl Serialize) -> Bytes {
        match self {
            Format::Json => serde_json::to_vec(message)
                .expect("server messages always encode")
                .into(),
            Format::MsgPack => rmp_serde::to_vec_named(message)
                .expect("server messages always encode")
                .into(),
        }
    }

    /// Encodes one message as a whole frame.
    pub fn frame(self, message: &impl Serialize) -> WireFrame {
        self.wrap(self.encode(message))
    }

    /// A payload of this format as its frame: text for JSON, binary for
    /// MessagePack.
    fn wrap(self, payload: Bytes) -> WireFrame {
        match self {
            Format::Json => WireFrame::Text(ByteString::try_from(payload).expect("JSON is UTF-8")),
            Format::MsgPack => WireFrame::Binary(payload),
        }
    }
}

/// A server frame ready for the socket; cloning shares the bytes.
#[derive(Clone, Debug)]
pub enum WireFrame {
    Text(ByteString),
    Binary(Bytes),
}

impl WireFrame {
    pub fn len(&self) -> usize {
        match self {
            WireFrame::Text(text) => text.len(),
            WireFrame::Binary(bytes) => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn payload(&self) -> &[u8] {
        match self {
            WireFrame::Text(text) => text.as_bytes(),
            WireFrame::Binary(bytes) => bytes,
        }
    }
}

/// A request id, echoed in the reply: a JSON number or string.
pub type RequestId = Value;

/// A client message after decoding.
#[derive(Debug)]
pub struct ClientRequest {
    pub id: Option<RequestId>,
    pub op: ClientOp,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
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
        value: Value,
        #[serde(default)]
        if_version: Option<u64>,
        #[serde(default)]
        if_absent: bool,
        #[serde(default)]
        lifespan_ms: Option<u64>,
    },
    Remove {
        cache: String,
        key: String,
        #[serde(default)]
        if_version: Option<u64>,
    },
    Ping,
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

/// `{"positions":{"<segment>":version,...}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeSpec {
    pub positions: HashMap<String, u64>,
}

impl ResumeSpec {
    /// The positions by segment; a segment left out is at 0.
    pub fn parse_positions(&self) -> Result<HashMap<SegmentId, Version>, String> {
        self.positions
            .iter()
            .map(|(segment, version)| {
                segment
                    .parse()
                    .map(|s| (SegmentId(s), Version(*version)))
                    .map_err(|_| format!("resume position key {segment:?} is not a segment number"))
            })
            .collect()
    }
}

/// Why a frame could not be decoded, with the id when the frame had one.
#[derive(Debug)]
pub struct DecodeError {
    pub id: Option<RequestId>,
    pub message: String,
}

/// Decodes one client frame's payload; values may nest `max_depth` deep.
pub fn decode_request(
    format: Format,
    payload: &[u8],
    max_depth: usize,
) -> Result<ClientRequest, DecodeError> {
    // The message object itself is one level.
    let too_deep = || format!("the message nests deeper than {max_depth} levels");
    let parsed: Result<Value, String> = match format {
        Format::Json if !json_within_depth(payload, max_depth + 1) => Err(too_deep()),
        Format::Json => serde_json::from_slice(payload).map_err(|e| format!("frame is not JSON: {e}")),
        // rmp_serde's own depth limit keeps this parse off the stack's edge.
        Format::MsgPack => rmp_serde::from_slice(payload)
            .map_err(|e| format!("frame is not MessagePack: {e}"))
            .and_then(|v: Value| {
                if value_depth(&v) > max_depth + 1 {
                    Err(too_deep())
                } else {
                    Ok(v)
                }
            }),
    };
    let error = |id, message| DecodeError { id, message };
    let Value::Object(mut fields) = parsed.map_err(|m| error(None, m))? else {
        return Err(error(None, "a client message is an object with an \"op\"".into()));
    };
    let id = match fields.remove("id") {
        None | Some(Value::Null) => None,
        Some(id @ (Value::Number(_) | Value::String(_))) => Some(id),
        Some(_) => return Err(error(None, "\"id\" must be a number or a string".into())),
    };
    match serde_json::from_value(Value::Object(fields)) {
        Ok(op) => Ok(ClientRequest { id, op }),
        Err(e) => Err(error(id, format!("bad message: {e}"))),
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

/// The contract's Event object.
#[derive(Debug, Serialize)]
pub struct WireEvent<'a> {
    /// A string in every format (a binary serializer would otherwise get
    /// the UUID's 16 raw bytes).
    #[serde(serialize_with = "uuid_as_string")]
    pub id: &'a uuid::Uuid,
    pub kind: EventKind,
    pub cache: &'a str,
    pub key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a JsonValue>,
    pub version: Version,
    pub segment: SegmentId,
    pub ts: u64,
    #[serde(skip_serializing_if = "is_false")]
    pub conflated: bool,
}

fn uuid_as_string<S: serde::Serializer>(id: &&uuid::Uuid, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&id.hyphenated())
}

impl<'a> WireEvent<'a> {
    pub fn new(event: &'a Event, conflated: bool) -> Self {
        WireEvent {
            id: &event.id,
            kind: event.kind,
            cache: event.cache.as_str(),
            key: &event.key,
            value: event.value.as_ref(),
            version: event.version,
            segment: event.segment,
            ts: event.ts,
            conflated,
        }
    }
}

/// The subscription id most connections use: their first and only one.
const FIRST_SUB: &str = "s1";

/// An event with its encodings, each made the first time a subscriber needs
/// it and then shared by every other subscriber: at most four encodings per
/// event whatever the number of subscribers.
///
/// The whole frame differs between subscribers only by `sub`. Most
/// connections hold one subscription, `s1`, so its frames are made once too
/// and shared; other subscriptions get the shared encoding wrapped for them.
#[derive(Debug)]
pub struct EncodedEvent {
    pub event: Arc<Event>,
    /// Indexed by [`EncodedEvent::slot`].
    encodings: [OnceLock<Bytes>; 4],
    first_sub_frames: [OnceLock<Bytes>; 4],
}

impl EncodedEvent {
    pub fn new(event: Arc<Event>) -> Arc<Self> {
        Arc::new(EncodedEvent {
            event,
            encodings: Default::default(),
            first_sub_frames: Default::default(),
        })
    }

    fn slot(format: Format, conflated: bool) -> usize {
        (format == Format::MsgPack) as usize * 2 + conflated as usize
    }

    /// The Event object in `format`.
    pub fn encoded(&self, format: Format, conflated: bool) -> &Bytes {
        self.encodings[Self::slot(format, conflated)]
            .get_or_init(|| format.encode(&WireEvent::new(&self.event, conflated)))
    }

    /// The payload of `{"type":"event","sub":...,"event":{...}}` for one
    /// subscription: borrowed where it is shared (the first subscription's),
    /// since a socket copies it into its own buffer anyway.
    pub fn frame(&self, format: Format, sub: &str, conflated: bool) -> Cow<'_, [u8]> {
        if sub == FIRST_SUB {
            let frame = self.first_sub_frames[Self::slot(format, conflated)]
                .get_or_init(|| self.wrap(format, sub, conflated));
            return Cow::Borrowed(frame);
        }
        Cow::Owned(self.wrap(format, sub, conflated).into())
    }

    /// The shared encoding wrapped for `sub`, without re-encoding the event.
    fn wrap(&self, format: Format, sub: &str, conflated: bool) -> Bytes {
        let event = self.encoded(format, conflated);
        match format {
            Format::Json => {
                let mut frame = BytesMut::with_capacity(event.len() + sub.len() + 40);
                frame.put_slice(b"{\"type\":\"event\",\"sub\":");
                serde_json::to_writer((&mut frame).writer(), sub).expect("writing to memory cannot fail");
                frame.put_slice(b",\"event\":");
                frame.put_slice(event);
                frame.put_u8(b'}');
                frame.freeze()
            }
            Format::MsgPack => {
                let mut frame = Vec::with_capacity(event.len() + sub.len() + 24);
                let write = |frame: &mut Vec<u8>| -> Result<(), rmp::encode::ValueWriteError> {
                    rmp::encode::write_map_len(frame, 3)?;
                    rmp::encode::write_str(frame, "type")?;
                    rmp::encode::write_str(frame, "event")?;
                    rmp::encode::write_str(frame, "sub")?;
                    rmp::encode::write_str(frame, sub)?;
                    rmp::encode::write_str(frame, "event")
                };
                write(&mut frame).expect("writing to memory cannot fail");
                frame.extend_from_slice(event);
                frame.into()
            }
        }
    }
}

/// The positions of a snapshot's `done` frame: segment numbers as strings,
/// segments never written left out.
pub fn wire_positions(positions: &HashMap<SegmentId, Version>) -> BTreeMap<String, u64> {
    positions
        .iter()
        .filter(|(_, v)| v.0 > 0)
        .map(|(s, v)| (s.0.to_string(), v.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::CacheName;

    fn event(value: Option<&str>) -> Arc<Event> {
        Arc::new(Event {
            id: uuid::Uuid::now_v7(),
            kind: EventKind::Modified,
            cache: CacheName::parse("scores").unwrap(),
            key: Arc::from("match/7"),
            value: value.map(|v| JsonValue::parse(v).unwrap()),
            version: Version(4182),
            segment: SegmentId(17),
            ts: 1_764_000_000_123,
        })
    }

    #[test]
    fn json_event_frames_match_the_contract() {
        let encoded = EncodedEvent::new(event(Some(r#"{"home":2,"away":1}"#)));
        let frame: Value = serde_json::from_slice(&encoded.frame(Format::Json, "s1", false)).unwrap();
        assert_eq!(frame["type"], "event");
        assert_eq!(frame["sub"], "s1");
        let e = &frame["event"];
        assert_eq!(e["id"], encoded.event.id.to_string());
        assert_eq!(e["kind"], "modified");
        assert_eq!(
            (e["cache"].as_str(), e["key"].as_str()),
            (Some("scores"), Some("match/7"))
        );
        assert_eq!(e["value"], serde_json::json!({"home":2,"away":1}));
        assert_eq!(
            (e["version"].as_u64(), e["segment"].as_u64()),
            (Some(4182), Some(17))
        );
        assert_eq!(e["ts"], 1_764_000_000_123_u64);
        assert!(e.get("conflated").is_none());
        let conflated: Value = serde_json::from_slice(&encoded.frame(Format::Json, "s1", true)).unwrap();
        assert_eq!(conflated["event"]["conflated"], true);
    }

    #[test]
    fn msgpack_event_frames_carry_the_same_fields_and_values() {
        let encoded = EncodedEvent::new(event(Some(r#"{"home":2,"list":[1,"x",null]}"#)));
        let json: Value = serde_json::from_slice(&encoded.frame(Format::Json, "s9", false)).unwrap();
        let msgpack: Value = rmp_serde::from_slice(&encoded.frame(Format::MsgPack, "s9", false)).unwrap();
        assert_eq!(json, msgpack);
        let removed = EncodedEvent::new(event(None));
        let msgpack: Value = rmp_serde::from_slice(&removed.frame(Format::MsgPack, "s9", true)).unwrap();
        assert!(msgpack["event"].get("value").is_none());
        assert_eq!(msgpack["event"]["conflated"], true);
    }

    #[test]
    fn an_event_is_encoded_once_per_format() {
        let encoded = EncodedEvent::new(event(Some("1")));
        let a = encoded.encoded(Format::Json, false).as_ptr();
        encoded.frame(Format::Json, "s1", false);
        encoded.frame(Format::Json, "s2", false);
        assert_eq!(a, encoded.encoded(Format::Json, false).as_ptr());
        // The first subscription's frame is built once and shared.
        let first = encoded.frame(Format::Json, "s1", false);
        let again = encoded.frame(Format::Json, "s1", false);
        assert_eq!(first.as_ptr(), again.as_ptr());
        assert!(
            matches!(first, Cow::Borrowed(_)),
            "the shared frame is lent, not copied"
        );
        let other = encoded.frame(Format::Json, "s2", false);
        let other: Value = serde_json::from_slice(&other).unwrap();
        assert_eq!(other["sub"], "s2");
    }

    #[test]
    fn requests_decode_in_both_formats() {
        let json = br#"{"op":"put","id":7,"cache":"c","key":"k","value":{"a":[1]},"if_version":3}"#;
        let request = decode_request(Format::Json, json, 64).unwrap();
        assert_eq!(request.id, Some(serde_json::json!(7)));
        assert!(matches!(
            request.op,
            ClientOp::Put {
                if_version: Some(3),
                if_absent: false,
                ..
            }
        ));

        let value: Value = serde_json::from_slice(json).unwrap();
        let msgpack = rmp_serde::to_vec_named(&value).unwrap();
        let request = decode_request(Format::MsgPack, &msgpack, 64).unwrap();
        assert!(matches!(request.op, ClientOp::Put { ref value, .. } if value["a"][0] == 1));
    }

    #[test]
    fn bad_frames_keep_their_id_when_they_have_one() {
        let err = decode_request(Format::Json, br#"{"op":"fly","id":"a"}"#, 64).unwrap_err();
        assert_eq!(err.id, Some(serde_json::json!("a")));
        let err = decode_request(Format::Json, br#"{"op":"get","id":2,"cache":"c"}"#, 64).unwrap_err();
        assert!(err.message.contains("key"), "{}", err.message);
        assert!(decode_request(Format::Json, b"{", 64).unwrap_err().id.is_none());
        assert!(decode_request(Format::Json, b"[1]", 64).is_err());
        assert!(decode_request(Format::Json, br#"{"op":"ping","id":[1]}"#, 64).is_err());
        assert!(decode_request(Format::MsgPack, b"\xc1", 64).is_err());
        let ok = decode_request(Format::Json, br#"{"op":"subscribe","cache":"c"}"#, 64).unwrap();
        assert!(matches!(
            ok.op,
            ClientOp::Subscribe {
                snapshot: true,
                resume: None,
                ..
            }
        ));
    }

    #[test]
    fn server_messages_are_tagged_by_type() {
        let id = serde_json::json!(4);
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
