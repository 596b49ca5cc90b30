//! The cluster-membership actor: the one place the rest of the node asks
//! about members and owners. It hands the grid a segment-to-owner table for
//! each new cache ([`AssignSegments`]), describes the cluster for
//! `GET /api/v1/cluster` and its figures for `/metrics` ([`ClusterStatus`]).
//!
//! A node started without a cluster address is its own one-member cluster
//! here, with tables from [`assignment`]. A member of a cluster reads
//! members and tables from the agreed topology of its [`ClusterMember`],
//! and creates and deletes caches by proposing them to the topology log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Message, MessageResult, StreamHandler};
use serde::Serialize;

use actix::ResponseFuture;

use super::assignment;
use super::member::ClusterMember;
use super::topology::{Applied, Change, Topology};
use crate::grid::owners::{AssignSegments, ForgetCache, MemberId, OwnerRange, OwnerTable, SegmentOwners};
use crate::grid::{CacheName, GridError, Incarnation};

#[derive(Clone, Debug, Serialize)]
pub struct Member {
    pub id: MemberId,
    /// The address clients reach the member's HTTP and WebSocket API on.
    pub address: String,
}

/// Where the cluster stands while segments move; `Stable` when none do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebalanceState {
    Stable,
    /// Segments are moving on this node: new primaries bringing their
    /// copies level, or copies handing over (`pushgrid_segments_moving`).
    Moving,
    /// A member joined: the owners caches move to are being filled while
    /// the old owners serve, until every member reports them level.
    Filling,
}

pub struct Membership {
    local: Member,
    members: BTreeMap<MemberId, Member>,
    tables: BTreeMap<CacheName, CacheOwnership>,
    /// Bumped on every change of the members or the tables.
    topology_version: u64,
    /// Whether caches are moving to target tables (a member joined).
    filling: bool,
    /// This node's place in a cluster; none when it is its own cluster.
    cluster: Option<Arc<ClusterMember>>,
    /// The HTTP APIs of the members seen since this node started: a page
    /// one of them served may fail over here, also once it has left.
    member_apis: BTreeSet<String>,
}

/// Member APIs remembered at most; past it, the first in address order
/// makes room for a new one.
const REMEMBERED_MEMBER_APIS: usize = 1024;

impl Membership {
    pub fn new(local: Member) -> Self {
        let members = BTreeMap::from([(local.id.clone(), local.clone())]);
        Membership {
            local,
            members,
            tables: BTreeMap::new(),
            topology_version: 1,
            filling: false,
            cluster: None,
            member_apis: BTreeSet::new(),
        }
    }

    /// The membership of a member of a cluster: members and tables are
    /// the agreed topology's, and caches are created by agreement.
    pub fn clustered(local: Member, cluster: Arc<ClusterMember>) -> Self {
        Membership {
            cluster: Some(cluster),
            ..Membership::new(local)
        }
    }

    fn member_ids(&self) -> Vec<MemberId> {
        self.members.keys().cloned().collect()
    }
}

impl Actor for Membership {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(cluster) = &self.cluster {
            let topology = cluster.topology();
            self.remember_member_apis(&topology.borrow());
            let changes = futures_util::stream::unfold(topology, |mut topology| async move {
                topology.changed().await.ok()?;
                let now = topology.borrow_and_update().clone();
                Some((now, topology))
            });
            ctx.add_stream(changes);
        }
    }
}

impl StreamHandler<Arc<Topology>> for Membership {
    fn handle(&mut self, topology: Arc<Topology>, _: &mut Context<Self>) {
        self.remember_member_apis(&topology);
    }
}

impl Membership {
    fn remember_member_apis(&mut self, topology: &Topology) {
        for info in topology.members.values() {
            if self.member_apis.len() >= REMEMBERED_MEMBER_APIS && !self.member_apis.contains(&info.api) {
                self.member_apis.pop_first();
            }
            self.member_apis.insert(info.api.clone());
        }
    }
}

/// The cluster at a glance, for `/metrics`.
#[derive(Message)]
#[rtype(result = "ClusterStatus")]
pub struct DescribeStatus;

#[derive(Clone, Copy, Debug)]
pub struct ClusterStatus {
    pub members: usize,
    pub epoch: u64,
    /// Whether this node may act on its segments: it holds the majority's
    /// lease (always, on its own).
    pub leased: bool,
}

impl Handler<DescribeStatus> for Membership {
    type Result = MessageResult<DescribeStatus>;

    fn handle(&mut self, _: DescribeStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(match &self.cluster {
            Some(cluster) => {
                let topology = cluster.topology().borrow().clone();
                ClusterStatus {
                    members: topology.members.len(),
                    epoch: topology.epoch,
                    leased: cluster.lease().holds(),
                }
            }
            None => ClusterStatus {
                members: self.members.len(),
                epoch: 0,
                leased: true,
            },
        })
    }
}

/// The cluster as `GET /api/v1/cluster` shows it: the members, and the
/// owners of up to `limit` caches whose names sort after `after`.
#[derive(Message)]
#[rtype(result = "ClusterView")]
pub struct DescribeCluster {
    pub after: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub node: Member,
    pub members: Vec<Member>,
    pub topology_version: u64,
    pub rebalance: RebalanceState,
    pub caches: BTreeMap<CacheName, CacheOwnership>,
    /// The name to pass as `after` for the next page of caches.
    pub next: Option<CacheName>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CacheOwnership {
    pub segments: u32,
    /// Runs of consecutive segments with the same owners, primary first.
    pub owners: Vec<OwnerRange>,
    /// Segments whose every owner left without handing its copy over:
    /// unavailable until an operator declares their data lost.
    pub lost: Vec<u32>,
    /// Segments an operator declared lost, which started again empty.
    pub declared_lost: Vec<u32>,
}

impl CacheOwnership {
    fn of(owners: &SegmentOwners) -> Self {
        CacheOwnership {
            segments: owners.segments(),
            owners: owners.ranges(),
            lost: Vec::new(),
            declared_lost: Vec::new(),
        }
    }
}

impl Handler<AssignSegments> for Membership {
    type Result = ResponseFuture<Result<OwnerTable, GridError>>;

    fn handle(&mut self, msg: AssignSegments, _: &mut Context<Self>) -> Self::Result {
        let Some(cluster) = self.cluster.clone() else {
            let config = &msg.config;
            let owners = assignment::assign(&self.member_ids(), config.segments, config.owners());
            self.tables.insert(msg.cache, CacheOwnership::of(&owners));
            let table = OwnerTable::alone(owners);
            self.topology_version += 1;
            return Box::pin(async move { Ok(table) });
        };
        Box::pin(async move {
            let agreed = |topology: &Topology| -> Option<Result<OwnerTable, GridError>> {
                let cache = topology.caches.get(msg.cache.as_str())?;
                Some(if cache.config == msg.config {
                    Ok(cache.owner_table())
                } else {
                    Err(GridError::Conflict(format!(
                        "cache {} exists in the cluster with another config",
                        msg.cache
                    )))
                })
            };
            if let Some(known) = agreed(&cluster.topology().borrow()) {
                return known;
            }
            let change = Change::CreateCache {
                name: msg.cache.to_string(),
                config: msg.config.clone(),
                incarnation: Some(Incarnation::new()),
            };
            cluster.propose(change).await.map_err(|e| {
                GridError::Unavailable(format!("the cluster did not agree on the cache: {e}"))
            })?;
            // Agreed by the leader; this member applies the entry soon after.
            let mut topology = cluster.topology();
            let applied = tokio::time::timeout(cluster.failure_timeout() * 2, async {
                loop {
                    if let Some(known) = agreed(&topology.borrow_and_update()) {
                        return Some(known);
                    }
                    topology.changed().await.ok()?;
                }
            });
            let table = applied.await.ok().flatten().unwrap_or_else(|| {
                Err(GridError::Unavailable(format!(
                    "cache {} was agreed, but this member has not learnt of it yet",
                    msg.cache
                )))
            })?;
            // The creator answers once the cache is on every member: a
            // client's next request finds it wherever it goes.
            cluster.until_others_have(msg.cache.as_str()).await;
            Ok(table)
        })
    }
}

/// An operator's declaration that segments of a cache (every lost one when
/// `segments` is `None`) lost their data: they start again, empty, in a
/// new incarnation. Answers the segments declared (none when none was
/// lost, always on a node that is its own cluster) and the epoch they
/// start again in.
#[derive(Message)]
#[rtype(result = "Result<DeclaredLost, GridError>")]
pub struct DeclareLost {
    pub cache: CacheName,
    pub segments: Option<BTreeSet<u32>>,
}

#[derive(Debug, Serialize)]
pub struct DeclaredLost {
    pub declared: Vec<u32>,
    pub epoch: u64,
}

impl Handler<DeclareLost> for Membership {
    type Result = ResponseFuture<Result<DeclaredLost, GridError>>;

    fn handle(&mut self, msg: DeclareLost, _: &mut Context<Self>) -> Self::Result {
        let Some(cluster) = self.cluster.clone() else {
            let known = self.tables.contains_key(&msg.cache);
            return Box::pin(async move {
                match known {
                    true => Ok(DeclaredLost {
                        declared: Vec::new(),
                        epoch: 0,
                    }),
                    false => Err(GridError::UnknownCache(msg.cache.to_string())),
                }
            });
        };
        Box::pin(async move {
            let change = Change::DeclareLost {
                name: msg.cache.to_string(),
                segments: msg.segments,
                incarnation: Some(Incarnation::new()),
            };
            let applied = cluster.propose(change).await.map_err(|e| {
                GridError::Unavailable(format!("the cluster did not agree on the declaration: {e}"))
            })?;
            match applied {
                Applied::DeclaredLost { segments, epoch } => Ok(DeclaredLost {
                    declared: segments,
                    epoch,
                }),
                Applied::UnknownCache => Err(GridError::UnknownCache(msg.cache.to_string())),
                _ => Ok(DeclaredLost {
                    declared: Vec::new(),
                    epoch: cluster.topology().borrow().epoch,
                }),
            }
        })
    }
}

impl Handler<ForgetCache> for Membership {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, ForgetCache(cache): ForgetCache, _: &mut Context<Self>) -> Self::Result {
        if self.tables.remove(&cache).is_some() {
            self.topology_version += 1;
        }
        let cluster = self.cluster.clone();
        Box::pin(async move {
            if let Some(cluster) = cluster {
                let change = Change::DeleteCache {
                    name: cache.to_string(),
                };
                if let Err(e) = cluster.propose(change).await {
                    log::warn!("the cluster did not agree to delete cache {cache}: {e}");
                }
            }
        })
    }
}

/// Whether `address` (`host:port`) is the HTTP API of a member, or was
/// since this node started: a page served by one member may push from
/// another (its WebSocket, SSE stream or polls), also once its own member
/// died.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IsMemberApi(pub String);

impl Handler<IsMemberApi> for Membership {
    type Result = bool;

    fn handle(&mut self, IsMemberApi(address): IsMemberApi, _: &mut Context<Self>) -> bool {
        match &self.cluster {
            Some(_) => self.member_apis.contains(&address),
            None => self.local.address == address,
        }
    }
}

impl Handler<DescribeCluster> for Membership {
    type Result = MessageResult<DescribeCluster>;

    fn handle(&mut self, msg: DescribeCluster, _: &mut Context<Self>) -> Self::Result {
        if let Some(cluster) = &self.cluster {
            let topology = cluster.topology().borrow().clone();
            self.members = topology
                .members
                .iter()
                .map(|(id, info)| {
                    let member = Member {
                        id: id.clone(),
                        address: info.api.clone(),
                    };
                    (id.clone(), member)
                })
                .collect();
            self.tables = topology
                .caches
                .iter()
                .filter_map(|(name, cache)| {
                    let ownership = CacheOwnership {
                        lost: cache.lost.iter().copied().collect(),
                        declared_lost: cache.declared_lost.iter().copied().collect(),
                        ..CacheOwnership::of(&cache.owners)
                    };
                    Some((CacheName::parse(name).ok()?, ownership))
                })
                .collect();
            self.topology_version = topology.epoch;
            self.filling = !topology.filling.is_empty();
        }
        use std::ops::Bound;
        let from = match &msg.after {
            Some(after) => Bound::Excluded(after.as_str()),
            None => Bound::Unbounded,
        };
        let mut page = self.tables.range::<str, _>((from, Bound::Unbounded));
        let caches: BTreeMap<_, _> = page
            .by_ref()
            .take(msg.limit)
            .map(|(name, ownership)| (name.clone(), ownership.clone()))
            .collect();
        let next = page.next().and_then(|_| caches.keys().next_back().cloned());
        MessageResult(ClusterView {
            node: self.local.clone(),
            members: self.members.values().cloned().collect(),
            topology_version: self.topology_version,
            rebalance: if self.filling {
                RebalanceState::Filling
            } else {
                RebalanceState::Stable
            },
            caches,
            next,
        })
    }
}
