//! The numbers that place a write: which segment of its cache it fell in
//! ([`SegmentId`]) and where in that segment's sequence it stands
//! ([`Version`]). Together they are the position of an event.

use serde::{Deserialize, Serialize};

/// An entry's version: the segment sequence number of its last write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub u64);

/// A segment's number within its cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SegmentId(pub u32);
