//! This node as a member of a cluster: it listens on the cluster address,
//! starts its end of the topology log, founds a cluster or joins one
//! through its seeds, and answers its peers' requests over the link.
//!
//! A change of the topology is proposed on any member: it is appended by
//! the leader, wherever that is, so [`ClusterMember::propose`] follows the
//! leader hints it gets until the change is agreed or its time runs out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::consensus::{
    self, BoxFuture, Consensus, ProposeError, RaftNode, RaftReply, RaftRequest, RaftTransport,
};
use super::gossip::{Gossip, Run};
use super::lease::{Lease, LeaseGrant};
use super::link::{Identity, LinkError, LinkTraffic, Links, Peer, Service};
use super::messages::{PeerReply, PeerRequest};
use super::topology::{Applied, Change, MemberInfo, Topology};
use super::watchers::Watchers;
use crate::grid::owners::MemberId;
use crate::grid::{Grid, Relayed};
use actix::Recipient;

/// How this node takes part in a cluster.
#[derive(Clone, Debug)]
pub struct Settings {
    pub cluster_id: String,
    pub node_id: String,
    /// Which run of the node this is: higher on every start.
    pub generation: u64,
    /// Where the inter-node link listens; outgoing links leave from its IP.
    pub link: SocketAddr,
    /// Where clients reach this node's API.
    pub api: String,
    /// Members to join through; none founds a new cluster.
    pub seeds: Vec<SocketAddr>,
    pub failure_timeout: Duration,
    pub secret: Option<Arc<[u8]>>,
    /// Where the links count the bytes they move.
    pub traffic: LinkTraffic,
}

type PeerLinks = Links<PeerRequest, PeerReply>;

/// How long a member waits for a cache another member created to reach
/// it before it says it has not got it: long enough for a member busy
/// placing a new topology (a take-over after a crash) to get to it.
const HAS_CACHE_WAIT: Duration = Duration::from_secs(10);
/// How long a member leaving gracefully waits, past the agreement, for the
/// others to fill its copies and switch (each member reports within
/// `placement::FILL_AT_MOST` of placing).
const LEAVE_FILL_AT_MOST: Duration = Duration::from_secs(40);

/// What the link's service and raft's transport share: set once the
/// member has started both.
struct Shared {
    links: OnceLock<Weak<PeerLinks>>,
    consensus: OnceLock<Consensus>,
    lease: Lease,
    /// This member's own `Join`, once it is in the cluster.
    join: OnceLock<Change>,
    /// The node's grid, once it runs: what replication and forwarded
    /// requests are served from.
    grid: OnceLock<Grid>,
    /// Where events other members relay here go (the node's listener), and
    /// who watches which cache; set with the grid.
    events: OnceLock<(Recipient<Relayed>, Arc<Watchers>)>,
}

impl Shared {
    fn links(&self) -> Option<Arc<PeerLinks>> {
        self.links.get().and_then(Weak::upgrade)
    }
}

pub struct ClusterMember {
    settings: Settings,
    /// The address the link listens on (the port chosen, if it was 0).
    link: SocketAddr,
    links: Arc<PeerLinks>,
    consensus: Consensus,
    gossip: tokio::sync::Mutex<Option<Gossip>>,
    shared: Arc<Shared>,
}

impl ClusterMember {
    /// Listens on the cluster address, starts the topology log, and founds
    /// or joins the cluster; returns once this member is in the topology.
    pub async fn start(settings: Settings) -> Result<Self, String> {
        let listener = TcpListener::bind(settings.link)
            .await
            .map_err(|e| format!("cluster address {}: {e}", settings.link))?;
        let link = listener.local_addr().map_err(|e| e.to_string())?;
        let lease = Lease::new(settings.failure_timeout);
        let shared = Arc::new(Shared {
            links: OnceLock::new(),
            consensus: OnceLock::new(),
            lease: lease.clone(),
            join: OnceLock::new(),
            grid: OnceLock::new(),
            events: OnceLock::new(),
        });
        let epoch = Arc::new(AtomicU64::new(0));
        let identity = Identity {
            cluster_id: settings.cluster_id.clone(),
            node_id: settings.node_id.clone(),
            generation: settings.generation,
            secret: settings.secret.clone(),
        };
        let links = Links::new(
            identity,
            link.ip(),
            epoch.clone(),
            shared.clone(),
            settings.traffic.clone(),
        );
        let _ = shared.links.set(Arc::downgrade(&links));
        links.accept(listener);

        let raft_id = consensus::raft_id(&settings.node_id, settings.generation);
        let config = consensus::raft_config(&settings.cluster_id, settings.failure_timeout);
        let heartbeat = Duration::from_millis(config.heartbeat_interval);
        let consensus = Consensus::start(raft_id, config, Arc::new(LinkTransport(shared.clone()))).await?;
        let _ = shared.consensus.set(consensus.clone());
        tokio::spawn(consensus.clone().steward(heartbeat * 2));
        tokio::spawn(follow_epoch(consensus.topology(), epoch));
        let run = (settings.node_id.clone(), settings.generation);
        let gossip = Gossip::start(
            &settings.cluster_id,
            run,
            link,
            &settings.seeds,
            settings.failure_timeout,
        )
        .await?;
        tokio::spawn(remove_the_dead(
            consensus.clone(),
            gossip.live(),
            settings.failure_timeout,
        ));
        tokio::spawn(keep_lease(shared.clone()));

        let member = ClusterMember {
            settings,
            link,
            links,
            consensus,
            gossip: tokio::sync::Mutex::new(Some(gossip)),
            shared,
        };
        let join = Change::Join {
            id: member.id(),
            info: member.info(),
            rejoin: false,
        };
        let deadline = tokio::time::Instant::now() + member.settings.failure_timeout * 10;
        if member.settings.seeds.is_empty() {
            member.consensus.found(member.raft_node()).await?;
            member.propose_until(join, deadline).await
        } else {
            member.join_through_seeds(join, deadline).await
        }
        .map_err(|e| format!("joining the cluster: {e}"))?;
        let _ = member.shared.join.set(Change::Join {
            id: member.id(),
            info: member.info(),
            rejoin: true,
        });
        Ok(member)
    }

    pub fn id(&self) -> MemberId {
        MemberId(Arc::from(self.settings.node_id.as_str()))
    }

    pub fn link_address(&self) -> SocketAddr {
        self.link
    }

    fn info(&self) -> MemberInfo {
        MemberInfo {
            raft_id: self.consensus.id(),
            generation: self.settings.generation,
            api: self.settings.api.clone(),
            link: self.link,
        }
    }

    fn raft_node(&self) -> RaftNode {
        RaftNode {
            name: self.settings.node_id.clone(),
            link: self.link.to_string(),
        }
    }

    /// The latest agreed topology, and its changes.
    pub fn topology(&self) -> tokio::sync::watch::Receiver<Arc<Topology>> {
        self.consensus.topology()
    }

    pub fn consensus(&self) -> &Consensus {
        &self.consensus
    }

    /// Whether the majority backs this member now.
    pub fn lease(&self) -> &Lease {
        &self.shared.lease
    }

    /// Serves replication and forwarded requests from `grid` from now on,
    /// hands the events other members relay to `listener`, and keeps
    /// `watchers` told of what the others watch.
    pub fn attach(&self, grid: Grid, listener: Recipient<Relayed>, watchers: Arc<Watchers>) {
        let _ = self.shared.events.set((listener, watchers));
        let _ = self.shared.grid.set(grid);
    }

    /// Sends `request` to the member `to` of the current topology.
    pub async fn request(
        &self,
        to: &MemberId,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerReply, String> {
        let (link, handing_over) = {
            let topology = self.topology().borrow().clone();
            let link = topology.members.get(to).map(|info| info.link);
            (link, topology.handing_over.as_ref() == Some(to))
        };
        let peer = match link {
            Some(link) => self.links.peer(&to.0, link),
            // Gone from the topology, but still handing its copies over.
            None if handing_over => self
                .links
                .known(&to.0)
                .ok_or_else(|| format!("{} was never linked", to.0))?,
            None => return Err(format!("{} is not a member", to.0)),
        };
        peer.request(request, timeout).await.map_err(|e| e.to_string())
    }

    pub fn failure_timeout(&self) -> Duration {
        self.settings.failure_timeout
    }

    /// Waits until every other member serves `cache`, or leaves the
    /// topology (a member that died as the cache was created), or did not
    /// say so within [`HAS_CACHE_WAIT`] (it is stuck, and catches up on
    /// its own).
    pub async fn until_others_have(&self, cache: &str) {
        let me = self.id();
        let others: Vec<MemberId> = self
            .topology()
            .borrow()
            .members
            .keys()
            .filter(|m| **m != me)
            .cloned()
            .collect();
        let request = PeerRequest::HasCache(cache.to_string());
        let asked = others.iter().map(|to| async {
            let confirmed = self.request(to, &request, HAS_CACHE_WAIT + Duration::from_millis(500));
            tokio::select! {
                reply = confirmed => {
                    if !matches!(reply, Ok(PeerReply::Done)) {
                        log::debug!("member {} did not confirm cache {cache}: {reply:?}", to.0);
                    }
                }
                () = self.until_gone(to) => {}
            }
        });
        futures_util::future::join_all(asked).await;
    }

    /// Returns once `member` is no longer in the topology.
    async fn until_gone(&self, member: &MemberId) {
        let mut topology = self.topology();
        while topology.borrow_and_update().members.contains_key(member) {
            if topology.changed().await.is_err() {
                return;
            }
        }
    }

    /// Has `change` agreed, wherever the leader is; gives up after a while
    /// as long as the failure timeout allows several elections.
    pub async fn propose(&self, change: Change) -> Result<Applied, ProposeError> {
        let deadline = tokio::time::Instant::now() + self.settings.failure_timeout * 5;
        self.propose_until(change, deadline).await
    }

    async fn propose_until(
        &self,
        change: Change,
        deadline: tokio::time::Instant,
    ) -> Result<Applied, ProposeError> {
        let mut last = ProposeError::NotLeader(None);
        while tokio::time::Instant::now() < deadline {
            let attempt = match &last {
                ProposeError::NotLeader(Some(leader)) if leader.name != self.settings.node_id => {
                    match leader.link.parse() {
                        Ok(address) => {
                            let peer = self.links.peer(&leader.name, address);
                            self.propose_at(&peer, &change).await
                        }
                        Err(_) => Err(ProposeError::Failed(format!("leader address {}", leader.link))),
                    }
                }
                _ => self.consensus.propose(change.clone()).await,
            };
            match attempt {
                Ok(applied) => return Ok(applied),
                Err(ProposeError::NotLeader(Some(leader))) => last = ProposeError::NotLeader(Some(leader)),
                Err(other) => {
                    last = other;
                    tokio::time::sleep(self.retry_pause()).await;
                }
            }
        }
        Err(last)
    }

    async fn join_through_seeds(
        &self,
        join: Change,
        deadline: tokio::time::Instant,
    ) -> Result<Applied, ProposeError> {
        let mut last = ProposeError::Failed("no seed answered".into());
        while tokio::time::Instant::now() < deadline {
            let timeout = self.settings.failure_timeout * 2;
            match propose_through(&self.links, &self.settings.seeds, &join, timeout).await {
                Ok(applied) => return Ok(applied),
                Err(e) => last = e,
            }
            tokio::time::sleep(self.retry_pause()).await;
        }
        Err(last)
    }

    async fn propose_at(
        &self,
        peer: &Peer<PeerRequest, PeerReply>,
        change: &Change,
    ) -> Result<Applied, ProposeError> {
        propose_at(peer, change, self.settings.failure_timeout * 2).await
    }

    fn retry_pause(&self) -> Duration {
        (self.settings.failure_timeout / 10).max(Duration::from_millis(20))
    }

    /// Leaves the cluster abruptly, as a crash would: the link closes and
    /// raft stops. (A graceful leave proposes `Change::Leave` first.)
    /// Leaves the cluster gracefully: has the others agree that it leaves,
    /// serves on while its copies are filled on the members that take them
    /// (asking again while another member's move is under way), stops
    /// acting on its segments once the cluster switched, and waits (at
    /// most ten failure timeouts) until the new primary of every segment
    /// it held has got as far as its copy. The caller stops the member
    /// after.
    pub async fn leave(&self) -> Result<(), String> {
        let me = MemberId(Arc::from(self.settings.node_id.as_str()));
        let change = Change::Leave {
            id: me.clone(),
            graceful: true,
        };
        let mut topology = self.topology();
        let deadline = tokio::time::Instant::now() + self.settings.failure_timeout * 5 + LEAVE_FILL_AT_MOST;
        let epoch = loop {
            self.propose(change.clone())
                .await
                .map_err(|e| format!("the cluster did not agree that this member leaves: {e}"))?;
            let learnt = topology.wait_for(|t| !t.members.contains_key(&me));
            match tokio::time::timeout(self.settings.failure_timeout * 2, learnt).await {
                Ok(Ok(left)) => break left.epoch,
                Ok(Err(_)) => return Err("the topology log stopped".to_string()),
                Err(_) if tokio::time::Instant::now() > deadline => {
                    return Err("this member has not learnt that it left".to_string())
                }
                Err(_) => continue,
            }
        };
        // Not a member any more: no lease, and no asking to rejoin.
        self.shared.lease.surrender();
        let Some(grid) = self.shared.grid.get() else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + self.settings.failure_timeout * 10;
        loop {
            if grid.handed_over(epoch).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err("new owners have not taken every copy in time".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(&self) {
        if let Some(gossip) = self.gossip.lock().await.take() {
            gossip.stop().await;
        }
        self.links.stop();
        let _ = self.consensus.raft().shutdown().await;
    }
}

/// While this member leads, proposes a `Leave` for every member gossip has
/// not heard for a while: a third of the failure timeout past gossip's own
/// verdict for a member it heard before, twice the timeout for one it never
/// heard (it may still be starting), so that the whole cluster learns of a
/// crash within about the failure timeout.
async fn remove_the_dead(
    consensus: Consensus,
    mut live: watch::Receiver<BTreeSet<Run>>,
    failure_timeout: Duration,
) {
    let mut heard: BTreeSet<Run> = BTreeSet::new();
    let mut silent_since: BTreeMap<MemberId, tokio::time::Instant> = BTreeMap::new();
    let mut tick = tokio::time::interval((failure_timeout / 10).max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = live.changed() => if changed.is_err() { return },
        }
        let live_now = live.borrow_and_update().clone();
        heard.extend(live_now.iter().cloned());
        let topology = consensus.topology().borrow().clone();
        silent_since.retain(|id, _| topology.members.contains_key(id));
        let leads = consensus.raft().current_leader().await == Some(consensus.id());
        let now = tokio::time::Instant::now();
        for (id, info) in &topology.members {
            let run = (id.0.to_string(), info.generation);
            if live_now.contains(&run) {
                silent_since.remove(id);
                continue;
            }
            let since = *silent_since.entry(id.clone()).or_insert(now);
            let grace = if heard.contains(&run) {
                failure_timeout / 3
            } else {
                failure_timeout * 2
            };
            if leads && now.duration_since(since) >= grace {
                log::warn!(
                    "member {} ({}) is silent: proposing that it left",
                    id.0,
                    info.link
                );
                match consensus
                    .propose(Change::Leave {
                        id: id.clone(),
                        graceful: false,
                    })
                    .await
                {
                    Ok(applied) => log::info!("member {} left the topology: {applied:?}", id.0),
                    Err(e) => log::warn!("member {} could not be removed yet: {e}", id.0),
                }
            }
        }
    }
}

/// Has `change` agreed through the first of the members at `addresses`
/// that can: each appends it if it leads or names the leader to ask.
async fn propose_through(
    links: &Arc<PeerLinks>,
    addresses: &[SocketAddr],
    change: &Change,
    timeout: Duration,
) -> Result<Applied, ProposeError> {
    let mut last = ProposeError::Failed("no member answered".into());
    for address in addresses {
        let peer = match links.introduce(*address).await {
            Ok(peer) => peer,
            Err(e) => {
                last = ProposeError::Failed(e.to_string());
                continue;
            }
        };
        match propose_at(&peer, change, timeout).await {
            Ok(applied) => return Ok(applied),
            Err(ProposeError::NotLeader(Some(leader))) => {
                let Ok(address) = leader.link.parse() else {
                    continue;
                };
                match propose_at(&links.peer(&leader.name, address), change, timeout).await {
                    Ok(applied) => return Ok(applied),
                    Err(e) => last = e,
                }
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn propose_at(
    peer: &Peer<PeerRequest, PeerReply>,
    change: &Change,
    timeout: Duration,
) -> Result<Applied, ProposeError> {
    let request = PeerRequest::Propose(change.clone());
    match peer.request(&request, timeout).await {
        Ok(PeerReply::Proposed(result)) => result,
        Ok(PeerReply::Refused(why)) => Err(ProposeError::Failed(why)),
        Ok(other) => Err(ProposeError::Failed(format!("unexpected reply {other:?}"))),
        Err(e) => Err(ProposeError::Failed(e.to_string())),
    }
}

/// Keeps the epoch said in link handshakes at the latest agreed one.
async fn follow_epoch(mut topology: tokio::sync::watch::Receiver<Arc<Topology>>, epoch: Arc<AtomicU64>) {
    loop {
        epoch.store(topology.borrow_and_update().epoch, Ordering::Release);
        if topology.changed().await.is_err() {
            return;
        }
    }
}

impl Service<PeerRequest, PeerReply> for Shared {
    fn serve(&self, from: Arc<str>, request: PeerRequest) -> BoxFuture<PeerReply> {
        let Some(consensus) = self.consensus.get().cloned() else {
            return Box::pin(async { PeerReply::Refused("this member is still starting".into()) });
        };
        match request {
            PeerRequest::Raft(request) => {
                Box::pin(async move { PeerReply::Raft(consensus.serve(request).await) })
            }
            PeerRequest::Propose(change) => {
                Box::pin(async move { PeerReply::Proposed(consensus.propose(change).await) })
            }
            PeerRequest::Lease => {
                let grant = self.grant_lease(&consensus, &from);
                Box::pin(async move { PeerReply::Lease(grant) })
            }
            PeerRequest::Replica(message) => match self.grid.get().cloned() {
                Some(grid) => Box::pin(async move { PeerReply::Replica(grid.replicate(message).await) }),
                None => Box::pin(async { PeerReply::Refused("this member's grid is still starting".into()) }),
            },
            PeerRequest::Forward(request) => match (self.grid.get().cloned(), self.events.get()) {
                (Some(grid), Some((_, watchers))) => {
                    if let Some(filter) = request.watches() {
                        // Before the snapshot is taken: every later event
                        // it matches goes to the asker.
                        watchers.begin(MemberId(from), request.cache().clone(), filter);
                    }
                    Box::pin(async move { PeerReply::Forwarded(grid.serve_forwarded(request).await) })
                }
                _ => Box::pin(async { PeerReply::Refused("this member's grid is still starting".into()) }),
            },
            PeerRequest::HasCache(name) => {
                let grid = self.grid.get().cloned();
                Box::pin(async move {
                    let deadline = Instant::now() + HAS_CACHE_WAIT;
                    while Instant::now() < deadline {
                        if grid.as_ref().is_some_and(|grid| grid.cache(&name).is_ok()) {
                            return PeerReply::Done;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    PeerReply::Refused(format!("cache {name} is not here yet"))
                })
            }
            PeerRequest::Watch(caches) => {
                if let Some((_, watchers)) = self.events.get() {
                    watchers.set(MemberId(from), caches);
                }
                Box::pin(async { PeerReply::Done })
            }
            PeerRequest::Events(relayed) => {
                // Handed on here, in the order the link read them.
                if let Some((listener, _)) = self.events.get() {
                    listener.do_send(relayed);
                }
                Box::pin(async { PeerReply::Done })
            }
        }
    }
}

impl Shared {
    /// The lease this member can grant `to`: only while it leads with a
    /// majority's backing, and only to a member of the topology.
    fn grant_lease(&self, consensus: &Consensus, to: &str) -> Option<LeaseGrant> {
        let topology = consensus.topology().borrow().clone();
        if !topology.members.contains_key(to) {
            return None;
        }
        let metrics = consensus.raft().metrics().borrow().clone();
        if metrics.current_leader != Some(consensus.id()) {
            return None;
        }
        let since_ack = metrics.millis_since_quorum_ack.map(Duration::from_millis);
        self.lease.grant(since_ack, topology.epoch)
    }
}

/// Renews this member's lease four times a term: from its own backing
/// when it leads, from the leader's grant when it does not.
async fn keep_lease(shared: Arc<Shared>) {
    let lease = shared.lease.clone();
    let mut tick = tokio::time::interval(lease.term() / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held_last = std::time::Instant::now();
    loop {
        tick.tick().await;
        let (Some(consensus), Some(links)) = (shared.consensus.get(), shared.links()) else {
            return;
        };
        if lease.holds() {
            held_last = std::time::Instant::now();
        } else if let Some(join) = shared
            .join
            .get()
            .filter(|_| held_last.elapsed() > lease.term() * 4 && !lease.is_surrendered())
        {
            // Long without a lease: the majority may have taken this member
            // for dead (a long pause, a partition). Ask to be let back in.
            held_last = std::time::Instant::now();
            rejoin(consensus, &links, join, lease.term()).await;
        }
        // Taken before anything is read, so every lease runs from no later
        // than the backing it rests on.
        let asked_at = std::time::Instant::now();
        let metrics = consensus.raft().metrics().borrow().clone();
        let Some(leader) = metrics.current_leader else {
            continue;
        };
        let grant = if leader == consensus.id() {
            shared.grant_lease(consensus, &links.identity().node_id)
        } else {
            let Some(node) = metrics.membership_config.membership().get_node(&leader).cloned() else {
                continue;
            };
            let Ok(address) = node.link.parse() else {
                continue;
            };
            let peer = links.peer(&node.name, address);
            match peer.request(&PeerRequest::Lease, lease.term() / 2).await {
                Ok(PeerReply::Lease(grant)) => grant,
                _ => None,
            }
        };
        if let Some(grant) = grant {
            lease.extend(asked_at, Duration::from_millis(grant.remaining_ms));
        }
    }
}

/// Proposes this member's `join` again through the members it last knew.
async fn rejoin(consensus: &Consensus, links: &Arc<PeerLinks>, join: &Change, timeout: Duration) {
    let me = &links.identity().node_id;
    let addresses: Vec<SocketAddr> = consensus
        .topology()
        .borrow()
        .members
        .iter()
        .filter(|(id, _)| *id.0 != **me)
        .map(|(_, info)| info.link)
        .collect();
    match propose_through(links, &addresses, join, timeout).await {
        Ok(Applied::Unchanged) => {}
        Ok(applied) => log::warn!("this member was taken for dead and has rejoined: {applied:?}"),
        Err(e) => log::info!("no lease, and no majority reached to rejoin: {e}"),
    }
}

/// Raft's messages over the link.
struct LinkTransport(Arc<Shared>);

impl RaftTransport for LinkTransport {
    fn call(
        &self,
        target: &RaftNode,
        request: RaftRequest,
        timeout: Duration,
    ) -> BoxFuture<Result<RaftReply, String>> {
        let links = self.0.links();
        let target = target.clone();
        Box::pin(async move {
            let links = links.ok_or("the node is stopping")?;
            let address = target
                .link
                .parse()
                .map_err(|e| format!("address {}: {e}", target.link))?;
            let peer = links.peer(&target.name, address);
            match peer.request(&PeerRequest::Raft(request), timeout).await {
                Ok(PeerReply::Raft(reply)) => Ok(reply),
                Ok(PeerReply::Refused(why)) => Err(why),
                Ok(other) => Err(format!("unexpected reply {other:?}")),
                Err(LinkError::Timeout(peer)) => Err(format!("{peer} did not answer in time")),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::CacheConfig;

    fn settings(name: &str, seeds: Vec<SocketAddr>) -> Settings {
        Settings {
            cluster_id: "test".into(),
            node_id: name.into(),
            generation: 1,
            link: "127.0.0.1:0".parse().unwrap(),
            api: format!("{name}:8080"),
            seeds,
            failure_timeout: Duration::from_millis(1000),
            secret: Some(Arc::from(&b"s"[..])),
            traffic: LinkTraffic::default(),
        }
    }

    async fn until(what: &str, mut holds: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !holds() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_join_through_seeds_and_agree_on_every_change() {
        let n1 = ClusterMember::start(settings("n1", vec![])).await.unwrap();
        let n2 = ClusterMember::start(settings("n2", vec![n1.link_address()]))
            .await
            .unwrap();
        let n3 = ClusterMember::start(settings("n3", vec![n2.link_address()]))
            .await
            .unwrap();
        let members = [&n1, &n2, &n3];
        until("three members everywhere", || {
            members.iter().all(|m| m.topology().borrow().members.len() == 3)
        })
        .await;
        let three_voters = || {
            let metrics = n1.consensus().raft().metrics().borrow().clone();
            let membership = metrics.membership_config.membership().clone();
            // Uniform, not a joint config still needing the old majority.
            membership.get_joint_config().len() == 1 && membership.voter_ids().count() == 3
        };
        until("three voters", three_voters).await;

        until("every member holds a lease", || {
            members.iter().all(|m| m.lease().holds())
        })
        .await;

        // Proposed on a member that may not lead: agreed everywhere all the same.
        let create = Change::CreateCache {
            incarnation: None,
            name: "scores".into(),
            config: CacheConfig {
                segments: 16,
                num_owners: Some(2),
                ..CacheConfig::default()
            },
        };
        assert_eq!(n3.propose(create.clone()).await, Ok(Applied::CacheCreated));
        assert_eq!(n2.propose(create).await, Ok(Applied::Unchanged));
        until("the cache everywhere", || {
            members
                .iter()
                .all(|m| m.topology().borrow().caches.contains_key("scores"))
        })
        .await;
        let tables: Vec<_> = members
            .iter()
            .map(|m| m.topology().borrow().caches["scores"].clone())
            .collect();
        assert!(tables.windows(2).all(|w| w[0] == w[1]), "one table everywhere");
        let epoch = n1.topology().borrow().epoch;
        assert_eq!(epoch, 3, "one epoch per member that joined");

        // A member taken for dead while it lives loses its lease, and then
        // asks to be let back in.
        assert_eq!(
            n1.propose(Change::Leave {
                id: n2.id(),
                graceful: false
            })
            .await,
            Ok(Applied::Epoch(4))
        );
        until("n2 back in the topology", || {
            let topology = n1.topology().borrow().clone();
            topology.epoch == 5 && topology.members.contains_key(&n2.id())
        })
        .await;
        until("n2 holding a lease again", || n2.lease().holds()).await;
        until("three voters again", three_voters).await;

        // A member that stops answering is found out by gossip and agreed
        // away by the rest, with no one asking.
        n3.stop().await;
        until("two members", || {
            [&n1, &n2]
                .iter()
                .all(|m| m.topology().borrow().members.len() == 2)
        })
        .await;
        assert_eq!(n1.topology().borrow().epoch, 6);
        let table = n2.topology().borrow().caches["scores"].clone();
        assert_eq!(table.owners.owned_by(&n3.id()).count(), 0);
        until("the two hold leases", || {
            [&n1, &n2].iter().all(|m| m.lease().holds())
        })
        .await;

        // Alone, the leader has no majority: its lease runs out and stays
        // out, though it still believes it leads.
        let leader_id = n1.consensus().raft().current_leader().await;
        let (leader, other) = if leader_id == Some(n1.consensus().id()) {
            (n1, n2)
        } else {
            (n2, n1)
        };
        other.stop().await;
        let term = leader.lease().term();
        tokio::time::sleep(term + term / 2).await;
        for _ in 0..20 {
            assert!(
                !leader.lease().holds(),
                "a member cut off from the majority holds no lease"
            );
            tokio::time::sleep(term / 5).await;
        }
        leader.stop().await;
    }
}
