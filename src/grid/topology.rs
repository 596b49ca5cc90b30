//! The segment-to-owner table, as a pure type: given the members and a
//! cache's segment count and `num_owners`, which members own each segment
//! (the first of them is the primary). The membership actor holds one table
//! per cache and the partition actors are created from it.
//!
//! Assignment is deterministic, from the sorted member list, so every member
//! that knows the same membership computes the same table without talking.

use serde::Serialize;
use std::sync::Arc;

use super::SegmentId;

/// A member's stable identity within the cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct MemberId(pub Arc<str>);

/// Who owns each segment of one cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SegmentOwners {
    /// `owners[s]` are the owners of segment `s`, primary first.
    owners: Vec<Vec<MemberId>>,
}

impl SegmentOwners {
    /// Spreads `segments` over `members` round-robin: segment `s` has the
    /// primary `members[s % n]` and the next `num_owners - 1` members as
    /// backups. With fewer members than `num_owners`, every member owns every
    /// segment.
    pub fn assign(members: &[MemberId], segments: u32, num_owners: u32) -> Self {
        let mut sorted = members.to_vec();
        sorted.sort();
        sorted.dedup();
        let copies = (num_owners as usize).min(sorted.len());
        let owners = (0..segments as usize)
            .map(|s| {
                (0..copies)
                    .map(|i| sorted[(s + i) % sorted.len()].clone())
                    .collect()
            })
            .collect();
        SegmentOwners { owners }
    }

    pub fn segments(&self) -> u32 {
        self.owners.len() as u32
    }

    pub fn owners(&self, segment: SegmentId) -> &[MemberId] {
        self.owners.get(segment.0 as usize).map_or(&[], Vec::as_slice)
    }

    pub fn is_owned_by(&self, segment: SegmentId, member: &MemberId) -> bool {
        self.owners(segment).contains(member)
    }

    /// The segments `member` owns, as primary or backup.
    pub fn owned_by<'a>(&'a self, member: &'a MemberId) -> impl Iterator<Item = SegmentId> + 'a {
        (0..self.segments())
            .map(SegmentId)
            .filter(move |s| self.is_owned_by(*s, member))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<MemberId> {
        names.iter().map(|n| MemberId(Arc::from(*n))).collect()
    }

    #[test]
    fn a_single_member_owns_every_segment() {
        let me = ids(&["n1"]);
        let table = SegmentOwners::assign(&me, 256, 2);
        assert_eq!(table.segments(), 256);
        assert!((0..256).all(|s| table.owners(SegmentId(s)) == me.as_slice()));
        assert_eq!(table.owned_by(&me[0]).count(), 256);
    }

    #[test]
    fn owners_are_distinct_and_spread_evenly() {
        let members = ids(&["c", "a", "b"]);
        let table = SegmentOwners::assign(&members, 300, 2);
        for s in 0..300 {
            let owners = table.owners(SegmentId(s));
            assert_eq!(owners.len(), 2);
            assert_ne!(owners[0], owners[1]);
        }
        for m in &members {
            assert_eq!(
                table.owned_by(m).count(),
                200,
                "each member holds 2/3 of 300 copies"
            );
        }
    }

    #[test]
    fn assignment_does_not_depend_on_member_order() {
        let a = SegmentOwners::assign(&ids(&["x", "y", "z"]), 64, 2);
        let b = SegmentOwners::assign(&ids(&["z", "x", "y"]), 64, 2);
        assert_eq!(a, b);
    }

    #[test]
    fn out_of_range_segments_have_no_owner() {
        let table = SegmentOwners::assign(&ids(&["n1"]), 4, 1);
        assert!(table.owners(SegmentId(4)).is_empty());
    }
}
