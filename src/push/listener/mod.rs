//! The listener actor: every event of every partition passes through it. It
//! drops an event whose id it has already seen (the [`DedupWindow`]: the same
//! write can arrive from a primary and a backup owner, or again during a
//! rebalance), passes on only the next version of each segment (the
//! [`Sequencer`], which holds events past a gap and has the listener fill
//! it from an owner's history: see [`gaps`]), finds the subscriptions that want it in the
//! [`SubscriptionIndex`], and pushes it to their sessions as a shared
//! [`EncodedEvent`], so each format is encoded once whatever the fan-out.
//!
//! Pushes are batched per feed (one client's subscriptions, whatever its
//! transport: see [`super::feed`]): routed events wait in `pending` until
//! the listener's mailbox is empty (a `Flush` it sends itself runs only
//! then), and each feed gets one [`Push`] with all of its events, at its
//! [`PushSink`]. Under load that turns one message, allocation and
//! cross-thread wake per event per subscriber into one per feed per burst;
//! when idle, a burst is one event and nothing waits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler, Message, Recipient};
use tokio::sync::{mpsc, watch};

use super::dedup::DedupWindow;
use super::filter::Filter;
use super::index::SubscriptionIndex;
use super::sequencer::{Sequenced, Sequencer};
use super::{Health, SessionId, SubId};
use crate::config::ListenerConfig;
use crate::grid::{
    CacheDeleted, CacheName, CacheStartedAgain, Event, Grid, Interests, Published, Relayed, RelayedItem,
    SegmentId, Version,
};
use crate::metrics::PushMetrics;
use crate::protocol::event::EncodedEvent;

mod gaps;
pub use gaps::{CatchUp, FillGapsFrom};

/// Where a subscription's events go.
struct Target {
    session: SessionId,
    sub: SubId,
    pushes: PushSink,
}

/// How long a registered subscription may take to say where it starts
/// before the listener stops holding its cache's events for it.
const STARTING_AT_MOST: Duration = Duration::from_secs(60);

/// Events routed to one feed, not yet sent.
struct Batch {
    pushes: PushSink,
    events: Vec<(SubId, Arc<EncodedEvent>)>,
}

pub struct Listener {
    dedup: DedupWindow,
    sequencer: Sequencer,
    /// Subscriptions registered whose start the sequencer awaits.
    starting: HashMap<(SessionId, SubId), CacheName>,
    /// Where gaps are filled from; none in tests that feed events by hand.
    history: Option<Grid>,
    /// How long a gap may last before it is read from history.
    gap_wait: Duration,
    gap_check_scheduled: bool,
    index: SubscriptionIndex<Target>,
    metrics: PushMetrics,
    pending: HashMap<SessionId, Batch>,
    flush_scheduled: bool,
    /// The caches subscribed to here, for a cluster's other members to
    /// send this node their events.
    watching: Option<watch::Sender<Watched>>,
}

/// The caches a node's subscribers watch, with their filters.
pub type Watched = Interests;

impl Listener {
    pub fn new(config: &ListenerConfig, metrics: PushMetrics) -> Self {
        Listener {
            dedup: DedupWindow::new(
                config.dedup_capacity,
                Duration::from_millis(config.dedup_max_age_ms),
            ),
            sequencer: Sequencer::default(),
            starting: HashMap::new(),
            history: None,
            gap_wait: Duration::from_millis(config.gap_fill_after_ms),
            gap_check_scheduled: false,
            index: SubscriptionIndex::default(),
            metrics,
            pending: HashMap::new(),
            flush_scheduled: false,
            watching: None,
        }
    }

    /// Keeps `watching` told of the caches subscribed to here.
    pub fn reporting_to(self, watching: watch::Sender<Watched>) -> Self {
        Listener {
            watching: Some(watching),
            ..self
        }
    }

    /// An event as it arrives, from a partition or from history: dropped if
    /// seen, otherwise sequenced, and what that passes on is routed.
    fn take(&mut self, event: Arc<Event>, ctx: &mut Context<Self>) {
        if !self.dedup.first_sighting(event.id, Instant::now()) {
            self.metrics.duplicates_dropped.inc();
            return;
        }
        match self.sequencer.offer(event, Instant::now()) {
            Sequenced::Duplicate => self.metrics.duplicates_dropped.inc(),
            Sequenced::Pass(events) if events.is_empty() => self.check_gaps_later(ctx),
            Sequenced::Pass(events) => self.route_all(events, ctx),
        }
    }

    fn route_all(&mut self, events: Vec<Arc<Event>>, ctx: &mut Context<Self>) {
        for event in events {
            self.route(event);
        }
        if !self.pending.is_empty() && !self.flush_scheduled {
            // Runs once the mailbox is empty: everything queued until then
            // goes out in the same batches.
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }

    /// Queues `event` for every subscription that wants it.
    fn route(&mut self, event: Arc<Event>) {
        self.metrics.listener_events.inc();
        let mut encoded: Option<Arc<EncodedEvent>> = None;
        let pending = &mut self.pending;
        self.index
            .for_each_match(event.cache.as_str(), &event.key, |target| {
                let event = encoded.get_or_insert_with(|| EncodedEvent::new(event.clone()));
                pending
                    .entry(target.session)
                    .or_insert_with(|| Batch {
                        pushes: target.pushes.clone(),
                        events: Vec::new(),
                    })
                    .events
                    .push((target.sub, event.clone()));
            });
    }

    /// A subscription to `cache` is starting: the sequencer holds the
    /// cache's events until it says where it starts ([`Positioned`]).
    fn await_start(&mut self, session: SessionId, sub: SubId, cache: &CacheName, ctx: &mut Context<Self>) {
        self.sequencer.watch(cache, true);
        let starting = (session, sub);
        self.starting.insert(starting, cache.clone());
        // A start that never says where it is (it cannot: every path sends
        // `Positioned` or unregisters) must not hold the cache for good.
        ctx.run_later(STARTING_AT_MOST, move |listener, ctx| {
            if let Some(cache) = listener.starting.remove(&starting) {
                log::warn!("a subscription to {cache} never said where it starts; its events flow on");
                let released = listener.sequencer.positioned(cache.as_str(), &HashMap::new());
                listener.route_all(released, ctx);
            }
        });
    }

    fn report_watching(&self) {
        if let Some(watching) = &self.watching {
            watching.send_if_modified(|watched| {
                let now: Watched = self
                    .index
                    .caches()
                    .map(|cache| (cache.clone(), self.index.interest(cache.as_str())))
                    .collect();
                let changed = *watched != now;
                *watched = now;
                changed
            });
        }
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(65_536);
    }
}

/// Events for subscriptions of the receiving feed, in the order the
/// listener routed them; then the subscriptions that ended because their
/// cache was deleted (after their last events).
#[derive(Debug, Default, Message)]
#[rtype(result = "()")]
pub struct Push {
    pub events: Vec<(SubId, Arc<EncodedEvent>)>,
    pub ended: Vec<SubId>,
    /// Subscriptions whose cache started again (segments declared lost):
    /// each starts again from a reset snapshot.
    pub restarted: Vec<SubId>,
    /// The node's health changed (after these events).
    pub health: Option<Health>,
}

/// Where a feed receives its pushes: the mailbox of the actor that holds it
/// (a WebSocket session, which has one anyway: no second queue per
/// connection), or a channel (an SSE stream, a held poll).
#[derive(Clone)]
pub enum PushSink {
    Mailbox(Recipient<Push>),
    Channel(mpsc::UnboundedSender<Push>),
}

impl PushSink {
    /// A feed that is gone is being unregistered; nothing to deliver.
    fn send(&self, push: Push) {
        match self {
            PushSink::Mailbox(recipient) => recipient.do_send(push),
            PushSink::Channel(channel) => {
                let _ = channel.send(push);
            }
        }
    }
}

/// Sends every pending batch; the listener sends it to itself.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

/// Starts routing matching events to `pushes`. Acknowledged once the
/// subscription is in the index: every event the listener handles after
/// that reaches the feed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub session: SessionId,
    pub sub: SubId,
    pub cache: CacheName,
    pub filter: Filter,
    pub pushes: PushSink,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub session: SessionId,
    pub sub: SubId,
    pub cache: CacheName,
    pub filter: Filter,
}

impl Handler<Published> for Listener {
    type Result = ();

    fn handle(&mut self, Published(event): Published, ctx: &mut Context<Self>) {
        self.take(event, ctx);
    }
}

impl Handler<Relayed> for Listener {
    type Result = ();

    /// What another member relayed: its events as any other, its skipped
    /// versions as passed on (they route nothing).
    fn handle(&mut self, Relayed(items): Relayed, ctx: &mut Context<Self>) {
        for item in items {
            match item {
                RelayedItem::Event(event) => {
                    self.metrics.relayed_events.inc();
                    self.take(event, ctx);
                }
                RelayedItem::Skipped {
                    cache,
                    segment,
                    first,
                    last,
                } => {
                    self.metrics
                        .relayed_skips
                        .inc_by(last.0.saturating_sub(first.0) + 1);
                    let released = self
                        .sequencer
                        .skip(cache.as_str(), segment, first, last, Instant::now());
                    if !released.is_empty() {
                        self.route_all(released, ctx);
                    }
                }
            }
        }
    }
}

/// A starting subscription's snapshot or replay covered `positions`
/// (empty: it read none): its cache's segments start there.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Positioned {
    pub session: SessionId,
    pub sub: SubId,
    pub positions: HashMap<SegmentId, Version>,
}

impl Handler<Positioned> for Listener {
    type Result = ();

    fn handle(&mut self, msg: Positioned, ctx: &mut Context<Self>) {
        if let Some(cache) = self.starting.remove(&(msg.session, msg.sub)) {
            let released = self.sequencer.positioned(cache.as_str(), &msg.positions);
            self.route_all(released, ctx);
        }
    }
}

/// The node's health changed. Every feed with a subscription is told
/// (after the events routed so far); on recovery, every watched segment's
/// history past what was passed on is read: the events a node cut off from
/// the others missed reach its subscribers, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HealthChanged(pub Health);

impl Handler<HealthChanged> for Listener {
    type Result = ();

    fn handle(&mut self, HealthChanged(health): HealthChanged, ctx: &mut Context<Self>) {
        self.handle(Flush, ctx);
        let mut feeds: HashMap<SessionId, PushSink> = HashMap::new();
        self.index.for_each(|target| {
            feeds
                .entry(target.session)
                .or_insert_with(|| target.pushes.clone());
        });
        for pushes in feeds.values() {
            pushes.send(Push {
                health: Some(health),
                ..Push::default()
            });
        }
        if health == Health::Recovered {
            self.handle(CatchUp, ctx);
        }
    }
}

impl Handler<Flush> for Listener {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        self.flush_scheduled = false;
        for (_, batch) in self.pending.drain() {
            batch.pushes.send(Push {
                events: batch.events,
                ..Push::default()
            });
        }
    }
}

impl Handler<Register> for Listener {
    type Result = ();

    fn handle(&mut self, msg: Register, ctx: &mut Context<Self>) {
        let target = Target {
            session: msg.session,
            sub: msg.sub,
            pushes: msg.pushes,
        };
        self.await_start(msg.session, msg.sub, &msg.cache, ctx);
        self.index.insert(msg.cache, &msg.filter, target);
        self.metrics.subscriptions.set(self.index.len() as i64);
        self.report_watching();
    }
}

impl Handler<Unregister> for Listener {
    type Result = ();

    fn handle(&mut self, msg: Unregister, ctx: &mut Context<Self>) {
        self.index.remove(msg.cache.as_str(), &msg.filter, |t| {
            t.session == msg.session && t.sub == msg.sub
        });
        if self.starting.remove(&(msg.session, msg.sub)).is_some() {
            let released = self.sequencer.positioned(msg.cache.as_str(), &HashMap::new());
            self.route_all(released, ctx);
        }
        if !self.index.caches().any(|c| *c == msg.cache) {
            self.sequencer.forget(msg.cache.as_str());
        }
        self.metrics.subscriptions.set(self.index.len() as i64);
        self.report_watching();
    }
}

impl Handler<CacheDeleted> for Listener {
    type Result = ();

    fn handle(&mut self, CacheDeleted(cache): CacheDeleted, ctx: &mut Context<Self>) {
        // Events routed but not yet flushed go first.
        self.handle(Flush, ctx);
        let mut ended: HashMap<SessionId, (PushSink, Vec<SubId>)> = HashMap::new();
        self.sequencer.forget(cache.as_str());
        self.starting.retain(|_, c| *c != cache);
        for target in self.index.remove_cache(cache.as_str()) {
            ended
                .entry(target.session)
                .or_insert_with(|| (target.pushes.clone(), Vec::new()))
                .1
                .push(target.sub);
        }
        for (_, (pushes, subs)) in ended {
            pushes.send(Push {
                ended: subs,
                ..Push::default()
            });
        }
        self.metrics.subscriptions.set(self.index.len() as i64);
        self.report_watching();
    }
}

impl Handler<CacheStartedAgain> for Listener {
    type Result = ();

    /// Segments of the cache were declared lost and placed again, empty:
    /// every subscription to it starts again from a reset snapshot, and
    /// the cache's streams start where those snapshots say, as for new
    /// subscriptions.
    fn handle(&mut self, CacheStartedAgain(cache): CacheStartedAgain, ctx: &mut Context<Self>) {
        self.handle(Flush, ctx);
        let mut restarted: HashMap<SessionId, (PushSink, Vec<SubId>)> = HashMap::new();
        self.index.for_each_in(cache.as_str(), |target| {
            restarted
                .entry(target.session)
                .or_insert_with(|| (target.pushes.clone(), Vec::new()))
                .1
                .push(target.sub);
        });
        if restarted.is_empty() {
            return;
        }
        log::info!("{cache} started again: its subscriptions here start from a reset snapshot");
        self.sequencer.forget(cache.as_str());
        self.starting.retain(|_, c| *c != cache);
        for (session, (pushes, subs)) in restarted {
            for &sub in &subs {
                self.await_start(session, sub, &cache, ctx);
            }
            pushes.send(Push {
                restarted: subs,
                ..Push::default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{Event, EventKind, SegmentId, Version};
    use crate::metrics::Metrics;

    fn event(key: &str, version: u64) -> Arc<Event> {
        Arc::new(Event {
            id: uuid::Uuid::now_v7(),
            kind: EventKind::Created,
            cache: CacheName::parse("c").unwrap(),
            key: Arc::from(key),
            value: None,
            version: Version(version),
            segment: SegmentId(0),
            ts: 0,
            epoch: 0,
        })
    }

    #[actix::test]
    async fn an_event_fed_twice_is_delivered_once_and_counted() {
        let metrics = Metrics::new();
        let listener = Listener::new(&ListenerConfig::default(), metrics.push.clone()).start();
        let (tx, mut pushes) = mpsc::unbounded_channel();
        listener
            .send(Register {
                session: 1,
                sub: 7,
                cache: CacheName::parse("c").unwrap(),
                filter: Filter::Prefix(Arc::from("p/")),
                pushes: PushSink::Channel(tx),
            })
            .await
            .unwrap();
        // Its snapshot found the segment unwritten.
        listener
            .send(Positioned {
                session: 1,
                sub: 7,
                positions: HashMap::from([(SegmentId(0), Version(0))]),
            })
            .await
            .unwrap();
        let first = event("p/1", 1);
        listener.send(Published(first.clone())).await.unwrap();
        listener.send(Published(first.clone())).await.unwrap();
        listener.send(Published(event("q/1", 2))).await.unwrap();
        let second = event("p/2", 3);
        listener.send(Published(second.clone())).await.unwrap();

        let mut received = Vec::new();
        while received.len() < 2 {
            received.extend(pushes.recv().await.unwrap().events);
        }
        let mut rx = received.into_iter();
        let (sub, pushed) = rx.next().unwrap();
        assert_eq!((sub, pushed.event.id), (7, first.id));
        let (_, pushed) = rx.next().unwrap();
        assert_eq!(
            pushed.event.id, second.id,
            "the duplicate and the unmatched key were not pushed"
        );
        assert_eq!(metrics.push.duplicates_dropped.get(), 1);
        assert_eq!(metrics.push.listener_events.get(), 3);
    }
}
