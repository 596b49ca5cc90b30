//! The listener actor: every event of every partition passes through it. It
//! drops an event whose id it has already seen (the [`DedupWindow`]) and
//! hands each first sighting on to the subscriptions it concerns.

use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler};
use prometheus::IntCounter;

use super::dedup::DedupWindow;
use crate::config::ListenerConfig;
use crate::grid::Published;

pub struct Listener {
    dedup: DedupWindow,
    duplicates_dropped: IntCounter,
    events_routed: IntCounter,
}

impl Listener {
    pub fn new(config: &ListenerConfig, metrics: &crate::metrics::Metrics) -> Self {
        let duplicates_dropped = IntCounter::new(
            "pushgrid_listener_duplicates_dropped_total",
            "Events dropped by the listener because their id was already seen",
        )
        .expect("metric definition is valid");
        let events_routed = IntCounter::new(
            "pushgrid_listener_events_total",
            "Distinct events that reached the listener",
        )
        .expect("metric definition is valid");
        metrics.register(Box::new(duplicates_dropped.clone()));
        metrics.register(Box::new(events_routed.clone()));
        Listener {
            dedup: DedupWindow::new(
                config.dedup_capacity,
                Duration::from_millis(config.dedup_max_age_ms),
            ),
            duplicates_dropped,
            events_routed,
        }
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(65_536);
    }
}

impl Handler<Published> for Listener {
    type Result = ();

    fn handle(&mut self, Published(event): Published, _: &mut Context<Self>) {
        if !self.dedup.first_sighting(event.id, Instant::now()) {
            self.duplicates_dropped.inc();
            return;
        }
        self.events_routed.inc();
    }
}
