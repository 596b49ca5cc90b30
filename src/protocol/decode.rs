//! Decoding a client's WebSocket frame, in either codec, into a
//! [`ClientRequest`], in two steps: its fields first, with `id` taken out,
//! so that a frame with a bad op (or a value nested too deep) still has its
//! `id` echoed in the error; then the op from the remaining fields. A JSON
//! frame's fields stay raw text until the op reads them, so a stored value
//! keeps the exact text the client sent (every digit of every number), and
//! so does an echoed `id`.

use std::borrow::Cow;

use serde::de::value::{MapAccessDeserializer, MapDeserializer, StrDeserializer};
use serde::de::{DeserializeSeed, MapAccess};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::codec::Format;
use super::depth::{json_within_depth, value_depth};
use super::ws::{ClientOp, ClientRequest, RequestId};
use crate::grid::JsonValue;

/// Why a frame could not be decoded, with the id when the frame had one.
#[derive(Debug)]
pub struct DecodeError {
    pub id: Option<RequestId>,
    pub message: String,
}

const NOT_AN_OBJECT: &str = "a client message is an object with an \"op\"";
const BAD_ID: &str = "\"id\" must be a number or a string";

/// Decodes one client frame's payload; values may nest `max_depth` deep.
pub fn decode_request(
    format: Format,
    payload: &[u8],
    max_depth: usize,
) -> Result<ClientRequest, DecodeError> {
    // The message object itself is one level.
    let too_deep = || format!("the message nests deeper than {max_depth} levels");
    let error = |id, message: String| DecodeError { id, message };
    match format {
        Format::Json => {
            if !json_within_depth(payload, max_depth + 1) {
                // The fields are skimmed, not parsed into a tree: the id can
                // still be read for the reply.
                let id = serde_json::from_slice::<RawFields>(payload)
                    .ok()
                    .and_then(|mut fields| json_request_id(fields.take("id")?).ok().flatten());
                return Err(error(id, too_deep()));
            }
            let mut fields: RawFields = serde_json::from_slice(payload).map_err(|e| {
                let message = match e.classify() {
                    serde_json::error::Category::Data => NOT_AN_OBJECT.to_string(),
                    _ => format!("frame is not JSON: {e}"),
                };
                error(None, message)
            })?;
            let id = match fields.take("id") {
                None => None,
                Some(raw) => json_request_id(raw).map_err(|m| error(None, m.into()))?,
            };
            let op = match fields.take("op") {
                Some(raw) => serde_json::from_str::<String>(raw.get()).ok(),
                None => None,
            };
            let Some(op) = op else {
                return Err(error(id, "bad message: \"op\" must name an op".into()));
            };
            let tagged = OneOp {
                op: Some(op),
                fields: fields.0.into_iter(),
            };
            match ClientOp::deserialize(MapAccessDeserializer::new(tagged)) {
                Ok(op) => Ok(ClientRequest { id, op }),
                Err(e) => Err(error(id, format!("bad message: {e}"))),
            }
        }
        Format::MsgPack => {
            // rmp_serde's own depth limit keeps this parse off the stack's edge.
            let parsed = match rmp_serde::from_slice::<FiniteValue>(payload) {
                Ok(FiniteValue(parsed)) => parsed,
                // Well-formed but holding a value JSON cannot: the id is
                // still read, to be echoed.
                Err(refused) => {
                    return Err(match rmp_serde::from_slice::<Value>(payload) {
                        Ok(Value::Object(mut fields)) => {
                            let id = msgpack_request_id(fields.remove("id")).ok().flatten();
                            error(id, format!("bad message: {refused}"))
                        }
                        _ => error(None, format!("frame is not MessagePack: {refused}")),
                    })
                }
            };
            let Value::Object(mut fields) = parsed else {
                return Err(error(None, NOT_AN_OBJECT.into()));
            };
            if fields.values().map(value_depth).max().unwrap_or(0) > max_depth {
                let id = msgpack_request_id(fields.remove("id")).ok().flatten();
                return Err(error(id, too_deep()));
            }
            let id = msgpack_request_id(fields.remove("id")).map_err(|m| error(None, m.into()))?;
            let Some(Value::String(op)) = fields.remove("op") else {
                return Err(error(id, "bad message: \"op\" must name an op".into()));
            };
            let tagged = Value::Object(serde_json::Map::from_iter([(op, Value::Object(fields))]));
            match serde_json::from_value(tagged) {
                Ok(op) => Ok(ClientRequest { id, op }),
                Err(e) => Err(error(id, format!("bad message: {e}"))),
            }
        }
    }
}

/// A MessagePack value as JSON's data model, refusing what JSON cannot
/// write (an infinite or NaN float would otherwise become `null`).
struct FiniteValue(Value);

impl<'de> Deserialize<'de> for FiniteValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FiniteValueVisitor).map(FiniteValue)
    }
}

struct FiniteValueVisitor;

impl<'de> serde::de::Visitor<'de> for FiniteValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a value JSON can hold")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("the number {v} has no JSON form")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        FiniteValue::deserialize(deserializer).map(|v| v.0)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(FiniteValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = serde_json::Map::new();
        while let Some((key, FiniteValue(value))) = map.next_entry::<String, FiniteValue>()? {
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

/// A MessagePack frame's `id`; `nil` is no id.
fn msgpack_request_id(id: Option<Value>) -> Result<Option<RequestId>, &'static str> {
    match id {
        None | Some(Value::Null) => Ok(None),
        Some(id @ (Value::Number(_) | Value::String(_))) => Ok(Some(RequestId::MsgPack(id))),
        Some(_) => Err(BAD_ID),
    }
}

/// A JSON frame's `id`, kept as written; `null` is no id.
fn json_request_id(raw: &RawValue) -> Result<Option<RequestId>, &'static str> {
    match raw.get().as_bytes().first() {
        Some(b'n') => Ok(None),
        Some(b'"' | b'-' | b'0'..=b'9') => JsonValue::from_raw(raw)
            .map(|id| Some(RequestId::Json(id)))
            .map_err(|_| BAD_ID),
        _ => Err(BAD_ID),
    }
}

/// A JSON frame's fields, raw and in order, their names borrowed from the
/// frame where they hold no escapes.
struct RawFields<'de>(Vec<(Cow<'de, str>, &'de RawValue)>);

impl<'de> RawFields<'de> {
    fn take(&mut self, name: &str) -> Option<&'de RawValue> {
        let at = self.0.iter().position(|(field, _)| field == name)?;
        Some(self.0.remove(at).1)
    }
}

impl<'de> Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = RawFields<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawFields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(FieldName(name)) = map.next_key()? {
                    fields.push((name, map.next_value()?));
                }
                Ok(RawFields(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// A field name, borrowed when it can be.
struct FieldName<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> serde::de::Visitor<'de> for Name {
            type Value = FieldName<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(Cow::Borrowed(name)))
            }

            fn visit_str<E>(self, name: &str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(Cow::Owned(name.to_string())))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// A JSON frame's op and its other fields, read as the one-entry map
/// `{op: {fields}}` that names an externally tagged [`ClientOp`].
struct OneOp<'de, I: Iterator<Item = (Cow<'de, str>, &'de RawValue)>> {
    op: Option<String>,
    fields: I,
}

impl<'de, I: Iterator<Item = (Cow<'de, str>, &'de RawValue)>> MapAccess<'de> for OneOp<'de, I> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        match &self.op {
            Some(op) => seed
                .deserialize(StrDeserializer::<Self::Error>::new(op))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        self.op = None;
        seed.deserialize(MapDeserializer::new(&mut self.fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_text(id: &Option<RequestId>) -> Option<String> {
        id.as_ref().map(|id| match id {
            RequestId::Json(text) => text.get().to_string(),
            RequestId::MsgPack(value) => value.to_string(),
        })
    }

    #[test]
    fn requests_decode_in_both_formats() {
        let json = br#"{"op":"put","id":7,"cache":"c","key":"k","value":{"a":[1]},"if_version":3}"#;
        let request = decode_request(Format::Json, json, 64).unwrap();
        assert_eq!(id_text(&request.id).as_deref(), Some("7"));
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
        assert!(matches!(request.op, ClientOp::Put { ref value, .. } if value.get() == r#"{"a":[1]}"#));
    }

    #[test]
    fn bad_frames_keep_their_id_when_they_have_one() {
        let err = decode_request(Format::Json, br#"{"op":"fly","id":"a"}"#, 64).unwrap_err();
        assert_eq!(id_text(&err.id).as_deref(), Some("\"a\""));
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
    fn values_and_ids_keep_their_exact_text() {
        let frame = br#"{"op":"put","id":12345678901234567890123,"cache":"c","key":"k","value":{ "a" : 0.22941408906430394 }}"#;
        let request = decode_request(Format::Json, frame, 64).unwrap();
        assert_eq!(id_text(&request.id).as_deref(), Some("12345678901234567890123"));
        assert!(
            matches!(request.op, ClientOp::Put { ref value, .. } if value.get() == r#"{"a":0.22941408906430394}"#)
        );
    }

    #[test]
    fn a_number_no_f64_holds_is_refused_with_the_id_echoed() {
        let frame = br#"{"op":"put","id":"h1","cache":"c","key":"k","value":[1e400]}"#;
        let err = decode_request(Format::Json, frame, 64).unwrap_err();
        assert_eq!(id_text(&err.id).as_deref(), Some("\"h1\""));
        assert!(err.message.contains("number"), "{}", err.message);
        let frame = br#"{"op":"ping","id":1e400}"#;
        assert!(decode_request(Format::Json, frame, 64).unwrap_err().id.is_none());
    }

    #[test]
    fn a_messagepack_float_json_cannot_write_is_refused() {
        let frame = rmp_serde::to_vec_named(&serde_json::json!({"op":"put","cache":"c","key":"k","value":0}))
            .unwrap();
        assert!(decode_request(Format::MsgPack, &frame, 64).is_ok());
        #[derive(serde::Serialize)]
        struct Put {
            op: &'static str,
            id: u32,
            cache: &'static str,
            key: &'static str,
            value: f64,
        }
        let put = Put {
            op: "put",
            id: 9,
            cache: "c",
            key: "k",
            value: f64::INFINITY,
        };
        let err = decode_request(Format::MsgPack, &rmp_serde::to_vec_named(&put).unwrap(), 64).unwrap_err();
        assert!(err.message.contains("no JSON form"), "{}", err.message);
        assert_eq!(id_text(&err.id).as_deref(), Some("9"));
    }

    #[test]
    fn a_frame_nested_too_deep_still_has_its_id_echoed() {
        let deep = format!(
            r#"{{"op":"put","id":"d1","cache":"c","key":"k","value":{}{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        let err = decode_request(Format::Json, deep.as_bytes(), 64).unwrap_err();
        assert!(err.message.contains("deeper"), "{}", err.message);
        assert_eq!(id_text(&err.id).as_deref(), Some("\"d1\""));
        let value: Value = serde_json::from_str(&deep).unwrap();
        let err = decode_request(Format::MsgPack, &rmp_serde::to_vec_named(&value).unwrap(), 64).unwrap_err();
        assert_eq!(id_text(&err.id).as_deref(), Some("\"d1\""));
    }
}
