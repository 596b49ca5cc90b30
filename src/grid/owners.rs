//! Who owns each segment of a cache, as the grid routes by it: the
//! [`SegmentOwners`] table (primary first), the [`MemberId`]s in it, and the
//! two requests the grid makes of whoever keeps the tables (the cluster's
//! membership actor): a table for a new cache, and forgetting a deleted
//! one's. How the table is computed is the cluster's business
//! (`cluster::assignment`).

use std::collections::BTreeSet;
use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Message, Recipient};
use serde::{Deserialize, Serialize};

use super::{CacheConfig, CacheName, GridError, Incarnation, SegmentId};

/// A member's stable identity within the cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemberId(pub Arc<str>);

impl std::borrow::Borrow<str> for MemberId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Segments `first..=last` of a cache, all owned by `owners`, primary first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OwnerRange {
    pub first: u32,
    pub last: u32,
    pub owners: Vec<MemberId>,
}

/// Who owns each segment of one cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SegmentOwners {
    /// `owners[s]` are the owners of segment `s`, primary first.
    owners: Vec<Vec<MemberId>>,
}

impl SegmentOwners {
    /// A table of `rows[s]`, the owners of segment `s`, primary first.
    pub fn from_rows(rows: Vec<Vec<MemberId>>) -> Self {
        SegmentOwners { owners: rows }
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

    /// The table as runs of consecutive segments with the same owners: a
    /// handful of rows where the segment-by-segment list has thousands.
    pub fn ranges(&self) -> Vec<OwnerRange> {
        let mut ranges: Vec<OwnerRange> = Vec::new();
        for (segment, owners) in self.owners.iter().enumerate() {
            match ranges.last_mut() {
                Some(run) if run.owners == *owners => run.last = segment as u32,
                _ => ranges.push(OwnerRange {
                    first: segment as u32,
                    last: segment as u32,
                    owners: owners.clone(),
                }),
            }
        }
        ranges
    }

    /// How many (segment, member) copies `self` has that `previous` did not:
    /// the copies a change from `previous` to `self` must transfer.
    pub fn copies_moved_from(&self, previous: &SegmentOwners) -> usize {
        (0..self.segments())
            .map(SegmentId)
            .map(|s| {
                let before = previous.owners(s);
                self.owners(s).iter().filter(|m| !before.contains(m)).count()
            })
            .sum()
    }
}

/// Asks for the owner table of a new cache; in a cluster, the cluster
/// agrees on the cache first (another member may have made it with
/// another config: a `Conflict`).
#[derive(Message)]
#[rtype(result = "Result<OwnerTable, GridError>")]
pub struct AssignSegments {
    pub cache: CacheName,
    pub config: CacheConfig,
}

/// A cache's owner table and the epoch it was computed at.
#[derive(Clone, Debug)]
pub struct OwnerTable {
    pub owners: Arc<SegmentOwners>,
    pub epoch: u64,
    /// The table of the epoch before, if the cache had one: where new
    /// owners find the copies they take over.
    pub previous: Option<Arc<SegmentOwners>>,
    /// The table the cache moves to next, while its new owners are filled:
    /// each of them holds a copy, sent every write, that serves nothing.
    pub target: Option<Arc<SegmentOwners>>,
    /// Segments whose data went with every owner: unavailable until an
    /// operator declares it lost.
    pub lost: Arc<BTreeSet<u32>>,
    /// How many segments were declared lost and started again empty.
    pub declared_lost: usize,
    /// The incarnation of the cache's histories, the same on every member;
    /// `None` on a node on its own, which picks its own.
    pub incarnation: Option<Incarnation>,
}

impl OwnerTable {
    /// The owners `segment` gains in the target table: filled, while
    /// the current owners serve.
    pub fn joining(&self, segment: SegmentId) -> Vec<MemberId> {
        let Some(target) = &self.target else {
            return Vec::new();
        };
        let row = self.owners.owners(segment);
        target
            .owners(segment)
            .iter()
            .filter(|m| !row.contains(m))
            .cloned()
            .collect()
    }

    /// The table of a cache on a node that is its own cluster: nothing
    /// before it, nothing lost.
    pub fn alone(owners: SegmentOwners) -> Self {
        OwnerTable {
            owners: Arc::new(owners),
            epoch: 0,
            previous: None,
            target: None,
            lost: Arc::default(),
            declared_lost: 0,
            incarnation: None,
        }
    }
}

/// Drops the owner table of a deleted cache.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ForgetCache(pub CacheName);

/// Where the grid asks for owner tables and gives them back.
#[derive(Clone)]
pub struct OwnerTables {
    pub assign: Recipient<AssignSegments>,
    pub forget: Recipient<ForgetCache>,
}

impl OwnerTables {
    /// The tables `keeper` holds.
    pub fn kept_by<A>(keeper: &Addr<A>) -> Self
    where
        A: Actor + Handler<AssignSegments> + Handler<ForgetCache>,
        A::Context: ToEnvelope<A, AssignSegments> + ToEnvelope<A, ForgetCache>,
    {
        OwnerTables {
            assign: keeper.clone().recipient(),
            forget: keeper.clone().recipient(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<MemberId> {
        names.iter().map(|n| MemberId(Arc::from(*n))).collect()
    }

    #[test]
    fn ranges_compress_runs_of_the_same_owners() {
        let one = SegmentOwners::from_rows(vec![ids(&["a"]); 1000]);
        assert_eq!(
            one.ranges(),
            vec![OwnerRange {
                first: 0,
                last: 999,
                owners: ids(&["a"])
            }]
        );
        let (ab, ba) = (ids(&["a", "b"]), ids(&["b", "a"]));
        let mixed = SegmentOwners::from_rows(vec![ab.clone(), ab.clone(), ba.clone(), ab.clone()]);
        let runs: Vec<_> = mixed
            .ranges()
            .into_iter()
            .map(|r| (r.first, r.last, r.owners))
            .collect();
        assert_eq!(
            runs,
            vec![(0, 1, ab.clone()), (2, 2, ba), (3, 3, ab)],
            "the primary counts"
        );
    }
}
