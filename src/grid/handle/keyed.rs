//! The requests for one key: read, write and remove, each routed to the
//! partition (or the member) leading the key's segment and queued there
//! when called.

use std::future::Future;

use super::{Forwarding, Grid, Sent, Target};
use crate::grid::forward::{self, Forwarded, ForwardedReply};
use crate::grid::partition;
use crate::grid::segment::{EntryView, Precondition, PutOutcome, PutRequest};
use crate::grid::{GridError, JsonValue, Key, OpId, Version};

impl Grid {
    /// Reads an entry. Like [`Grid::put`] and [`Grid::remove`], the request
    /// is routed and queued at the partition when this is called, not when
    /// the future is first polled: one caller's operations reach a
    /// partition in the order it made them, however its futures are polled.
    /// A key whose segment another member leads is forwarded to it.
    pub fn get(&self, cache: &str, key: Key) -> impl Future<Output = Result<EntryView, GridError>> + 'static {
        self.get_routed(cache, key, Forwarding::Allowed)
    }

    pub(super) fn get_routed(
        &self,
        cache: &str,
        key: Key,
        forwarding: Forwarding,
    ) -> impl Future<Output = Result<EntryView, GridError>> + 'static {
        let sent = self.cache(cache).and_then(|cache| {
            let segment = cache.segment_of(&key);
            Ok(match self.target(&cache, segment, forwarding)? {
                Target::Local(partition) => Sent::Local(partition.send(partition::Get { key })),
                Target::Remote(forwarder, member) => {
                    let cache = cache.name().clone();
                    Sent::Forwarded(forwarder.forward(member, Forwarded::Get { cache, key }))
                }
            })
        });
        self.reply(
            "get",
            sent,
            |found| found?.ok_or(GridError::NotFound),
            |reply| match reply {
                ForwardedReply::Entry(entry) => entry.map(EntryView::from),
                other => Err(forward::mismatched(other)),
            },
        )
    }

    /// Writes `value` under `key`. `lifespan_ms: None` takes the cache's
    /// default lifespan.
    pub fn put(
        &self,
        cache: &str,
        key: Key,
        value: JsonValue,
        precondition: Precondition,
        lifespan_ms: Option<u64>,
    ) -> impl Future<Output = Result<PutOutcome, GridError>> + 'static {
        let request = PutRequest {
            key,
            value,
            precondition,
            lifespan_ms,
            op: None,
        };
        self.put_request(cache, request)
    }

    /// As [`Grid::put`], with the whole request: a write with an op id
    /// sent again is answered as the first time, not applied twice.
    pub fn put_request(
        &self,
        cache: &str,
        request: PutRequest,
    ) -> impl Future<Output = Result<PutOutcome, GridError>> + 'static {
        self.put_routed(cache, request, Forwarding::Allowed)
    }

    pub(super) fn put_routed(
        &self,
        cache: &str,
        request: PutRequest,
        forwarding: Forwarding,
    ) -> impl Future<Output = Result<PutOutcome, GridError>> + 'static {
        let sent = self.cache(cache).and_then(|cache| {
            let config = cache.config();
            let size = request.value.get().len();
            if size > config.max_value_bytes {
                return Err(GridError::TooLarge {
                    size,
                    limit: config.max_value_bytes,
                });
            }
            if request.lifespan_ms == Some(0) {
                return Err(GridError::BadRequest("lifespan_ms must be at least 1".into()));
            }
            let segment = cache.segment_of(&request.key);
            Ok(match self.target(&cache, segment, forwarding)? {
                Target::Local(partition) => {
                    let request = PutRequest {
                        lifespan_ms: request.lifespan_ms.or(config.lifespan_ms),
                        ..request
                    };
                    Sent::Local(partition.send(partition::Put(request)))
                }
                Target::Remote(forwarder, member) => {
                    let forwarded = Forwarded::Put {
                        cache: cache.name().clone(),
                        key: request.key,
                        value: request.value,
                        precondition: request.precondition,
                        lifespan_ms: request.lifespan_ms,
                        op: request.op,
                    };
                    Sent::Forwarded(forwarder.forward(member, forwarded))
                }
            })
        });
        self.reply(
            "put",
            sent,
            |outcome| outcome,
            |reply| match reply {
                ForwardedReply::Put(outcome) => outcome,
                other => Err(forward::mismatched(other)),
            },
        )
    }

    pub fn remove(
        &self,
        cache: &str,
        key: Key,
        precondition: Precondition,
    ) -> impl Future<Output = Result<Version, GridError>> + 'static {
        self.remove_routed(cache, key, precondition, None, Forwarding::Allowed)
    }

    /// As [`Grid::remove`], named by the client's op id: sent again, it is
    /// answered as the first time, not applied twice.
    pub fn remove_once(
        &self,
        cache: &str,
        key: Key,
        precondition: Precondition,
        op: Option<OpId>,
    ) -> impl Future<Output = Result<Version, GridError>> + 'static {
        self.remove_routed(cache, key, precondition, op, Forwarding::Allowed)
    }

    pub(super) fn remove_routed(
        &self,
        cache: &str,
        key: Key,
        precondition: Precondition,
        op: Option<OpId>,
        forwarding: Forwarding,
    ) -> impl Future<Output = Result<Version, GridError>> + 'static {
        let sent = self.cache(cache).and_then(|cache| {
            let segment = cache.segment_of(&key);
            Ok(match self.target(&cache, segment, forwarding)? {
                Target::Local(partition) => Sent::Local(partition.send(partition::Remove {
                    key,
                    precondition,
                    op,
                })),
                Target::Remote(forwarder, member) => {
                    let cache = cache.name().clone();
                    let forwarded = Forwarded::Remove {
                        cache,
                        key,
                        precondition,
                        op,
                    };
                    Sent::Forwarded(forwarder.forward(member, forwarded))
                }
            })
        });
        self.reply(
            "remove",
            sent,
            |outcome| outcome,
            |reply| match reply {
                ForwardedReply::Removed(outcome) => outcome,
                other => Err(forward::mismatched(other)),
            },
        )
    }
}
