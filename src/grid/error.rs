//! The grid's error type. Every failure a grid operation can report is one
//! variant here; the web layer maps each to the contract's code and status in
//! one place (`protocol::ErrorCode`).

use thiserror::Error;

use super::Version;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GridError {
    #[error("unknown cache {0:?}")]
    UnknownCache(String),
    #[error("no entry with that key")]
    NotFound,
    /// A failed precondition; `current` is the entry's version, `None` when
    /// there is no entry.
    #[error("precondition failed: the entry's version is {}", current.map_or("absent".to_string(), |v| v.0.to_string()))]
    VersionMismatch { current: Option<Version> },
    #[error("value is {size} bytes; the cache's limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Unauthorized(String),
}
