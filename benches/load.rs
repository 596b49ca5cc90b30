//! The end-to-end load test: `cargo bench --bench load [-- SCENARIO... FLAGS]`.
//!
//! Each scenario starts a fresh pushgrid node (release build, ephemeral
//! port) and drives it over real WebSockets from this process, then does the
//! same against the baseline (a minimal tokio-tungstenite fan-out server, in
//! a process of its own) and reports pushgrid / baseline for each figure.
//! Scenarios: `scoreboard`, `fanout`, `idle`, `writes`, `snapshot` (all by
//! default), `transports` (on request: the comparison of WebSocket, SSE,
//! long polling and interval polling in `docs/transports.md`, see
//! [`load::transports`]) and `cluster` (on request: three members on
//! loopback addresses, see [`load::cluster`]; `--connections N`). Flags: `--subscribers N`, `--publishers N`,
//! `--keys N`, `--rate W` (writes/s), `--duration S`, `--padding BYTES`,
//! `--format json|msgpack|both`, `--idle N`, `--entries N`, `--no-baseline`;
//! for `transports`, `--updates N`, `--interval-ms MS` (interval polling)
//! and `--followers N` (subscribers at once; one is measured).
//! Output: a Markdown table on stdout and `target/load-report.json`
//! (`target/transports-report.json` for `transports`).

mod load {
    pub mod baseline;
    pub mod clients;
    pub mod cluster;
    pub mod node;
    pub mod report;
    pub mod transports;
}

use std::collections::BTreeMap;

use clap::Parser;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use load::clients::{self, Counters, Format};
use load::node::ServerProcess;
use load::report::Report;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NODE_CONFIG: &str = "[caches.bench]\nsegments = 256\n";

type StartServer = fn() -> ServerProcess;

/// `cargo bench --bench load -- [SCENARIO...] [FLAGS]`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "load",
    about = "End-to-end load test of pushgrid against a minimal baseline"
)]
struct Settings {
    /// Scenarios to run: scoreboard, fanout, idle, writes, snapshot (the
    /// default: all five), transports and cluster.
    #[arg(value_parser = ["scoreboard", "fanout", "idle", "writes", "snapshot", "transports", "cluster"])]
    scenarios: Vec<String>,
    /// Subscribers (default: 1000).
    #[arg(long)]
    subscribers: Option<usize>,
    /// Publishing connections.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Keys written.
    #[arg(long, default_value_t = 100)]
    keys: usize,
    /// Writes per second (default: the scenario's own).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds each run writes for (default: the scenario's own).
    #[arg(long)]
    duration: Option<f64>,
    /// Bytes of padding in each value.
    #[arg(long, default_value_t = 0)]
    padding: usize,
    /// json, msgpack or both (default: the scenario's own).
    #[arg(long, value_parser = ["json", "msgpack", "both"])]
    format: Option<String>,
    /// Idle connections of the idle scenario.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Entries of the snapshot scenario.
    #[arg(long, default_value_t = 100_000)]
    entries: usize,
    /// Skip the baseline server.
    #[arg(long)]
    no_baseline: bool,
    /// Updates of the transports scenario.
    #[arg(long, default_value_t = 3000)]
    updates: u64,
    /// Interval polling's period, in the transports scenario.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Subscribers of each transport at once (one is measured).
    #[arg(long, default_value_t = 5)]
    followers: usize,
    /// HTTP connections writing at once, in the cluster scenario.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Passed by `cargo bench` to every bench binary.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Settings {
    fn parse_args() -> Settings {
        let mut settings = Settings::parse();
        if settings.scenarios.is_empty() {
            settings.scenarios = ["scoreboard", "fanout", "idle", "writes", "snapshot"]
                .map(String::from)
                .into();
        }
        settings
    }

    fn formats(&self) -> Option<Vec<Format>> {
        Some(match self.format.as_deref()? {
            "json" => vec![Format::Json],
            "msgpack" => vec![Format::MsgPack],
            _ => vec![Format::Json, Format::MsgPack],
        })
    }

    /// The formats asked for, or the scenario's own default.
    fn formats_or(&self, default: &[Format]) -> Vec<Format> {
        self.formats().unwrap_or_else(|| default.to_vec())
    }

    /// The servers to run each scenario against, by name.
    fn servers(&self) -> Vec<(&'static str, StartServer)> {
        let mut servers: Vec<(&'static str, StartServer)> =
            vec![("pushgrid", || ServerProcess::pushgrid(NODE_CONFIG))];
        if !self.no_baseline {
            servers.push(("baseline", ServerProcess::baseline));
        }
        servers
    }
}

fn main() {
    if std::env::var_os(load::baseline::SERVER_MODE_ENV).is_some() {
        return load::baseline::serve();
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let settings = Settings::parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut report = Report {
        machine: machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        rows: Vec::new(),
    };
    runtime.block_on(async {
        for scenario in settings.scenarios.clone() {
            eprintln!("== {scenario}");
            match scenario.as_str() {
                "scoreboard" => scoreboard(&settings, &mut report).await,
                "fanout" => fanout(&settings, &mut report).await,
                "idle" => idle(&settings, &mut report).await,
                "writes" => writes(&settings, &mut report).await,
                "snapshot" => snapshot(&settings, &mut report).await,
                "transports" => transports(&settings).await,
                "cluster" => {
                    let workload = load::cluster::Workload {
                        connections: settings.connections.max(1),
                        duration: Duration::from_secs_f64(settings.duration.unwrap_or(5.0)),
                        entries: settings.entries,
                    };
                    load::cluster::run(&workload, &mut report).await
                }
                other => unreachable!("clap admits only known scenarios, not {other}"),
            }
        }
    });
    if report.rows.is_empty() {
        return;
    }
    let table = report.markdown();
    println!("\nLoad test on {}\n\n{table}", report.machine);
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/load-report.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&report).expect("encodes")).expect("write the report");
    println!("Saved {}", out.display());
}

/// The transport comparison of `docs/transports.md` ([`load::transports`]).
async fn transports(settings: &Settings) {
    let workload = load::transports::Workload {
        updates: settings.updates,
        keys: 10,
        rate: settings.rate.unwrap_or(100.0),
        interval: Duration::from_millis(settings.interval_ms),
        padding: settings.padding,
        followers: settings.followers.max(1),
    };
    load::transports::compare(&workload, &machine()).await;
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{} cores, {cpu}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )
}

/// One fan-out run: `subscribers` all following every key, `publishers`
/// writing `rate` writes/s over `keys` keys for `duration`.
struct Run {
    subscribers: usize,
    publishers: usize,
    keys: usize,
    rate: f64,
    duration: Duration,
    padding: usize,
}

async fn run_fanout(server: &ServerProcess, format: Format, run: &Run) -> BTreeMap<String, Value> {
    let url = server.ws_url();
    let mut subscribers = Vec::new();
    for batch in (0..run.subscribers).collect::<Vec<_>>().chunks(100) {
        subscribers.extend(
            join_all(batch.iter().map(|_| async {
                let mut ws = clients::connect(&url, format).await;
                clients::subscribe(&mut ws, format, "bench", "bench/").await;
                ws
            }))
            .await,
        );
    }
    let counters = Counters::new(run.keys);
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let give_up = started + run.duration + Duration::from_secs(15);
    let receivers: Vec<_> = subscribers
        .into_iter()
        .map(|ws| tokio::spawn(clients::receive(ws, format, counters.clone(), give_up)))
        .collect();
    let publishers = join_all((0..run.publishers).map(|p| {
        let counters = counters.clone();
        let url = url.clone();
        let keys: Vec<usize> = (0..run.keys).filter(|k| k % run.publishers == p).collect();
        let rate = run.rate / run.publishers as f64;
        let (duration, padding) = (run.duration, run.padding);
        async move {
            let ws = clients::connect(&url, format).await;
            clients::publish(ws, format, keys, counters, rate, duration, padding).await
        }
    }))
    .await;
    counters.freeze();
    let deliveries: Vec<_> = join_all(receivers)
        .await
        .into_iter()
        .map(|d| d.expect("receiver"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;

    let mut ack = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut sent, mut acked) = (0, 0);
    for p in &publishers {
        ack.add(&p.ack_latency_us).expect("same bounds");
        sent += p.sent;
        acked += p.acked;
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut events, mut lost, mut duplicated, mut out_of_order, mut conflated) = (0, 0, 0, 0, 0);
    for d in &deliveries {
        latency.add(&d.latency_us).expect("same bounds");
        events += d.events;
        lost += d.lost;
        duplicated += d.duplicated;
        out_of_order += d.out_of_order;
        conflated += d.conflated_events;
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let send_seconds = run.duration.as_secs_f64();
    let mut figures = BTreeMap::new();
    figures.insert("subscribers".into(), json!(run.subscribers));
    figures.insert("offered_writes_per_s".into(), json!(run.rate));
    figures.insert(
        "writes_acked_per_s".into(),
        json!((acked as f64 / send_seconds).round()),
    );
    figures.insert("writes_unacked".into(), json!(sent - acked));
    figures.insert("ack_latency_p50_ms".into(), json!(ms(&ack, 0.5)));
    figures.insert("ack_latency_p99_ms".into(), json!(ms(&ack, 0.99)));
    figures.insert(
        "events_delivered_per_s".into(),
        json!((events as f64 / elapsed.max(send_seconds)).round()),
    );
    figures.insert("latency_p50_ms".into(), json!(ms(&latency, 0.5)));
    figures.insert("latency_p90_ms".into(), json!(ms(&latency, 0.9)));
    figures.insert("latency_p99_ms".into(), json!(ms(&latency, 0.99)));
    figures.insert("latency_p999_ms".into(), json!(ms(&latency, 0.999)));
    figures.insert("latency_max_ms".into(), json!(latency.max() as f64 / 1000.0));
    figures.insert("events_lost".into(), json!(lost));
    figures.insert("events_duplicated".into(), json!(duplicated));
    figures.insert("events_out_of_order".into(), json!(out_of_order));
    figures.insert("events_conflated".into(), json!(conflated));
    figures.insert("server_rss_bytes".into(), json!(server.rss_bytes()));
    figures.insert("server_cpu_seconds".into(), json!((cpu * 100.0).round() / 100.0));
    eprintln!(
        "   {} {} subs={} rate={} -> {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms, lost {lost}, dup {duplicated}",
        server.name,
        format.name(),
        run.subscribers,
        run.rate,
        events as f64 / elapsed.max(send_seconds),
        ms(&latency, 0.5),
        ms(&latency, 0.99)
    );
    figures
}

async fn scoreboard(settings: &Settings, report: &mut Report) {
    let run = Run {
        subscribers: settings.subscribers.unwrap_or(1000),
        publishers: settings.publishers,
        keys: settings.keys,
        rate: settings.rate.unwrap_or(1000.0),
        duration: Duration::from_secs_f64(settings.duration.unwrap_or(10.0)),
        padding: settings.padding,
    };
    for format in settings.formats_or(&[Format::Json, Format::MsgPack]) {
        for (_, start) in settings.servers() {
            let server = start();
            let figures = run_fanout(&server, format, &run).await;
            report.add("scoreboard", format.name(), server.name, figures);
        }
    }
}

/// Raises the write rate until p99 passes 50 ms or deliveries fall behind;
/// reports the best sustained step.
async fn fanout(settings: &Settings, report: &mut Report) {
    for format in settings.formats_or(&[Format::Json]) {
        for (name, start) in settings.servers() {
            let subscribers = settings.subscribers.unwrap_or(1000);
            // One step at `rate`: its figures, if the server sustained it.
            let step = |rate: f64| async move {
                let server = start();
                let run = Run {
                    subscribers,
                    publishers: settings.publishers,
                    keys: settings.keys,
                    rate,
                    duration: Duration::from_secs_f64(settings.duration.unwrap_or(3.0)),
                    padding: settings.padding,
                };
                let figures = run_fanout(&server, format, &run).await;
                let p99 = figures["latency_p99_ms"].as_f64().unwrap_or(f64::MAX);
                let delivered = figures["events_delivered_per_s"].as_f64().unwrap_or(0.0);
                let sustained = p99 <= 50.0 && delivered >= 0.9 * rate * subscribers as f64;
                sustained.then_some(figures)
            };
            // Double the rate until a step fails, then halve the gap between
            // the last good rate and the failed one twice: the same search
            // for both servers, to within a quarter of the last doubling.
            let mut best: Option<(f64, BTreeMap<String, Value>)> = None;
            let mut rate = settings.rate.unwrap_or(25.0);
            let failed = loop {
                match step(rate).await {
                    Some(figures) => best = Some((rate, figures)),
                    None => break rate,
                }
                rate *= 2.0;
                if rate > 1_000_000.0 {
                    break rate;
                }
            };
            if let Some((good, _)) = &best {
                let (mut low, mut high) = (*good, failed);
                for _ in 0..2 {
                    let middle = (low + high) / 2.0;
                    match step(middle).await {
                        Some(figures) => {
                            low = middle;
                            best = Some((middle, figures));
                        }
                        None => high = middle,
                    }
                }
            }
            if let Some((_, figures)) = best {
                report.add("fanout", format.name(), name, figures);
            }
        }
    }
}

/// Many idle subscribed connections: server memory per connection.
async fn idle(settings: &Settings, report: &mut Report) {
    for (_, start) in settings.servers() {
        let server = start();
        let url = server.ws_url();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = server.rss_bytes();
        let mut connections = Vec::with_capacity(settings.idle);
        for batch in (0..settings.idle).collect::<Vec<_>>().chunks(200) {
            connections.extend(
                join_all(batch.iter().map(|i| {
                    let url = url.clone();
                    async move {
                        let mut ws = clients::connect(&url, Format::Json).await;
                        clients::subscribe(&mut ws, Format::Json, "bench", &format!("idle/{i}/")).await;
                        ws
                    }
                }))
                .await,
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = server.rss_bytes();
        let per_connection = after.saturating_sub(before) / settings.idle.max(1) as u64;
        eprintln!(
            "   {} {} idle connections: {} bytes each",
            server.name, settings.idle, per_connection
        );
        let mut figures = BTreeMap::new();
        figures.insert("connections".into(), json!(settings.idle));
        figures.insert("server_rss_bytes".into(), json!(after));
        figures.insert("memory_per_connection_bytes".into(), json!(per_connection));
        report.add("idle", "json", server.name, figures);
        drop(connections);
    }
}

/// No subscribers: acknowledged writes per second over WebSockets (and REST
/// for pushgrid).
async fn writes(settings: &Settings, report: &mut Report) {
    let duration = Duration::from_secs_f64(settings.duration.unwrap_or(5.0));
    for format in settings.formats_or(&[Format::Json, Format::MsgPack]) {
        for (_, start) in settings.servers() {
            let server = start();
            let url = server.ws_url();
            let cpu_before = server.cpu_seconds();
            let started = Instant::now();
            let acked: u64 = join_all((0..settings.publishers).map(|worker| {
                let url = url.clone();
                async move {
                    let ws = clients::connect(&url, format).await;
                    clients::publish_closed_loop(ws, format, worker, 256, duration).await
                }
            }))
            .await
            .into_iter()
            .sum();
            let per_s = (acked as f64 / started.elapsed().as_secs_f64()).round();
            eprintln!("   {} {} ws writes: {per_s} acked/s", server.name, format.name());
            let mut figures = BTreeMap::new();
            figures.insert("ws_writes_acked_per_s".into(), json!(per_s));
            figures.insert(
                "server_cpu_seconds".into(),
                json!(server.cpu_seconds() - cpu_before),
            );
            if server.name == "pushgrid" && format == Format::Json {
                let rest = rest_writes(&server.addr, 16, duration).await;
                eprintln!("   pushgrid rest writes: {rest} acked/s");
                figures.insert("rest_writes_acked_per_s".into(), json!(rest));
            }
            report.add("writes", format.name(), server.name, figures);
        }
    }
}

/// `connections` keep-alive HTTP/1.1 clients, each PUT after PUT.
async fn rest_writes(addr: &str, connections: usize, duration: Duration) -> f64 {
    let started = Instant::now();
    let done: u64 = join_all((0..connections).map(|c| async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let mut buffer = vec![0u8; 8192];
        let mut done = 0u64;
        while started.elapsed() < duration {
            let body = format!("{{\"n\":{done}}}");
            let request = format!(
                "PUT /api/v1/caches/bench/entries/rest{c}-{} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                done % 1000,
                body.len()
            );
            stream.write_all(request.as_bytes()).await.expect("write");
            // Read one response: headers, then Content-Length bytes.
            let mut filled = 0;
            loop {
                let n = stream.read(&mut buffer[filled..]).await.expect("read");
                assert!(n > 0, "connection closed");
                filled += n;
                let text = String::from_utf8_lossy(&buffer[..filled]);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                        .unwrap_or(0);
                    assert!(text.starts_with("HTTP/1.1 20"), "{text}");
                    if filled >= end + 4 + length {
                        break;
                    }
                }
            }
            done += 1;
        }
        done
    }))
    .await
    .into_iter()
    .sum();
    (done as f64 / started.elapsed().as_secs_f64()).round()
}

/// Time from `subscribe` to the snapshot's `done` on a large cache.
async fn snapshot(settings: &Settings, report: &mut Report) {
    let server = ServerProcess::pushgrid(NODE_CONFIG);
    let url = server.ws_url();
    let mut ws = clients::connect(&url, Format::MsgPack).await;
    let mut sent = 0;
    while sent < settings.entries {
        let batch = 2000.min(settings.entries - sent);
        for i in sent..sent + batch {
            let op = json!({"op":"put","cache":"bench","key":format!("snap/{i:07}"),"value":{"home":i % 7,"away":i % 5,"minute":i % 90}});
            ws.feed(Format::MsgPack.encode(&op)).await.expect("send");
        }
        ws.flush().await.expect("flush");
        let mut acked = 0;
        while acked < batch {
            ws.next().await.expect("reply").expect("frame");
            acked += 1;
        }
        sent += batch;
    }
    for format in settings.formats_or(&[Format::Json, Format::MsgPack]) {
        let mut ws = clients::connect(&url, format).await;
        let started = Instant::now();
        let entries = clients::subscribe(&mut ws, format, "bench", "snap/").await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(entries, settings.entries, "the snapshot holds every entry");
        eprintln!(
            "   pushgrid {} snapshot of {entries} entries: {ms:.0} ms to done",
            format.name()
        );
        let mut figures = BTreeMap::new();
        figures.insert("entries".into(), json!(entries));
        figures.insert("time_to_done_ms".into(), json!(ms.round()));
        figures.insert("server_rss_bytes".into(), json!(server.rss_bytes()));
        report.add("snapshot", format.name(), "pushgrid", figures);
    }
}
