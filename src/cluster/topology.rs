//! The cluster's topology as the consensus log agrees on it: the members,
//! the epoch, and every cache's config and owner table. A pure value with
//! one way to change it, [`Topology::apply`], which every node runs on the
//! same log entries in the same order and so reaches the same topology.
//!
//! Every change of members starts a new epoch and rebalances every cache
//! with [`assignment::reassign`], moving only the copies it must. Creating
//! or deleting a cache changes only its own table; the table records the
//! epoch it was made in, which is what replication fences on.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::assignment;
use crate::grid::owners::{MemberId, SegmentOwners};
use crate::grid::CacheConfig;

/// How the cluster reaches one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's id in the consensus group: a new one for every run of
    /// the node, as that group remembers what a run voted for.
    pub raft_id: u64,
    /// Which run of the node this is.
    pub generation: u64,
    /// Where clients reach its HTTP and WebSocket API.
    pub api: String,
    /// Where its inter-node link listens.
    pub link: SocketAddr,
}

/// One cache as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheTopology {
    pub config: CacheConfig,
    pub owners: SegmentOwners,
    /// The epoch its owner table was last computed in.
    pub epoch: u64,
    /// The owner table of the epoch before: where a new owner finds the
    /// copies it is to take over.
    #[serde(default)]
    pub previous: Option<SegmentOwners>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Raised by every change of members.
    pub epoch: u64,
    pub members: BTreeMap<MemberId, MemberInfo>,
    pub caches: BTreeMap<String, CacheTopology>,
    /// The member that left gracefully in this epoch: it still holds its
    /// copies, so new primaries take what it has before serving. Cleared
    /// by the next change of members.
    #[serde(default)]
    pub handing_over: Option<MemberId>,
}

/// One entry of the topology log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A member joins, or rejoins as a new run of itself.
    Join {
        id: MemberId,
        info: MemberInfo,
    },
    /// A member left or was declared dead.
    Leave {
        id: MemberId,
        /// It asked to leave, and hands its copies over before it stops.
        #[serde(default)]
        graceful: bool,
    },
    CreateCache {
        name: String,
        config: CacheConfig,
    },
    DeleteCache {
        name: String,
    },
}

/// What applying a [`Change`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// The members changed; the topology is at this epoch now.
    Epoch(u64),
    /// Nothing changed: the member was already there as said, or already
    /// gone, or the cache already existed with this config.
    Unchanged,
    CacheCreated,
    /// A cache of that name exists with another config.
    CacheConflict,
    CacheDeleted,
    UnknownCache,
}

impl Topology {
    pub fn member_ids(&self) -> Vec<MemberId> {
        self.members.keys().cloned().collect()
    }

    pub fn apply(&mut self, change: &Change) -> Applied {
        match change {
            Change::Join { id, info } => {
                if self.members.get(id) == Some(info) {
                    return Applied::Unchanged;
                }
                // A new run of a member keeps its copies in the table, but
                // not their data: the new epoch is what makes it take them
                // afresh from the other owners.
                self.members.insert(id.clone(), info.clone());
                self.handing_over = None;
                self.members_changed()
            }
            Change::Leave { id, graceful } => {
                if self.members.remove(id).is_none() {
                    return Applied::Unchanged;
                }
                self.handing_over = graceful.then(|| id.clone());
                self.members_changed()
            }
            Change::CreateCache { name, config } => match self.caches.get(name) {
                Some(existing) if existing.config == *config => Applied::Unchanged,
                Some(_) => Applied::CacheConflict,
                None => {
                    let owners = assignment::assign(&self.member_ids(), config.segments, config.owners());
                    let cache = CacheTopology {
                        config: config.clone(),
                        owners,
                        epoch: self.epoch,
                        previous: None,
                    };
                    self.caches.insert(name.clone(), cache);
                    Applied::CacheCreated
                }
            },
            Change::DeleteCache { name } => match self.caches.remove(name) {
                Some(_) => Applied::CacheDeleted,
                None => Applied::UnknownCache,
            },
        }
    }

    fn members_changed(&mut self) -> Applied {
        self.epoch += 1;
        let members = self.member_ids();
        for cache in self.caches.values_mut() {
            let config = &cache.config;
            let owners =
                assignment::reassign(Some(&cache.owners), &members, config.segments, config.owners());
            cache.previous = Some(std::mem::replace(&mut cache.owners, owners));
            cache.epoch = self.epoch;
        }
        Applied::Epoch(self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn member(n: u64) -> (MemberId, MemberInfo) {
        let id = MemberId(Arc::from(format!("n{n}")));
        let info = MemberInfo {
            raft_id: n,
            generation: 1,
            api: format!("127.0.0.{n}:8080"),
            link: format!("127.0.0.{n}:9080").parse().unwrap(),
        };
        (id, info)
    }

    fn join(n: u64) -> Change {
        let (id, info) = member(n);
        Change::Join { id, info }
    }

    fn config(num_owners: u32) -> CacheConfig {
        CacheConfig {
            segments: 64,
            num_owners: Some(num_owners),
            ..CacheConfig::default()
        }
    }

    #[test]
    fn member_changes_raise_the_epoch_and_rebalance_with_little_movement() {
        let mut topology = Topology::default();
        assert_eq!(topology.apply(&join(1)), Applied::Epoch(1));
        assert_eq!(topology.apply(&join(1)), Applied::Unchanged, "said twice");
        let create = Change::CreateCache {
            name: "c".into(),
            config: config(2),
        };
        assert_eq!(topology.apply(&create), Applied::CacheCreated);
        assert_eq!(topology.apply(&create), Applied::Unchanged);
        let other = Change::CreateCache {
            name: "c".into(),
            config: config(1),
        };
        assert_eq!(topology.apply(&other), Applied::CacheConflict);
        assert_eq!(topology.caches["c"].epoch, 1);

        topology.apply(&join(2));
        topology.apply(&join(3));
        let before = topology.caches["c"].owners.clone();
        assert_eq!(topology.apply(&join(4)), Applied::Epoch(4));
        let after = &topology.caches["c"];
        assert_eq!(after.epoch, 4);
        // 128 copies over 4 members: the newcomer takes its 32, no more.
        assert_eq!(after.owners.copies_moved_from(&before), 32);

        let (id, _) = member(2);
        assert_eq!(
            topology.apply(&Change::Leave {
                id: id.clone(),
                graceful: false
            }),
            Applied::Epoch(5)
        );
        assert_eq!(
            topology.apply(&Change::Leave {
                id: id.clone(),
                graceful: false
            }),
            Applied::Unchanged
        );
        let table = &topology.caches["c"].owners;
        assert_eq!(
            table.owned_by(&id).count(),
            0,
            "the member that left owns nothing"
        );
        assert!((0..64).all(|s| table.owners(crate::grid::SegmentId(s)).len() == 2));
    }

    #[test]
    fn a_member_back_as_a_new_run_keeps_its_copies() {
        let mut topology = Topology::default();
        for n in 1..=3 {
            topology.apply(&join(n));
        }
        topology.apply(&Change::CreateCache {
            name: "c".into(),
            config: config(2),
        });
        let before = topology.caches["c"].owners.clone();
        let (id, mut info) = member(2);
        info.raft_id = 22;
        info.generation = 2;
        assert_eq!(topology.apply(&Change::Join { id, info }), Applied::Epoch(4));
        assert_eq!(topology.caches["c"].owners, before);
        assert_eq!(topology.caches["c"].epoch, 4);
        assert_eq!(
            topology.apply(&Change::DeleteCache { name: "c".into() }),
            Applied::CacheDeleted
        );
        assert_eq!(
            topology.apply(&Change::DeleteCache { name: "c".into() }),
            Applied::UnknownCache
        );
    }
}
