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

use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer};
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
        scan(raw.get())?;
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
        match scan(raw.get())? {
            Spacing::Compact => Ok(JsonValue(Arc::from(raw.to_owned()))),
            Spacing::Spaced => Ok(JsonValue::compacted(raw.get())),
        }
    }

    /// [`JsonValue::from_raw`] for text already owned: kept, not copied
    /// again, when compact.
    fn from_boxed(raw: Box<RawValue>) -> Result<Self, ValueError> {
        match scan(raw.get())? {
            Spacing::Compact => Ok(JsonValue(Arc::from(raw))),
            Spacing::Spaced => Ok(JsonValue::compacted(raw.get())),
        }
    }

    fn compacted(text: &str) -> Self {
        let raw = RawValue::from_string(compact(text)).expect("removing whitespace keeps JSON valid");
        JsonValue(Arc::from(raw))
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
        JsonValue::from_boxed(raw).map_err(de::Error::custom)
    }
}

/// A value as its JSON text, for links between members: every copy keeps
/// exactly the primary's text (MessagePack's own numbers would round what
/// JSON text does not). Use with `#[serde(with = "...::text")]`.
pub mod text {
    use super::*;

    pub fn serialize<S: Serializer>(value: &JsonValue, serializer: S) -> Result<S::Ok, S::Error> {
        value.get().serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<JsonValue, D::Error> {
        let text = String::deserialize(deserializer)?;
        JsonValue::parse(&text).map_err(de::Error::custom)
    }
}

/// [`text`] for an optional value.
pub mod optional_text {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<JsonValue>, serializer: S) -> Result<S::Ok, S::Error> {
        value.as_ref().map(JsonValue::get).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<JsonValue>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        text.map(|t| JsonValue::parse(&t))
            .transpose()
            .map_err(de::Error::custom)
    }
}

/// Whether valid JSON text has whitespace between its tokens.
enum Spacing {
    Compact,
    Spaced,
}

/// One pass over valid JSON text: refuses a number outside `f64`'s range
/// (only one with an exponent or of more than 300 characters can be, so
/// only those are parsed) and notes whitespace between tokens.
fn scan(text: &str) -> Result<Spacing, ValueError> {
    let bytes = text.as_bytes();
    let mut spacing = Spacing::Compact;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {
                spacing = Spacing::Spaced;
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut exponent = false;
                while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                    exponent |= matches!(bytes[i], b'e' | b'E');
                    i += 1;
                }
                let number = &text[start..i];
                if (exponent || number.len() > 300) && !number.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(ValueError(format!(
                        "unsupported number: {number:.40} is out of range of a double"
                    )));
                }
            }
            _ => i += 1,
        }
    }
    Ok(spacing)
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
            JsonValue::parse(r#"{"s":"1e400 \" 2e999","t":["\\",3e300]}"#).is_ok(),
            "numbers inside strings are text"
        );
        assert!(JsonValue::parse(&"9".repeat(400)).is_err());
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
