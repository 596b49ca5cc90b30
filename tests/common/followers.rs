//! Subscribers of every transport (WebSocket, SSE, long polling) following
//! a whole cache on a member of a cluster while a fault strikes, and the
//! check that each saw every acknowledged write once, in version order,
//! and ended on the final state (or was sent an explicit reset).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::cluster::{Cluster, History};
use super::sse::{JsonData, SseClient};
use super::ws::WsClient;
use super::{client, send};

/// Entries by key: (value, version).
pub type State = BTreeMap<String, (u64, u64)>;

#[derive(Clone, Copy, Debug)]
pub enum Transport {
    WebSocket,
    Sse,
    Poll,
}

enum Feed {
    Ws(WsClient),
    Sse { client: SseClient, last_id: String },
    Poll { http: awc::Client, position: String },
}

/// One subscriber and what it was sent. It holds no borrow of the
/// cluster, which may change members while it follows.
pub struct Follower {
    pub label: String,
    feed: Feed,
    /// The URL it follows (SSE and long polling).
    url: String,
    received: Received,
    /// `degraded` and `recovered`, as they came.
    pub notices: Vec<String>,
}

/// What a follower was sent: its snapshot (the last reset's, if any) and
/// the events since.
struct Received {
    snapshot: State,
    events: Vec<Value>,
    /// Reset snapshots it was sent.
    resets: usize,
    /// The entries of a reset snapshot, until its last frame or message.
    incoming: Vec<Value>,
}

impl Received {
    /// One frame or message of a reset snapshot: the whole snapshot
    /// replaces what was held once its last part is in.
    fn reset_part(&mut self, entries: &[Value], done: bool) {
        self.incoming.extend(entries.iter().cloned());
        if done {
            self.snapshot = state_of(&std::mem::take(&mut self.incoming));
            self.events.clear();
            self.resets += 1;
        }
    }
}

impl Follower {
    /// Subscribes to the whole of `cache` on member `i` over `transport`,
    /// retrying until the member serves it; returns once the snapshot is in.
    pub async fn start(cluster: &Cluster, i: usize, cache: &str, transport: Transport) -> Follower {
        let label = format!("{transport:?} on n{}", i + 1);
        let (feed, snapshot, url) = match transport {
            Transport::WebSocket => {
                let (ws, snapshot) = subscriber(cluster, i, cache).await;
                (Feed::Ws(ws), snapshot, String::new())
            }
            Transport::Sse => {
                let url = cluster.node(i).url(&format!("/api/v1/caches/{cache}/events"));
                let mut client = retry(&label, async || SseClient::try_open_url(&url, None).await.ok()).await;
                let (entries, last_id, _) = client.snapshot().await;
                (Feed::Sse { client, last_id }, state_of(&entries), url)
            }
            Transport::Poll => {
                let url = cluster.node(i).url(&format!("/api/v1/caches/{cache}/poll"));
                let http = client();
                let first = retry(&label, async || {
                    let reply = send(http.get(&url), "").await;
                    reply.status.is_success().then_some(reply.body)
                })
                .await;
                let entries = first["snapshot"].as_array().unwrap().clone();
                let position = first["position"].as_str().unwrap().to_string();
                (Feed::Poll { http, position }, state_of(&entries), url)
            }
        };
        Follower {
            label,
            feed,
            url,
            received: Received {
                snapshot,
                events: Vec::new(),
                resets: 0,
                incoming: Vec::new(),
            },
            notices: Vec::new(),
        }
    }

    /// Reads what arrives until `until`.
    pub async fn read_until(&mut self, until: Instant) {
        while Instant::now() < until {
            self.read_a_while().await;
        }
    }

    /// Reads for about a second (one poll, or what arrives within it).
    pub async fn read_a_while(&mut self) {
        match &mut self.feed {
            Feed::Ws(ws) => {
                if let Some(message) = ws.next_within(Duration::from_secs(1)).await {
                    match message["type"].as_str() {
                        Some("event") => self.received.events.push(message["event"].clone()),
                        Some("snapshot") => {
                            // A reset: its cache started again.
                            assert_eq!(message["reset"], true, "{}: {message}", self.label);
                            let entries = message["entries"].as_array().unwrap();
                            self.received.reset_part(entries, message["done"] == true);
                        }
                        Some(notice @ ("degraded" | "recovered")) => self.notices.push(notice.to_string()),
                        _ => panic!("{}: unexpected {message}", self.label),
                    }
                }
            }
            Feed::Sse { client, last_id } => {
                let Some(message) = client.next_within(Duration::from_secs(1)).await else {
                    if client.ended {
                        // Ended by the member: resume from the last id, as a
                        // browser would.
                        if let Ok(reopened) = SseClient::try_open_url(&self.url, Some(last_id)).await {
                            *client = reopened;
                        }
                    }
                    return;
                };
                match message.event.as_str() {
                    "event" => {
                        self.received.events.push(message.json());
                        *last_id = message.id.clone().expect("every event has an id");
                    }
                    "snapshot" => {
                        // A reset: the history no longer reached back, or
                        // its cache started again.
                        let data = message.json();
                        assert_eq!(data["reset"], true, "{}: {data}", self.label);
                        let entries = data["entries"].as_array().unwrap();
                        self.received.reset_part(entries, data["done"] == true);
                        if let Some(id) = message.id {
                            *last_id = id;
                        }
                    }
                    notice @ ("degraded" | "recovered") => self.notices.push(notice.to_string()),
                    other => panic!("{}: unexpected SSE event {other}", self.label),
                }
            }
            Feed::Poll { http, position } => {
                let url = format!("{}?after={position}&timeout_ms=1000", self.url);
                let reply = send(http.get(url), "").await;
                if !reply.status.is_success() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return;
                }
                if let Some(entries) = reply.body["snapshot"].as_array() {
                    assert_eq!(reply.body["reset"], true, "{}: {}", self.label, reply.text);
                    self.received.reset_part(entries, true);
                }
                self.received
                    .events
                    .extend(reply.body["events"].as_array().unwrap().iter().cloned());
                *position = reply.body["position"].as_str().unwrap().to_string();
            }
        }
    }

    /// How many reset snapshots it was sent.
    pub fn resets(&self) -> usize {
        self.received.resets
    }

    /// What its snapshot and events add up to, checked on the way: no
    /// event twice, versions rising per key.
    pub fn state(&self) -> State {
        replay(&self.received.snapshot, &self.received.events)
    }

    /// Every acknowledged write of `history` reached it (its key is there),
    /// and it ends on `finally`, reading on for up to 20 s until it does.
    pub async fn check(&mut self, history: &History, finally: &State) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.state() != *finally && Instant::now() < deadline {
            self.read_a_while().await;
        }
        let seen = self.state();
        for write in history.acknowledged() {
            assert!(
                seen.contains_key(&write.key),
                "{}: {} acknowledged, never pushed",
                self.label,
                write.key
            );
        }
        assert_eq!(seen, *finally, "{} ends on the final state", self.label);
        eprintln!("{}: {} events", self.label, self.received.events.len());
    }
}

/// Asks until `attempt` gives something, for up to 20 s.
async fn retry<T>(label: &str, mut attempt: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(done) = attempt().await {
            return done;
        }
        assert!(Instant::now() < deadline, "{label}: never started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn state_of(entries: &[Value]) -> State {
    entries
        .iter()
        .map(|e| {
            let key = e["key"].as_str().unwrap().to_string();
            (
                key,
                (e["value"].as_u64().unwrap(), e["version"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// A WebSocket subscriber to the whole of `cache` on member `i`, with the
/// state its snapshot holds.
pub async fn subscriber(cluster: &Cluster, i: usize, cache: &str) -> (WsClient, State) {
    let subscribe = json!({"op": "subscribe", "cache": cache, "filter": {}});
    let (ws, frames) = subscribed(cluster, i, subscribe).await;
    let entries: Vec<Value> = frames
        .iter()
        .flat_map(|frame| frame["entries"].as_array().unwrap().clone())
        .collect();
    (ws, state_of(&entries))
}

/// Sends `subscribe` to node `i` until its subscription starts (its member
/// may not hold its lease yet: then an error follows `subscribed`, and the
/// subscription ends); returns the client and the snapshot frames read
/// (none for a resume that replays).
pub async fn subscribed(cluster: &Cluster, i: usize, subscribe: Value) -> (WsClient, Vec<Value>) {
    let mut ws = WsClient::connect(cluster.node(i)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = ws.request(subscribe.clone()).await;
        let first = match reply["type"].as_str() {
            Some("subscribed") => ws.next_within(Duration::from_secs(2)).await,
            _ => None,
        };
        match first {
            Some(frame) if frame["type"] == "snapshot" => {
                let mut frames = vec![frame];
                while frames.last().unwrap()["done"] != true {
                    frames.push(ws.next().await);
                }
                return (ws, frames);
            }
            Some(frame) if frame["type"] == "event" => {
                ws.push_back(frame);
                return (ws, Vec::new());
            }
            // A resume with nothing to replay sends nothing.
            None if reply["type"] == "subscribed" => return (ws, Vec::new()),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "n{} never served the subscription: {reply}",
            i + 1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a subscriber's snapshot and events add up to, checked on the way:
/// no event twice, versions rising per key.
pub fn replay(snapshot: &State, events: &[Value]) -> State {
    let mut state = snapshot.clone();
    let mut ids = HashSet::new();
    let mut last: BTreeMap<String, u64> = snapshot.iter().map(|(k, (_, v))| (k.clone(), *v)).collect();
    for event in events {
        assert!(
            ids.insert(event["id"].as_str().unwrap().to_string()),
            "twice: {event}"
        );
        let key = event["key"].as_str().unwrap().to_string();
        let version = event["version"].as_u64().unwrap();
        if let Some(before) = last.insert(key.clone(), version) {
            assert!(version > before, "{key}: version {version} after {before}");
        }
        match event["kind"].as_str().unwrap() {
            "created" | "modified" => {
                state.insert(key, (event["value"].as_u64().unwrap(), version));
            }
            _ => {
                state.remove(&key);
            }
        }
    }
    state
}
