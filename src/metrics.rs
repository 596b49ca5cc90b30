//! The node's Prometheus metrics: one registry per node (so several nodes in
//! one process, as in tests, never share counters), and typed handles that
//! the components holding them increment.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::grid::{EventKind, Grid, GridError};
use crate::protocol::ErrorCode;

/// Counters the grid's partitions and router increment.
#[derive(Clone)]
pub struct GridMetrics {
    operations: IntCounterVec,
    /// One per event kind, resolved once: counted on every write.
    events: [IntCounter; 4],
    evictions: IntCounterVec,
}

impl GridMetrics {
    pub fn count_operation<T>(&self, op: &str, result: &Result<T, GridError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(err) => ErrorCode::from(err).as_str(),
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

    pub fn count_evictions(&self, cache: &impl std::fmt::Display, count: usize) {
        self.evictions
            .with_label_values(&[&cache.to_string()])
            .inc_by(count as u64);
    }
}

/// The HTTP request-latency histogram, observed by the web layer.
#[derive(Clone)]
pub struct HttpMetrics {
    latency: HistogramVec,
}

impl HttpMetrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.latency
            .with_label_values(&[method, route, &status.to_string()])
            .observe(seconds);
    }
}

/// The push side's gauges and counters: the listener's and the sessions'.
#[derive(Clone)]
pub struct PushMetrics {
    pub sessions: IntGauge,
    pub sse_streams: IntGauge,
    pub polls_held: IntGauge,
    pub subscriptions: IntGauge,
    pub listener_events: IntCounter,
    pub duplicates_dropped: IntCounter,
    pub events_delivered: IntCounter,
    pub events_conflated: IntCounter,
    pub slow_consumer_closes: IntCounter,
}

impl PushMetrics {
    fn new(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("metric definition is valid");
            registry
                .register(Box::new(gauge.clone()))
                .expect("metric names are unique");
            gauge
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("metric definition is valid");
            registry
                .register(Box::new(counter.clone()))
                .expect("metric names are unique");
            counter
        };
        PushMetrics {
            sessions: gauge("pushgrid_sessions", "Connected WebSocket sessions"),
            sse_streams: gauge("pushgrid_sse_streams", "Open Server-Sent Events streams"),
            polls_held: gauge("pushgrid_polls_held", "Long polls waiting for an event"),
            subscriptions: gauge("pushgrid_subscriptions", "Active subscriptions"),
            listener_events: counter(
                "pushgrid_listener_events_total",
                "Distinct events that reached the listener",
            ),
            duplicates_dropped: counter(
                "pushgrid_listener_duplicates_dropped_total",
                "Events dropped by the listener because their id was already seen",
            ),
            events_delivered: counter(
                "pushgrid_events_delivered_total",
                "Event frames written to subscribers",
            ),
            events_conflated: counter(
                "pushgrid_events_conflated_total",
                "Writes skipped for a slow subscriber because a later write of the key replaced them",
            ),
            slow_consumer_closes: counter(
                "pushgrid_slow_consumer_closes_total",
                "Sessions closed with 1013 because they could not keep up even with conflation",
            ),
        }
    }
}

pub struct Metrics {
    registry: Registry,
    pub grid: GridMetrics,
    pub http: HttpMetrics,
    pub push: PushMetrics,
    cache_entries: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let operations = IntCounterVec::new(
            Opts::new("pushgrid_operations_total", "Grid operations by kind and outcome"),
            &["op", "outcome"],
        )
        .expect("metric definition is valid");
        let events = IntCounterVec::new(
            Opts::new(
                "pushgrid_events_emitted_total",
                "Events emitted by partitions, by kind",
            ),
            &["kind"],
        )
        .expect("metric definition is valid");
        let evictions = IntCounterVec::new(
            Opts::new(
                "pushgrid_evictions_total",
                "Entries evicted past max_entries, by cache",
            ),
            &["cache"],
        )
        .expect("metric definition is valid");
        let latency = HistogramVec::new(
            HistogramOpts::new("pushgrid_http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ],
            ),
            &["method", "route", "status"],
        )
        .expect("metric definition is valid");
        let cache_entries = IntGaugeVec::new(
            Opts::new("pushgrid_cache_entries", "Entries held per cache"),
            &["cache"],
        )
        .expect("metric definition is valid");
        for collector in [
            Box::new(operations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(events.clone()),
            Box::new(evictions.clone()),
            Box::new(latency.clone()),
            Box::new(cache_entries.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        let events =
            ["created", "modified", "removed", "expired"].map(|kind| events.with_label_values(&[kind]));
        let push = PushMetrics::new(&registry);
        Metrics {
            push,
            registry,
            grid: GridMetrics {
                operations,
                events,
                evictions,
            },
            http: HttpMetrics { latency },
            cache_entries,
        }
    }

    /// Registers a component's own collector (the push side's gauges).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry
            .register(collector)
            .expect("metric names are unique");
    }

    /// The Prometheus text exposition of every metric, with the per-cache
    /// gauges read from the grid at this instant.
    pub fn render(&self, grid: &Grid) -> String {
        for cache in grid.caches() {
            self.cache_entries
                .with_label_values(&[cache.name().as_str()])
                .set(cache.entry_count() as i64);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
