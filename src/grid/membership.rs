//! The cluster-membership actor: it owns the member list and the
//! segment-to-owner table of every cache, and answers where a segment lives.
//!
//! Today the only member is the local node. Joining, leaving and rebalancing
//! add messages here; the grid already creates its partition actors from the
//! tables this actor hands out, so they need no other change.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::{Actor, Context, Handler, Message, MessageResult};
use serde::Serialize;

use super::topology::{MemberId, SegmentOwners};
use super::CacheName;

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
}

pub struct Membership {
    local: Member,
    members: BTreeMap<MemberId, Member>,
    tables: BTreeMap<CacheName, Arc<SegmentOwners>>,
    /// Bumped on every change of the members or the tables.
    topology_version: u64,
}

impl Membership {
    pub fn new(local: Member) -> Self {
        let members = BTreeMap::from([(local.id.clone(), local.clone())]);
        Membership {
            local,
            members,
            tables: BTreeMap::new(),
            topology_version: 1,
        }
    }

    fn member_ids(&self) -> Vec<MemberId> {
        self.members.keys().cloned().collect()
    }
}

impl Actor for Membership {
    type Context = Context<Self>;
}

/// Computes and records the owner table of a new cache.
#[derive(Message)]
#[rtype(result = "Arc<SegmentOwners>")]
pub struct AssignSegments {
    pub cache: CacheName,
    pub segments: u32,
    pub num_owners: u32,
}

/// The cluster as `GET /api/v1/cluster` shows it.
#[derive(Message)]
#[rtype(result = "ClusterView")]
pub struct DescribeCluster;

#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub node: Member,
    pub members: Vec<Member>,
    pub topology_version: u64,
    pub rebalance: RebalanceState,
    pub caches: BTreeMap<CacheName, CacheOwnership>,
}

#[derive(Debug, Serialize)]
pub struct CacheOwnership {
    pub segments: u32,
    /// `owners[s]`: the members owning segment `s`, primary first.
    pub owners: Arc<SegmentOwners>,
}

impl Handler<AssignSegments> for Membership {
    type Result = MessageResult<AssignSegments>;

    fn handle(&mut self, msg: AssignSegments, _: &mut Context<Self>) -> Self::Result {
        let table = Arc::new(SegmentOwners::assign(
            &self.member_ids(),
            msg.segments,
            msg.num_owners,
        ));
        self.tables.insert(msg.cache, table.clone());
        self.topology_version += 1;
        MessageResult(table)
    }
}

impl Handler<DescribeCluster> for Membership {
    type Result = MessageResult<DescribeCluster>;

    fn handle(&mut self, _: DescribeCluster, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ClusterView {
            node: self.local.clone(),
            members: self.members.values().cloned().collect(),
            topology_version: self.topology_version,
            rebalance: RebalanceState::Stable,
            caches: self
                .tables
                .iter()
                .map(|(name, table)| {
                    let ownership = CacheOwnership {
                        segments: table.segments(),
                        owners: table.clone(),
                    };
                    (name.clone(), ownership)
                })
                .collect(),
        })
    }
}
