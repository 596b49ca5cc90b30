//! The wire types of the contract (`docs/protocol.md`): error codes and the
//! REST bodies here; both codecs in [`codec`]; events as every transport
//! sends them in [`event`]; the WebSocket messages in [`ws`], decoded by
//! [`decode`]; the HTTP
//! fallbacks' framing in [`fallback`] and their position tokens in
//! [`position`]. Nothing else in the crate builds JSON or MessagePack by
//! hand.

pub mod codec;
pub mod decode;
pub mod depth;
pub mod event;
pub mod fallback;
pub mod position;
pub mod ws;

use serde::{Deserialize, Serialize};

use crate::auth::AuthError;
use crate::grid::{CacheConfig, CacheName, EntryView, GridError, Incarnation, JsonValue, Key, Version};

/// The contract's error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownCache,
    NotFound,
    VersionMismatch,
    TooLarge,
    RateLimited,
    Unauthorized,
    Conflict,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownCache => "unknown_cache",
            ErrorCode::NotFound => "not_found",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl From<&GridError> for ErrorCode {
    fn from(err: &GridError) -> Self {
        match err {
            GridError::UnknownCache(_) => ErrorCode::UnknownCache,
            GridError::NotFound => ErrorCode::NotFound,
            GridError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
            GridError::TooLarge { .. } => ErrorCode::TooLarge,
            GridError::BadRequest(_) => ErrorCode::BadRequest,
            GridError::Conflict(_) => ErrorCode::Conflict,
            GridError::Unavailable(_) => ErrorCode::Unavailable,
            GridError::LimitReached(_) => ErrorCode::RateLimited,
        }
    }
}

/// A failure as the client sees it: its code, a message for people, and for
/// a failed precondition the entry's current version (absent: no entry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<Version>,
}

impl From<GridError> for ErrorDetail {
    fn from(err: GridError) -> Self {
        let current_version = match &err {
            GridError::VersionMismatch { current } => *current,
            _ => None,
        };
        ErrorDetail {
            code: ErrorCode::from(&err),
            message: err.to_string(),
            current_version,
        }
    }
}

impl From<AuthError> for ErrorDetail {
    fn from(err: AuthError) -> Self {
        ErrorDetail {
            code: ErrorCode::Unauthorized,
            message: err.0,
            current_version: None,
        }
    }
}

impl ErrorDetail {
    /// The error reply to the WebSocket request `id`.
    pub fn message<'a>(&'a self, id: Option<&'a ws::RequestId>) -> ws::ServerMessage<'a> {
        ws::ServerMessage::Error {
            id,
            code: self.code,
            message: &self.message,
            current_version: self.current_version,
        }
    }

    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorDetail {
            code,
            message: message.into(),
            current_version: None,
        }
    }
}

/// `{"error":{...}}`: every REST error body.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// One chunk of a subscription's snapshot, for the transport to frame.
pub struct SnapshotChunk<'a> {
    /// The subscription's wire name.
    pub sub: &'a str,
    pub entries: &'a [EntryView],
    /// The last chunk; it carries the positions.
    pub done: bool,
    /// The snapshot replaces the client's state after a failed resume.
    pub reset: bool,
    /// Every segment's position at the snapshot.
    pub positions: &'a position::Positions,
    /// The incarnation those positions belong to.
    pub incarnation: Incarnation,
}

/// `GET /api/v1/caches`.
#[derive(Debug, Serialize)]
pub struct CacheList {
    pub caches: Vec<CacheSummary>,
}

#[derive(Debug, Serialize)]
pub struct CacheSummary {
    pub name: CacheName,
    /// Entries this node holds for the cache.
    pub entries: usize,
    /// Bytes of keys and values among them.
    pub bytes: usize,
    /// The life of the cache's histories positions belong to.
    pub incarnation: Incarnation,
    pub config: CacheConfig,
}

/// `GET /api/v1/caches/{cache}/entries`.
#[derive(Debug, Serialize)]
pub struct EntryPage {
    pub entries: Vec<ListedEntry>,
    pub next: Option<Key>,
}

#[derive(Debug, Serialize)]
pub struct ListedEntry {
    pub key: Key,
    pub value: JsonValue,
    pub version: Version,
}

/// The reply to a successful write.
#[derive(Debug, Serialize)]
pub struct WriteAck {
    pub version: Version,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_errors_map_to_the_codes_their_metrics_name() {
        for err in [
            GridError::UnknownCache("c".into()),
            GridError::NotFound,
            GridError::VersionMismatch { current: None },
            GridError::TooLarge { size: 2, limit: 1 },
            GridError::BadRequest(String::new()),
            GridError::Conflict(String::new()),
            GridError::Unavailable(String::new()),
            GridError::LimitReached(String::new()),
        ] {
            assert_eq!(ErrorCode::from(&err).as_str(), err.code());
        }
    }
}
