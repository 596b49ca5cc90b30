//! The baseline: the least a fan-out server can do under the same workload,
//! written here with tokio-tungstenite. No grid, no actors, no per-key state
//! beyond a version counter: a `put` is acknowledged, turned into one event
//! frame per format, and that one shared frame is broadcast to every
//! subscriber. pushgrid's figures divided by this one's are the score.
//!
//! It speaks just enough of the contract for the load clients: `subscribe`
//! (answered with an empty snapshot; every subscriber is `s1`), `put`, and
//! the two subprotocols.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

pub const SERVER_MODE_ENV: &str = "PUSHGRID_LOAD_BASELINE_SERVER";

/// One event, pre-encoded in both formats.
type Frames = Arc<(Message, Message)>;

struct Shared {
    versions: AtomicU64,
    events: broadcast::Sender<Frames>,
}

/// Runs the baseline server until killed; prints its URL first.
pub fn serve() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("baseline listening on http://{}/", listener.local_addr().unwrap());
        let (events, _) = broadcast::channel(1 << 16);
        let shared = Arc::new(Shared {
            versions: AtomicU64::new(0),
            events,
        });
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(stream, shared.clone()));
        }
    });
}

// The handshake callback's error type is tungstenite's (a whole HTTP
// response), not ours to shrink.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    let mut msgpack = false;
    let pick_protocol = |request: &Request, mut response: Response| {
        let offered = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let chosen = if offered.contains("pushgrid.v1.msgpack") {
            msgpack = true;
            Some("pushgrid.v1.msgpack")
        } else {
            offered.contains("pushgrid.v1.json").then_some("pushgrid.v1.json")
        };
        if let Some(chosen) = chosen {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
        }
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, pick_protocol).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let encode = move |value: &Value| {
        if msgpack {
            Message::Binary(rmp_serde::to_vec_named(value).expect("encodes").into())
        } else {
            Message::Text(value.to_string().into())
        }
    };
    let (replies_tx, mut replies) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let mut events: Option<broadcast::Receiver<Frames>> = None;
    let reader = async {
        while let Some(Ok(message)) = source.next().await {
            let request: Value = match &message {
                Message::Text(text) => serde_json::from_str(text).unwrap_or_default(),
                Message::Binary(bytes) => rmp_serde::from_slice(bytes).unwrap_or_default(),
                _ => continue,
            };
            match request["op"].as_str() {
                Some("subscribe") => {
                    let _ = replies_tx.send(encode(
                        &json!({"type":"subscribed","id":request["id"],"sub":"s1"}),
                    ));
                    let done = json!({"type":"snapshot","sub":"s1","entries":[],"done":true,"positions":{}});
                    let _ = replies_tx.send(encode(&done));
                    return Some(shared.events.subscribe());
                }
                Some("put") => {
                    let version = shared.versions.fetch_add(1, Ordering::Relaxed) + 1;
                    let event = json!({"type":"event","sub":"s1","event":{
                        "id": uuid::Uuid::now_v7().to_string(), "kind":"modified", "cache": request["cache"],
                        "key": request["key"], "value": request["value"], "version": version, "segment": 0, "ts": 0}});
                    let frames = Arc::new((
                        Message::Text(event.to_string().into()),
                        Message::Binary(rmp_serde::to_vec_named(&event).expect("encodes").into()),
                    ));
                    let _ = shared.events.send(frames);
                    let _ = replies_tx.send(encode(
                        &json!({"type":"ok","id":request["id"],"version":version,"created":false}),
                    ));
                }
                _ => {}
            }
        }
        None
    };
    // Until a subscribe, serve requests; a publisher never subscribes.
    tokio::select! {
        subscribed = reader => events = subscribed,
        _ = async {
            while let Some(reply) = replies.recv().await {
                if sink.send(reply).await.is_err() { break; }
            }
        } => {}
    }
    while let Ok(reply) = replies.try_recv() {
        let _ = sink.feed(reply).await;
    }
    let _ = sink.flush().await;
    let Some(mut events) = events else {
        return;
    };
    let pick = |frames: &Frames| {
        if msgpack {
            frames.1.clone()
        } else {
            frames.0.clone()
        }
    };
    loop {
        let frames = match events.recv().await {
            Ok(frames) => frames,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if sink.feed(pick(&frames)).await.is_err() {
            return;
        }
        // Batch what is already waiting into one flush.
        while let Ok(frames) = events.try_recv() {
            if sink.feed(pick(&frames)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}
