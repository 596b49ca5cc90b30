//! The listener actor: every event of every partition passes through it. It
//! drops an event whose id it has already seen (the [`DedupWindow`]: the same
//! write can arrive from a primary and a backup owner, or again during a
//! rebalance), finds the subscriptions that want it in the
//! [`SubscriptionIndex`], and pushes it to their sessions as a shared
//! [`EncodedEvent`], so each format is encoded once whatever the fan-out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, Message, Recipient};

use super::dedup::DedupWindow;
use super::filter::Filter;
use super::index::SubscriptionIndex;
use super::{SessionId, SubId};
use crate::config::ListenerConfig;
use crate::grid::{CacheName, Published};
use crate::metrics::PushMetrics;
use crate::protocol::ws::EncodedEvent;

/// Where a subscription's events go.
struct Target {
    session: SessionId,
    sub: SubId,
    recipient: Recipient<Push>,
}

pub struct Listener {
    dedup: DedupWindow,
    index: SubscriptionIndex<Target>,
    metrics: PushMetrics,
}

impl Listener {
    pub fn new(config: &ListenerConfig, metrics: PushMetrics) -> Self {
        Listener {
            dedup: DedupWindow::new(
                config.dedup_capacity,
                Duration::from_millis(config.dedup_max_age_ms),
            ),
            index: SubscriptionIndex::default(),
            metrics,
        }
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(65_536);
    }
}

/// An event for one subscription of the receiving session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Push {
    pub sub: SubId,
    pub event: Arc<EncodedEvent>,
}

/// Starts routing matching events to `recipient`. Acknowledged once the
/// subscription is in the index: every event the listener handles after
/// that reaches the session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub session: SessionId,
    pub sub: SubId,
    pub cache: CacheName,
    pub filter: Filter,
    pub recipient: Recipient<Push>,
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

    fn handle(&mut self, Published(event): Published, _: &mut Context<Self>) {
        if !self.dedup.first_sighting(event.id, Instant::now()) {
            self.metrics.duplicates_dropped.inc();
            return;
        }
        self.metrics.listener_events.inc();
        let mut encoded: Option<Arc<EncodedEvent>> = None;
        self.index
            .for_each_match(event.cache.as_str(), &event.key, |target| {
                let event = encoded.get_or_insert_with(|| EncodedEvent::new(event.clone()));
                target.recipient.do_send(Push {
                    sub: target.sub,
                    event: event.clone(),
                });
            });
    }
}

impl Handler<Register> for Listener {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) {
        let target = Target {
            session: msg.session,
            sub: msg.sub,
            recipient: msg.recipient,
        };
        self.index.insert(msg.cache, &msg.filter, target);
        self.metrics.subscriptions.set(self.index.len() as i64);
    }
}

impl Handler<Unregister> for Listener {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Context<Self>) {
        self.index.remove(msg.cache.as_str(), &msg.filter, |t| {
            t.session == msg.session && t.sub == msg.sub
        });
        self.metrics.subscriptions.set(self.index.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{Event, EventKind, SegmentId, Version};
    use crate::metrics::Metrics;
    use actix::{Actor, Context, Handler};
    use tokio::sync::mpsc;

    /// Stands in for a session: forwards what it is pushed to the test.
    struct FakeSession(mpsc::UnboundedSender<(SubId, Arc<EncodedEvent>)>);

    impl Actor for FakeSession {
        type Context = Context<Self>;
    }

    impl Handler<Push> for FakeSession {
        type Result = ();
        fn handle(&mut self, push: Push, _: &mut Context<Self>) {
            let _ = self.0.send((push.sub, push.event));
        }
    }

    fn event(key: &str) -> Arc<Event> {
        Arc::new(Event {
            id: uuid::Uuid::now_v7(),
            kind: EventKind::Created,
            cache: CacheName::parse("c").unwrap(),
            key: Arc::from(key),
            value: None,
            version: Version(1),
            segment: SegmentId(0),
            ts: 0,
        })
    }

    #[actix::test]
    async fn an_event_fed_twice_is_delivered_once_and_counted() {
        let metrics = Metrics::new();
        let listener = Listener::new(&ListenerConfig::default(), metrics.push.clone()).start();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let session = FakeSession(tx).start();
        listener
            .send(Register {
                session: 1,
                sub: 7,
                cache: CacheName::parse("c").unwrap(),
                filter: Filter::Prefix(Arc::from("p/")),
                recipient: session.recipient(),
            })
            .await
            .unwrap();
        let first = event("p/1");
        listener.send(Published(first.clone())).await.unwrap();
        listener.send(Published(first.clone())).await.unwrap();
        listener.send(Published(event("q/1"))).await.unwrap();
        let second = event("p/2");
        listener.send(Published(second.clone())).await.unwrap();

        let (sub, pushed) = rx.recv().await.unwrap();
        assert_eq!((sub, pushed.event.id), (7, first.id));
        let (_, pushed) = rx.recv().await.unwrap();
        assert_eq!(
            pushed.event.id, second.id,
            "the duplicate and the unmatched key were not pushed"
        );
        assert_eq!(metrics.push.duplicates_dropped.get(), 1);
        assert_eq!(metrics.push.listener_events.get(), 3);
    }
}
