//! The node's Prometheus metrics: one registry per node (so two grids in one
//! process, as in the partition bench, never share counters), and typed
//! handles that the components holding them increment: the grid's own
//! ([`GridMetrics`], in `grid/`), the push side's and the HTTP layer's.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::cluster::link::LinkTraffic;
use crate::grid::GridMetrics;

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

fn registered_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("metric definition is valid");
    registry
        .register(Box::new(gauge.clone()))
        .expect("metric names are unique");
    gauge
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
    pub gaps_filled: IntCounter,
    pub relayed_events: IntCounter,
    pub relayed_skips: IntCounter,
    pub gaps_skipped: IntCounter,
    pub events_delivered: IntCounter,
    pub events_conflated: IntCounter,
    pub slow_consumer_closes: IntCounter,
}

impl PushMetrics {
    fn new(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| registered_gauge(registry, name, help);
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
                "Events dropped by the listener as already passed on (by id or by version)",
            ),
            relayed_events: counter(
                "pushgrid_listener_relayed_events_total",
                "Events other members relayed here, for subscribers whose filters match them",
            ),
            relayed_skips: counter(
                "pushgrid_listener_relayed_skips_total",
                "Versions other members relayed here only as skipped: no subscriber here wants their key",
            ),
            gaps_filled: counter(
                "pushgrid_listener_gaps_filled_total",
                "Gaps in a segment's events the listener filled from an owner's history",
            ),
            gaps_skipped: counter(
                "pushgrid_listener_gaps_skipped_total",
                "Gaps in a segment's events no history held any longer, skipped",
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
    /// Bytes over the links to other members.
    pub link: LinkTraffic,
    cluster: ClusterGauges,
    cache_entries: IntGaugeVec,
    cache_bytes: IntGaugeVec,
    cache_segments: IntGaugeVec,
    segments_lost: IntGaugeVec,
    /// Renders one at a time: each resets the per-cache gauges (a deleted
    /// cache's series must go) and sets them again.
    rendering: std::sync::Mutex<()>,
}

/// One cache's figures at the instant of a render.
pub struct CacheFigures<'a> {
    pub name: &'a str,
    pub entries: usize,
    pub bytes: usize,
    /// Segments this node leads, and holds as a backup.
    pub segments_primary: usize,
    pub segments_backup: usize,
    /// Segments that lost their data with every owner and wait for an
    /// operator to declare it lost, and those declared lost.
    pub segments_lost: usize,
    pub segments_declared_lost: usize,
}

/// The cluster as this node sees it at the instant of a render.
pub struct ClusterFigures {
    pub members: usize,
    pub epoch: u64,
    /// Whether the node holds the majority's lease (always, alone).
    pub leased: bool,
}

struct ClusterGauges {
    members: IntGauge,
    epoch: IntGauge,
    leased: IntGauge,
}

impl ClusterGauges {
    fn new(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| registered_gauge(registry, name, help);
        ClusterGauges {
            members: gauge(
                "pushgrid_cluster_members",
                "Members of the cluster in the agreed topology",
            ),
            epoch: gauge(
                "pushgrid_cluster_epoch",
                "Epoch of the agreed topology this node follows",
            ),
            leased: gauge(
                "pushgrid_cluster_leased",
                "1 while this node holds the majority's lease and may act on its segments, else 0",
            ),
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
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
        let cache_bytes = IntGaugeVec::new(
            Opts::new("pushgrid_cache_bytes", "Bytes of keys and values held per cache"),
            &["cache"],
        )
        .expect("metric definition is valid");
        let cache_segments = IntGaugeVec::new(
            Opts::new(
                "pushgrid_cache_segments",
                "Segments of each cache this node holds, by role (primary or backup)",
            ),
            &["cache", "role"],
        )
        .expect("metric definition is valid");
        let segments_lost = IntGaugeVec::new(
            Opts::new(
                "pushgrid_segments_lost",
                "Segments of each cache whose data went with every owner: unavailable until an \
                 operator declares it lost (awaiting_declaration), or declared lost and started \
                 again empty (declared)",
            ),
            &["cache", "state"],
        )
        .expect("metric definition is valid");
        let link = LinkTraffic::default();
        for collector in [
            Box::new(latency.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(cache_entries.clone()),
            Box::new(cache_bytes.clone()),
            Box::new(cache_segments.clone()),
            Box::new(segments_lost.clone()),
            Box::new(link.sent.clone()),
            Box::new(link.received.clone()),
            Box::new(link.transfer_sent.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        Metrics {
            cluster: ClusterGauges::new(&registry),
            link,
            cache_segments,
            segments_lost,
            grid: GridMetrics::new(&registry),
            push: PushMetrics::new(&registry),
            http: HttpMetrics { latency },
            registry,
            cache_entries,
            cache_bytes,
            rendering: std::sync::Mutex::new(()),
        }
    }

    /// The Prometheus text exposition of every metric, with the cluster's
    /// and the per-cache gauges set from `cluster` and `caches` at this
    /// instant.
    pub fn render<'a>(
        &self,
        cluster: ClusterFigures,
        caches: impl IntoIterator<Item = CacheFigures<'a>>,
    ) -> String {
        let _rendering = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        self.cluster.members.set(cluster.members as i64);
        self.cluster.epoch.set(cluster.epoch as i64);
        self.cluster.leased.set(i64::from(cluster.leased));
        self.cache_entries.reset();
        self.cache_bytes.reset();
        self.cache_segments.reset();
        self.segments_lost.reset();
        for cache in caches {
            let labels = [cache.name];
            self.cache_entries
                .with_label_values(&labels)
                .set(cache.entries as i64);
            self.cache_bytes
                .with_label_values(&labels)
                .set(cache.bytes as i64);
            for (role, count) in [
                ("primary", cache.segments_primary),
                ("backup", cache.segments_backup),
            ] {
                self.cache_segments
                    .with_label_values(&[cache.name, role])
                    .set(count as i64);
            }
            for (state, count) in [
                ("awaiting_declaration", cache.segments_lost),
                ("declared", cache.segments_declared_lost),
            ] {
                self.segments_lost
                    .with_label_values(&[cache.name, state])
                    .set(count as i64);
            }
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
