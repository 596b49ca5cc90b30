//! The numbers that place a write: which segment of its cache it fell in
//! ([`SegmentId`]), where in that segment's sequence it stands
//! ([`Version`]), and which history that sequence belongs to
//! ([`Incarnation`]). Together they are the position of an event.

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

#[cfg(test)]
mod tests {
    use super::*;

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
