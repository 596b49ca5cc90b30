//! The grid's own counters: operations by kind and outcome, events emitted
//! by kind, evictions by cache, partitions running. Registered in the node's registry
//! (`crate::metrics::Metrics`), incremented by the router and partitions.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::{EventKind, GridError};

/// Counters the grid's partitions and router increment.
#[derive(Clone)]
pub struct GridMetrics {
    operations: IntCounterVec,
    /// One per event kind, resolved once: counted on every write.
    events: [IntCounter; 4],
    evictions: IntCounterVec,
    /// Partition actors running: what a deleted cache gives back.
    pub partitions: IntGauge,
    /// Requests sent on to the member leading their segment.
    pub forwarded: IntCounter,
    /// Segments moving on this node: taken over, or departing.
    pub segments_moving: IntGauge,
    /// Take-overs here that held their segment while a whole copy moved
    /// (taken from a further owner, or sent to a backup behind), by cache:
    /// the pauses a rebalance is built to avoid.
    take_over_transfers: IntCounterVec,
    /// How long a primary's write waited for every backup to apply it.
    pub replication_seconds: Histogram,
}

impl GridMetrics {
    pub fn new(registry: &Registry) -> Self {
        let vec = |name: &str, help: &str, label: &[&str]| {
            let counters =
                IntCounterVec::new(Opts::new(name, help), label).expect("metric definition is valid");
            registry
                .register(Box::new(counters.clone()))
                .expect("metric names are unique");
            counters
        };
        let operations = vec(
            "pushgrid_operations_total",
            "Grid operations by kind and outcome",
            &["op", "outcome"],
        );
        let events = vec(
            "pushgrid_events_emitted_total",
            "Events emitted by partitions, by kind",
            &["kind"],
        );
        let evictions = vec(
            "pushgrid_evictions_total",
            "Entries evicted past max_entries, by cache",
            &["cache"],
        );
        let partitions = IntGauge::new("pushgrid_partitions", "Partition actors running on this node")
            .expect("metric definition is valid");
        let forwarded = IntCounter::new(
            "pushgrid_forwarded_requests_total",
            "Requests sent on to the member leading their segment",
        )
        .expect("metric definition is valid");
        let replication_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "pushgrid_replication_seconds",
                "Replication lag: how long a write waited for every backup of its segment to apply it",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )
        .expect("metric definition is valid");
        let segments_moving = IntGauge::new(
            "pushgrid_segments_moving",
            "Segments moving on this node: a new primary bringing its copies level, or a copy handing over",
        )
        .expect("metric definition is valid");
        let take_over_transfers = vec(
            "pushgrid_take_over_transfers_total",
            "Take-overs on this node that held their segment while a whole copy moved (taken from \
             a further owner, or sent to a backup behind), by cache",
            &["cache"],
        );
        for collector in [
            Box::new(partitions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(segments_moving.clone()),
            Box::new(forwarded.clone()),
            Box::new(replication_seconds.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        GridMetrics {
            partitions,
            forwarded,
            segments_moving,
            take_over_transfers,
            replication_seconds,
            operations,
            events: ["created", "modified", "removed", "expired"]
                .map(|kind| events.with_label_values(&[kind])),
            evictions,
        }
    }

    pub fn count_operation<T>(&self, op: &str, result: &Result<T, GridError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(err) => err.code(),
        };
        self.operations.with_label_values(&[op, outcome]).inc();
    }

    pub fn count_event(&self, kind: EventKind) {
        let index = match kind {
            EventKind::Created => 0,
            EventKind::Modified => 1,
            EventKind::Removed => 2,
            EventKind::Expired => 3,
        };
        self.events[index].inc();
    }

    /// Drops a deleted cache's series.
    pub fn forget_cache(&self, cache: &impl std::fmt::Display) {
        let _ = self.evictions.remove_label_values(&[&cache.to_string()]);
        let _ = self
            .take_over_transfers
            .remove_label_values(&[&cache.to_string()]);
    }

    pub fn count_take_over_transfer(&self, cache: &impl std::fmt::Display) {
        self.take_over_transfers
            .with_label_values(&[&cache.to_string()])
            .inc();
    }

    pub fn count_evictions(&self, cache: &impl std::fmt::Display, count: usize) {
        self.evictions
            .with_label_values(&[&cache.to_string()])
            .inc_by(count as u64);
    }
}
