//! The transport comparison (`cargo bench --bench load -- transports`): one
//! subscriber follows 10 keys while a publisher writes a fixed number of
//! updates to them, once per way of pushing: a WebSocket, an SSE stream,
//! long polling, and naive interval polling of `GET .../entries/{key}`.
//!
//! The subscriber reaches the node through a counting TCP proxy, so every
//! byte of its connections is counted at the socket, in both directions,
//! HTTP headers and WebSocket framing included; the publisher connects
//! directly and is not counted. HTTP clients here send the headers a
//! browser would ([`BROWSER_HEADERS`]), so the per-request overhead is what
//! a page pays. Server CPU per update is the node's CPU time over the run,
//! less control runs that have the same writes and no subscriber, divided
//! by the updates delivered to all the run's followers: the measured one
//! and a few more of the same transport connected directly, so that their
//! share stands out from the writes' own variation.
//!
//! Latency is, for every write, the time from its send until the client held
//! it or a newer value of its key: the delivery latency for the push
//! transports, which deliver every write, and the staleness of the client's
//! view for interval polling, which sees only the values current at its
//! polls (the writes in between count as missed).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::clients::{self, now_us, Counters, Delivery, Format, Stamp};
use super::node::ServerProcess;

/// Headers a browser sends with a same-origin request, beside `Host`.
const BROWSER_HEADERS: &[(&str, &str)] = &[
    (
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Accept-Language", "en-US,en;q=0.9"),
    ("Referer", "http://127.0.0.1/"),
    ("Connection", "keep-alive"),
];

pub const TRANSPORTS: [&str; 4] = ["websocket", "sse", "long-poll", "interval-poll"];

pub struct Workload {
    pub updates: u64,
    pub keys: usize,
    pub rate: f64,
    pub interval: Duration,
    pub padding: usize,
    /// Subscribers of the transport at once: one measured through the
    /// proxy, the rest only for the server's CPU per update.
    pub followers: usize,
}

/// Bytes and connections through the proxy.
#[derive(Default)]
struct Wire {
    to_server: AtomicU64,
    to_client: AtomicU64,
    connections: AtomicU64,
}

/// A TCP proxy in front of `upstream` that counts what passes.
async fn counting_proxy(upstream: String) -> (String, Arc<Wire>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
    let addr = listener.local_addr().expect("bound").to_string();
    let wire = Arc::new(Wire::default());
    let counts = wire.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            counts.connections.fetch_add(1, Ordering::Relaxed);
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = counts.clone();
            tokio::spawn(pipe(client_read, server_write, move |n| {
                up.to_server.fetch_add(n, Ordering::Relaxed);
            }));
            let down = counts.clone();
            tokio::spawn(pipe(server_read, client_write, move |n| {
                down.to_client.fetch_add(n, Ordering::Relaxed);
            }));
        }
    });
    (addr, wire)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: impl Fn(u64),
) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count(n as u64);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// A minimal HTTP/1.1 client on one kept-alive connection.
struct Http {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
    requests: u64,
}

struct Response {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Http {
    async fn connect(addr: &str) -> Http {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Http {
            stream,
            host: addr.to_string(),
            buf: Vec::new(),
            requests: 0,
        }
    }

    async fn send_request(&mut self, path: &str, accept: &str) {
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\n",
            self.host
        );
        for (name, value) in BROWSER_HEADERS {
            head += &format!("{name}: {value}\r\n");
        }
        head += "\r\n";
        self.stream
            .write_all(head.as_bytes())
            .await
            .expect("send a request");
        self.requests += 1;
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads a response's status line and headers.
    async fn head(&mut self) -> (u16, String) {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                self.buf.drain(..end + 4);
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return (status, head.to_ascii_lowercase());
            }
            assert!(self.fill().await, "the connection closed mid-response");
        }
    }

    /// Reads `n` body bytes.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "the connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    /// One chunk of a chunked body; `None` at its end.
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        let size_line = loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).to_string();
                self.buf.drain(..end + 2);
                break line;
            }
            if !self.fill().await {
                return None;
            }
        };
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        let mut data = self.take(size + 2).await;
        data.truncate(size);
        (size > 0).then_some(data)
    }

    /// A whole GET: sent, and its response read (sized or chunked).
    async fn get(&mut self, path: &str) -> Response {
        self.send_request(path, "*/*").await;
        let (status, headers) = self.head().await;
        let body = if let Some(length) = header(&headers, "content-length") {
            self.take(length.parse().expect("a length")).await
        } else if header(&headers, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            while let Some(chunk) = self.chunk().await {
                body.extend(chunk);
            }
            body
        } else {
            Vec::new()
        };
        Response {
            status,
            headers,
            body,
        }
    }
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
}

fn key_index(key: &str, keys: usize) -> usize {
    key.trim_start_matches("bench/").parse::<usize>().unwrap_or(0) % keys
}

/// Records one Event object (as JSON) in `delivery`.
fn record_event(delivery: &mut Delivery, event: &Value, keys: usize) {
    let Ok(stamp) = serde_json::from_value::<Stamp>(event["value"].clone()) else {
        return;
    };
    let key = key_index(event["key"].as_str().unwrap_or_default(), keys);
    delivery.record(key, &stamp, event["conflated"] == true, now_us());
}

/// Whether the subscriber may stop: every key reached its final write, or
/// it is time to give up.
fn finished(delivery: &Delivery, counters: &Counters, give_up: Instant) -> bool {
    counters.finals.get().is_some_and(|f| delivery.caught_up(f)) || Instant::now() > give_up
}

async fn follow_websocket(
    proxy: &str,
    counters: Arc<Counters>,
    ready: Ready,
    give_up: Instant,
) -> (Delivery, u64) {
    let keys = counters.keys();
    let mut request = format!("ws://{proxy}/ws").into_client_request().expect("a URL");
    for (name, value) in BROWSER_HEADERS.iter().filter(|(n, _)| *n != "Connection") {
        request
            .headers_mut()
            .insert(*name, value.parse().expect("a header value"));
    }
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "pushgrid.v1.json".parse().expect("a header value"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("handshake");
    clients::subscribe(&mut ws, Format::Json, "bench", "bench/").await;
    ready.notify_one();
    let mut delivery = Delivery::new(keys);
    while !finished(&delivery, &counters, give_up) {
        let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_millis(50), ws.next()).await else {
            continue;
        };
        if let Message::Text(text) = message {
            let message: Value = serde_json::from_str(&text).expect("JSON");
            if message["type"] == "event" {
                record_event(&mut delivery, &message["event"], keys);
            }
        }
    }
    let _ = ws.close(None).await;
    (delivery, 1)
}

async fn follow_sse(proxy: &str, counters: Arc<Counters>, ready: Ready, give_up: Instant) -> (Delivery, u64) {
    let keys = counters.keys();
    let mut http = Http::connect(proxy).await;
    http.send_request("/api/v1/caches/bench/events?prefix=bench/", "text/event-stream")
        .await;
    let (status, _) = http.head().await;
    assert_eq!(status, 200);
    let mut delivery = Delivery::new(keys);
    let mut text = String::new();
    let mut is_ready = Some(ready);
    while !finished(&delivery, &counters, give_up) {
        let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_millis(50), http.chunk()).await else {
            continue;
        };
        text.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            let event = message
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("");
            let data = message
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("");
            match event {
                "snapshot" => {
                    if let Some(ready) = is_ready.take() {
                        ready.notify_one();
                    }
                }
                "event" => record_event(&mut delivery, &serde_json::from_str(data).expect("JSON"), keys),
                _ => {}
            }
        }
    }
    (delivery, http.requests)
}

async fn follow_long_poll(
    proxy: &str,
    counters: Arc<Counters>,
    ready: Ready,
    give_up: Instant,
) -> (Delivery, u64) {
    let keys = counters.keys();
    let mut http = Http::connect(proxy).await;
    let first = http.get("/api/v1/caches/bench/poll?prefix=bench/").await;
    let answer: Value = serde_json::from_slice(&first.body).expect("JSON");
    let mut position = answer["position"].as_str().expect("a position").to_string();
    ready.notify_one();
    let mut delivery = Delivery::new(keys);
    while !finished(&delivery, &counters, give_up) {
        let path = format!("/api/v1/caches/bench/poll?prefix=bench/&after={position}&timeout_ms=1000");
        let response = http.get(&path).await;
        assert_eq!(response.status, 200, "{}", response.headers);
        let answer: Value = serde_json::from_slice(&response.body).expect("JSON");
        for event in answer["events"].as_array().expect("events") {
            record_event(&mut delivery, event, keys);
        }
        position = answer["position"].as_str().expect("a position").to_string();
    }
    (delivery, http.requests)
}

async fn follow_interval_poll(
    proxy: &str,
    counters: Arc<Counters>,
    ready: Ready,
    give_up: Instant,
    interval: Duration,
) -> (Delivery, u64) {
    let keys = counters.keys();
    let mut http = Http::connect(proxy).await;
    ready.notify_one();
    let mut delivery = Delivery::new(keys);
    let mut versions = vec![String::new(); keys];
    let mut staleness = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
    let mut tick = tokio::time::interval(interval);
    while !finished(&delivery, &counters, give_up) {
        tick.tick().await;
        for (key, version) in versions.iter_mut().enumerate() {
            let response = http
                .get(&format!("/api/v1/caches/bench/entries/bench/{key}"))
                .await;
            if response.status != 200 {
                continue; // not written yet
            }
            let etag = header(&response.headers, "etag").unwrap_or_default().to_string();
            if etag != *version {
                *version = etag;
                let stamp: Stamp = serde_json::from_slice(&response.body).expect("a stamped value");
                // The writes in between are never seen; each was stale
                // until now, when the client got a newer value.
                let now = now_us();
                let previous = delivery.last_seen(key);
                for sent in counters.write_times(key, previous + 1, stamp.c.saturating_sub(1)) {
                    staleness
                        .record(now.saturating_sub(sent).max(1))
                        .expect("in range");
                }
                staleness
                    .record(now.saturating_sub(stamp.t).max(1))
                    .expect("in range");
                delivery.record(key, &stamp, true, now);
            }
        }
    }
    delivery.latency_us = staleness;
    (delivery, http.requests)
}

/// Told once the subscriber is following, so no write goes unseen.
type Ready = Arc<tokio::sync::Notify>;

/// One run over `transport` (or, for `None`, the control run with no
/// subscriber): the figures of its row.
pub async fn run(transport: Option<&str>, workload: &Workload) -> BTreeMap<String, Value> {
    let server = ServerProcess::pushgrid("[caches.bench]\nsegments = 256\n");
    let (proxy, wire) = counting_proxy(server.addr.clone()).await;
    let counters = Counters::with_write_times(workload.keys);
    let duration = Duration::from_secs_f64(workload.updates as f64 / workload.rate);
    let give_up = Instant::now() + duration + Duration::from_secs(30);
    let follow = |addr: String| {
        let transport = transport.map(str::to_string);
        let counters = counters.clone();
        let interval = workload.interval;
        let ready: Ready = Arc::new(tokio::sync::Notify::new());
        let notify = ready.clone();
        let task = tokio::spawn(async move {
            match transport.as_deref() {
                Some("websocket") => follow_websocket(&addr, counters, notify, give_up).await,
                Some("sse") => follow_sse(&addr, counters, notify, give_up).await,
                Some("long-poll") => follow_long_poll(&addr, counters, notify, give_up).await,
                Some("interval-poll") => {
                    follow_interval_poll(&addr, counters, notify, give_up, interval).await
                }
                other => panic!("unknown transport {other:?}"),
            }
        });
        (task, ready)
    };
    // The measured subscriber, through the proxy; and the others that only
    // add deliveries, so the server's CPU per update stands out from the
    // writes' own.
    let (subscriber, others) = match transport {
        None => (None, Vec::new()),
        Some(_) => {
            let measured = follow(proxy.clone());
            let others: Vec<_> = (1..workload.followers)
                .map(|_| follow(server.addr.clone()))
                .collect();
            (Some(measured), others)
        }
    };
    for (_, ready) in subscriber.iter().chain(&others) {
        ready.notified().await;
    }
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let publisher = clients::connect(&server.ws_url(), Format::Json).await;
    let keys: Vec<usize> = (0..workload.keys).collect();
    let published = clients::publish(
        publisher,
        Format::Json,
        keys,
        counters.clone(),
        workload.rate,
        duration,
        workload.padding,
    )
    .await;
    counters.freeze();
    let mut all_delivered = 0;
    for (other, _) in others {
        all_delivered += other.await.expect("a follower ran").0.events;
    }
    let (mut delivery, requests) = match subscriber {
        Some((subscriber, _)) => subscriber.await.expect("the subscriber ran"),
        None => (Delivery::new(workload.keys), 0),
    };
    delivery.count_unreached(&counters);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    let up = wire.to_server.load(Ordering::Relaxed) as f64;
    let down = wire.to_client.load(Ordering::Relaxed) as f64;
    let delivered = delivery.events.max(1) as f64;
    let mut figures = BTreeMap::new();
    figures.insert("updates_written".into(), json!(published.acked));
    figures.insert("updates_delivered".into(), json!(delivery.events));
    figures.insert(
        "updates_delivered_all_followers".into(),
        json!(delivery.events + all_delivered),
    );
    figures.insert("followers".into(), json!(workload.followers));
    figures.insert(
        "updates_missed".into(),
        json!(delivery.conflated_skips + delivery.lost),
    );
    figures.insert("requests".into(), json!(requests));
    figures.insert(
        "connections".into(),
        json!(wire.connections.load(Ordering::Relaxed)),
    );
    figures.insert("bytes_to_server".into(), json!(up));
    figures.insert("bytes_to_client".into(), json!(down));
    figures.insert("bytes_to_server_per_update".into(), json!(up / delivered));
    figures.insert("bytes_to_client_per_update".into(), json!(down / delivered));
    figures.insert(
        "latency_p50_ms".into(),
        json!(delivery.latency_us.value_at_quantile(0.5) as f64 / 1000.0),
    );
    figures.insert(
        "latency_p99_ms".into(),
        json!(delivery.latency_us.value_at_quantile(0.99) as f64 / 1000.0),
    );
    figures.insert("server_cpu_s".into(), json!(cpu));
    figures.insert("seconds".into(), json!(elapsed));
    figures
}

/// The comparison: a control run (the writes, no subscriber), then one run
/// per transport, then the control again; prints its own table and saves
/// `target/transports-report.json`.
pub async fn compare(workload: &Workload, machine: &str) {
    // The writes alone, before and after the transports: their mean is
    // what the writes cost, subtracted from each transport's run.
    eprintln!("control run: the writes alone");
    let control_before = run(None, workload).await["server_cpu_s"].as_f64().unwrap_or(0.0);
    let mut rows = BTreeMap::new();
    for transport in TRANSPORTS {
        eprintln!("{transport}");
        rows.insert(transport, run(Some(transport), workload).await);
    }
    eprintln!("control run again");
    let control_after = run(None, workload).await["server_cpu_s"].as_f64().unwrap_or(0.0);
    let control_cpu = (control_before + control_after) / 2.0;
    for figures in rows.values_mut() {
        let delivered = figures["updates_delivered_all_followers"]
            .as_f64()
            .unwrap_or(0.0)
            .max(1.0);
        let cpu = figures["server_cpu_s"].as_f64().unwrap_or(0.0);
        figures.insert(
            "server_cpu_us_per_update".into(),
            json!(((cpu - control_cpu).max(0.0) * 1e6 / delivered).round()),
        );
    }
    let mut table = String::from(
        "| transport | delivered / written | requests | bytes to server per update | bytes to client per update \
         | latency p50 (ms) | latency p99 (ms) | server CPU per update (µs) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for transport in TRANSPORTS {
        let f = &rows[transport];
        let number = |name: &str| f[name].as_f64().unwrap_or(0.0);
        table += &format!(
            "| {transport} | {} / {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |\n",
            number("updates_delivered"),
            number("updates_written"),
            number("requests"),
            number("bytes_to_server_per_update"),
            number("bytes_to_client_per_update"),
            number("latency_p50_ms"),
            number("latency_p99_ms"),
            number("server_cpu_us_per_update"),
        );
    }
    println!(
        "\nTransports on {}: {} updates at {}/s over 10 keys, interval polling every {} ms, \
         {} followers (server CPU over all of them), control runs' CPU {control_before:.3} s and \
         {control_after:.3} s\n\n{table}",
        machine,
        workload.updates,
        workload.rate,
        workload.interval.as_millis(),
        workload.followers,
    );
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/transports-report.json");
    let saved = json!({"command": std::env::args().collect::<Vec<_>>().join(" "), "machine": machine,
                       "control_cpu_s": [control_before, control_after], "transports": rows});
    std::fs::write(&out, serde_json::to_vec_pretty(&saved).expect("encodes")).expect("write the report");
    println!("Saved {}", out.display());
}
