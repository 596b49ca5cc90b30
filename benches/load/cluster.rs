//! The cluster scenario (`cargo bench --bench load -- cluster`): three
//! members on their own loopback addresses (127.0.0.81-83), driven over
//! REST from this process with keep-alive HTTP/1.1 connections spread over
//! the members. It measures:
//!
//! - write latency p50/p99 and acknowledged writes/s with one and with two
//!   owners per segment, side by side, and the inter-node bytes per write
//!   (every member's link bytes sent, over the writes);
//! - rebalance: 100,000 entries in a two-owner cache, then a fourth member
//!   joins while writes go on; the time until it holds its share and the
//!   cluster has switched to it (it leads its segments), the
//!   state-transfer bytes, the segments a new primary had to take whole,
//!   and the writes refused meanwhile with the write latency p50/p99/max;
//! - failover: a member killed with SIGKILL under writes; the time until a
//!   write to every segment is acknowledged again, and what subscribers on
//!   the other members saw across it: every acknowledged write delivered to
//!   each, counted as lost if not, duplicated if twice;
//! - push from any member: WebSocket subscribers to a whole cache spread
//!   over the three members while writers spread over them too; events
//!   delivered/s and put-to-delivery p50/p99, against the same workload on
//!   one node started in the same run, and the inter-node bytes per
//!   delivered event.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::clients::{self, now_us, Format};
use super::node::ServerProcess;
use super::report::Report;

const FAILURE_TIMEOUT_MS: u64 = 1000;
const SEGMENTS: u32 = 64;
const LINK_PORT: u16 = 19_081;

pub struct Workload {
    pub connections: usize,
    pub duration: Duration,
    pub entries: usize,
}

fn ip(n: usize) -> String {
    format!("127.0.0.{}", 80 + n)
}

fn link(n: usize) -> String {
    format!("{}:{LINK_PORT}", ip(n))
}

fn start_member(n: usize) -> ServerProcess {
    let seeds: Vec<String> = (1..n).map(link).collect();
    let join = (n > 1).then(|| seeds.join(","));
    ServerProcess::member(
        &ip(n),
        &format!("n{n}"),
        &link(n),
        join.as_deref(),
        FAILURE_TIMEOUT_MS,
    )
}

pub async fn run(workload: &Workload, report: &mut Report) {
    let mut members: Vec<Option<ServerProcess>> = (1..=3).map(|n| Some(start_member(n))).collect();
    let addrs: Vec<String> = members.iter().flatten().map(|m| m.addr.clone()).collect();
    until_members(&addrs, 3).await;

    // Latency and throughput, one owner against two.
    let mut figures = BTreeMap::new();
    for owners in [1, 2] {
        let cache = format!("owners{owners}");
        create_cache(&addrs[0], &cache, owners).await;
        let sent_before = link_bytes(&addrs).await;
        let run = write_load(&addrs, &cache, workload.connections, workload.duration, None).await;
        let sent = link_bytes(&addrs).await - sent_before;
        let (p50, p99) = (run.quantile_ms(0.5), run.quantile_ms(0.99));
        let per_s = (run.acked as f64 / workload.duration.as_secs_f64()).round();
        let bytes_per_write = (sent / run.acked.max(1) as f64).round();
        eprintln!(
            "   {owners} owner(s): {per_s} writes/s, p50 {p50:.2} ms, p99 {p99:.2} ms, {bytes_per_write} link bytes/write, {} refused",
            run.refused
        );
        figures.insert(format!("writes_{owners}_owner_per_s"), json!(per_s));
        figures.insert(format!("latency_{owners}_owner_p50_ms"), json!(p50));
        figures.insert(format!("latency_{owners}_owner_p99_ms"), json!(p99));
        figures.insert(
            format!("link_bytes_per_write_{owners}_owner"),
            json!(bytes_per_write),
        );
    }

    // Push from any member, against one node doing the same alone.
    create_cache(&addrs[0], "push", 2).await;
    let sent_before = link_bytes(&addrs).await;
    let spread = push_load(
        &addrs,
        "push",
        PUSH_SUBSCRIBERS,
        workload.connections,
        workload.duration,
    )
    .await;
    let sent = link_bytes(&addrs).await - sent_before;
    let alone = {
        let node = tokio::task::spawn_blocking(|| ServerProcess::pushgrid("demo = false\n"))
            .await
            .expect("a single node starts");
        create_cache(&node.addr, "push", 1).await;
        let single = [node.addr.clone()];
        push_load(
            &single,
            "push",
            PUSH_SUBSCRIBERS,
            workload.connections,
            workload.duration,
        )
        .await
    };
    for (name, run) in [("3 members", &spread), ("1 node", &alone)] {
        eprintln!(
            "   push on {name}: {} events delivered/s to {PUSH_SUBSCRIBERS} subscribers, put-to-delivery p50 {:.2} ms, p99 {:.2} ms ({} writes acknowledged)",
            run.per_s(workload.duration), run.quantile_ms(0.5), run.quantile_ms(0.99), run.writes
        );
    }
    let bytes_per_event = (sent / spread.delivered.max(1) as f64).round();
    eprintln!("   push on 3 members: {bytes_per_event} link bytes per delivered event");
    for (prefix, run) in [("push_3_members", &spread), ("push_1_node", &alone)] {
        figures.insert(
            format!("{prefix}_events_per_s"),
            json!(run.per_s(workload.duration)),
        );
        figures.insert(format!("{prefix}_delivery_p50_ms"), json!(run.quantile_ms(0.5)));
        figures.insert(format!("{prefix}_delivery_p99_ms"), json!(run.quantile_ms(0.99)));
    }
    figures.insert("push_link_bytes_per_event".into(), json!(bytes_per_event));

    // Rebalance: a fourth member joins a cache of `entries` under writes.
    create_cache(&addrs[0], "rebalance", 2).await;
    fill(&addrs, "rebalance", workload.entries, workload.connections).await;
    let transfer_before = metric_sum(&addrs, "pushgrid_cluster_transfer_sent_bytes_total").await;
    let stop = Arc::new(AtomicU64::new(0));
    let writes = write_load(
        &addrs,
        "rebalance",
        workload.connections,
        Duration::from_secs(600),
        Some(stop.clone()),
    );
    let joining = async {
        let started = Instant::now();
        let fourth = tokio::task::spawn_blocking(|| start_member(4))
            .await
            .expect("n4 starts");
        let all: Vec<String> = addrs.iter().cloned().chain([fourth.addr.clone()]).collect();
        until_members(&all, 4).await;
        until_holds_its_share(&fourth.addr, "rebalance", workload.entries).await;
        until_stable_and_leading(&fourth.addr, "n4").await;
        let took = started.elapsed();
        stop.store(1, Ordering::Release);
        (took, fourth)
    };
    let (run, (took, fourth)) = futures_util::future::join(writes, joining).await;
    let mut all = addrs.clone();
    all.push(fourth.addr.clone());
    let transferred = metric_sum(&all, "pushgrid_cluster_transfer_sent_bytes_total").await - transfer_before;
    let taken_whole = metric_sum(&all, "pushgrid_take_over_transfers_total{cache=\"rebalance\"}").await;
    for (reason, count) in &run.reasons {
        eprintln!("     refused {count}: {reason}");
    }
    eprintln!(
        "   rebalance of {} entries to a fourth member: {:.2} s, {:.1} MB transferred, {taken_whole} take-overs \
         moved a whole copy; {} writes acknowledged and {} refused meanwhile, latency p50/p99/max {:.2}/{:.2}/{:.2} ms",
        workload.entries,
        took.as_secs_f64(),
        transferred / 1e6,
        run.acked,
        run.refused,
        run.quantile_ms(0.5),
        run.quantile_ms(0.99),
        run.quantile_ms(1.0),
    );
    figures.insert("rebalance_seconds".into(), json!(took.as_secs_f64()));
    figures.insert("rebalance_transfer_bytes".into(), json!(transferred));
    figures.insert("rebalance_take_over_transfers".into(), json!(taken_whole));
    figures.insert("rebalance_writes_refused".into(), json!(run.refused));
    figures.insert("rebalance_write_p99_ms".into(), json!(run.quantile_ms(0.99)));
    figures.insert("rebalance_write_max_ms".into(), json!(run.quantile_ms(1.0)));
    members.push(Some(fourth));

    // Failover: kill n2 under writes through the others, subscribers on
    // each of them.
    let survivors: Vec<String> = vec![addrs[0].clone(), addrs[2].clone(), all[3].clone()];
    let mut subscribers = Vec::new();
    for addr in &survivors {
        let mut ws = clients::connect(&format!("ws://{addr}/ws"), Format::Json).await;
        clients::subscribe(&mut ws, Format::Json, "owners2", "").await;
        subscribers.push(ws);
    }
    let stop = Arc::new(AtomicU64::new(0));
    let writes = write_load(
        &survivors,
        "owners2",
        workload.connections,
        Duration::from_secs(600),
        Some(stop.clone()),
    );
    let failover = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let killed = Instant::now();
        members[1].as_ref().expect("n2 runs").kill();
        every_segment_writable(&survivors[0], "owners2").await;
        stop.store(1, Ordering::Release);
        killed.elapsed()
    };
    let receiving = join_all(
        subscribers
            .into_iter()
            .map(|ws| receive_until_quiet(ws, Duration::from_secs(3))),
    );
    let ((run, took), received) =
        futures_util::future::join(futures_util::future::join(writes, failover), receiving).await;
    eprintln!(
        "   failover: every segment writable again {:.2} s after kill -9",
        took.as_secs_f64()
    );
    figures.insert("failover_seconds".into(), json!(took.as_secs_f64()));
    let (mut lost, mut duplicated, mut delivered) = (0, 0, 0);
    for seen in &received {
        lost += run
            .acknowledged
            .iter()
            .filter(|w| !seen.writes.contains(*w))
            .count();
        duplicated += seen.duplicated;
        delivered += seen.writes.len();
    }
    eprintln!(
        "   across the kill -9: {} acknowledged writes, {delivered} deliveries to {} subscribers on the survivors, {lost} lost, {duplicated} duplicated",
        run.acknowledged.len(),
        received.len()
    );
    figures.insert("failover_push_deliveries".into(), json!(delivered));
    figures.insert("failover_push_lost".into(), json!(lost));
    figures.insert("failover_push_duplicated".into(), json!(duplicated));
    members[1] = None;

    report.add("cluster", "rest", "pushgrid", figures);
}

/// Subscribers in the push phase, spread over the members.
const PUSH_SUBSCRIBERS: usize = 12;

/// What a push load did.
struct Pushed {
    writes: u64,
    delivered: u64,
    delivery_us: Histogram<u64>,
}

impl Pushed {
    fn per_s(&self, duration: Duration) -> f64 {
        (self.delivered as f64 / duration.as_secs_f64()).round()
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        self.delivery_us.value_at_quantile(q) as f64 / 1000.0
    }
}

/// `subscribers` WebSocket clients to the whole of `cache` and
/// `connections` writers, both spread over `addrs`, for `duration`: each
/// write carries its send time, each delivery is timed against it.
async fn push_load(
    addrs: &[String],
    cache: &str,
    subscribers: usize,
    connections: usize,
    duration: Duration,
) -> Pushed {
    let mut sockets = Vec::new();
    for s in 0..subscribers {
        let url = format!("ws://{}/ws", addrs[s % addrs.len()]);
        let mut ws = clients::connect(&url, Format::Json).await;
        clients::subscribe(&mut ws, Format::Json, cache, "").await;
        sockets.push(ws);
    }
    let started = Instant::now();
    let give_up = started + duration + Duration::from_secs(3);
    let receivers = join_all(sockets.into_iter().map(|mut ws| async move {
        let mut delivered = 0u64;
        let mut delivery_us = Histogram::new(3).expect("histogram");
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(give_up.into(), ws.next()).await {
            let Message::Text(text) = message else { continue };
            let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if let Some(sent) = frame["event"]["value"]["t"].as_u64() {
                delivered += 1;
                let _ = delivery_us.record(now_us().saturating_sub(sent));
            }
        }
        (delivered, delivery_us)
    }));
    let writers = join_all((0..connections).map(|c| {
        let addr = addrs[c % addrs.len()].clone();
        async move {
            let mut http = Http::connect(&addr).await;
            let mut acked = 0u64;
            let mut n = 0u64;
            while started.elapsed() < duration {
                let path = format!("/api/v1/caches/{cache}/entries/p{c}-{}", n % 100);
                let body = format!("{{\"t\":{},\"c\":{n}}}", now_us());
                match http.request("PUT", &path, &body).await {
                    Some((200 | 201, _)) => acked += 1,
                    Some(_) => {}
                    None => http = Http::connect(&addr).await,
                }
                n += 1;
            }
            acked
        }
    }));
    let (received, written) = futures_util::future::join(receivers, writers).await;
    let mut pushed = Pushed {
        writes: written.iter().sum(),
        delivered: 0,
        delivery_us: Histogram::new(3).expect("histogram"),
    };
    for (delivered, histogram) in received {
        pushed.delivered += delivered;
        pushed.delivery_us.add(&histogram).expect("same histogram bounds");
    }
    pushed
}

/// What one subscriber received: the writes (key, `n`) its events carried,
/// and how many events came a second time (by id).
struct Received {
    writes: std::collections::HashSet<(String, u64)>,
    duplicated: usize,
}

/// Reads `ws`'s events until none came for `quiet`.
async fn receive_until_quiet(mut ws: clients::Ws, quiet: Duration) -> Received {
    let mut received = Received {
        writes: Default::default(),
        duplicated: 0,
    };
    let mut ids = std::collections::HashSet::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(quiet, ws.next()).await {
        let Message::Text(text) = message else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let event = &frame["event"];
        let (Some(id), Some(key), Some(n)) = (
            event["id"].as_str(),
            event["key"].as_str(),
            event["value"]["n"].as_u64(),
        ) else {
            continue;
        };
        if !ids.insert(id.to_string()) {
            received.duplicated += 1;
        }
        received.writes.insert((key.to_string(), n));
    }
    received
}

/// What a write load did.
struct Run {
    acked: u64,
    refused: u64,
    /// Why writes were refused: the error message, digits blanked, and
    /// how often.
    reasons: BTreeMap<String, u64>,
    latency_us: Histogram<u64>,
    /// The writes acknowledged: (key, `n`).
    acknowledged: Vec<(String, u64)>,
}

impl Run {
    fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

/// `connections` keep-alive clients spread over `addrs`, each PUT after
/// PUT to keys of its own, until `duration` passes or `stop` is set.
async fn write_load(
    addrs: &[String],
    cache: &str,
    connections: usize,
    duration: Duration,
    stop: Option<Arc<AtomicU64>>,
) -> Run {
    let started = Instant::now();
    let runs = join_all((0..connections).map(|c| {
        let addr = addrs[c % addrs.len()].clone();
        let stop = stop.clone();
        async move {
            let mut http = Http::connect(&addr).await;
            let mut run = Run {
                acked: 0,
                refused: 0,
                reasons: BTreeMap::new(),
                latency_us: Histogram::new(3).expect("histogram"),
                acknowledged: Vec::new(),
            };
            let mut n = 0u64;
            while started.elapsed() < duration && stop.as_ref().is_none_or(|s| s.load(Ordering::Acquire) == 0)
            {
                let key = format!("w{c}-{}", n % 1000);
                let path = format!("/api/v1/caches/{cache}/entries/{key}");
                let sent = Instant::now();
                match http.request("PUT", &path, &format!("{{\"n\":{n}}}")).await {
                    Some((200 | 201, _)) => {
                        run.acked += 1;
                        run.acknowledged.push((key, n));
                        let _ = run.latency_us.record(sent.elapsed().as_micros() as u64);
                    }
                    Some((_, body)) => {
                        run.refused += 1;
                        let reason: String = body
                            .chars()
                            .map(|c| if c.is_ascii_digit() { '#' } else { c })
                            .collect();
                        *run.reasons.entry(reason).or_default() += 1;
                    }
                    None => {
                        run.refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        http = Http::connect(&addr).await;
                    }
                }
                n += 1;
            }
            run
        }
    }))
    .await;
    let mut total = Run {
        acked: 0,
        refused: 0,
        reasons: BTreeMap::new(),
        latency_us: Histogram::new(3).expect("histogram"),
        acknowledged: Vec::new(),
    };
    for run in runs {
        total.acked += run.acked;
        total.acknowledged.extend(run.acknowledged);
        total.refused += run.refused;
        for (reason, count) in run.reasons {
            *total.reasons.entry(reason).or_default() += count;
        }
        total
            .latency_us
            .add(&run.latency_us)
            .expect("same histogram bounds");
    }
    total
}

/// Writes `entries` keys of `cache`, each once, over `connections` clients.
async fn fill(addrs: &[String], cache: &str, entries: usize, connections: usize) {
    let started = Instant::now();
    join_all((0..connections).map(|c| {
        let addr = addrs[c % addrs.len()].clone();
        async move {
            let mut http = Http::connect(&addr).await;
            for n in (c..entries).step_by(connections) {
                let path = format!("/api/v1/caches/{cache}/entries/e{n}");
                loop {
                    match http
                        .request(
                            "PUT",
                            &path,
                            &format!("{{\"n\":{n},\"pad\":\"0123456789abcdef\"}}"),
                        )
                        .await
                    {
                        Some((200 | 201, _)) => break,
                        Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        None => http = Http::connect(&addr).await,
                    }
                }
            }
        }
    }))
    .await;
    eprintln!(
        "   filled {entries} entries in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Waits until the member at `addr` holds about its share of `entries`:
/// its copies' share of the cache's segments, less 5% for the uneven hash.
async fn until_holds_its_share(addr: &str, cache: &str, entries: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = get(addr, "/metrics").await.1;
        let held: f64 = ["primary", "backup"]
            .iter()
            .map(|role| {
                sample(
                    &text,
                    &format!("pushgrid_cache_segments{{cache=\"{cache}\",role=\"{role}\"}}"),
                )
            })
            .sum();
        let have = sample(&text, &format!("pushgrid_cache_entries{{cache=\"{cache}\"}}"));
        let share = entries as f64 * held / SEGMENTS as f64;
        if held > 0.0 && have >= share * 0.95 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "n4 never held its share: {have} of {share}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Until `addr` sees no rebalance under way and member `id` leading
/// segments: the cluster has switched to the joined member.
async fn until_stable_and_leading(addr: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body = get(addr, "/api/v1/cluster").await.1;
        let view: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let leads = view["caches"]["rebalance"]["owners"]
            .as_array()
            .is_some_and(|ranges| ranges.iter().any(|r| r["owners"][0] == id));
        if leads && view["rebalance"] == "stable" {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never led segments");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes a key in every segment of `cache` through `addr`, each retried
/// until acknowledged.
async fn every_segment_writable(addr: &str, cache: &str) {
    let mut http = Http::connect(addr).await;
    let mut pending: Vec<u32> = (0..SEGMENTS).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0u64;
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "segments {pending:?} never writable again"
        );
        let key = format!("probe{n}");
        n += 1;
        let segment = pushgrid::grid::hash::segment_of(&key, SEGMENTS).0;
        if !pending.contains(&segment) {
            continue;
        }
        match http
            .request("PUT", &format!("/api/v1/caches/{cache}/entries/{key}"), "1")
            .await
        {
            Some((200 | 201, _)) => pending.retain(|s| *s != segment),
            Some(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            None => http = Http::connect(addr).await,
        }
    }
}

async fn create_cache(addr: &str, cache: &str, owners: u32) {
    let body = format!("{{\"segments\":{SEGMENTS},\"num_owners\":{owners}}}");
    let mut http = Http::connect(addr).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match http
            .request("PUT", &format!("/api/v1/caches/{cache}"), &body)
            .await
        {
            Some((200 | 201, _)) => break,
            other => {
                assert!(Instant::now() < deadline, "cache {cache} not created: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Every member places it and holds a lease before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn until_members(addrs: &[String], count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for addr in addrs {
        loop {
            let body = get(addr, "/api/v1/cluster").await.1;
            let view: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if view["members"].as_array().map_or(0, Vec::len) == count {
                break;
            }
            assert!(Instant::now() < deadline, "{addr} never saw {count} members");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Bytes every member sent over its links so far.
async fn link_bytes(addrs: &[String]) -> f64 {
    metric_sum(addrs, "pushgrid_cluster_link_sent_bytes_total").await
}

async fn metric_sum(addrs: &[String], name: &str) -> f64 {
    let mut sum = 0.0;
    for addr in addrs {
        sum += sample(&get(addr, "/metrics").await.1, name);
    }
    sum
}

/// The value of one sample of a Prometheus text page (0 when absent).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn get(addr: &str, path: &str) -> (u16, String) {
    let mut http = Http::connect(addr).await;
    http.request("GET", path, "").await.unwrap_or((0, String::new()))
}

/// One keep-alive HTTP/1.1 connection; a request is `None` when the
/// connection failed.
struct Http {
    addr: String,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl Http {
    async fn connect(addr: &str) -> Http {
        let stream = TcpStream::connect(addr).await.ok();
        if let Some(stream) = &stream {
            let _ = stream.set_nodelay(true);
        }
        Http {
            addr: addr.to_string(),
            stream,
            buffer: Vec::with_capacity(64 * 1024),
        }
    }

    async fn request(&mut self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        let stream = self.stream.as_mut()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let exchange = async {
            stream.write_all(request.as_bytes()).await.ok()?;
            self.buffer.clear();
            let mut chunk = [0u8; 16 * 1024];
            loop {
                if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buffer[..end]).to_string();
                    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while self.buffer.len() < end + 4 + length {
                        let n = stream.read(&mut chunk).await.ok()?;
                        if n == 0 {
                            return None;
                        }
                        self.buffer.extend_from_slice(&chunk[..n]);
                    }
                    let body = String::from_utf8_lossy(&self.buffer[end + 4..end + 4 + length]).to_string();
                    return Some((status, body));
                }
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                self.buffer.extend_from_slice(&chunk[..n]);
            }
        };
        let reply = tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .ok()
            .flatten();
        if reply.is_none() {
            self.stream = None;
        }
        reply
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
