//! The numbers that place a write: which segment of its cache it fell in
//! ([`SegmentId`]), where in that segment's sequence it stands
//! ([`Version`]), and which history that sequence belongs to
//! ([`Incarnation`]). Together they are the position of an event. And the
//! name a client gives a write so it is applied once ([`OpId`]).

use serde::{Deserialize, Serialize};

/// An entry's version: the segment sequence number of its last write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub u64);

/// A segment's number within its cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SegmentId(pub u32);

/// One life of a cache's segment histories. A node keeps its data in memory
/// only, so every cache it creates (at start-up or on request) begins a new
/// incarnation, and a position from another one says nothing about this
/// one: the same `(segment, version)` may name another write. On the wire,
/// 8 hex digits (a string). 32 random bits keep position tokens short and
/// make two runs alike once in four billion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Incarnation(pub u32);

impl Incarnation {
    /// A fresh incarnation, random.
    pub fn new() -> Self {
        Incarnation(fastrand::u32(..))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        u32::from_str_radix(text, 16)
            .ok()
            .filter(|_| text.len() == 8)
            .map(Incarnation)
            .ok_or_else(|| format!("{text:.40?} is not an incarnation (8 hex digits)"))
    }
}

impl Default for Incarnation {
    fn default() -> Self {
        Incarnation::new()
    }
}

impl std::fmt::Display for Incarnation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl Serialize for Incarnation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Incarnation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Incarnation::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A client's name for one write (`op_id` on the WebSocket,
/// `Idempotency-Key` over REST), so that the write sent again after a lost
/// reply or a failover is answered with what the first attempt did rather
/// than applied twice. 1 to 128 bytes of visible ASCII.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct OpId(pub std::sync::Arc<str>);

/// The longest op id accepted.
pub const MAX_OP_ID_BYTES: usize = 128;

impl OpId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let visible = |b: &u8| (0x21..=0x7e).contains(b);
        if text.is_empty() || text.len() > MAX_OP_ID_BYTES || !text.bytes().all(|b| visible(&b)) {
            return Err(format!(
                "op id {text:.40?}: 1 to {MAX_OP_ID_BYTES} bytes of visible ASCII"
            ));
        }
        Ok(OpId(text.into()))
    }
}

impl std::fmt::Display for OpId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for OpId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        OpId::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_ids_are_short_visible_ascii() {
        assert_eq!(OpId::parse("w-1/retry").unwrap().to_string(), "w-1/retry");
        let long = "x".repeat(MAX_OP_ID_BYTES + 1);
        for bad in ["", "has space", "tab\t", "é", long.as_str()] {
            assert!(OpId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn incarnations_are_8_hex_digits_both_ways() {
        let incarnation = Incarnation(0xab);
        assert_eq!(incarnation.to_string(), "000000ab");
        assert_eq!(Incarnation::parse("000000ab"), Ok(incarnation));
        for bad in ["ab", "000000zz", "0000000ab"] {
            assert!(Incarnation::parse(bad).is_err(), "{bad}");
        }
        assert_ne!(Incarnation::new(), Incarnation::new());
    }
}
