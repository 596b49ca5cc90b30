//! Nesting depth, checked before a value is parsed into a tree, so that a
//! deeply nested input is refused with `bad_request` instead of costing
//! stack and memory.

use serde_json::Value;

/// Whether no array or object in the JSON text nests deeper than `limit`.
/// A linear scan of the bytes that skips strings; malformed text is left
/// for the parser to refuse.
pub fn json_within_depth(text: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in text {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// The nesting depth of a parsed value (a scalar is 0).
pub fn value_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_counts_arrays_and_objects_but_not_strings() {
        assert!(json_within_depth(nested(64).as_bytes(), 64));
        assert!(!json_within_depth(nested(65).as_bytes(), 64));
        assert!(json_within_depth(br#"{"a":{"b":[1]}}"#, 3));
        assert!(!json_within_depth(br#"{"a":{"b":[1]}}"#, 2));
        assert!(
            json_within_depth(br#"{"a":"[[[[[[\"[[[["}"#, 1),
            "brackets inside strings do not count"
        );
        assert!(json_within_depth(b"42", 0));
    }

    #[test]
    fn parsed_depth_agrees_with_the_scan() {
        let value: Value = serde_json::from_str(&nested(10)).unwrap();
        assert_eq!(value_depth(&value), 10);
        assert_eq!(value_depth(&serde_json::json!({"a":[{"b":1}]})), 3);
        assert_eq!(value_depth(&serde_json::json!("x")), 0);
    }
}
