//! The grid's error type. Every failure a grid operation can report is one
//! variant here; the web layer maps each to the contract's code and status in
//! one place (`protocol::ErrorCode`).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Version;

#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
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
    /// A node-wide quota (`max_caches`, `max_segments`) is used up; the
    /// contract spells it `rate_limited`, like the per-connection caps.
    #[error("{0}")]
    LimitReached(String),
}

impl GridError {
    /// The contract's name for this failure (`protocol::ErrorCode` spells
    /// the same names), used as the outcome label of the grid's metrics.
    pub fn code(&self) -> &'static str {
        match self {
            GridError::UnknownCache(_) => "unknown_cache",
            GridError::NotFound => "not_found",
            GridError::VersionMismatch { .. } => "version_mismatch",
            GridError::TooLarge { .. } => "too_large",
            GridError::BadRequest(_) => "bad_request",
            GridError::Conflict(_) => "conflict",
            GridError::Unavailable(_) => "unavailable",
            GridError::LimitReached(_) => "rate_limited",
        }
    }
}
