//! Requests for a segment another member leads: the grid hands them to a
//! [`Forwarder`] (the cluster's link) for that member, which serves them
//! from its own primary ([`Grid::serve_forwarded`](super::Grid::serve_forwarded))
//! and never forwards them again, so a request crosses at most one link.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::owners::MemberId;
use super::segment::{EntryView, Position, Precondition, PutOutcome};
use super::{CacheName, Event, GridError, JsonValue, Key, KeyFilter, OpId, SegmentId, Version};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Forwarded {
    Get {
        cache: CacheName,
        key: Key,
    },
    Put {
        cache: CacheName,
        key: Key,
        #[serde(with = "super::value::text")]
        value: JsonValue,
        precondition: Precondition,
        lifespan_ms: Option<u64>,
        #[serde(default)]
        op: Option<OpId>,
    },
    Remove {
        cache: CacheName,
        key: Key,
        precondition: Precondition,
        #[serde(default)]
        op: Option<OpId>,
    },
    /// One segment's entries matching `filter` (none without one) and its
    /// position, for a subscriber on the asking member; the asker is
    /// sent the cache's events from then on.
    Snapshot {
        cache: CacheName,
        segment: SegmentId,
        filter: Option<KeyFilter>,
    },
    /// One segment's events after `after`, for a subscriber resuming on
    /// the asking member; the asker is sent the cache's events from then
    /// on.
    History {
        cache: CacheName,
        segment: SegmentId,
        after: Position,
    },
    /// How many entries one segment holds.
    Count {
        cache: CacheName,
        segment: SegmentId,
    },
    /// One segment's part of a listing.
    List {
        cache: CacheName,
        segment: SegmentId,
        prefix: Arc<str>,
        after: Option<Arc<str>>,
        limit: usize,
    },
}

impl Forwarded {
    pub fn cache(&self) -> &CacheName {
        match self {
            Forwarded::Get { cache, .. }
            | Forwarded::Put { cache, .. }
            | Forwarded::Remove { cache, .. }
            | Forwarded::Snapshot { cache, .. }
            | Forwarded::History { cache, .. }
            | Forwarded::List { cache, .. }
            | Forwarded::Count { cache, .. } => cache,
        }
    }

    /// The reply that turns this request down with `error`.
    pub fn refusal(&self, error: GridError) -> ForwardedReply {
        match self {
            Forwarded::Get { .. } => ForwardedReply::Entry(Err(error)),
            Forwarded::Put { .. } => ForwardedReply::Put(Err(error)),
            Forwarded::Remove { .. } => ForwardedReply::Removed(Err(error)),
            Forwarded::List { .. } => ForwardedReply::Listed(Err(error)),
            Forwarded::Count { .. } => ForwardedReply::Counted(Err(error)),
            Forwarded::Snapshot { .. } => ForwardedReply::Snapshot(Err(error)),
            Forwarded::History { .. } => ForwardedReply::History(Err(error)),
        }
    }

    /// Which keys the asker's new subscriber watches, if it has one (it
    /// asks for a snapshot or a history): it is to be sent their events.
    /// A history read names no filter: every key.
    pub fn watches(&self) -> Option<KeyFilter> {
        match self {
            Forwarded::Snapshot { filter, .. } => Some(filter.clone().unwrap_or(KeyFilter::All)),
            Forwarded::History { .. } => Some(KeyFilter::All),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardedReply {
    Entry(Result<Entry, GridError>),
    Put(Result<PutOutcome, GridError>),
    Removed(Result<Version, GridError>),
    Listed(Result<Vec<Entry>, GridError>),
    Counted(Result<usize, GridError>),
    /// A segment's position and the entries asked for.
    Snapshot(Result<(Position, Vec<Entry>), GridError>),
    /// A segment's events after a position; `None` when its history no
    /// longer reaches back.
    History(Result<Option<Vec<Event>>, GridError>),
}

/// An entry on the link: its value as JSON text.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub key: Key,
    #[serde(with = "super::value::text")]
    pub value: JsonValue,
    pub version: Version,
    pub segment: SegmentId,
}

impl From<EntryView> for Entry {
    fn from(view: EntryView) -> Self {
        Entry {
            key: view.key,
            value: view.value,
            version: view.version,
            segment: view.segment,
        }
    }
}

impl From<Entry> for EntryView {
    fn from(entry: Entry) -> Self {
        EntryView {
            key: entry.key,
            value: entry.value,
            version: entry.version,
            segment: entry.segment,
        }
    }
}

pub type ForwardFuture = Pin<Box<dyn Future<Output = Result<ForwardedReply, GridError>> + Send>>;

/// Carries a request to the member that leads its segment.
pub trait Forwarder: Send + Sync + 'static {
    fn forward(&self, to: &MemberId, request: Forwarded) -> ForwardFuture;
}

/// The reply a forwarded request got, when it is of another kind than asked.
pub fn mismatched(reply: ForwardedReply) -> GridError {
    GridError::Unavailable(format!("a forwarded request got the wrong reply: {reply:?}"))
}
