//! A small Server-Sent Events client over awc: opens a stream (optionally
//! with `Last-Event-ID`), parses it into messages as the SSE spec does, and
//! keeps comments apart so a test can see heartbeats.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use awc::http::StatusCode;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use serde_json::Value;

use super::TestNode;

/// How long any single read may wait before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

pub use pushgrid::protocol::fallback::SseMessage;
use pushgrid::protocol::fallback::SseReader;

/// The Event object (or other JSON) a message carries.
pub trait JsonData {
    fn json(&self) -> Value;
}

impl JsonData for SseMessage {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {}", self.data))
    }
}

type Body = Pin<Box<dyn Stream<Item = Result<Bytes, awc::error::PayloadError>>>>;

pub struct SseClient {
    body: Body,
    reader: SseReader,
    messages: VecDeque<SseMessage>,
    pub content_type: String,
    /// Set once the server ended the stream.
    pub ended: bool,
}

impl SseClient {
    /// Opens `path` (with its query) on `node`; panics unless it is a 200
    /// event stream.
    pub async fn open(node: &TestNode, path: &str, last_event_id: Option<&str>) -> SseClient {
        match SseClient::try_open(node, path, last_event_id).await {
            Ok(client) => client,
            Err((status, body)) => panic!("{path}: {status} {body}"),
        }
    }

    /// Opens `path`; an error answer comes back as its status and body.
    pub async fn try_open(
        node: &TestNode,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<SseClient, (StatusCode, Value)> {
        SseClient::try_open_url(&node.url(path), last_event_id).await
    }

    /// [`SseClient::try_open`] for a whole URL.
    pub async fn try_open_url(
        url: &str,
        last_event_id: Option<&str>,
    ) -> Result<SseClient, (StatusCode, Value)> {
        let mut request = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish()
            .get(url)
            .insert_header(("Accept", "text/event-stream"));
        if let Some(id) = last_event_id {
            request = request.insert_header(("Last-Event-ID", id));
        }
        let mut response = request.send().await.expect("request failed");
        if response.status() != StatusCode::OK {
            let body = response.body().await.expect("read body");
            return Err((
                response.status(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            ));
        }
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        Ok(SseClient {
            body: Box::pin(response.into_stream()),
            reader: SseReader::default(),
            messages: VecDeque::new(),
            content_type,
            ended: false,
        })
    }

    /// The next message; panics after the read timeout or at the end.
    pub async fn next(&mut self) -> SseMessage {
        match self.next_within(READ_TIMEOUT).await {
            Some(message) => message,
            None => panic!("no SSE message within {READ_TIMEOUT:?} (ended: {})", self.ended),
        }
    }

    /// The next message, if one arrives within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(message) = self.messages.pop_front() {
                return Some(message);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(chunk))) => self.parse(&chunk),
                Ok(Some(Err(_)) | None) => self.ended = true,
            }
        }
    }

    /// Reads until the stream ends (within the read timeout) and returns
    /// the messages on the way.
    pub async fn drain_until_end(&mut self) -> Vec<SseMessage> {
        let mut seen = Vec::new();
        while let Some(message) = self.next_within(READ_TIMEOUT).await {
            seen.push(message);
        }
        assert!(self.ended, "the stream did not end within {READ_TIMEOUT:?}");
        seen
    }

    /// The snapshot messages up to the `done` one: all entries, the done
    /// message's id, and whether they were marked reset.
    pub async fn snapshot(&mut self) -> (Vec<Value>, String, bool) {
        let mut entries = Vec::new();
        loop {
            let message = self.next().await;
            assert_eq!(message.event, "snapshot", "{message:?}");
            let data = message.json();
            entries.extend(data["entries"].as_array().unwrap().iter().cloned());
            if data["done"] == true {
                let id = message.id.expect("the done snapshot message carries an id");
                return (entries, id, data["reset"] == true);
            }
            assert!(message.id.is_none(), "only the done message has an id");
        }
    }

    /// The next message, which must be an event: its Event object and id.
    pub async fn event(&mut self) -> (Value, String) {
        let message = self.next().await;
        assert_eq!(message.event, "event", "{message:?}");
        let id = message.id.clone().expect("every event has an id");
        (message.json(), id)
    }

    /// Asserts nothing but comments arrives for `wait`.
    pub async fn assert_quiet(&mut self, wait: Duration) {
        if let Some(message) = self.next_within(wait).await {
            panic!("expected nothing, got {message:?}");
        }
    }

    fn parse(&mut self, chunk: &[u8]) {
        let messages = self.reader.feed(chunk);
        self.messages.extend(messages);
    }

    /// The comments (heartbeats) read so far.
    pub fn comments(&self) -> &[String] {
        &self.reader.comments
    }
}
