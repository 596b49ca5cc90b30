//! The wire forms of the HTTP fallbacks: Server-Sent Events messages and
//! long-poll answers. Events reuse the shared JSON encoding of
//! [`EncodedEvent`], so an SSE stream or a poll adds only its framing.
//! [`SseReader`] reads a stream back, for the command-line client (and the
//! tests).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::grid::{CacheName, EntryView};
use crate::protocol::codec::Format;
use crate::protocol::event::EncodedEvent;

/// The comment an idle stream sends to keep proxies from closing it.
pub const SSE_HEARTBEAT: &str = ": heartbeat\n\n";

/// `data` of an `event: snapshot` message.
#[derive(Serialize)]
struct SnapshotData<'a> {
    entries: &'a [EntryView],
    done: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    reset: bool,
}

/// Appends one `event: snapshot` message; the `done` one carries `id`.
pub fn sse_snapshot(out: &mut BytesMut, entries: &[EntryView], done: bool, reset: bool, id: Option<&str>) {
    let data = serde_json::to_vec(&SnapshotData { entries, done, reset }).expect("entries always encode");
    sse_message(out, "snapshot", id, &data);
}

/// Appends one `event: event` message: the Event object, and the position
/// token after it as `id`.
pub fn sse_event(out: &mut BytesMut, event: &EncodedEvent, conflated: bool, id: &str) {
    sse_message(out, "event", Some(id), event.encoded(Format::Json, conflated));
}

/// Appends the `event: cache_deleted` message that ends a stream whose
/// cache was deleted.
pub fn sse_cache_deleted(out: &mut BytesMut, cache: &CacheName) {
    let data = serde_json::to_vec(&serde_json::json!({ "cache": cache })).expect("a name always encodes");
    sse_message(out, "cache_deleted", None, &data);
}

/// A notice about the node rather than a subscription (`degraded`,
/// `recovered`): its name as the event, an empty object as data.
pub fn sse_notice(out: &mut BytesMut, name: &str) {
    sse_message(out, name, None, b"{}");
}

fn sse_message(out: &mut BytesMut, name: &str, id: Option<&str>, data: &[u8]) {
    out.reserve(data.len() + name.len() + id.map_or(0, str::len) + 24);
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    if let Some(id) = id {
        out.put_slice(b"\nid: ");
        out.put_slice(id.as_bytes());
    }
    // Compact JSON has no line breaks; a stored value that had some would
    // still arrive whole, as SSE joins `data:` lines with "\n".
    for line in data.split(|&b| b == b'\n') {
        out.put_slice(b"\ndata: ");
        out.put_slice(line);
    }
    out.put_slice(b"\n\n");
}

/// A long poll's answer: `{"reset":true,"snapshot":[...],"events":[...],"position":"..."}`,
/// with `reset` only when true and `snapshot` only when one is sent. A poll
/// answers with every event it has, so none is conflated.
pub struct PollAnswer<'a> {
    pub reset: bool,
    pub snapshot: Option<&'a [EntryView]>,
    pub events: &'a [std::sync::Arc<EncodedEvent>],
    pub position: &'a str,
}

impl PollAnswer<'_> {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(b'{');
        if self.reset {
            out.put_slice(b"\"reset\":true,");
        }
        if let Some(entries) = self.snapshot {
            out.put_slice(b"\"snapshot\":");
            serde_json::to_writer((&mut out).writer(), entries).expect("entries always encode");
            out.put_u8(b',');
        }
        out.put_slice(b"\"events\":[");
        for (i, event) in self.events.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            out.put_slice(event.encoded(Format::Json, false));
        }
        out.put_slice(b"],\"position\":");
        serde_json::to_writer((&mut out).writer(), self.position).expect("strings always encode");
        out.put_u8(b'}');
        out.freeze()
    }
}

/// One message of an event stream, as a reader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseMessage {
    /// `message` when the stream named none.
    pub event: String,
    pub id: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Reads an event stream chunk by chunk, as the SSE specification does:
/// messages end at a blank line, comments (`: heartbeat`) are kept apart,
/// and a message without data is no message.
#[derive(Default)]
pub struct SseReader {
    buffer: String,
    pending: Vec<u8>,
    pub comments: Vec<String>,
}

impl SseReader {
    /// Takes in `chunk` and returns the messages it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseMessage> {
        // A chunk may end inside a UTF-8 sequence: keep the tail for the next.
        self.pending.extend_from_slice(chunk);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(text) => text.len(),
            Err(err) => err.valid_up_to(),
        };
        let text: Vec<u8> = self.pending.drain(..valid).collect();
        self.buffer
            .push_str(std::str::from_utf8(&text).expect("cut at a character boundary"));
        let mut messages = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            if let Some(message) = self.parse_block(&block) {
                messages.push(message);
            }
        }
        messages
    }

    fn parse_block(&mut self, block: &str) -> Option<SseMessage> {
        let mut message = SseMessage {
            event: "message".into(),
            id: None,
            data: String::new(),
        };
        let mut has_data = false;
        for line in block.lines() {
            if let Some(comment) = line.strip_prefix(':') {
                self.comments.push(comment.trim().to_string());
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => message.event = value.to_string(),
                "id" => message.id = Some(value.to_string()),
                "data" => {
                    if has_data {
                        message.data.push('\n');
                    }
                    message.data.push_str(value);
                    has_data = true;
                }
                _ => {}
            }
        }
        has_data.then_some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{CacheName, Event, EventKind, JsonValue, SegmentId, Version};
    use std::sync::Arc;

    fn event() -> Arc<EncodedEvent> {
        EncodedEvent::new(Arc::new(Event {
            id: uuid::Uuid::nil(),
            kind: EventKind::Created,
            cache: CacheName::parse("c").unwrap(),
            key: Arc::from("k"),
            value: Some(JsonValue::parse("[1,\n2]").unwrap()),
            version: Version(3),
            segment: SegmentId(1),
            ts: 5,
            epoch: 0,
        }))
    }

    #[test]
    fn sse_messages_are_framed_by_the_spec() {
        let mut out = BytesMut::new();
        sse_snapshot(&mut out, &[], true, true, Some("AQ"));
        assert_eq!(
            &out[..],
            b"event: snapshot\nid: AQ\ndata: {\"entries\":[],\"done\":true,\"reset\":true}\n\n"
        );
        out.clear();
        sse_event(&mut out, &event(), false, "AQED");
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.starts_with("event: event\nid: AQED\ndata: {\"id\":\"00000000-"),
            "{text}"
        );
        assert!(
            text.contains("\"value\":[1,\ndata: 2]"),
            "a line break splits data lines: {text}"
        );
        assert!(text.ends_with("}\n\n"));
    }

    #[test]
    fn poll_answers_carry_only_what_applies() {
        let events = [event()];
        let answer = PollAnswer {
            reset: false,
            snapshot: None,
            events: &events,
            position: "AQ",
        };
        let json: serde_json::Value = serde_json::from_slice(&answer.encode()).unwrap();
        assert_eq!(json["position"], "AQ");
        assert_eq!(json["events"][0]["version"], 3);
        assert!(json.get("reset").is_none() && json.get("snapshot").is_none());
        let reset = PollAnswer {
            reset: true,
            snapshot: Some(&[]),
            events: &[],
            position: "AQ",
        };
        let json: serde_json::Value = serde_json::from_slice(&reset.encode()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"reset":true,"snapshot":[],"events":[],"position":"AQ"})
        );
    }

    #[test]
    fn a_stream_read_in_any_chunks_gives_the_same_messages() {
        let stream = "event: snapshot\nid: t1\ndata: {\"a\":\"é\"}\n\n: heartbeat\n\nevent: event\ndata: 1\ndata: 2\n\n";
        let whole = SseReader::default().feed(stream.as_bytes());
        assert_eq!(
            whole,
            vec![
                SseMessage {
                    event: "snapshot".into(),
                    id: Some("t1".into()),
                    data: "{\"a\":\"é\"}".into()
                },
                SseMessage {
                    event: "event".into(),
                    id: None,
                    data: "1\n2".into()
                },
            ]
        );
        let mut reader = SseReader::default();
        let bytewise: Vec<_> = stream
            .as_bytes()
            .iter()
            .flat_map(|b| reader.feed(&[*b]))
            .collect();
        assert_eq!(bytewise, whole, "split inside a UTF-8 character too");
        assert_eq!(reader.comments, ["heartbeat"]);
    }
}
