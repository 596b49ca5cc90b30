//! Events on the wire: the contract's Event object ([`WireEvent`]) and
//! [`EncodedEvent`], one event with its encodings made once and shared by
//! every subscriber on every transport (WebSocket frames, SSE messages,
//! long-poll answers).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use super::codec::Format;
use crate::grid::{Event, EventKind, JsonValue, SegmentId, Version};

fn is_false(b: &bool) -> bool {
    !*b
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
    /// In a cluster, the epoch the write was made under: a client resumes
    /// from it with the version. A node of no cluster writes at epoch 0,
    /// left out, so its events are the contract's exactly.
    #[serde(skip_serializing_if = "is_zero")]
    pub epoch: u64,
    #[serde(skip_serializing_if = "is_false")]
    pub conflated: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
            epoch: event.epoch,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{CacheName, JsonValue};
    use serde_json::Value;

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
            epoch: 0,
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
}
