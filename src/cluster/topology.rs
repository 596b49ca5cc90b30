//! The cluster's topology as the consensus log agrees on it: the members,
//! the epoch, and every cache's config and owner table. A pure value with
//! one way to change it, [`Topology::apply`], which every node runs on the
//! same log entries in the same order and so reaches the same topology.
//!
//! Every change of members starts a new epoch and rebalances every cache
//! with [`assignment::reassign`], moving only the copies it must. A member
//! joins, or leaves gracefully, in two steps, so that no segment pauses
//! while copies move: first the rebalanced table is only a *target*, and
//! its new owners are filled (sent the segment, then every write) while
//! the old owners serve on (the leaving member among them); once every
//! member reported its new owners level ([`Change::Level`]), the next
//! epoch switches to the target (and the leaving member leaves), and a
//! new primary finds its copy already there. Creating or deleting a cache
//! changes only its own table; the table records the epoch it was made
//! in, which is what replication fences on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::assignment;
use crate::grid::owners::{MemberId, OwnerTable, SegmentOwners};
use crate::grid::{CacheConfig, Incarnation, SegmentId};

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
    /// Segments whose every owner left without handing its copy over (a
    /// crash, or a new run of the only owner): their data is gone, and
    /// they stay unavailable until an operator declares it lost.
    #[serde(default)]
    pub lost: BTreeSet<u32>,
    /// Segments an operator declared lost, which started again empty.
    #[serde(default)]
    pub declared_lost: BTreeSet<u32>,
    /// The table the cache moves to once its new owners are level (a
    /// member joined): until then `owners` serve, and every owner of the
    /// target is filled as a backup.
    #[serde(default)]
    pub target: Option<SegmentOwners>,
    /// Which life of the cache's histories positions belong to, the same
    /// on every member (so a client resumes on any of them): new when the
    /// cache is created, and whenever segments are declared lost.
    #[serde(default)]
    pub incarnation: Option<Incarnation>,
}

impl CacheTopology {
    /// The table the grid places the cache by.
    pub fn owner_table(&self) -> OwnerTable {
        OwnerTable {
            owners: Arc::new(self.owners.clone()),
            epoch: self.epoch,
            previous: self.previous.clone().map(Arc::new),
            target: self.target.clone().map(Arc::new),
            lost: Arc::new(self.lost.clone()),
            declared_lost: self.declared_lost.len(),
            incarnation: self.incarnation,
        }
    }
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
    /// While caches move to their targets: the members that have not yet
    /// reported the new owners of their segments level. Empty otherwise.
    #[serde(default)]
    pub filling: BTreeSet<MemberId>,
    /// The member leaving gracefully while its copies are filled elsewhere:
    /// it serves on, and leaves when the caches switch to their targets.
    #[serde(default)]
    pub leaving: Option<MemberId>,
}

/// One entry of the topology log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A member joins, or rejoins as a new run of itself.
    Join {
        id: MemberId,
        info: MemberInfo,
        /// A member the others took for dead (cut off, paused) asking back
        /// in: it is made an owner again at once, as a crash is handled,
        /// not filled first.
        #[serde(default)]
        rejoin: bool,
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
        /// Chosen by the member that proposes it.
        #[serde(default)]
        incarnation: Option<Incarnation>,
    },
    DeleteCache {
        name: String,
    },
    /// `member` has brought every new owner of the segments it leads
    /// level with the target tables of `epoch` (or gave up waiting): the
    /// last member to say so moves every cache to its target.
    Level {
        member: MemberId,
        epoch: u64,
    },
    /// An operator accepts that `segments` of a cache (every lost one
    /// when `None`) lost their data: they start again, empty.
    DeclareLost {
        name: String,
        segments: Option<BTreeSet<u32>>,
        /// The cache's next incarnation, chosen by the member that
        /// proposes it.
        #[serde(default)]
        incarnation: Option<Incarnation>,
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
    /// These segments were declared lost; the topology is at this epoch.
    DeclaredLost {
        segments: Vec<u32>,
        epoch: u64,
    },
}

impl Topology {
    pub fn member_ids(&self) -> Vec<MemberId> {
        self.members.keys().cloned().collect()
    }

    pub fn apply(&mut self, change: &Change) -> Applied {
        match change {
            Change::Join { id, info, rejoin } => {
                if self.members.get(id) == Some(info) {
                    return Applied::Unchanged;
                }
                // A new run of a member keeps its copies in the table, but
                // not their data: the new epoch is what makes it take them
                // afresh from the other owners.
                let restarted = self.members.insert(id.clone(), info.clone()).is_some();
                self.handing_over = None;
                // (A join while another fills starts the fill again, for all.)
                if restarted || *rejoin || self.members.len() == 1 || self.leaving.is_some() {
                    return self.members_changed(restarted.then_some(id));
                }
                if !self.set_targets(&self.member_ids()) {
                    return self.members_changed(None);
                }
                Applied::Epoch(self.epoch)
            }
            Change::Level { member, epoch } => self.level(member, *epoch),
            Change::Leave { id, graceful } => {
                if !self.members.contains_key(id) {
                    return Applied::Unchanged;
                }
                if *graceful && (self.leaving.is_some() || !self.filling.is_empty()) {
                    // One move at a time: the member asks again once this
                    // one is done.
                    return Applied::Unchanged;
                }
                if *graceful && self.members.len() > 1 {
                    let staying: Vec<MemberId> = self.members.keys().filter(|m| *m != id).cloned().collect();
                    if self.set_targets(&staying) {
                        self.leaving = Some(id.clone());
                        return Applied::Epoch(self.epoch);
                    }
                }
                self.members.remove(id);
                self.handing_over = graceful.then(|| id.clone());
                self.members_changed(None)
            }
            Change::CreateCache {
                name,
                config,
                incarnation,
            } => match self.caches.get(name) {
                Some(existing) if existing.config == *config => Applied::Unchanged,
                Some(_) => Applied::CacheConflict,
                None => {
                    let owners = assignment::assign(&self.member_ids(), config.segments, config.owners());
                    let cache = CacheTopology {
                        config: config.clone(),
                        owners,
                        epoch: self.epoch,
                        previous: None,
                        lost: BTreeSet::new(),
                        declared_lost: BTreeSet::new(),
                        target: None,
                        incarnation: *incarnation,
                    };
                    self.caches.insert(name.clone(), cache);
                    Applied::CacheCreated
                }
            },
            Change::DeleteCache { name } => match self.caches.remove(name) {
                Some(_) => Applied::CacheDeleted,
                None => Applied::UnknownCache,
            },
            Change::DeclareLost {
                name,
                segments,
                incarnation,
            } => self.declare_lost(name, segments.as_ref(), *incarnation),
        }
    }

    /// Starts the lost segments among `segments` (all, when `None`) again,
    /// empty, in a new epoch: their owners place fresh copies, and the
    /// cache's histories start a new incarnation.
    fn declare_lost(
        &mut self,
        name: &str,
        segments: Option<&BTreeSet<u32>>,
        incarnation: Option<Incarnation>,
    ) -> Applied {
        let Some(cache) = self.caches.get_mut(name) else {
            return Applied::UnknownCache;
        };
        let declared: BTreeSet<u32> = match segments {
            Some(asked) => cache.lost.intersection(asked).copied().collect(),
            None => cache.lost.clone(),
        };
        if declared.is_empty() {
            return Applied::Unchanged;
        }
        self.epoch += 1;
        cache.lost.retain(|s| !declared.contains(s));
        cache.declared_lost.extend(&declared);
        cache.incarnation = incarnation;
        cache.previous = Some(cache.owners.clone());
        cache.epoch = self.epoch;
        log::warn!(
            "cache {name}: segments {declared:?} declared lost by an operator at epoch {}; they start \
             again empty, in a new incarnation",
            self.epoch
        );
        Applied::DeclaredLost {
            segments: declared.into_iter().collect(),
            epoch: self.epoch,
        }
    }

    /// Starts a new epoch in which every cache is rebalanced over `members`
    /// as a target: each keeps the owners it had (so no segment pauses),
    /// and the new owners are filled until every member says they are
    /// level. False, and nothing changed, when no copy would move.
    fn set_targets(&mut self, members: &[MemberId]) -> bool {
        let targets: Vec<(String, SegmentOwners)> = self
            .caches
            .iter()
            .map(|(name, cache)| {
                let config = &cache.config;
                let target =
                    assignment::reassign(Some(&cache.owners), members, config.segments, config.owners());
                (name.clone(), target)
            })
            .filter(|(name, target)| self.caches[name].owners != *target)
            .collect();
        if targets.is_empty() {
            return false;
        }
        self.epoch += 1;
        for (name, target) in targets {
            let cache = self.caches.get_mut(&name).expect("a cache just read");
            cache.previous = Some(cache.owners.clone());
            cache.target = Some(target);
            cache.epoch = self.epoch;
        }
        self.filling = self.members.keys().cloned().collect();
        true
    }

    /// `member` reported its new owners level at `epoch`; the last one
    /// starts the next epoch, in which every cache moves to its target and
    /// a member leaving leaves (handing its copies over, already level).
    fn level(&mut self, member: &MemberId, epoch: u64) -> Applied {
        if epoch != self.epoch || !self.filling.remove(member) || !self.filling.is_empty() {
            return Applied::Unchanged;
        }
        self.epoch += 1;
        if let Some(leaving) = self.leaving.take() {
            self.members.remove(&leaving);
            self.handing_over = Some(leaving);
        }
        for cache in self.caches.values_mut() {
            if let Some(target) = cache.target.take() {
                cache.previous = Some(std::mem::replace(&mut cache.owners, target));
                cache.epoch = self.epoch;
            }
        }
        Applied::Epoch(self.epoch)
    }

    /// A new epoch after the members changed: every cache rebalanced, and
    /// the segments none of whose owners still holds a copy marked lost.
    /// `restarted` is a member back as a new run: it holds nothing. A
    /// rebalance under way is dropped: the new one starts from the owners
    /// that hold the data.
    fn members_changed(&mut self, restarted: Option<&MemberId>) -> Applied {
        self.epoch += 1;
        self.filling.clear();
        if let Some(leaving) = self.leaving.take() {
            // Its copies were being filled elsewhere: it leaves now, handing
            // them over as a one-step graceful leave does (unless it is
            // the member that crashed).
            if self.members.remove(&leaving).is_some() {
                self.handing_over = Some(leaving);
            }
        }
        let members = self.member_ids();
        let holds = |member: &MemberId| {
            (self.members.contains_key(member) && Some(member) != restarted)
                || self.handing_over.as_ref() == Some(member)
        };
        for (name, cache) in self.caches.iter_mut() {
            let newly_lost: Vec<u32> = (0..cache.owners.segments())
                .map(SegmentId)
                .filter(|s| !cache.lost.contains(&s.0) && !cache.owners.owners(*s).iter().any(holds))
                .map(|s| s.0)
                .collect();
            if !newly_lost.is_empty() {
                log::error!(
                    "cache {name}: segments {newly_lost:?} lost every owner at epoch {}; they stay \
                     unavailable until an operator declares their data lost",
                    self.epoch
                );
                cache.lost.extend(newly_lost);
            }
            cache.target = None;
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
        Change::Join {
            id,
            info,
            rejoin: false,
        }
    }

    /// Members n1 to n3, then `caches` (name, owners) created.
    fn three_members_with(caches: &[(&str, u32)]) -> Topology {
        let mut topology = Topology::default();
        for n in 1..=3 {
            topology.apply(&join(n));
        }
        for (name, owners) in caches {
            topology.apply(&Change::CreateCache {
                name: (*name).into(),
                config: config(*owners),
                incarnation: None,
            });
        }
        topology
    }

    /// Every filling member reports level: the caches move to their targets.
    fn settle(topology: &mut Topology) {
        for member in topology.filling.clone() {
            let epoch = topology.epoch;
            topology.apply(&Change::Level { member, epoch });
        }
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
            incarnation: None,
        };
        assert_eq!(topology.apply(&create), Applied::CacheCreated);
        assert_eq!(topology.apply(&create), Applied::Unchanged);
        let other = Change::CreateCache {
            name: "c".into(),
            config: config(1),
            incarnation: None,
        };
        assert_eq!(topology.apply(&other), Applied::CacheConflict);
        assert_eq!(topology.caches["c"].epoch, 1);

        topology.apply(&join(2));
        settle(&mut topology);
        topology.apply(&join(3));
        settle(&mut topology);
        let before = topology.caches["c"].owners.clone();
        assert_eq!(topology.apply(&join(4)), Applied::Epoch(6));
        let filling = &topology.caches["c"];
        assert_eq!(filling.epoch, 6);
        assert_eq!(
            filling.owners, before,
            "the old owners serve while the new are filled"
        );
        let target = filling.target.clone().expect("a target");
        // 128 copies over 4 members: the newcomer takes its 32, no more.
        assert_eq!(target.copies_moved_from(&before), 32);
        assert_eq!(topology.filling.len(), 4);
        for n in 1..=4 {
            let level = Change::Level {
                member: member(n).0,
                epoch: 6,
            };
            let applied = topology.apply(&level);
            assert_eq!(
                applied,
                if n < 4 {
                    Applied::Unchanged
                } else {
                    Applied::Epoch(7)
                }
            );
            assert_eq!(
                topology.apply(&level),
                Applied::Unchanged,
                "said twice, or too late"
            );
        }
        let after = &topology.caches["c"];
        assert_eq!(
            (after.epoch, &after.owners, after.target.as_ref()),
            (7, &target, None)
        );
        assert_eq!(
            after.previous.as_ref(),
            Some(&before),
            "new primaries ask the old owners"
        );
        assert!(topology.filling.is_empty());

        let (id, _) = member(2);
        assert_eq!(
            topology.apply(&Change::Leave {
                id: id.clone(),
                graceful: false
            }),
            Applied::Epoch(8)
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
    fn a_member_leaving_gracefully_serves_until_its_copies_are_filled_elsewhere() {
        let mut topology = three_members_with(&[("solo", 1)]);
        let serving = topology.caches["solo"].owners.clone();
        let (n2, _) = member(2);
        let leave = Change::Leave {
            id: n2.clone(),
            graceful: true,
        };
        assert_eq!(topology.apply(&leave), Applied::Epoch(4));
        assert!(topology.members.contains_key(&n2), "it serves on meanwhile");
        assert_eq!(topology.leaving.as_ref(), Some(&n2));
        let cache = &topology.caches["solo"];
        assert_eq!(cache.owners, serving);
        let target = cache.target.clone().expect("a target");
        assert_eq!(target.owned_by(&n2).count(), 0);
        assert_eq!(target.copies_moved_from(&serving), serving.owned_by(&n2).count());
        assert_eq!(
            topology.apply(&leave),
            Applied::Unchanged,
            "asked again meanwhile"
        );
        settle(&mut topology);
        assert_eq!(topology.epoch, 5);
        assert!(
            !topology.members.contains_key(&n2),
            "gone once its copies are elsewhere"
        );
        assert_eq!(
            topology.handing_over.as_ref(),
            Some(&n2),
            "its copies are asked at the switch"
        );
        assert_eq!(topology.leaving, None);
        let cache = &topology.caches["solo"];
        assert_eq!(
            (&cache.owners, cache.previous.as_ref()),
            (&target, Some(&serving))
        );
        assert!(cache.lost.is_empty());

        // A leaving member that crashes before the switch takes its only
        // copies with it.
        let (n3, _) = member(3);
        let leave = Change::Leave {
            id: n3.clone(),
            graceful: true,
        };
        assert_eq!(topology.apply(&leave), Applied::Epoch(6));
        let led_by_n3 = topology.caches["solo"].owners.owned_by(&n3).count();
        let crash = Change::Leave {
            id: n3.clone(),
            graceful: false,
        };
        assert_eq!(topology.apply(&crash), Applied::Epoch(7));
        assert!(!topology.members.contains_key(&n3));
        assert_eq!(
            (topology.handing_over.as_ref(), topology.leaving.as_ref()),
            (None, None)
        );
        assert_eq!(topology.caches["solo"].lost.len(), led_by_n3);
    }

    #[test]
    fn a_member_leaving_while_a_join_fills_starts_again_from_the_serving_owners() {
        let mut topology = three_members_with(&[("c", 2)]);
        let serving = topology.caches["c"].owners.clone();
        topology.apply(&join(4));
        topology.apply(&Change::Level {
            member: member(1).0,
            epoch: 4,
        });
        let (n4, _) = member(4);
        assert_eq!(
            topology.apply(&Change::Leave {
                id: n4.clone(),
                graceful: false
            }),
            Applied::Epoch(5)
        );
        let cache = &topology.caches["c"];
        assert_eq!(cache.target, None, "the fill is abandoned");
        assert!(topology.filling.is_empty());
        assert_eq!(cache.owners, serving, "nothing moved: n4 never served");
        assert!(cache.lost.is_empty(), "n4 was never an owner that mattered");
        let late = Change::Level {
            member: member(2).0,
            epoch: 4,
        };
        assert_eq!(topology.apply(&late), Applied::Unchanged);
    }

    #[test]
    fn a_member_back_as_a_new_run_keeps_its_copies() {
        let mut topology = three_members_with(&[("c", 2)]);
        let before = topology.caches["c"].owners.clone();
        let (id, mut info) = member(2);
        info.raft_id = 22;
        info.generation = 2;
        assert_eq!(
            topology.apply(&Change::Join {
                id,
                info,
                rejoin: false,
            }),
            Applied::Epoch(4)
        );
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

    #[test]
    fn segments_whose_every_owner_went_are_lost_until_declared() {
        let mut topology = three_members_with(&[("one", 1), ("two", 2)]);
        let (n2, _) = member(2);
        let led_by_n2: BTreeSet<u32> = topology.caches["one"].owners.owned_by(&n2).map(|s| s.0).collect();
        assert!(!led_by_n2.is_empty());
        topology.apply(&Change::Leave {
            id: n2,
            graceful: false,
        });
        assert_eq!(
            topology.caches["one"].lost, led_by_n2,
            "its only copies crashed with it"
        );
        assert!(
            topology.caches["two"].lost.is_empty(),
            "every segment kept a copy"
        );

        // A new run of a member holds none of its copies.
        let (n3, mut info) = member(3);
        let led_by_n3: BTreeSet<u32> = topology.caches["one"].owners.owned_by(&n3).map(|s| s.0).collect();
        info.generation = 2;
        topology.apply(&Change::Join {
            id: n3,
            info,
            rejoin: false,
        });
        let lost = &topology.caches["one"].lost;
        assert_eq!(*lost, &led_by_n2 | &led_by_n3);

        let only = BTreeSet::from([*led_by_n2.first().unwrap()]);
        let epoch = topology.epoch;
        let declare = |segments| Change::DeclareLost {
            name: "one".into(),
            segments,
            incarnation: Some(Incarnation(7)),
        };
        assert_eq!(
            topology.apply(&declare(Some(only.clone()))),
            Applied::DeclaredLost {
                segments: only.iter().copied().collect(),
                epoch: epoch + 1
            }
        );
        let cache = &topology.caches["one"];
        assert_eq!((cache.epoch, &cache.declared_lost), (epoch + 1, &only));
        assert_eq!(cache.incarnation, Some(Incarnation(7)), "a new life");
        assert!(matches!(
            topology.apply(&declare(None)),
            Applied::DeclaredLost { .. }
        ));
        assert!(topology.caches["one"].lost.is_empty());
        assert_eq!(
            topology.apply(&declare(None)),
            Applied::Unchanged,
            "nothing left to declare"
        );
        // A member leaving gracefully hands its copies over.
        let (n1, _) = member(1);
        topology.apply(&Change::Leave {
            id: n1,
            graceful: true,
        });
        assert!(
            topology.caches["one"].lost.is_empty(),
            "a graceful leave loses nothing"
        );
    }
}
