//! [`Node`]: the command-line client's side of the REST API. Every request
//! carries the token, every reply is read whole, and a refusal becomes a
//! [`ClientError`] that names the contract's error code.

use std::time::Duration;

use awc::http::header::AUTHORIZATION;
use awc::http::StatusCode;

use super::NodeArgs;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest reply read.
const MAX_REPLY_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error of the contract.
    #[error("{code}: {message}")]
    Refused { code: String, message: String },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Unexpected(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A reply, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub text: String,
}

pub struct Node {
    http: awc::Client,
    base: String,
    token: Option<String>,
}

impl Node {
    pub fn new(args: &NodeArgs) -> Result<Node, ClientError> {
        let base = args.url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(ClientError::Unexpected(format!(
                "--url: {:?} is not an http:// URL",
                args.url
            )));
        }
        let http = awc::Client::builder().timeout(REQUEST_TIMEOUT).finish();
        Ok(Node {
            http,
            base,
            token: args.token.clone(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request for `path` with the token, for the caller to send.
    pub fn request(&self, method: awc::http::Method, path: &str) -> awc::ClientRequest {
        let request = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => request.insert_header((AUTHORIZATION, format!("Bearer {token}"))),
            None => request,
        }
    }

    pub async fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.send(self.request(awc::http::Method::GET, path), None).await
    }

    pub async fn put(
        &self,
        path: &str,
        body: String,
        precondition: Option<(&'static str, String)>,
    ) -> Result<Reply, ClientError> {
        let request = with_header(self.request(awc::http::Method::PUT, path), precondition)
            .content_type("application/json");
        self.send(request, Some(body)).await
    }

    pub async fn delete(
        &self,
        path: &str,
        precondition: Option<(&'static str, String)>,
    ) -> Result<Reply, ClientError> {
        let request = with_header(self.request(awc::http::Method::DELETE, path), precondition);
        self.send(request, None).await
    }

    async fn send(&self, request: awc::ClientRequest, body: Option<String>) -> Result<Reply, ClientError> {
        let url = request.get_uri().to_string();
        let sent = match body {
            Some(body) => request.send_body(body).await,
            None => request.send().await,
        };
        let mut response = sent.map_err(|e| self.unreachable(&url, e))?;
        let bytes = response
            .body()
            .limit(MAX_REPLY_BYTES)
            .await
            .map_err(|e| self.unreachable(&url, e))?;
        let reply = Reply {
            status: response.status(),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        };
        if reply.status.is_success() {
            Ok(reply)
        } else {
            Err(refusal(&reply))
        }
    }

    pub fn unreachable(&self, url: &str, reason: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            url: url.to_string(),
            reason: reason.to_string(),
        }
    }
}

fn with_header(request: awc::ClientRequest, header: Option<(&'static str, String)>) -> awc::ClientRequest {
    match header {
        Some(header) => request.insert_header(header),
        None => request,
    }
}

/// The error an error reply names: `{"error":{"code","message"}}`, or its
/// status when the body is not that.
pub fn refusal(reply: &Reply) -> ClientError {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    match serde_json::from_str::<Body>(&reply.text) {
        Ok(Body { error }) => ClientError::Refused {
            code: error.code,
            message: error.message,
        },
        Err(_) => ClientError::Unexpected(format!("the node answered {}", reply.status)),
    }
}
