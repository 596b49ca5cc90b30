//! The partition actor: the one owner of one segment of one cache. It alone
//! reads and writes the segment's entries, stamps versions, reaps expired
//! entries on a timer set to the earliest deadline, enforces the cache's
//! `max_entries` and publishes every event to the listener side.
//!
//! Partitions of a cache are spread over the node's arbiters (one thread
//! each), so writes to different segments run in parallel with no shared
//! lock; writes to one segment are serialized by its mailbox.

use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, AsyncContext, Context, Handler, Message, MessageResult, Recipient, SpawnHandle,
};

use super::cache::CacheShared;
use super::replication::{Replication, Role};

mod feed;
mod replica;
mod role;
use super::segment::{EntryView, Position, Precondition, PutOutcome, PutRequest, Segment};
use super::{now_ms, Event, EventSink, GridError, Key, KeyFilter, OpId, Published, SegmentId, Version};
pub use feed::FeedsLevel;
pub use replica::{Replicate, WriteReply};
pub use role::SetRole;

pub struct Partition {
    segment: Segment,
    cache: Arc<CacheShared>,
    events: EventSink,
    /// The pending reap and the deadline it was set for.
    reaper: Option<(u64, SpawnHandle)>,
    /// The cache's partitions on this node, and this one's place among
    /// them: a partition that must evict but holds nothing older than the
    /// write it just made forwards the eviction to the next one.
    ring: Option<(EvictionRing, usize)>,
    /// The segment's bytes as last added to the cache's total.
    reported_bytes: usize,
    replication: Replication,
    /// A primary's streams to the owners its segment gains.
    feeds: Vec<feed::Feed>,
}

/// The local partitions of one cache, in segment order.
pub type EvictionRing = Arc<[Recipient<Evict>]>;

impl Partition {
    pub fn new(cache: Arc<CacheShared>, segment: SegmentId, events: EventSink) -> Self {
        let segment = Segment::new(cache.name.clone(), segment, cache.config.history_per_segment);
        Partition {
            segment,
            cache,
            events,
            reaper: None,
            ring: None,
            reported_bytes: 0,
            replication: Replication::solo(),
            feeds: Vec::new(),
        }
    }

    /// Runs a mutation and then what every mutation owes: publish its
    /// events, account for the entries it added or removed, evict past
    /// `max_entries`, and keep the reaper aimed at the earliest deadline.
    fn write<R>(&mut self, ctx: &mut Context<Self>, op: impl FnOnce(&mut Segment) -> R) -> R {
        let before = self.segment.len();
        let result = op(&mut self.segment);
        let after = self.segment.len();
        if !self.replication.role.replicates() {
            // A replicated write is published once every owner has it.
            self.publish();
        }
        // Each partition evicts only what its own growth put over the limit,
        // so concurrent creations in other segments are not evicted twice.
        let excess = self
            .cache
            .adjust_entries(before, after, self.replication.role.leads())
            .min(after.saturating_sub(before));
        if excess > 0 {
            self.evict(excess, ctx);
        }
        self.report_bytes();
        self.aim_reaper(ctx);
        result
    }

    /// Whether this copy serves clients: a backup does not, though a node
    /// whose routes are a moment behind its roles may still send it a
    /// request; acting on it would acknowledge what the primary never saw.
    /// A primary fenced off by a later epoch's primary, or a copy departing
    /// this member, does not either.
    fn serving(&self) -> Result<(), GridError> {
        let moving = match self.replication.role {
            Role::Backup { .. } | Role::Departing { .. } => true,
            _ => self.replication.fenced_off(),
        };
        if moving {
            return Err(GridError::Unavailable(format!(
                "segment {} is moving to another primary; try again",
                self.segment.id().0
            )));
        }
        Ok(())
    }

    fn report_bytes(&mut self) {
        let now = self.segment.bytes();
        self.cache.adjust_bytes(self.reported_bytes, now);
        self.reported_bytes = now;
    }

    fn publish(&mut self) {
        for event in self.segment.take_events() {
            self.cache.metrics.count_event(event.kind);
            self.events.do_send(Published(event));
        }
    }

    /// Evicts up to `excess` entries, but never the write just made: a
    /// segment left with only that entry hands the rest to the next
    /// partition.
    fn evict(&mut self, excess: usize, ctx: &mut Context<Self>) {
        let mut evicted = 0;
        while evicted < excess && self.segment.len() > 1 && self.segment.evict_least_recently_written() {
            evicted += 1;
        }
        self.account_evictions(evicted);
        if evicted < excess {
            self.forward_eviction(excess - evicted, self.cache.config.segments, ctx);
        }
    }

    fn account_evictions(&self, evicted: usize) {
        if evicted > 0 {
            self.cache
                .adjust_entries(evicted, 0, self.replication.role.leads());
            self.cache.metrics.count_evictions(&self.cache.name, evicted);
        }
    }

    fn forward_eviction(&self, count: usize, hops_left: u32, _: &mut Context<Self>) {
        if hops_left == 0 {
            return;
        }
        if let Some((ring, place)) = &self.ring {
            ring[(place + 1) % ring.len()].do_send(Evict {
                count,
                hops_left: hops_left - 1,
            });
        }
    }

    fn aim_reaper(&mut self, ctx: &mut Context<Self>) {
        let Some(deadline) = self.segment.next_deadline() else {
            if let Some((_, handle)) = self.reaper.take() {
                ctx.cancel_future(handle);
            }
            return;
        };
        match self.reaper {
            Some((aimed_at, _)) if aimed_at <= deadline => return,
            Some((_, handle)) => {
                ctx.cancel_future(handle);
            }
            None => {}
        }
        // One millisecond late, so the deadline has surely passed on firing.
        let delay = Duration::from_millis(deadline.saturating_sub(now_ms()) + 1);
        let handle = ctx.run_later(delay, |partition, ctx| {
            partition.reaper = None;
            partition.write(ctx, |segment| segment.reap(now_ms()));
            partition.replicate_before_anything_else(ctx);
        });
        self.reaper = Some((deadline, handle));
    }
}

impl Actor for Partition {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Unbounded (0): a full actix mailbox parks senders and retries them
        // later, which can reorder one client's pipelined writes to a key.
        // Back-pressure belongs at the edges (session outboxes, rate limits).
        ctx.set_mailbox_capacity(0);
        self.cache.metrics.partitions.inc();
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.cache.metrics.partitions.dec();
        self.set_moving(false);
        // A retired copy's entries and bytes are no longer held here.
        self.cache
            .adjust_entries(self.segment.len(), 0, self.replication.role.leads());
        self.cache.adjust_bytes(self.reported_bytes, 0);
    }
}

#[derive(Message)]
#[rtype(result = "Result<Option<EntryView>, GridError>")]
pub struct Get {
    pub key: Key,
}

#[derive(Message)]
#[rtype(result = "Result<PutOutcome, GridError>")]
pub struct Put(pub PutRequest);

#[derive(Message)]
#[rtype(result = "Result<Version, GridError>")]
pub struct Remove {
    pub key: Key,
    pub precondition: Precondition,
    /// The client's name for the removal, so that it is applied once.
    pub op: Option<OpId>,
}

/// Up to `limit` entries with the prefix after `after`, in key order.
#[derive(Message)]
#[rtype(result = "Result<Vec<EntryView>, GridError>")]
pub struct List {
    pub prefix: Arc<str>,
    pub after: Option<Arc<str>>,
    pub limit: usize,
}

/// How many entries the segment holds, counted by its primary.
#[derive(Message)]
#[rtype(result = "Result<usize, GridError>")]
pub struct CountEntries;

/// The entries matching a filter (none without one) and the segment's
/// position, taken at one instant of the segment.
#[derive(Message)]
#[rtype(result = "Snapshot")]
pub struct TakeSnapshot {
    pub filter: Option<KeyFilter>,
}

pub struct Snapshot {
    pub segment: SegmentId,
    pub entries: Vec<EntryView>,
    pub position: Position,
}

/// The events after a position, if the history still reaches back to it
/// and the position is in this copy's lineage.
#[derive(Message)]
#[rtype(result = "Option<Vec<Arc<Event>>>")]
pub struct ReadHistory {
    pub after: Position,
}

/// [`ReadHistory`] of this copy, whatever its role, for a resume on this
/// member: a backup holds its primary's history (and the writes it applied
/// that the primary is still to acknowledge, which it reports too). `None`
/// from a copy departing this member (it no longer takes its primary's
/// writes), as from one whose history does not reach back.
#[derive(Message)]
#[rtype(result = "Option<Vec<Arc<Event>>>")]
pub struct ReadCopyHistory {
    pub after: Position,
}

/// Evict `count` entries here or, failing that, further along.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evict {
    count: usize,
    hops_left: u32,
}

/// Hands the partition its place in the cache's [`EvictionRing`];
/// answered once the partition has started (and so set its mailbox up).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ready {
    pub ring: EvictionRing,
    pub place: usize,
}

impl Handler<Get> for Partition {
    type Result = WriteReply<Result<Option<EntryView>, GridError>>;

    fn handle(&mut self, msg: Get, _: &mut Context<Self>) -> Self::Result {
        let read = self.serving().map(|()| self.segment.get(&msg.key, now_ms()));
        self.confirmed(read)
    }
}

impl Handler<Put> for Partition {
    type Result = WriteReply<Result<PutOutcome, GridError>>;

    fn handle(&mut self, Put(request): Put, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(refused) = self.serving() {
            return WriteReply::Now(Err(refused));
        }
        let result = self.write(ctx, |segment| segment.put(request, now_ms()));
        self.acknowledged(result, ctx)
    }
}

impl Handler<Remove> for Partition {
    type Result = WriteReply<Result<Version, GridError>>;

    fn handle(&mut self, msg: Remove, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(refused) = self.serving() {
            return WriteReply::Now(Err(refused));
        }
        let result = self.write(ctx, |segment| {
            segment.remove(&msg.key, msg.precondition, msg.op, now_ms())
        });
        self.acknowledged(result, ctx)
    }
}

impl Handler<List> for Partition {
    type Result = WriteReply<Result<Vec<EntryView>, GridError>>;

    fn handle(&mut self, msg: List, _: &mut Context<Self>) -> Self::Result {
        let listed = self.serving().map(|()| {
            self.segment
                .list(&msg.prefix, msg.after.as_deref(), msg.limit, now_ms())
        });
        self.confirmed(listed)
    }
}

impl Handler<CountEntries> for Partition {
    type Result = Result<usize, GridError>;

    fn handle(&mut self, _: CountEntries, _: &mut Context<Self>) -> Self::Result {
        self.serving().map(|()| self.segment.len())
    }
}

impl Handler<TakeSnapshot> for Partition {
    type Result = MessageResult<TakeSnapshot>;

    fn handle(&mut self, msg: TakeSnapshot, _: &mut Context<Self>) -> Self::Result {
        let wanted = |key: &str| msg.filter.as_ref().is_some_and(|f| f.matches(key));
        let (entries, position) = self.segment.snapshot(wanted, now_ms());
        MessageResult(Snapshot {
            segment: self.segment.id(),
            entries,
            position,
        })
    }
}

impl Handler<ReadHistory> for Partition {
    type Result = MessageResult<ReadHistory>;

    fn handle(&mut self, msg: ReadHistory, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.segment.history_after(msg.after))
    }
}

impl Handler<ReadCopyHistory> for Partition {
    type Result = MessageResult<ReadCopyHistory>;

    fn handle(&mut self, msg: ReadCopyHistory, _: &mut Context<Self>) -> Self::Result {
        // A departing copy may be behind its new primary, a filling one
        // behind its primary.
        if matches!(
            self.replication.role,
            Role::Departing { .. } | Role::Backup { filling: true, .. }
        ) {
            return MessageResult(None);
        }
        MessageResult(self.segment.history_after(msg.after))
    }
}

impl Handler<Evict> for Partition {
    type Result = ();

    fn handle(&mut self, msg: Evict, ctx: &mut Context<Self>) {
        // Removals elsewhere may have brought the cache back under its limit.
        let wanted = msg.count.min(self.cache.excess());
        let mut evicted = 0;
        while evicted < wanted && self.segment.evict_least_recently_written() {
            evicted += 1;
        }
        self.account_evictions(evicted);
        self.report_bytes();
        self.replicate_before_anything_else(ctx);
        if evicted < wanted {
            self.forward_eviction(wanted - evicted, msg.hops_left, ctx);
        }
    }
}

/// Stops the partition: its cache was deleted. Answered after every
/// message queued before it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

impl Handler<Retire> for Partition {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Ready> for Partition {
    type Result = ();

    fn handle(&mut self, Ready { ring, place }: Ready, _: &mut Context<Self>) {
        self.ring = Some((ring, place));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{CacheConfig, CacheName, EventKind};
    use crate::metrics::Metrics;
    use tokio::sync::mpsc;

    /// Forwards every published event to a channel the test reads.
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

    fn start(config: CacheConfig) -> (actix::Addr<Partition>, mpsc::UnboundedReceiver<Arc<Event>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sink = Collector(tx).start().recipient();
        let shared = CacheShared::new(
            CacheName::parse("c").unwrap(),
            config,
            Metrics::new().grid.clone(),
        );
        (Partition::new(shared, SegmentId(0), sink).start(), rx)
    }

    fn put(key: &str, value: &str, lifespan_ms: Option<u64>) -> Put {
        Put(PutRequest {
            key: Arc::from(key),
            value: crate::grid::JsonValue::parse(value).unwrap(),
            precondition: Precondition::None,
            lifespan_ms,
            op: None,
        })
    }

    #[actix::test]
    async fn writes_are_acknowledged_and_published_in_version_order() {
        let (partition, mut events) = start(CacheConfig::default());
        let first = partition.send(put("a", "1", None)).await.unwrap().unwrap();
        let second = partition.send(put("a", "2", None)).await.unwrap().unwrap();
        let removed = partition
            .send(Remove {
                key: Arc::from("a"),
                precondition: Precondition::None,
                op: None,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (first.version, second.version, removed),
            (Version(1), Version(2), Version(3))
        );
        let mut seen = Vec::new();
        for _ in 0..3 {
            let event = events.recv().await.unwrap();
            seen.push((
                event.kind,
                event.version.0,
                event.value.as_ref().map(|v| v.get().to_string()),
            ));
        }
        assert_eq!(
            seen,
            vec![
                (EventKind::Created, 1, Some("1".into())),
                (EventKind::Modified, 2, Some("2".into())),
                (EventKind::Removed, 3, None)
            ]
        );
        assert!(partition
            .send(Get { key: Arc::from("a") })
            .await
            .unwrap()
            .unwrap()
            .is_none());
    }

    #[actix::test]
    async fn the_reaper_expires_entries_on_time_without_a_read() {
        let (partition, mut events) = start(CacheConfig::default());
        partition.send(put("t", "1", Some(30))).await.unwrap().unwrap();
        partition.send(put("u", "1", Some(10))).await.unwrap().unwrap();
        let mut kinds = Vec::new();
        for _ in 0..4 {
            let event = tokio::time::timeout(Duration::from_secs(2), events.recv())
                .await
                .unwrap()
                .unwrap();
            kinds.push((event.kind, event.key.to_string()));
        }
        assert_eq!(
            kinds,
            vec![
                (EventKind::Created, "t".into()),
                (EventKind::Created, "u".into()),
                (EventKind::Expired, "u".into()),
                (EventKind::Expired, "t".into())
            ]
        );
    }

    #[actix::test]
    async fn snapshot_and_history_come_from_one_instant() {
        let (partition, _events) = start(CacheConfig::default());
        for key in ["a/1", "b/1", "a/2"] {
            partition.send(put(key, "0", None)).await.unwrap().unwrap();
        }
        let snapshot = partition
            .send(TakeSnapshot {
                filter: Some(KeyFilter::Prefix(Arc::from("a/"))),
            })
            .await
            .unwrap();
        assert_eq!(snapshot.entries.len(), 2);
        assert_eq!(snapshot.position.version, Version(3));
        assert_eq!(snapshot.position.epoch, Some(0), "written on one node");
        let history = partition
            .send(ReadHistory {
                after: Position::at(Version(1)),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(history.iter().map(|e| e.version.0).collect::<Vec<_>>(), [2, 3]);
    }
}
