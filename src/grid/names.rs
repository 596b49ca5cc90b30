//! Validated names: cache names and entry keys, checked once at the edge so
//! that everything inside the grid can take them as given.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::GridError;

/// The longest key the contract allows, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;
/// The longest cache name the contract allows.
pub const MAX_CACHE_NAME_CHARS: usize = 64;

/// A key: 1 to 1024 bytes of UTF-8, shared between the entry map, the
/// indexes and every event that names it.
pub type Key = Arc<str>;

/// Which keys of a cache a subscription (or a snapshot) wants: every key,
/// one key, or the keys under a prefix. Sent between members with the
/// snapshot requests of subscribers on other nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyFilter {
    All,
    Key(Key),
    Prefix(Arc<str>),
}

impl KeyFilter {
    pub fn matches(&self, key: &str) -> bool {
        match self {
            KeyFilter::All => true,
            KeyFilter::Key(k) => **k == *key,
            KeyFilter::Prefix(p) => key.starts_with(&**p),
        }
    }
}

/// Per cache, the union of the filters of a member's subscriptions to it:
/// which of its events the member wants. `[All]` once one of them wants
/// every key, or once they are more than [`MAX_INTEREST_FILTERS`].
pub type Interests = BTreeMap<CacheName, Vec<KeyFilter>>;

/// The most filters listed for one cache in [`Interests`].
pub const MAX_INTEREST_FILTERS: usize = 256;

/// Whether `interest` (a cache's filters from [`Interests`]) wants `key`.
pub fn wanted(interest: &[KeyFilter], key: &str) -> bool {
    interest.iter().any(|filter| filter.matches(key))
}

/// Checks a key against the contract and makes it shareable. The rule for
/// every path (REST, WebSocket, SSE, long polling): 1 to 1024 bytes of
/// UTF-8 (the type says so; bytes that are not are refused where they are
/// decoded), no NUL.
pub fn parse_key(raw: &str) -> Result<Key, GridError> {
    if raw.is_empty() {
        return Err(GridError::BadRequest("key must not be empty".into()));
    }
    check_no_nul(raw, "key")?;
    if raw.len() > MAX_KEY_BYTES {
        return Err(GridError::BadRequest(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            raw.len()
        )));
    }
    Ok(Arc::from(raw))
}

/// A key prefix follows the keys' rule, but may be empty (every key) and
/// of any length (a longer one matches nothing).
pub fn check_prefix(prefix: &str) -> Result<(), GridError> {
    check_no_nul(prefix, "prefix")
}

fn check_no_nul(text: &str, what: &str) -> Result<(), GridError> {
    if text.contains('\0') {
        return Err(GridError::BadRequest(format!(
            "{what} must not contain NUL (U+0000)"
        )));
    }
    Ok(())
}

/// A cache name: 1 to 64 characters of `[A-Za-z0-9_.-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CacheName(Arc<str>);

/// Read back only if valid, as from a peer.
impl<'de> Deserialize<'de> for CacheName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        CacheName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl CacheName {
    pub fn parse(raw: &str) -> Result<Self, GridError> {
        let valid_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if raw.is_empty() || raw.len() > MAX_CACHE_NAME_CHARS || !valid_chars {
            return Err(GridError::BadRequest(format!(
                "cache name {raw:?} must be 1-{MAX_CACHE_NAME_CHARS} characters of [A-Za-z0-9_.-]"
            )));
        }
        Ok(CacheName(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for CacheName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CacheName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_follow_the_contract() {
        for good in ["scores", "a", "A-b_c.9", &"x".repeat(64)] {
            assert!(CacheName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(CacheName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_one_to_1024_bytes() {
        assert!(parse_key("match/7").is_ok());
        assert!(parse_key(&"k".repeat(1024)).is_ok());
        assert!(parse_key("").is_err());
        assert!(parse_key(&"k".repeat(1025)).is_err());
    }
}
