//! The topology log, agreed by a majority of the cluster's voters with
//! openraft (the 0.9 line): its type configuration, the in-memory log and
//! state machine it writes through, and [`Consensus`], the node's handle on
//! it. The state machine is a [`Topology`]; each applied entry publishes
//! the new topology on a watch channel, which is how the rest of the node
//! learns of a change only once a majority has agreed on it.
//!
//! Raft traffic rides the inter-node link through a [`RaftTransport`] the
//! node supplies, so this module knows nothing of connections.
//!
//! The log lives in memory, as the grid does. A node that restarts comes
//! back as a new member of the consensus group (a fresh raft id for its
//! new generation, see [`raft_id`]), never as a voter that forgot its
//! vote; the leader's steward swaps the old run out for the new one.

// openraft's trait methods return its large error types; so do the helpers
// that build them.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::future::Future;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, LogState, RaftLogId, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    SnapshotPolicy, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use super::topology::{Applied, Change, Topology};

/// How raft reaches a member: its name and link address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftNode {
    pub name: String,
    pub link: String,
}

openraft::declare_raft_types!(
    /// The topology log's types.
    pub TopologyLog:
        D = Change,
        R = Applied,
        Node = RaftNode,
);

pub type Raft = openraft::Raft<TopologyLog>;
type Error<E = openraft::error::Infallible> = RaftError<u64, E>;

/// The raft id of one run of a node: its name and generation, hashed.
pub fn raft_id(name: &str, generation: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(format!("{name}\0{generation}").as_bytes())
}

/// Raft's timings for a cluster whose failure timeout is `failure_timeout`:
/// a leader that went silent is replaced well within it.
pub fn raft_config(cluster_id: &str, failure_timeout: Duration) -> Arc<openraft::Config> {
    let timeout = failure_timeout.as_millis() as u64;
    let config = openraft::Config {
        cluster_name: cluster_id.to_string(),
        heartbeat_interval: (timeout / 10).max(10),
        election_timeout_min: (timeout / 3).max(40),
        election_timeout_max: (timeout / 2).max(60),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 100,
        ..openraft::Config::default()
    };
    Arc::new(
        config
            .validate()
            .expect("raft timings derived from the failure timeout are valid"),
    )
}

/// A raft message between members.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    Vote(VoteRequest<u64>),
    Append(AppendEntriesRequest<TopologyLog>),
    Snapshot(InstallSnapshotRequest<TopologyLog>),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    Vote(Result<VoteResponse<u64>, Error>),
    Append(Result<AppendEntriesResponse<u64>, Error>),
    Snapshot(Result<InstallSnapshotResponse<u64>, Error<InstallSnapshotError>>),
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Carries raft messages to other members: the node's inter-node link.
pub trait RaftTransport: Send + Sync + 'static {
    /// Sends `request` to `target` and waits up to `timeout` for its reply.
    fn call(
        &self,
        target: &RaftNode,
        request: RaftRequest,
        timeout: Duration,
    ) -> BoxFuture<Result<RaftReply, String>>;
}

/// Why a change was not applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    #[error("this member is not the leader; the leader is {0:?}")]
    NotLeader(Option<RaftNode>),
    #[error("the topology log refused the change: {0}")]
    Failed(String),
}

/// The node's handle on the topology log.
#[derive(Clone)]
pub struct Consensus {
    raft: Raft,
    id: u64,
    topology: watch::Receiver<Arc<Topology>>,
}

impl Consensus {
    /// Starts this node's raft member. It takes part in no cluster until
    /// [`Consensus::found`] makes it one, or a leader adds it.
    pub async fn start(
        id: u64,
        config: Arc<openraft::Config>,
        transport: Arc<dyn RaftTransport>,
    ) -> Result<Self, String> {
        let (published, topology) = watch::channel(Arc::new(Topology::default()));
        let machine = StateMachine {
            inner: Arc::new(Mutex::new(Machine::default())),
            published: Arc::new(published),
        };
        let raft = Raft::new(id, config, Network(transport), LogStore::default(), machine)
            .await
            .map_err(|e| format!("starting the topology log: {e}"))?;
        Ok(Consensus { raft, id, topology })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Makes this member the one voter of a new cluster.
    pub async fn found(&self, node: RaftNode) -> Result<(), String> {
        let voters = BTreeMap::from([(self.id, node)]);
        self.raft.initialize(voters).await.map_err(|e| e.to_string())
    }

    /// The latest agreed topology, and its changes.
    pub fn topology(&self) -> watch::Receiver<Arc<Topology>> {
        self.topology.clone()
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Appends `change` to the log if this member leads, and waits until a
    /// majority agreed and it was applied.
    pub async fn propose(&self, change: Change) -> Result<Applied, ProposeError> {
        match self.raft.client_write(change).await {
            Ok(written) => Ok(written.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                Err(ProposeError::NotLeader(to.leader_node))
            }
            Err(e) => Err(ProposeError::Failed(e.to_string())),
        }
    }

    /// Answers a raft message from another member.
    pub async fn serve(&self, request: RaftRequest) -> RaftReply {
        match request {
            RaftRequest::Vote(vote) => RaftReply::Vote(self.raft.vote(vote).await),
            RaftRequest::Append(append) => RaftReply::Append(self.raft.append_entries(append).await),
            RaftRequest::Snapshot(snapshot) => {
                RaftReply::Snapshot(self.raft.install_snapshot(snapshot).await)
            }
        }
    }

    /// While this member leads, keeps the voters equal to the topology's
    /// members: a member that joined is added (as a learner first, so it
    /// has caught up before it counts), one that left is removed.
    pub async fn steward(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.raft.current_leader().await != Some(self.id) {
                continue;
            }
            if let Err(e) = self.align_voters(every * 20).await {
                log::warn!("the topology log's voters are not yet the members: {e}");
            }
        }
    }

    async fn align_voters(&self, timeout: Duration) -> Result<(), String> {
        let topology = self.topology.borrow().clone();
        let wanted: BTreeMap<u64, RaftNode> = topology
            .members
            .iter()
            .map(|(id, info)| {
                let node = RaftNode {
                    name: id.0.to_string(),
                    link: info.link.to_string(),
                };
                (info.raft_id, node)
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<u64> = membership.membership().voter_ids().collect();
        let learners: BTreeSet<u64> = membership.membership().learner_ids().collect();
        let target: BTreeSet<u64> = wanted.keys().copied().collect();
        if voters == target {
            return Ok(());
        }
        for (id, node) in &wanted {
            if !voters.contains(id) && !learners.contains(id) {
                let added =
                    tokio::time::timeout(timeout, self.raft.add_learner(*id, node.clone(), true)).await;
                added
                    .map_err(|_| format!("member {} did not catch up in time", node.name))?
                    .map_err(|e| e.to_string())?;
            }
        }
        self.raft
            .change_membership(target, false)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

struct Network(Arc<dyn RaftTransport>);

impl RaftNetworkFactory<TopologyLog> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &RaftNode) -> Connection {
        Connection {
            transport: self.0.clone(),
            target,
            node: node.clone(),
        }
    }
}

struct Connection {
    transport: Arc<dyn RaftTransport>,
    target: u64,
    node: RaftNode,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LinkFailure(String);

impl Connection {
    async fn call<E: std::error::Error>(
        &self,
        request: RaftRequest,
        option: &RPCOption,
    ) -> Result<RaftReply, RPCError<u64, RaftNode, Error<E>>> {
        self.transport
            .call(&self.node, request, option.hard_ttl())
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&LinkFailure(e))))
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<u64, RaftNode, Error<E>> {
        RPCError::Network(NetworkError::new(&LinkFailure(
            "a reply to another request".into(),
        )))
    }

    fn remote<T, E: std::error::Error>(
        &self,
        reply: Result<T, Error<E>>,
    ) -> Result<T, RPCError<u64, RaftNode, Error<E>>> {
        reply
            .map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TopologyLog> for Connection {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TopologyLog>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, RaftNode, Error>> {
        match self.call(RaftRequest::Append(request), &option).await? {
            RaftReply::Append(reply) => self.remote(reply),
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TopologyLog>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, RaftNode, Error<InstallSnapshotError>>> {
        match self.call(RaftRequest::Snapshot(request), &option).await? {
            RaftReply::Snapshot(reply) => self.remote(reply),
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        request: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, RaftNode, Error>> {
        match self.call(RaftRequest::Vote(request), &option).await? {
            RaftReply::Vote(reply) => self.remote(reply),
            _ => Err(self.unexpected()),
        }
    }
}

/// The raft log, in memory.
#[derive(Clone, Default)]
struct LogStore {
    inner: Arc<Mutex<Log>>,
}

#[derive(Default)]
struct Log {
    entries: BTreeMap<u64, Entry<TopologyLog>>,
    last_purged: Option<LogId<u64>>,
    committed: Option<LogId<u64>>,
    vote: Option<Vote<u64>>,
}

impl RaftLogReader<TopologyLog> for LogStore {
    async fn try_get_log_entries<R: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: R,
    ) -> Result<Vec<Entry<TopologyLog>>, StorageError<u64>> {
        let log = self.inner.lock().await;
        Ok(log.entries.range(range).map(|(_, entry)| entry.clone()).collect())
    }
}

impl RaftLogStorage<TopologyLog> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TopologyLog>, StorageError<u64>> {
        let log = self.inner.lock().await;
        let last = log.entries.values().next_back().map(|e| *e.get_log_id());
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: last.or(log.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.inner.lock().await.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        self.inner.lock().await.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TopologyLog>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TopologyLog>> + Send,
    {
        let mut log = self.inner.lock().await;
        for entry in entries {
            log.entries.insert(entry.get_log_id().index, entry);
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, from: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.inner.lock().await.entries.split_off(&from.index);
        Ok(())
    }

    async fn purge(&mut self, upto: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut log = self.inner.lock().await;
        log.entries = log.entries.split_off(&(upto.index + 1));
        log.last_purged = Some(upto);
        Ok(())
    }
}

/// The state machine: the topology, and what raft needs to know of it.
#[derive(Clone)]
struct StateMachine {
    inner: Arc<Mutex<Machine>>,
    published: Arc<watch::Sender<Arc<Topology>>>,
}

#[derive(Default)]
struct Machine {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, RaftNode>,
    topology: Topology,
    snapshot: Option<(SnapshotMeta<u64, RaftNode>, Vec<u8>)>,
    snapshots_built: u64,
}

impl StateMachine {
    fn publish(&self, topology: &Topology) {
        self.published.send_replace(Arc::new(topology.clone()));
    }
}

fn snapshot_of(meta: &SnapshotMeta<u64, RaftNode>, data: &[u8]) -> Snapshot<TopologyLog> {
    Snapshot {
        meta: meta.clone(),
        snapshot: Box::new(Cursor::new(data.to_vec())),
    }
}

impl RaftSnapshotBuilder<TopologyLog> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TopologyLog>, StorageError<u64>> {
        let mut machine = self.inner.lock().await;
        let data =
            rmp_serde::to_vec_named(&machine.topology).map_err(|e| StorageIOError::read_state_machine(&e))?;
        machine.snapshots_built += 1;
        let snapshot_id = match machine.last_applied {
            Some(last) => format!("{}-{}-{}", last.leader_id, last.index, machine.snapshots_built),
            None => format!("--{}", machine.snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id: machine.last_applied,
            last_membership: machine.membership.clone(),
            snapshot_id,
        };
        let snapshot = snapshot_of(&meta, &data);
        machine.snapshot = Some((meta, data));
        Ok(snapshot)
    }
}

impl RaftStateMachine<TopologyLog> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, RaftNode>), StorageError<u64>> {
        let machine = self.inner.lock().await;
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TopologyLog>> + Send,
    {
        let mut machine = self.inner.lock().await;
        let mut results = Vec::new();
        let mut changed = false;
        for entry in entries {
            machine.last_applied = Some(entry.log_id);
            let applied = match entry.payload {
                EntryPayload::Blank => Applied::Unchanged,
                EntryPayload::Normal(change) => {
                    let applied = machine.topology.apply(&change);
                    changed |= applied != Applied::Unchanged;
                    applied
                }
                EntryPayload::Membership(membership) => {
                    machine.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Applied::Unchanged
                }
            };
            results.push(applied);
        }
        if changed {
            self.publish(&machine.topology);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, RaftNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let topology: Topology = rmp_serde::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let mut machine = self.inner.lock().await;
        machine.last_applied = meta.last_log_id;
        machine.membership = meta.last_membership.clone();
        machine.topology = topology;
        machine.snapshot = Some((meta.clone(), data));
        self.publish(&machine.topology);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TopologyLog>>, StorageError<u64>> {
        let machine = self.inner.lock().await;
        Ok(machine
            .snapshot
            .as_ref()
            .map(|(meta, data)| snapshot_of(meta, data)))
    }
}
