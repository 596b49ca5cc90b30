//! [`JsonValue`]: a stored value, kept as the validated JSON text the client
//! sent (whitespace outside strings removed), so that every number comes
//! back exactly as written: `0.22941408906430394` keeps its 17 digits and
//! `12345678901234567890123` stays an integer, which a parse into `f64`
//! would change. Reads and JSON pushes copy the text instead of re-encoding
//! a tree.
//!
//! MessagePack has no arbitrary-precision numbers: for a MessagePack reader
//! an integer within 64 bits is sent as an integer and every other number as
//! the nearest `f64`. A number no `f64` can hold at all (`1e400`) is refused
//! when the value is written, so every stored value has a MessagePack form.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// A stored value: validated, compact JSON text. Cloning shares the text.
///
/// It serializes as itself into JSON, and is transcoded into the target's own
/// types for binary formats (MessagePack), so a msgpack client sees a
/// msgpack map where a JSON client sees a JSON object.
#[derive(Clone, Debug)]
pub struct JsonValue(Arc<RawValue>);

/// Why a text is not a value the grid stores.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

impl JsonValue {
    /// Validates `text` as one JSON value whose numbers all fit an `f64`'s
    /// range, and keeps it as written.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let raw =
            serde_json::from_str::<Box<RawValue>>(text).map_err(|e| ValueError(format!("not JSON: {e}")))?;
        check_numbers(raw.get())?;
        Ok(JsonValue(Arc::from(raw)))
    }

    /// A client's value: [`JsonValue::parse`], without the whitespace
    /// between tokens (which every subscriber would otherwise be sent).
    pub fn parse_compact(text: &str) -> Result<Self, ValueError> {
        let raw =
            serde_json::from_str::<&RawValue>(text).map_err(|e| ValueError(format!("not JSON: {e}")))?;
        JsonValue::from_raw(raw)
    }

    /// [`JsonValue::parse_compact`] for text already known to be one JSON
    /// value.
    pub fn from_raw(raw: &RawValue) -> Result<Self, ValueError> {
        check_numbers(raw.get())?;
        let compact = compact(raw.get());
        let raw = RawValue::from_string(compact).expect("removing whitespace keeps JSON valid");
        Ok(JsonValue(Arc::from(raw)))
    }

    /// Encodes an already-parsed value (a MessagePack client's) as JSON text;
    /// its numbers are `u64`, `i64` or finite `f64`, written exactly.
    pub fn from_value(value: &serde_json::Value) -> Self {
        let raw = serde_json::value::to_raw_value(value).expect("a serde_json::Value always encodes");
        JsonValue(Arc::from(raw))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl Serialize for JsonValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.0.serialize(serializer)
        } else {
            let mut json = serde_json::Deserializer::from_str(self.0.get());
            serde_transcode::transcode(&mut json, serializer)
        }
    }
}

/// A value inside a decoded message: from JSON its raw text, from
/// MessagePack its tree, written as text; compact either way.
impl<'de> Deserialize<'de> for JsonValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        JsonValue::from_raw(&raw).map_err(de::Error::custom)
    }
}

/// Refuses a number outside `f64`'s range: serde_json converts every number
/// it visits and fails on those.
fn check_numbers(text: &str) -> Result<(), ValueError> {
    serde_json::from_str::<NumbersInRange>(text)
        .map(|_| ())
        .map_err(|e| ValueError(format!("unsupported number: {e}")))
}

/// Visits a whole value, converting every number, keeping nothing.
struct NumbersInRange;

impl<'de> Deserialize<'de> for NumbersInRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumbersInRange)
    }
}

impl<'de> Visitor<'de> for NumbersInRange {
    type Value = NumbersInRange;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self, E> {
        if v.is_finite() {
            Ok(self)
        } else {
            Err(E::custom("number out of range"))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NumbersInRange>()?.is_some() {}
        Ok(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value::<NumbersInRange>()?;
        }
        Ok(self)
    }
}

/// `text` (valid JSON) without the whitespace between tokens.
fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_every_digit() {
        let text = r#"{"a":0.22941408906430394,"c":12345678901234567890123,"d":-0.0,"e":1E+2}"#;
        assert_eq!(JsonValue::parse(text).unwrap().get(), text);
        assert_eq!(JsonValue::parse_compact(text).unwrap().get(), text);
    }

    #[test]
    fn whitespace_between_tokens_goes_but_not_inside_strings() {
        let value = JsonValue::parse_compact("{ \"a b\" :\n [ 1 , \"x \\\" y\" ] }").unwrap();
        assert_eq!(value.get(), r#"{"a b":[1,"x \" y"]}"#);
    }

    #[test]
    fn numbers_no_f64_can_hold_are_refused() {
        for text in ["1e400", "[-1e999]", r#"{"a":{"b":2e308}}"#] {
            assert!(JsonValue::parse(text).is_err(), "{text}");
        }
        assert!(JsonValue::parse("1e308").is_ok());
        assert!(
            JsonValue::parse("1e-400").is_ok(),
            "underflow rounds to zero, not an error"
        );
    }

    #[test]
    fn messagepack_gets_the_nearest_it_can_carry() {
        let value =
            JsonValue::parse(r#"[18446744073709551615,-9223372036854775808,12345678901234567890123,0.1]"#)
                .unwrap();
        let decoded: serde_json::Value = rmp_serde::from_slice(&rmp_serde::to_vec(&value).unwrap()).unwrap();
        assert_eq!(decoded[0].as_u64(), Some(u64::MAX));
        assert_eq!(decoded[1].as_i64(), Some(i64::MIN));
        assert_eq!(decoded[2].as_f64(), Some(12345678901234567890123.0));
        assert_eq!(decoded[3].as_f64(), Some(0.1));
    }
}
