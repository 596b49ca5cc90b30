//! A small WebSocket client of the contract over awc: JSON or MessagePack,
//! requests matched to replies by id, events and other messages kept in
//! arrival order.

use std::collections::VecDeque;
use std::time::Duration;

use actix_codec::Framed;
use awc::error::WsClientError;
use awc::ws::{self, CloseReason, Codec, Frame};
use awc::BoxedSocket;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use super::TestNode;

pub const JSON: &str = "pushgrid.v1.json";
pub const MSGPACK: &str = "pushgrid.v1.msgpack";

/// How long any single read may wait before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

pub struct WsClient {
    framed: Framed<BoxedSocket, Codec>,
    pub msgpack: bool,
    inbox: VecDeque<Value>,
    next_id: u64,
    /// The close frame received, once the server closed.
    pub closed: Option<Option<CloseReason>>,
    /// The handshake response's subprotocol header.
    pub protocol: Option<String>,
}

impl WsClient {
    /// A JSON client (no subprotocol named: JSON is the default).
    pub async fn connect(node: &TestNode) -> WsClient {
        WsClient::connect_with(node, &[], None)
            .await
            .expect("WebSocket handshake")
    }

    pub async fn connect_msgpack(node: &TestNode) -> WsClient {
        WsClient::connect_with(node, &[MSGPACK], None)
            .await
            .expect("WebSocket handshake")
    }

    pub async fn connect_with(
        node: &TestNode,
        protocols: &[&str],
        origin: Option<&str>,
    ) -> Result<WsClient, WsClientError> {
        WsClient::connect_to(&node.ws_url(), protocols, origin).await
    }

    /// A JSON client at `url` (which may carry a query string).
    pub async fn connect_to(
        url: &str,
        protocols: &[&str],
        origin: Option<&str>,
    ) -> Result<WsClient, WsClientError> {
        let mut request = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish()
            .ws(url)
            .max_frame_size(64 * 1024 * 1024);
        if !protocols.is_empty() {
            request = request.protocols(protocols);
        }
        if let Some(origin) = origin {
            request = request.origin(origin);
        }
        let (response, framed) = request.connect().await?;
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_string());
        Ok(WsClient {
            framed,
            msgpack: protocol.as_deref() == Some(MSGPACK),
            inbox: VecDeque::new(),
            next_id: 1,
            closed: None,
            protocol,
        })
    }

    pub async fn send(&mut self, message: Value) {
        let frame = if self.msgpack {
            ws::Message::Binary(rmp_serde::to_vec_named(&message).unwrap().into())
        } else {
            ws::Message::Text(message.to_string().into())
        };
        self.send_raw(frame).await;
    }

    pub async fn send_raw(&mut self, message: ws::Message) {
        self.framed.send(message).await.expect("send frame");
    }

    /// Sends `message` as JSON unless the server has closed the connection
    /// already (a client that floods may find it closed mid-flood); returns
    /// whether it went.
    pub async fn try_send(&mut self, message: Value) -> bool {
        let frame = ws::Message::Text(message.to_string().into());
        self.framed.send(frame).await.is_ok()
    }

    /// The next message from the server, or `None` once it closed. Pings
    /// are answered on the way but do not extend the wait: a message must
    /// come within the read timeout.
    async fn read(&mut self) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        loop {
            if self.closed.is_some() {
                return None;
            }
            let frame = tokio::time::timeout_at(deadline, self.framed.next())
                .await
                .expect("timed out waiting for a message");
            match frame {
                None | Some(Err(_)) => {
                    self.closed = Some(None);
                    return None;
                }
                Some(Ok(Frame::Text(bytes))) => {
                    assert!(!self.msgpack, "a text frame on a MessagePack connection");
                    return Some(serde_json::from_slice(&bytes).expect("server frames are JSON"));
                }
                Some(Ok(Frame::Binary(bytes))) => {
                    assert!(self.msgpack, "a binary frame on a JSON connection");
                    return Some(rmp_serde::from_slice(&bytes).expect("server frames are MessagePack"));
                }
                Some(Ok(Frame::Ping(bytes))) => {
                    let _ = self.framed.send(ws::Message::Pong(bytes)).await;
                }
                Some(Ok(Frame::Close(reason))) => {
                    self.closed = Some(reason);
                    return None;
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next message in arrival order.
    pub async fn next(&mut self) -> Value {
        match self.inbox.pop_front() {
            Some(message) => message,
            None => self.read().await.expect("the server closed the connection"),
        }
    }

    /// Sends `op` with a fresh id and returns the reply carrying that id;
    /// messages that arrive before it are kept for `next`.
    pub async fn request(&mut self, mut op: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        op["id"] = json!(id);
        self.send(op).await;
        if let Some(at) = self
            .inbox
            .iter()
            .position(|m| m["id"] == json!(id) && m["type"] != "event")
        {
            return self.inbox.remove(at).unwrap();
        }
        loop {
            let message = self.read().await.expect("the server closed the connection");
            if message["id"] == json!(id) && message["type"] != "event" {
                return message;
            }
            self.inbox.push_back(message);
        }
    }

    /// Subscribes and reads the snapshot: `(sub, entries, positions)`.
    pub async fn subscribe(&mut self, cache: &str, filter: Value) -> (String, Vec<Value>, Value) {
        let reply = self
            .request(json!({"op": "subscribe", "cache": cache, "filter": filter}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        let sub = reply["sub"].as_str().unwrap().to_string();
        let (entries, positions) = self.read_snapshot(&sub).await;
        (sub, entries, positions)
    }

    /// Reads snapshot frames of `sub` up to the `done` one.
    pub async fn read_snapshot(&mut self, sub: &str) -> (Vec<Value>, Value) {
        let mut entries = Vec::new();
        loop {
            let frame = self.next().await;
            assert_eq!(
                frame["type"], "snapshot",
                "expected a snapshot frame, got {frame}"
            );
            assert_eq!(frame["sub"], sub);
            let chunk = frame["entries"].as_array().unwrap();
            assert!(chunk.len() <= 1000, "snapshot frames hold at most 1000 entries");
            entries.extend(chunk.iter().cloned());
            if frame["done"] == true {
                return (entries, frame["positions"].clone());
            }
        }
    }

    /// The Event object of the next message, which must be an event.
    pub async fn next_event(&mut self) -> Value {
        let message = self.next().await;
        assert_eq!(message["type"], "event", "expected an event, got {message}");
        message["event"].clone()
    }

    /// Every message until the server closes, and its close code.
    pub async fn drain_until_close(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut messages: Vec<Value> = self.inbox.drain(..).collect();
        while let Some(message) = self.read().await {
            messages.push(message);
        }
        let code = self.closed.clone().flatten().map(|reason| u16::from(reason.code));
        (messages, code)
    }

    /// Reads until the server closes; returns its close code.
    pub async fn close_code(&mut self) -> Option<u16> {
        while self.read().await.is_some() {}
        self.closed.clone().flatten().map(|reason| u16::from(reason.code))
    }

    /// Puts `message` back, to be the next one read.
    pub fn push_back(&mut self, message: Value) {
        self.inbox.push_front(message);
    }

    /// The next message, or `None` when none comes within `wait` or the
    /// server closed the connection.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        if let Some(message) = self.inbox.pop_front() {
            return Some(message);
        }
        tokio::time::timeout(wait, self.read()).await.ok().flatten()
    }

    /// No message arrives within `wait` (pings are answered meanwhile).
    pub async fn assert_quiet(&mut self, wait: Duration) {
        assert!(self.inbox.is_empty(), "unexpected {:?}", self.inbox);
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(frame) = tokio::time::timeout_at(deadline, self.framed.next()).await {
            match frame {
                Some(Ok(Frame::Ping(bytes))) => {
                    let _ = self.framed.send(ws::Message::Pong(bytes)).await;
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}
