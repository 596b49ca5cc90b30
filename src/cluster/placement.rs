//! The grid in a cluster: how a node's grid reaches other members (its
//! [`MemberLinks`]: replication batches and forwarded requests over the
//! link, to the member's address in the agreed topology), and how its
//! caches follow the topology ([`follow_topology`]: every cache the cluster
//! agreed on exists here, placed by its owner table at its epoch; a cache
//! the cluster deleted is deleted here; while caches move to their target
//! tables, the member reports once it has filled its new owners).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::member::ClusterMember;
use super::messages::{PeerReply, PeerRequest};
use super::topology::{Change, Topology};
use crate::grid::forward::{ForwardFuture, Forwarded, Forwarder};
use crate::grid::owners::MemberId;
use crate::grid::replication::{ReplicaFuture, ReplicaMessage, ReplicaSink};
use crate::grid::{CacheName, Grid, GridError};

/// Carries the grid's requests to other members.
pub struct MemberLinks {
    member: Arc<ClusterMember>,
    /// How long a member may take to answer one request.
    timeout: Duration,
}

impl MemberLinks {
    pub fn new(member: Arc<ClusterMember>) -> Arc<Self> {
        let timeout = member.failure_timeout();
        Arc::new(MemberLinks { member, timeout })
    }
}

impl ReplicaSink for MemberLinks {
    fn send(&self, to: &MemberId, message: ReplicaMessage) -> ReplicaFuture {
        let (member, to, timeout) = (self.member.clone(), to.clone(), self.timeout);
        Box::pin(async move {
            match member
                .request(&to, &PeerRequest::Replica(message), timeout)
                .await?
            {
                PeerReply::Replica(reply) => Ok(reply),
                PeerReply::Refused(why) => Err(why),
                other => Err(format!("unexpected reply {other:?}")),
            }
        })
    }
}

impl Forwarder for MemberLinks {
    fn forward(&self, to: &MemberId, request: Forwarded) -> ForwardFuture {
        let (member, to, timeout) = (self.member.clone(), to.clone(), self.timeout);
        Box::pin(async move {
            let unavailable = |why: String| GridError::Unavailable(format!("member {}: {why}", to.0));
            match member.request(&to, &PeerRequest::Forward(request), timeout).await {
                Ok(PeerReply::Forwarded(reply)) => Ok(reply),
                Ok(PeerReply::Refused(why)) => Err(unavailable(why)),
                Ok(other) => Err(unavailable(format!("unexpected reply {other:?}"))),
                Err(why) => Err(unavailable(why)),
            }
        })
    }
}

/// How long a member fills the new owners of its segments before it
/// reports them level anyway: the switch then costs a new primary a
/// transfer (as a crash would), not the cluster its rebalance.
const FILL_AT_MOST: Duration = Duration::from_secs(30);
/// How often a member filling new owners looks whether they are level.
const FILL_CHECK: Duration = Duration::from_millis(20);

/// Keeps `grid`'s caches as the agreed topology says, until the topology
/// log stops.
pub async fn follow_topology(grid: Grid, member: Arc<ClusterMember>, placed: impl Fn()) {
    let mut topology = member.topology();
    loop {
        let agreed = topology.borrow_and_update().clone();
        let me = grid.local_member().clone();
        place_caches(&grid, &agreed, &me).await;
        remove_deleted_caches(&grid, &topology).await;
        placed();
        if agreed.filling.contains(&me) {
            tokio::spawn(report_level(grid.clone(), member.clone(), agreed.epoch));
        }
        if topology.changed().await.is_err() {
            return;
        }
    }
}

/// Tells the cluster once this member's primaries have filled the owners
/// their segments gain at `epoch` (or it gave up waiting), unless the
/// topology moved on meanwhile.
async fn report_level(grid: Grid, member: Arc<ClusterMember>, epoch: u64) {
    let topology = member.topology();
    let started = tokio::time::Instant::now();
    while !grid.feeds_level(epoch).await {
        if topology.borrow().epoch != epoch {
            return;
        }
        if started.elapsed() > FILL_AT_MOST {
            log::warn!("epoch {epoch}: new owners not level after {FILL_AT_MOST:?}; switching anyway");
            break;
        }
        tokio::time::sleep(FILL_CHECK).await;
    }
    log::info!("epoch {epoch}: new owners filled in {:?}", started.elapsed());
    let level = Change::Level {
        member: grid.local_member().clone(),
        epoch,
    };
    if let Err(e) = member.propose(level).await {
        log::warn!("epoch {epoch}: could not report new owners level: {e:?}");
    }
}

async fn place_caches(grid: &Grid, topology: &Topology, me: &MemberId) {
    // A member the others declared dead drops its copies (they may hold
    // writes never acknowledged); one still in, or leaving, hands them on.
    let keep_departing = topology.members.contains_key(me) || topology.handing_over.as_ref() == Some(me);
    for (name, cache) in &topology.caches {
        let Ok(name) = CacheName::parse(name) else {
            continue;
        };
        if grid.cache(name.as_str()).is_err() {
            if let Err(e) = grid.create_cache(name.clone(), cache.config.clone()).await {
                log::warn!("cache {name} of the cluster could not be created here: {e}");
                continue;
            }
        }
        let placed = grid
            .set_owners(name.as_str(), &cache.owner_table(), keep_departing)
            .await;
        if let Err(e) = placed {
            log::warn!("cache {name}: owners of epoch {} not placed: {e}", cache.epoch);
        }
    }
}

/// Removes the caches the newest agreed topology no longer has. The
/// newest, not the one just placed: a cache created here while that one
/// was placed is in a later topology (a member creates a cache once it
/// applied the agreement), and must stay.
async fn remove_deleted_caches(grid: &Grid, topology: &watch::Receiver<Arc<Topology>>) {
    let here = grid.caches();
    let newest = topology.borrow().clone();
    for cache in here {
        let name = cache.name().as_str();
        if !newest.caches.contains_key(name) {
            if let Err(e) = grid.remove_deleted_cache(name).await {
                log::warn!("cache {name} deleted by the cluster: {e}");
            }
        }
    }
}
