//! Shared test support: start real `pushgrid` processes on ephemeral ports
//! ([`node`], the starter the benches share) and talk to them over real
//! HTTP and WebSockets. A process is killed when its [`TestNode`] drops, so
//! every test cleans up what it starts.

#![allow(dead_code)]

pub mod cluster;
pub mod followers;
pub mod node;
pub mod sse;
pub mod ws;

use std::time::Duration;

use awc::http::header::HeaderMap;
use awc::http::StatusCode;
use serde_json::Value;

pub use node::NodeProcess as TestNode;

/// A response, read whole: status, headers, and the body as JSON (or
/// `Value::Null` when empty, `Value::String` when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn etag(&self) -> Option<String> {
        self.headers
            .get("etag")
            .map(|v| v.to_str().expect("ASCII etag").to_string())
    }

    /// The contract's error code of an error body.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no error code>")
    }
}

pub fn client() -> awc::Client {
    awc::Client::builder().timeout(Duration::from_secs(30)).finish()
}

/// Sends a request built by `build` with `body` and reads the reply whole.
pub async fn send(request: awc::ClientRequest, body: impl Into<String>) -> Reply {
    let body: String = body.into();
    let mut response = if body.is_empty() {
        request.send().await
    } else {
        request.content_type("application/json").send_body(body).await
    }
    .expect("request failed");
    let bytes = response.body().limit(64 * 1024 * 1024).await.expect("read body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        body: if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
        },
        text,
    }
}

/// A small typed REST client for one node.
pub struct Rest<'a> {
    pub node: &'a TestNode,
    pub http: awc::Client,
}

impl<'a> Rest<'a> {
    pub fn new(node: &'a TestNode) -> Self {
        Rest { node, http: client() }
    }

    pub fn entry_url(&self, cache: &str, key: &str) -> String {
        self.node.url(&format!("/api/v1/caches/{cache}/entries/{key}"))
    }

    pub async fn create_cache(&self, cache: &str, config: &str) -> Reply {
        send(
            self.http.put(self.node.url(&format!("/api/v1/caches/{cache}"))),
            config,
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        send(self.http.get(self.node.url(path)), "").await
    }

    pub async fn post(&self, path: &str, body: &str) -> Reply {
        send(self.http.post(self.node.url(path)), body).await
    }

    pub async fn get_entry(&self, cache: &str, key: &str) -> Reply {
        send(self.http.get(self.entry_url(cache, key)), "").await
    }

    pub async fn put_entry(&self, cache: &str, key: &str, value: &str) -> Reply {
        send(self.http.put(self.entry_url(cache, key)), value).await
    }

    pub async fn put_entry_if(&self, cache: &str, key: &str, value: &str, header: (&str, &str)) -> Reply {
        send(
            self.http.put(self.entry_url(cache, key)).insert_header(header),
            value,
        )
        .await
    }

    pub async fn delete_entry(&self, cache: &str, key: &str) -> Reply {
        send(self.http.delete(self.entry_url(cache, key)), "").await
    }

    /// The value of one sample of `/metrics`, e.g. `pushgrid_evictions_total{cache="c"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.get("/metrics").await.text;
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
    }
}
