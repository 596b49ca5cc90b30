//! A partition's part in keeping its segment's copies on other owners.
//!
//! A partition is the segment's only owner ([`Role::Solo`]), its primary,
//! or one of its backups, at an epoch the cluster agreed on. The primary
//! orders the segment's changes: after each write it sends the
//! [`SegmentOp`]s the write made to every backup as one numbered batch and
//! holds its mailbox until every backup applied it, so the write is
//! acknowledged (and its events published) only once every owner has it,
//! and nothing reads a write an owner lacks. A backup applies batches in
//! order, refuses those of another epoch (fencing a primary the cluster
//! has replaced) and says how far it got when a batch does not follow its
//! last; the primary then sends it the whole segment ([`SegmentImage`]).
//!
//! A partition that becomes primary takes over before it serves anything:
//! it asks the other owners how far their copies got, takes the whole copy
//! of one that got further than its own (a backup may hold a write its old
//! primary never acknowledged), and sends its copy to every backup, so new
//! owners receive the segment and all owners start the epoch level.
//!
//! While the cluster moves a cache to a target table (a member joined),
//! the primary also fills the owners the segment gains (`joining`): the
//! whole segment, then every batch, with no write waiting for them
//! (`partition/feed.rs`). A batch a backup refuses because its member has
//! not applied the primary's epoch yet is sent again for a moment, so a
//! write waits for the topology to arrive rather than fail.
//!
//! How batches reach other members is the cluster's business: the grid is
//! handed a [`ReplicaSink`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::owners::MemberId;
use super::segment::{SegmentImage, SegmentOp};
use super::{CacheName, SegmentId};

/// What one member sends another about a segment it owns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ReplicaMessage {
    /// The changes of one write, `batch` numbering it in the segment's
    /// stream of batches.
    Batch {
        cache: CacheName,
        segment: SegmentId,
        epoch: u64,
        batch: u64,
        ops: Vec<SegmentOp>,
    },
    /// The whole segment, as of batch `batch`.
    Image {
        cache: CacheName,
        segment: SegmentId,
        epoch: u64,
        batch: u64,
        image: SegmentImage,
    },
    /// From a new primary whose copy is at `sequence`: a copy as far on is
    /// level, and takes batches from `batch` on; one that is not says it
    /// is behind, and is sent the whole segment. (Saves sending a whole
    /// segment to every backup at every epoch.)
    Align {
        cache: CacheName,
        segment: SegmentId,
        epoch: u64,
        batch: u64,
        sequence: u64,
    },
    /// How far the receiver's copy got: asked by a new primary of `epoch`
    /// (which fences the copy: it takes nothing of an older epoch after).
    Position {
        cache: CacheName,
        segment: SegmentId,
        epoch: u64,
    },
    /// The receiver's whole copy: fetched by a new primary of `epoch`
    /// behind it (fencing it too).
    Fetch {
        cache: CacheName,
        segment: SegmentId,
        epoch: u64,
    },
}

impl ReplicaMessage {
    /// The cache and segment the message is about.
    pub fn segment(&self) -> (&CacheName, SegmentId) {
        match self {
            ReplicaMessage::Batch { cache, segment, .. }
            | ReplicaMessage::Image { cache, segment, .. }
            | ReplicaMessage::Align { cache, segment, .. }
            | ReplicaMessage::Position { cache, segment, .. }
            | ReplicaMessage::Fetch { cache, segment, .. } => (cache, *segment),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ReplicaReply {
    Applied,
    /// The sequence number of the receiver's copy.
    Position {
        sequence: u64,
    },
    Image(SegmentImage),
    /// The batch does not follow the last one applied, `have`.
    Behind {
        have: u64,
    },
    /// The receiver owns the segment at another epoch.
    OtherEpoch {
        epoch: u64,
    },
    /// The receiver is not a backup of the segment.
    NotOwner,
}

pub type ReplicaFuture = Pin<Box<dyn Future<Output = Result<ReplicaReply, String>> + Send>>;

/// Carries a segment's changes to its other owners.
pub trait ReplicaSink: Send + Sync + 'static {
    fn send(&self, to: &MemberId, message: ReplicaMessage) -> ReplicaFuture;
}

/// What a partition is to its segment.
#[derive(Clone)]
pub enum Role {
    /// The only owner: nothing to replicate.
    Solo,
    Primary {
        epoch: u64,
        backups: Vec<MemberId>,
        sink: Arc<dyn ReplicaSink>,
        /// Other members that may hold a copy further on than this one's
        /// (the segment's previous primary, a member leaving the cluster):
        /// asked, with the backups, when taking over.
        sources: Vec<MemberId>,
        /// Owners the segment gains once the cluster moves to its target
        /// table: each is filled (the whole segment, then every batch)
        /// without a write waiting for it, so it is level when it takes
        /// its role.
        joining: Vec<MemberId>,
    },
    Backup {
        epoch: u64,
        /// The copy of an owner of the target table, being filled: not
        /// yet known to hold everything, so nothing reads it.
        filling: bool,
    },
    /// A copy this member no longer owns, kept until `to`, the segment's
    /// primary at `epoch`, has got as far (it may take it from here).
    Departing {
        epoch: u64,
        to: MemberId,
        sink: Arc<dyn ReplicaSink>,
    },
}

impl Role {
    /// A backup's role at `epoch`.
    pub fn backup(epoch: u64) -> Self {
        Role::Backup {
            epoch,
            filling: false,
        }
    }

    /// Whether this partition leads its segment: takes clients' writes
    /// (and evicts) as its only owner or primary.
    pub fn leads(&self) -> bool {
        matches!(self, Role::Solo | Role::Primary { .. })
    }

    /// Whether this partition's writes are copied anywhere.
    pub fn replicates(&self) -> bool {
        matches!(self, Role::Primary { backups, joining, .. } if !backups.is_empty() || !joining.is_empty())
    }
}

/// The partition's role and where its stream of batches stands.
pub struct Replication {
    pub role: Role,
    /// The last batch sent (primary) or applied (backup).
    pub batch: u64,
    /// The highest epoch whose new primary asked this copy how far it got:
    /// from then on it takes no write of an older epoch, as primary or as
    /// backup, so nothing lands here after the new primary took its copy.
    pub fenced: u64,
    /// A backup's place in the stream of the epoch before its current one
    /// (epoch, last batch): its primary there may still send the batch of
    /// a write it made before it learnt of the new epoch, which is taken
    /// (as it would have been a moment earlier) until a primary of a later
    /// epoch asks how far this copy got.
    pub before: Option<(u64, u64)>,
    /// Whether the segment is moving here: a primary taking over (until
    /// every backup is level) or a copy departing (until handed over).
    pub moving: bool,
    /// A primary's doubt: a batch (or a take-over) did not reach every
    /// backup, so this copy may hold writes another owner lacks. Until a
    /// batch reaches them all again, what a client would see of such a
    /// write (a read, a retried write's remembered outcome) waits for the
    /// backups to be brought level.
    pub uncertain: bool,
}

impl Replication {
    pub fn solo() -> Self {
        Replication {
            role: Role::Solo,
            batch: 0,
            fenced: 0,
            before: None,
            moving: false,
            uncertain: false,
        }
    }

    /// Whether this copy, as primary, may take a client's write now: not
    /// once a primary of a later epoch has asked for it.
    pub fn fenced_off(&self) -> bool {
        matches!(self.role, Role::Primary { epoch, .. } if epoch < self.fenced)
    }

    /// Whether a backup takes `batch` at `epoch` now: `None` when it does,
    /// else the reply that says why not.
    pub fn refusal(&self, epoch: u64, batch: Option<u64>) -> Option<ReplicaReply> {
        if self.late_batch(epoch, batch) {
            return None;
        }
        match self.role {
            Role::Backup { epoch: ours, .. } if ours != epoch || ours < self.fenced => {
                Some(ReplicaReply::OtherEpoch {
                    epoch: ours.max(self.fenced),
                })
            }
            Role::Backup { .. } => match batch {
                Some(batch) if batch != self.batch + 1 => Some(ReplicaReply::Behind { have: self.batch }),
                _ => None,
            },
            _ => Some(ReplicaReply::NotOwner),
        }
    }

    /// Whether `batch` of `epoch` is the next of the epoch before this
    /// backup's (see [`Replication::before`]).
    pub fn late_batch(&self, epoch: u64, batch: Option<u64>) -> bool {
        matches!(
            (self.role.clone(), self.before, batch),
            (Role::Backup { epoch: ours, .. }, Some((then, last)), Some(batch))
                if epoch == then && epoch < ours && batch == last + 1 && self.fenced <= epoch
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use actix::{Actor, Addr, Context, Handler};
    use tokio::sync::mpsc;

    use super::*;
    use crate::grid::cache::CacheShared;
    use crate::grid::partition::{FeedsLevel, Partition, Put, Remove, Replicate, SetRole, TakeSnapshot};
    use crate::grid::segment::{Precondition, PutRequest};
    use crate::grid::{CacheConfig, Event, GridError, JsonValue, Published};
    use crate::metrics::Metrics;

    /// Delivers batches straight to the backups' partitions, or drops the
    /// next one when told to.
    #[derive(Default)]
    struct Direct {
        backups: Mutex<HashMap<MemberId, Addr<Partition>>>,
        drop_next: AtomicBool,
    }

    impl ReplicaSink for Direct {
        fn send(&self, to: &MemberId, message: ReplicaMessage) -> ReplicaFuture {
            let backup = self.backups.lock().unwrap().get(to).cloned();
            let dropped = self.drop_next.swap(false, Ordering::SeqCst);
            Box::pin(async move {
                if dropped {
                    return Err("lost on the way".to_string());
                }
                let backup = backup.ok_or("no such member")?;
                backup.send(Replicate(message)).await.map_err(|e| e.to_string())
            })
        }
    }

    struct Collector(mpsc::UnboundedSender<Arc<Event>>);

    impl Actor for Collector {
        type Context = Context<Self>;
    }

    impl Handler<Published> for Collector {
        type Result = ();
        fn handle(&mut self, Published(event): Published, _: &mut Context<Self>) {
            let _ = self.0.send(event);
        }
    }

    fn partition(config: &CacheConfig) -> (Addr<Partition>, mpsc::UnboundedReceiver<Arc<Event>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = CacheShared::new(
            CacheName::parse("c").unwrap(),
            config.clone(),
            Metrics::new().grid.clone(),
        );
        let sink = Collector(tx).start().recipient();
        (Partition::new(shared, SegmentId(0), sink).start(), rx)
    }

    fn member(name: &str) -> MemberId {
        MemberId(Arc::from(name))
    }

    /// A primary and one backup, both at epoch 1.
    async fn pair(
        config: CacheConfig,
    ) -> (
        Addr<Partition>,
        Addr<Partition>,
        Arc<Direct>,
        [mpsc::UnboundedReceiver<Arc<Event>>; 2],
    ) {
        let (primary, primary_events) = partition(&config);
        let (backup, backup_events) = partition(&config);
        let sink = Arc::new(Direct::default());
        sink.backups.lock().unwrap().insert(member("b"), backup.clone());
        backup.send(SetRole(Role::backup(1))).await.unwrap();
        let role = Role::Primary {
            epoch: 1,
            backups: vec![member("b")],
            sink: sink.clone(),
            sources: Vec::new(),
            joining: Vec::new(),
        };
        primary.send(SetRole(role)).await.unwrap();
        (primary, backup, sink, [primary_events, backup_events])
    }

    fn put(key: &str, value: &str, lifespan_ms: Option<u64>) -> Put {
        Put(PutRequest {
            key: Arc::from(key),
            value: JsonValue::parse(value).unwrap(),
            precondition: Precondition::None,
            lifespan_ms,
            op: None,
        })
    }

    async fn state(partition: &Addr<Partition>) -> (Vec<(String, String, u64)>, u64) {
        let snapshot = partition
            .send(TakeSnapshot {
                filter: Some(crate::grid::KeyFilter::All),
            })
            .await
            .unwrap();
        let entries = snapshot
            .entries
            .into_iter()
            .map(|e| (e.key.to_string(), e.value.get().to_string(), e.version.0))
            .collect();
        (entries, snapshot.position.version.0)
    }

    fn drain(events: &mut mpsc::UnboundedReceiver<Arc<Event>>) -> Vec<uuid::Uuid> {
        std::iter::from_fn(|| events.try_recv().ok())
            .map(|e| e.id)
            .collect()
    }

    #[actix::test]
    async fn a_write_is_acknowledged_once_every_backup_applied_it() {
        let config = CacheConfig {
            max_entries: Some(3),
            ..CacheConfig::default()
        };
        let (primary, backup, _, [mut primary_events, mut backup_events]) = pair(config).await;
        primary
            .send(put("a", "0.22941408906430394", None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            state(&backup).await,
            state(&primary).await,
            "the backup had it before the ack"
        );
        primary.send(put("t", "1", Some(30))).await.unwrap().unwrap();
        let removed = Remove {
            key: Arc::from("a"),
            precondition: Precondition::None,
            op: None,
        };
        primary.send(removed).await.unwrap().unwrap();
        for n in 0..6 {
            primary
                .send(put(&format!("k{n}"), "[1, 2]", None))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                state(&backup).await,
                state(&primary).await,
                "after write {n} and its evictions"
            );
        }
        // The primary's reaper expires `t`; the backup follows, by itself never.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (entries, position) = state(&primary).await;
        assert_eq!(entries.len(), 3, "max_entries holds on the primary");
        assert_eq!(state(&backup).await, (entries, position));
        let primary_ids = drain(&mut primary_events);
        assert_eq!(primary_ids.len() as u64, position, "one event per version");
        assert_eq!(
            drain(&mut backup_events),
            primary_ids,
            "the backup reports the same events"
        );
    }

    #[actix::test]
    async fn a_joining_owner_is_filled_while_writes_go_on_without_waiting_for_it() {
        let (primary, backup, sink, _events) = pair(CacheConfig::default()).await;
        for n in 0..50 {
            let value = n.to_string();
            primary
                .send(put(&format!("k{n}"), &value, None))
                .await
                .unwrap()
                .unwrap();
        }
        // Epoch 2 gains owner `j`, whose member cannot be reached yet.
        let (joining, _joining_events) = partition(&CacheConfig::default());
        backup.send(SetRole(Role::backup(2))).await.unwrap();
        let filling = Role::Backup {
            epoch: 2,
            filling: true,
        };
        joining.send(SetRole(filling)).await.unwrap();
        let role = Role::Primary {
            epoch: 2,
            backups: vec![member("b")],
            sink: sink.clone(),
            sources: Vec::new(),
            joining: vec![member("j")],
        };
        primary.send(SetRole(role)).await.unwrap();
        for n in 50..60 {
            let written = primary.send(put(&format!("k{n}"), "1", None)).await.unwrap();
            assert!(
                written.is_ok(),
                "acknowledged without the joining owner: {written:?}"
            );
        }
        assert!(!primary.send(FeedsLevel).await.unwrap());
        sink.backups.lock().unwrap().insert(member("j"), joining.clone());
        // Writes go on while it is filled: the whole segment, then batches.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut n = 60;
        while !primary.send(FeedsLevel).await.unwrap() {
            assert!(std::time::Instant::now() < deadline, "never level");
            primary
                .send(put(&format!("k{n}"), "2", None))
                .await
                .unwrap()
                .unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for n in 0..20 {
            primary
                .send(put(&format!("k{n}"), "3", None))
                .await
                .unwrap()
                .unwrap();
        }
        while !primary.send(FeedsLevel).await.unwrap() {
            assert!(std::time::Instant::now() < deadline, "never level again");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let level = state(&primary).await;
        assert!(level.0.len() >= 60);
        assert_eq!(state(&joining).await, level, "the joining copy is level");
        assert_eq!(state(&backup).await, level);
    }

    #[actix::test]
    async fn a_backup_that_missed_a_batch_is_brought_level_with_the_whole_segment() {
        let (primary, backup, sink, _events) = pair(CacheConfig::default()).await;
        primary.send(put("a", "1", None)).await.unwrap().unwrap();
        sink.drop_next.store(true, Ordering::SeqCst);
        let lost = primary.send(put("b", "2", None)).await.unwrap();
        assert!(matches!(lost, Err(GridError::Unavailable(_))), "{lost:?}");
        assert_ne!(state(&backup).await, state(&primary).await);
        primary.send(put("c", "3", None)).await.unwrap().unwrap();
        let level = state(&primary).await;
        assert_eq!(level.0.len(), 3);
        assert_eq!(state(&backup).await, level);
    }

    #[actix::test]
    async fn a_backup_at_a_later_epoch_takes_the_old_primarys_batches_until_a_new_primary_asks() {
        let (primary, backup, _, _events) = pair(CacheConfig::default()).await;
        primary.send(put("a", "1", None)).await.unwrap().unwrap();
        backup.send(SetRole(Role::backup(2))).await.unwrap();
        // The primary has not learnt of epoch 2 yet: its next write is
        // taken, as it would have been a moment earlier.
        primary.send(put("b", "2", None)).await.unwrap().unwrap();
        assert_eq!(state(&backup).await, state(&primary).await);
        // Once a primary of epoch 2 asked how far the copy got, nothing of
        // epoch 1 lands: the old primary acknowledges nothing more.
        let asked = ReplicaMessage::Position {
            cache: CacheName::parse("c").unwrap(),
            segment: SegmentId(0),
            epoch: 2,
        };
        backup.send(Replicate(asked)).await.unwrap();
        let fenced = primary.send(put("c", "3", None)).await.unwrap();
        assert!(
            matches!(fenced, Err(GridError::Unavailable(ref why)) if why.contains("OtherEpoch")),
            "{fenced:?}"
        );
        assert_eq!(state(&backup).await.0.len(), 2, "the backup applied nothing more");
    }

    #[actix::test]
    async fn a_new_primary_takes_the_furthest_copy_and_brings_every_owner_level() {
        let config = CacheConfig::default();
        let sink = Arc::new(Direct::default());
        let [a, b, c, d] = [0; 4].map(|_| partition(&config).0);
        for (name, backup) in [("b", &b), ("c", &c), ("d", &d)] {
            sink.backups.lock().unwrap().insert(member(name), backup.clone());
        }
        for backup in [&b, &c] {
            backup.send(SetRole(Role::backup(1))).await.unwrap();
        }
        let first = Role::Primary {
            epoch: 1,
            backups: vec![member("b"), member("c")],
            sink: sink.clone(),
            sources: Vec::new(),
            joining: Vec::new(),
        };
        a.send(SetRole(first)).await.unwrap();
        for key in ["w1", "w2"] {
            a.send(put(key, "1", None)).await.unwrap().unwrap();
        }
        // w3 reaches c but not b, and is never acknowledged; then a dies.
        sink.drop_next.store(true, Ordering::SeqCst);
        assert!(a.send(put("w3", "1", None)).await.unwrap().is_err());
        assert_eq!(state(&c).await.1, 3);
        assert_eq!(state(&b).await.1, 2);

        // Epoch 2: b leads, c stays, d is new and empty.
        for backup in [&c, &d] {
            backup.send(SetRole(Role::backup(2))).await.unwrap();
        }
        let second = Role::Primary {
            epoch: 2,
            backups: vec![member("c"), member("d")],
            sink: sink.clone(),
            sources: Vec::new(),
            joining: Vec::new(),
        };
        b.send(SetRole(second)).await.unwrap();
        let written = b.send(put("w4", "1", None)).await.unwrap().unwrap();
        assert_eq!(
            written.version.0, 4,
            "the sequence goes on from the furthest copy"
        );
        let level = state(&b).await;
        assert_eq!(level.0.len(), 4, "w3 was taken from c");
        assert_eq!(state(&c).await, level);
        assert_eq!(state(&d).await, level, "the new owner received the segment");
    }

    #[actix::test]
    async fn a_new_owner_is_brought_level_once_it_knows_the_epoch_without_any_write() {
        let config = CacheConfig::default();
        let (primary, backup, sink, _events) = pair(config.clone()).await;
        for n in 0..10 {
            primary
                .send(put(&format!("k{n}"), "1", None))
                .await
                .unwrap()
                .unwrap();
        }
        let (late, _late_events) = partition(&config);
        sink.backups.lock().unwrap().insert(member("late"), late.clone());
        backup.send(SetRole(Role::backup(2))).await.unwrap();
        let role = Role::Primary {
            epoch: 2,
            backups: vec![member("b"), member("late")],
            sink: sink.clone(),
            sources: Vec::new(),
            joining: Vec::new(),
        };
        primary.send(SetRole(role)).await.unwrap();
        assert_eq!(
            state(&late).await,
            (vec![], 0),
            "not a backup yet: refused the image"
        );
        late.send(SetRole(Role::backup(2))).await.unwrap();
        let level = state(&primary).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while state(&late).await != level {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the new owner was never brought level"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(state(&backup).await, level);
    }
}
