//! [`Node`]: the command-line client's side of the REST API. Every request
//! carries the token, every reply is read whole, and a refusal becomes a
//! [`ClientError`] that names the contract's error code.

use std::time::Duration;

use super::http::{self, Origin};
use super::NodeArgs;

/// How long a node may be silent in the middle of an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

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
    pub status: u16,
    pub text: String,
}

pub struct Node {
    origin: Origin,
    authorization: Option<String>,
}

impl Node {
    pub fn new(args: &NodeArgs) -> Result<Node, ClientError> {
        Ok(Node {
            origin: Origin::parse(&args.url).map_err(|e| ClientError::Unexpected(format!("--url: {e}")))?,
            authorization: args.token.as_ref().map(|token| format!("Bearer {token}")),
        })
    }

    pub fn url(&self, path: &str) -> String {
        self.origin.url(path)
    }

    /// Sends a request with the token; the answer's body is left to read.
    pub fn open(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        read_timeout: Duration,
    ) -> Result<http::Response, ClientError> {
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(authorization) = &self.authorization {
            all.push(("Authorization", authorization));
        }
        if body.is_some() {
            all.push(("Content-Type", "application/json"));
        }
        http::send(&self.origin, method, path, &all, body, read_timeout).map_err(|e| {
            ClientError::Unreachable {
                url: self.url(path),
                reason: e.to_string(),
            }
        })
    }

    pub fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.send("GET", path, None, None)
    }

    pub fn put(
        &self,
        path: &str,
        body: &str,
        precondition: Option<(&str, &str)>,
    ) -> Result<Reply, ClientError> {
        self.send("PUT", path, precondition, Some(body.as_bytes()))
    }

    pub fn delete(&self, path: &str, precondition: Option<(&str, &str)>) -> Result<Reply, ClientError> {
        self.send("DELETE", path, precondition, None)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        header: Option<(&str, &str)>,
        body: Option<&[u8]>,
    ) -> Result<Reply, ClientError> {
        let headers: Vec<(&str, &str)> = header.into_iter().collect();
        let response = self.open(method, path, &headers, body, READ_TIMEOUT)?;
        let reply = Reply {
            status: response.status,
            text: response.body.text().map_err(|e| ClientError::Unreachable {
                url: self.url(path),
                reason: e.to_string(),
            })?,
        };
        if (200..300).contains(&reply.status) {
            Ok(reply)
        } else {
            Err(refusal(&reply))
        }
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
        Err(_) => ClientError::Unexpected(format!("the node answered HTTP {}", reply.status)),
    }
}
