//! Position tokens: a set of segment positions (what a WebSocket snapshot's
//! `positions` holds) as the opaque URL-safe string the HTTP fallbacks use
//! for SSE `id:` lines, `Last-Event-ID` and long polling's `after`.
//!
//! The bytes are a format tag (`2`), the [`Incarnation`] of the cache's
//! histories the positions belong to as a LEB128 varint, then, for every
//! segment with a position above 0 in segment order, two varints: the
//! segment's distance from the previous one listed (from -1 for the first)
//! and its version. They are then written in unpadded URL-safe base64. A
//! token for 50 written segments is about 210 characters; for one segment,
//! about 11. Tokens of format `1` (the same without the incarnation, from
//! before incarnations) are still read: they name no incarnation.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::grid::{Incarnation, SegmentId, Version};

const FORMAT: u8 = 2;
/// Positions without an incarnation.
const FORMAT_1: u8 = 1;
/// Longer tokens are refused unread: 65,536 segments need less.
const MAX_TOKEN_CHARS: usize = 1 << 20;

pub type Positions = HashMap<SegmentId, Version>;

/// What a token holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Token {
    /// `None` for a format-1 token, which did not say.
    pub incarnation: Option<Incarnation>,
    pub positions: Positions,
}

pub fn encode(incarnation: Incarnation, positions: &Positions) -> String {
    encode_each(incarnation, positions.iter().map(|(s, v)| (*s, *v)))
}

/// [`encode`] for positions given one by one (no map needed for a single
/// segment's token).
pub fn encode_each(
    incarnation: Incarnation,
    positions: impl IntoIterator<Item = (SegmentId, Version)>,
) -> String {
    let mut written: Vec<(u32, u64)> = positions
        .into_iter()
        .filter(|(_, v)| v.0 > 0)
        .map(|(s, v)| (s.0, v.0))
        .collect();
    written.sort_unstable();
    let mut bytes = Vec::with_capacity(11 + written.len() * 4);
    bytes.push(FORMAT);
    put_varint(&mut bytes, u64::from(incarnation.0));
    let mut previous: Option<u32> = None;
    for (segment, version) in written {
        let distance = previous.map_or(u64::from(segment), |p| u64::from(segment - p - 1));
        put_varint(&mut bytes, distance);
        put_varint(&mut bytes, version);
        previous = Some(segment);
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode(token: &str) -> Result<Token, String> {
    let invalid = || format!("{token:.40?} is not a position token");
    if token.len() > MAX_TOKEN_CHARS {
        return Err("the position token is too long".into());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let (incarnation, mut rest) = match bytes.split_first() {
        Some((&FORMAT, mut rest)) => {
            let incarnation = take_varint(&mut rest).ok_or_else(invalid)?;
            let incarnation = u32::try_from(incarnation).map_err(|_| invalid())?;
            (Some(Incarnation(incarnation)), rest)
        }
        Some((&FORMAT_1, rest)) => (None, rest),
        _ => return Err(invalid()),
    };
    let mut positions = Positions::new();
    let mut next_segment: u64 = 0;
    while !rest.is_empty() {
        let distance = take_varint(&mut rest).ok_or_else(invalid)?;
        let version = take_varint(&mut rest).ok_or_else(invalid)?;
        let segment = next_segment.checked_add(distance).ok_or_else(invalid)?;
        let segment = u32::try_from(segment).map_err(|_| invalid())?;
        positions.insert(SegmentId(segment), Version(version));
        next_segment = u64::from(segment) + 1;
    }
    Ok(Token {
        incarnation,
        positions,
    })
}

/// Moves `segment`'s position up to `version`: what a client holds once it
/// has been sent that event.
pub fn advance(positions: &mut Positions, segment: SegmentId, version: Version) {
    let position = positions.entry(segment).or_insert(Version(0));
    *position = (*position).max(version);
}

fn put_varint(bytes: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        bytes.push((n as u8) | 0x80);
        n >>= 7;
    }
    bytes.push(n as u8);
}

fn take_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for (i, &byte) in rest.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return None; // past 64 bits
        }
        n |= bits << (7 * i);
        if byte & 0x80 == 0 {
            *rest = &rest[i + 1..];
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(pairs: &[(u32, u64)]) -> Positions {
        pairs.iter().map(|&(s, v)| (SegmentId(s), Version(v))).collect()
    }

    #[test]
    fn tokens_round_trip_and_leave_out_unwritten_segments() {
        for pairs in [
            vec![],
            vec![(0, 1)],
            vec![(17, 4182), (3, 9), (255, u64::MAX), (u32::MAX, 1)],
            (0..256).map(|s| (s, u64::from(s) * 1000)).collect(),
        ] {
            let given = positions(&pairs);
            let token = encode(Incarnation(7), &given);
            assert!(token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let written: Positions = given.into_iter().filter(|(_, v)| v.0 > 0).collect();
            let decoded = decode(&token).unwrap();
            assert_eq!(decoded.positions, written, "{token}");
            assert_eq!(decoded.incarnation, Some(Incarnation(7)));
        }
        assert!(encode(Incarnation(u32::MAX), &positions(&[(3, 9)])).len() < 12);
    }

    #[test]
    fn format_1_tokens_are_read_without_an_incarnation() {
        // Segment 17 at version 4, as format 1 wrote it.
        let token = URL_SAFE_NO_PAD.encode([FORMAT_1, 17, 4]);
        let decoded = decode(&token).unwrap();
        assert_eq!(decoded.incarnation, None);
        assert_eq!(decoded.positions, positions(&[(17, 4)]));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for token in [
            "",
            "AA",
            "not base64!",
            "AYCAgICAgICAgIAC",
            "AQE",
            "AYA",
            "Ag",
            "AoCAgICAgICAgIAC",
        ] {
            assert!(decode(token).is_err(), "{token}");
        }
        // Distance and version of segment u32::MAX, then one more segment.
        let mut bytes = vec![FORMAT, 1];
        put_varint(&mut bytes, u64::from(u32::MAX));
        put_varint(&mut bytes, 1);
        put_varint(&mut bytes, 0);
        put_varint(&mut bytes, 1);
        assert!(decode(&URL_SAFE_NO_PAD.encode(bytes)).is_err());
    }
}
