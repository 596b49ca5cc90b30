//! The load clients: open-loop publishers and measuring subscribers, over
//! real WebSockets (tokio-tungstenite), in either subprotocol.
//!
//! Every written value carries its send time and a per-key counter, so a
//! subscriber can tell put-to-delivery latency and, per key, what it lost,
//! got twice, got out of order, or was spared by conflation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

static START: OnceLock<Instant> = OnceLock::new();

/// Microseconds on one monotonic clock shared by every client.
pub fn now_us() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    MsgPack,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::MsgPack => "msgpack",
        }
    }

    fn protocol(self) -> &'static str {
        match self {
            Format::Json => "pushgrid.v1.json",
            Format::MsgPack => "pushgrid.v1.msgpack",
        }
    }

    pub fn encode(self, value: &Value) -> Message {
        match self {
            Format::Json => Message::Text(value.to_string().into()),
            Format::MsgPack => Message::Binary(rmp_serde::to_vec_named(value).expect("encodes").into()),
        }
    }

    fn decode<'a, T: Deserialize<'a>>(self, message: &'a Message) -> Option<T> {
        match (self, message) {
            (Format::Json, Message::Text(text)) => serde_json::from_str(text).ok(),
            (Format::MsgPack, Message::Binary(bytes)) => rmp_serde::from_slice(bytes).ok(),
            _ => None,
        }
    }
}

pub async fn connect(url: &str, format: Format) -> Ws {
    let mut request = url.into_client_request().expect("a ws:// URL");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format.protocol().parse().expect("a header value"),
    );
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket handshake");
    ws
}

/// Just the fields a load client reads, borrowed where it can.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, borrow)]
    event: Option<EventFields<'a>>,
    #[serde(default)]
    done: Option<bool>,
    #[serde(default)]
    entries: Option<Vec<serde::de::IgnoredAny>>,
}

#[derive(Deserialize)]
struct EventFields<'a> {
    #[serde(borrow)]
    key: &'a str,
    #[serde(default)]
    value: Option<Stamp>,
    #[serde(default)]
    conflated: bool,
}

/// What every written value carries.
#[derive(Deserialize)]
pub struct Stamp {
    pub t: u64,
    pub c: u64,
}

/// Subscribes to `prefix` and reads the snapshot; returns the entries it held.
pub async fn subscribe(ws: &mut Ws, format: Format, cache: &str, prefix: &str) -> usize {
    let op = json!({"op":"subscribe","id":1,"cache":cache,"filter":{"prefix":prefix}});
    ws.send(format.encode(&op)).await.expect("send subscribe");
    let mut entries = 0;
    let mut refusals = 0;
    let quiet = std::time::Duration::from_secs(30);
    while let Some(Ok(message)) = tokio::time::timeout(quiet, ws.next())
        .await
        .unwrap_or_else(|_| panic!("subscribing to {cache}: nothing for {quiet:?}"))
    {
        let Some(incoming) = format.decode::<Incoming>(&message) else {
            continue;
        };
        if incoming.kind == "error" && incoming.id == Some(1) {
            // Refused for now (`unavailable` while a segment moves): as a
            // client would, subscribe again a moment later.
            refusals += 1;
            assert!(refusals < 50, "subscribing to {cache}: refused 50 times");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            entries = 0;
            ws.send(format.encode(&op)).await.expect("send subscribe");
            continue;
        }
        if incoming.kind == "snapshot" {
            entries += incoming.entries.map_or(0, |e| e.len());
            if incoming.done == Some(true) {
                return entries;
            }
        }
    }
    panic!("the connection closed before the snapshot was done");
}

/// What one subscriber saw.
pub struct Delivery {
    pub latency_us: Histogram<u64>,
    pub events: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub conflated_skips: u64,
    pub conflated_events: u64,
    last: Vec<u64>,
}

impl Delivery {
    pub fn new(keys: usize) -> Self {
        Delivery {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            events: 0,
            lost: 0,
            duplicated: 0,
            out_of_order: 0,
            conflated_skips: 0,
            conflated_events: 0,
            last: vec![0; keys],
        }
    }

    pub fn record(&mut self, key: usize, stamp: &Stamp, conflated: bool, now: u64) {
        self.events += 1;
        let _ = self.latency_us.record(now.saturating_sub(stamp.t).max(1));
        let previous = self.last[key];
        if conflated {
            self.conflated_events += 1;
        }
        if stamp.c == previous + 1 {
        } else if stamp.c == previous {
            self.duplicated += 1;
        } else if stamp.c < previous {
            self.out_of_order += 1;
        } else if conflated {
            self.conflated_skips += stamp.c - previous - 1;
        } else {
            self.lost += stamp.c - previous - 1;
        }
        self.last[key] = previous.max(stamp.c);
    }

    /// The highest counter seen of `key`.
    pub fn last_seen(&self, key: usize) -> u64 {
        self.last[key]
    }

    pub fn caught_up(&self, finals: &[u64]) -> bool {
        self.last.iter().zip(finals).all(|(seen, last)| seen >= last)
    }

    /// Once the publishers stopped: every write never reached is lost.
    pub fn count_unreached(&mut self, counters: &Counters) {
        if let Some(finals) = counters.finals.get() {
            for (seen, last) in self.last.iter().zip(finals) {
                self.lost += last.saturating_sub(*seen);
            }
        }
    }
}

/// Per-key counters: the publishers' next value, and once they stop, the
/// last value of each key that subscribers must reach.
pub struct Counters {
    next: Vec<AtomicU64>,
    pub finals: OnceLock<Vec<u64>>,
    /// When kept: per key, the send time of each write (index c - 1).
    write_times: Option<std::sync::Mutex<Vec<Vec<u64>>>>,
}

impl Counters {
    pub fn new(keys: usize) -> Arc<Self> {
        Arc::new(Counters {
            next: (0..keys).map(|_| AtomicU64::new(0)).collect(),
            finals: OnceLock::new(),
            write_times: None,
        })
    }

    /// Counters that also remember when each write was sent, so a client
    /// that skips writes can tell how long each went unseen.
    pub fn with_write_times(keys: usize) -> Arc<Self> {
        Arc::new(Counters {
            next: (0..keys).map(|_| AtomicU64::new(0)).collect(),
            finals: OnceLock::new(),
            write_times: Some(std::sync::Mutex::new(vec![Vec::new(); keys])),
        })
    }

    fn note_write(&self, key: usize, c: u64, t: u64) {
        if let Some(times) = &self.write_times {
            let mut times = times.lock().expect("not poisoned");
            let times = &mut times[key];
            if times.len() < c as usize {
                times.resize(c as usize, t);
            }
            times[c as usize - 1] = t;
        }
    }

    /// The send times of writes `from..=to` of `key` (empty unless kept).
    pub fn write_times(&self, key: usize, from: u64, to: u64) -> Vec<u64> {
        let Some(times) = &self.write_times else {
            return Vec::new();
        };
        let times = times.lock().expect("not poisoned");
        (from..=to)
            .filter_map(|c| times[key].get((c as usize).checked_sub(1)?).copied())
            .collect()
    }

    pub fn keys(&self) -> usize {
        self.next.len()
    }

    pub fn freeze(&self) {
        let _ = self
            .finals
            .set(self.next.iter().map(|c| c.load(Ordering::SeqCst)).collect());
    }
}

pub fn key_name(key: usize) -> String {
    format!("bench/{key}")
}

/// Receives events until every key reached its final counter (once those are
/// known) or `give_up` passes; what was never received counts as lost.
pub async fn receive(mut ws: Ws, format: Format, counters: Arc<Counters>, give_up: Instant) -> Delivery {
    let keys = counters.next.len();
    let mut delivery = Delivery::new(keys);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            message = ws.next() => {
                let Some(Ok(message)) = message else { break };
                let Some(incoming) = format.decode::<Incoming>(&message) else { continue };
                let (Some(event), "event") = (incoming.event, incoming.kind) else { continue };
                let Some(stamp) = event.value else { continue };
                let key = event.key.trim_start_matches("bench/").parse::<usize>().unwrap_or(0) % keys;
                delivery.record(key, &stamp, event.conflated, now_us());
            }
            _ = tick.tick() => {
                if counters.finals.get().is_some_and(|f| delivery.caught_up(f)) || Instant::now() > give_up {
                    break;
                }
            }
        }
    }
    delivery.count_unreached(&counters);
    let _ = ws.close(None).await;
    delivery
}

/// What one publisher did.
pub struct Publishing {
    pub sent: u64,
    pub acked: u64,
    pub ack_latency_us: Histogram<u64>,
}

/// Writes to `keys` (round robin) at `rate` per second for `duration`, open
/// loop: on schedule, never waiting for acks. Returns once every write is
/// acknowledged (or 10 s after the last).
pub async fn publish(
    ws: Ws,
    format: Format,
    keys: Vec<usize>,
    counters: Arc<Counters>,
    rate: f64,
    duration: Duration,
    padding: usize,
) -> Publishing {
    let (mut sink, mut source) = ws.split();
    let pad = "p".repeat(padding);
    let sent = Arc::new(AtomicU64::new(0));
    let done_sending = Arc::new(OnceLock::<u64>::new());
    let writer = {
        let (sent, done_sending) = (sent.clone(), done_sending.clone());
        async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut n: u64 = 0;
            while started.elapsed() < duration {
                tick.tick().await;
                let due = (started.elapsed().as_secs_f64() * rate) as u64;
                while n < due {
                    let key = keys[n as usize % keys.len()];
                    let c = counters.next[key].fetch_add(1, Ordering::SeqCst) + 1;
                    let t = now_us();
                    counters.note_write(key, c, t);
                    let op = json!({"op":"put","id":t,"cache":"bench","key":key_name(key),
                                    "value":{"t":t,"c":c,"p":pad}});
                    if sink.feed(format.encode(&op)).await.is_err() {
                        break;
                    }
                    n += 1;
                }
                let _ = sink.flush().await;
                sent.store(n, Ordering::SeqCst);
            }
            let _ = done_sending.set(n);
            sink
        }
    };
    let reader = async {
        let mut ack_latency_us = Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
        let mut acked = 0u64;
        // Once sending is over, wait at most this long for the last acks.
        let mut give_up: Option<Instant> = None;
        loop {
            if let Some(total) = done_sending.get() {
                let deadline = *give_up.get_or_insert_with(|| Instant::now() + Duration::from_secs(10));
                if acked >= *total || Instant::now() > deadline {
                    break;
                }
            }
            // Short waits, so the end of sending is noticed at once.
            let message = match tokio::time::timeout(Duration::from_millis(20), source.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(message))) => message,
                Ok(_) => break,
            };
            if let Some(reply) = format.decode::<Incoming>(&message) {
                if reply.kind == "ok" {
                    acked += 1;
                    let _ = ack_latency_us.record(now_us().saturating_sub(reply.id.unwrap_or(0)).max(1));
                }
            }
        }
        (acked, ack_latency_us)
    };
    let (mut sink, (acked, ack_latency_us)) = tokio::join!(writer, reader);
    let _ = sink.close().await;
    Publishing {
        sent: sent.load(Ordering::SeqCst),
        acked,
        ack_latency_us,
    }
}

/// Writes as fast as acks allow, `window` writes in flight, to distinct keys;
/// returns the writes acknowledged.
pub async fn publish_closed_loop(
    ws: Ws,
    format: Format,
    worker: usize,
    window: usize,
    duration: Duration,
) -> u64 {
    let (mut sink, mut source) = ws.split();
    let started = Instant::now();
    let put = |n: u64| json!({"op":"put","id":n,"cache":"bench","key":format!("w{worker}/{}", n % 10_000),"value":{"n":n}});
    let mut sent = 0u64;
    for _ in 0..window {
        sink.feed(format.encode(&put(sent))).await.expect("send");
        sent += 1;
    }
    sink.flush().await.expect("flush");
    let mut acked = 0u64;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(10), source.next()).await {
        // Take every ack already here, then refill the window in one flush.
        let mut batch = vec![message];
        while let Some(Some(Ok(message))) = source.next().now_or_never() {
            batch.push(message);
        }
        let acks = batch
            .iter()
            .filter(|m| format.decode::<Incoming>(m).is_some_and(|r| r.kind == "ok"))
            .count() as u64;
        acked += acks;
        if started.elapsed() < duration {
            for _ in 0..acks {
                sink.feed(format.encode(&put(sent))).await.expect("send");
                sent += 1;
            }
            sink.flush().await.expect("flush");
        } else if acked >= sent {
            break;
        }
    }
    acked
}
