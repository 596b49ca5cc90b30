//! Position tokens: a set of segment positions (what a WebSocket snapshot's
//! `positions` holds) as the opaque URL-safe string the HTTP fallbacks use
//! for SSE `id:` lines, `Last-Event-ID` and long polling's `after`.
//!
//! The bytes are a format tag (`3`), the [`Incarnation`] of the cache's
//! histories the positions belong to as a LEB128 varint, then, for every
//! segment with a position above 0 in segment order, three varints: the
//! segment's distance from the previous one listed (from -1 for the first),
//! its version, and the epoch that version was written under plus one (0:
//! not known). They are then written in unpadded URL-safe base64. A token
//! for 50 written segments is about 280 characters; for one segment, about
//! 14. Tokens of format `2` (the same without epochs) and `1` (without the
//! incarnation too) are still read: they name no epochs, and format 1 no
//! incarnation.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::grid::{Incarnation, Position, SegmentId, Version};

const FORMAT: u8 = 3;
/// Positions without epochs.
const FORMAT_2: u8 = 2;
/// Positions without epochs or an incarnation.
const FORMAT_1: u8 = 1;
/// Longer tokens are refused unread: 65,536 segments need less.
const MAX_TOKEN_CHARS: usize = 1 << 20;

pub type Positions = HashMap<SegmentId, Position>;

/// What a token holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Token {
    /// `None` for a format-1 token, which did not say.
    pub incarnation: Option<Incarnation>,
    pub positions: Positions,
}

pub fn encode(incarnation: Incarnation, positions: &Positions) -> String {
    encode_each(incarnation, positions.iter().map(|(s, p)| (*s, *p)))
}

/// [`encode`] for positions given one by one (no map needed for a single
/// segment's token).
pub fn encode_each(
    incarnation: Incarnation,
    positions: impl IntoIterator<Item = (SegmentId, Position)>,
) -> String {
    let mut written: Vec<(u32, Position)> = positions
        .into_iter()
        .filter(|(_, p)| p.version.0 > 0)
        .map(|(s, p)| (s.0, p))
        .collect();
    written.sort_unstable_by_key(|(segment, _)| *segment);
    let mut bytes = Vec::with_capacity(11 + written.len() * 6);
    bytes.push(FORMAT);
    put_varint(&mut bytes, u64::from(incarnation.0));
    let mut previous: Option<u32> = None;
    for (segment, position) in written {
        let distance = previous.map_or(u64::from(segment), |p| u64::from(segment - p - 1));
        put_varint(&mut bytes, distance);
        put_varint(&mut bytes, position.version.0);
        put_varint(&mut bytes, position.epoch.map_or(0, |e| e.saturating_add(1)));
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
    let (format, mut rest) = bytes.split_first().ok_or_else(invalid)?;
    let incarnation = match *format {
        FORMAT | FORMAT_2 => {
            let incarnation = take_varint(&mut rest).ok_or_else(invalid)?;
            Some(Incarnation(u32::try_from(incarnation).map_err(|_| invalid())?))
        }
        FORMAT_1 => None,
        _ => return Err(invalid()),
    };
    let mut positions = Positions::new();
    let mut next_segment: u64 = 0;
    while !rest.is_empty() {
        let distance = take_varint(&mut rest).ok_or_else(invalid)?;
        let version = Version(take_varint(&mut rest).ok_or_else(invalid)?);
        let epoch = match *format {
            FORMAT => take_varint(&mut rest).ok_or_else(invalid)?.checked_sub(1),
            _ => None,
        };
        let segment = next_segment.checked_add(distance).ok_or_else(invalid)?;
        let segment = u32::try_from(segment).map_err(|_| invalid())?;
        positions.insert(SegmentId(segment), Position { version, epoch });
        next_segment = u64::from(segment) + 1;
    }
    Ok(Token {
        incarnation,
        positions,
    })
}

/// Moves `segment`'s position up to `to`: what a client holds once it has
/// been sent that event.
pub fn advance(positions: &mut Positions, segment: SegmentId, to: Position) {
    let position = positions.entry(segment).or_default();
    if to.version > position.version {
        *position = to;
    }
}

/// The versions alone, for what only orders events.
pub fn versions(positions: &Positions) -> HashMap<SegmentId, Version> {
    positions.iter().map(|(s, p)| (*s, p.version)).collect()
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

    /// Positions with no epoch named.
    fn positions(pairs: &[(u32, u64)]) -> Positions {
        pairs
            .iter()
            .map(|&(s, v)| (SegmentId(s), Position::at(Version(v))))
            .collect()
    }

    /// Positions naming the epoch of each.
    fn positions_in(triples: &[(u32, u64, u64)]) -> Positions {
        triples
            .iter()
            .map(|&(s, v, e)| {
                let position = Position {
                    version: Version(v),
                    epoch: Some(e),
                };
                (SegmentId(s), position)
            })
            .collect()
    }

    #[test]
    fn tokens_round_trip_and_leave_out_unwritten_segments() {
        for given in [
            positions(&[]),
            positions(&[(0, 1)]),
            positions(&[(17, 4182), (3, 9), (255, u64::MAX), (u32::MAX, 1)]),
            positions_in(&[
                (17, 4182, 0),
                (3, 9, 12),
                (255, u64::MAX, u64::MAX - 1),
                (4, 0, 2),
            ]),
            positions_in(&(0..256).map(|s| (s, u64::from(s) * 1000, 3)).collect::<Vec<_>>()),
        ] {
            let token = encode(Incarnation(7), &given);
            assert!(token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let written: Positions = given.into_iter().filter(|(_, p)| p.version.0 > 0).collect();
            let decoded = decode(&token).unwrap();
            assert_eq!(decoded.positions, written, "{token}");
            assert_eq!(decoded.incarnation, Some(Incarnation(7)));
        }
        assert!(encode(Incarnation(u32::MAX), &positions_in(&[(3, 9, 4)])).len() < 14);
    }

    #[test]
    fn format_2_tokens_are_read_without_epochs() {
        // Incarnation 5, segment 17 at version 4, as format 2 wrote it.
        let token = URL_SAFE_NO_PAD.encode([FORMAT_2, 5, 17, 4]);
        let decoded = decode(&token).unwrap();
        assert_eq!(decoded.incarnation, Some(Incarnation(5)));
        assert_eq!(decoded.positions, positions(&[(17, 4)]));
    }

    #[test]
    fn a_position_moves_on_with_the_epoch_of_its_latest_event() {
        let mut held = positions(&[(1, 5)]);
        let at = |version, epoch| Position {
            version: Version(version),
            epoch: Some(epoch),
        };
        advance(&mut held, SegmentId(1), at(7, 2));
        advance(&mut held, SegmentId(1), at(6, 1));
        advance(&mut held, SegmentId(9), at(1, 2));
        assert_eq!(held, positions_in(&[(1, 7, 2), (9, 1, 2)]));
        assert_eq!(versions(&held)[&SegmentId(1)], Version(7));
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
            "Aw",
            "AwEBAQ",
        ] {
            assert!(decode(token).is_err(), "{token}");
        }
        // Distance and version of segment u32::MAX, then one more segment.
        let mut bytes = vec![FORMAT, 1];
        put_varint(&mut bytes, u64::from(u32::MAX));
        put_varint(&mut bytes, 1);
        put_varint(&mut bytes, 1);
        put_varint(&mut bytes, 0);
        put_varint(&mut bytes, 1);
        put_varint(&mut bytes, 1);
        assert!(decode(&URL_SAFE_NO_PAD.encode(bytes)).is_err());
    }
}
