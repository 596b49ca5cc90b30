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
