//! Reads that gather a cache from every segment, wherever each is led: a
//! listing page, and the snapshots and histories subscriptions start
//! from (asked of the member leading a segment, which then relays the
//! cache's events here).

use std::sync::Arc;

use futures_util::future::join_all;

use super::{unavailable, Forwarding, Grid, Page, Sent, Target, MAX_PAGE};
use crate::grid::forward::{self, Forwarded, ForwardedReply};
use crate::grid::partition::{self, Snapshot};
use crate::grid::segment::{EntryView, Position};
use crate::grid::{Event, GridError, KeyFilter, SegmentId};

impl Grid {
    /// Up to `limit` (at most [`MAX_PAGE`]) entries whose keys start with
    /// `prefix` and sort after `after`, in key order, gathered from every
    /// segment.
    pub async fn list(
        &self,
        cache: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, GridError> {
        let result = self.list_inner(cache, prefix, after, limit).await;
        self.inner.setup.metrics.count_operation("list", &result);
        result
    }

    async fn list_inner(
        &self,
        cache: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, GridError> {
        if limit == 0 {
            return Err(GridError::BadRequest("limit must be at least 1".into()));
        }
        let limit = limit.min(MAX_PAGE);
        let cache = self.cache(cache)?;
        let (prefix, after): (Arc<str>, Option<Arc<str>>) = (Arc::from(prefix), after.map(Arc::from));
        // One more than the page, to know whether another page follows.
        let mut requests = Vec::new();
        for segment in (0..cache.routes.segments()).map(SegmentId) {
            let (prefix, after, limit) = (prefix.clone(), after.clone(), limit + 1);
            requests.push(match self.target(&cache, segment, Forwarding::Allowed)? {
                Target::Local(partition) => {
                    Sent::Local(partition.send(partition::List { prefix, after, limit }))
                }
                Target::Remote(forwarder, member) => {
                    let forwarded = Forwarded::List {
                        cache: cache.name().clone(),
                        segment,
                        prefix,
                        after,
                        limit,
                    };
                    Sent::Forwarded(forwarder.forward(member, forwarded))
                }
            });
        }
        let replies = requests.into_iter().map(|sent| async move {
            match sent {
                Sent::Local(request) => request.await.map_err(unavailable)?,
                Sent::Forwarded(reply) => match reply.await? {
                    ForwardedReply::Listed(listed) => {
                        listed.map(|e| e.into_iter().map(EntryView::from).collect())
                    }
                    other => Err(forward::mismatched(other)),
                },
            }
        });
        let mut entries = Vec::new();
        for reply in join_all(replies).await {
            entries.extend(reply?);
        }
        entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next = more.then(|| entries.last().map(|e| e.key.clone())).flatten();
        Ok(Page { entries, next })
    }

    /// How many entries `cache` holds in the whole cluster, each counted
    /// once, by its segment's primary; a lost segment (its data went with
    /// every owner) holds none. A node on its own counts what it holds.
    pub async fn count_entries(&self, cache: &str) -> Result<usize, GridError> {
        let cache = self.cache(cache)?;
        if self.inner.setup.forwarder.is_none() {
            return Ok(cache.entry_count());
        }
        let lost: Vec<SegmentId> = cache.routes.lost().collect();
        let mut requests = Vec::new();
        for segment in (0..cache.routes.segments()).map(SegmentId) {
            if lost.contains(&segment) {
                continue;
            }
            requests.push(match self.target(&cache, segment, Forwarding::Allowed)? {
                Target::Local(partition) => Sent::Local(partition.send(partition::CountEntries)),
                Target::Remote(forwarder, member) => {
                    let forwarded = Forwarded::Count {
                        cache: cache.name().clone(),
                        segment,
                    };
                    Sent::Forwarded(forwarder.forward(member, forwarded))
                }
            });
        }
        let replies = requests.into_iter().map(|sent| async move {
            match sent {
                Sent::Local(request) => request.await.map_err(unavailable)?,
                Sent::Forwarded(reply) => match reply.await? {
                    ForwardedReply::Counted(counted) => counted,
                    other => Err(forward::mismatched(other)),
                },
            }
        });
        let mut entries = 0;
        for reply in join_all(replies).await {
            entries += reply?;
        }
        Ok(entries)
    }

    /// Every segment's entries matching `filter` (none without one) and
    /// position, each taken at one instant of its segment: from this
    /// node's primaries, and asked of the member leading each other
    /// segment (which sends this node the cache's events from then on).
    pub async fn snapshot(&self, cache: &str, filter: Option<KeyFilter>) -> Result<Vec<Snapshot>, GridError> {
        let cache = self.cache(cache)?;
        let mut requests = Vec::new();
        for segment in (0..cache.routes.segments()).map(SegmentId) {
            let filter = filter.clone();
            requests.push(match self.target(&cache, segment, Forwarding::Allowed)? {
                Target::Local(partition) => Sent::Local(partition.send(partition::TakeSnapshot { filter })),
                Target::Remote(forwarder, member) => {
                    let forwarded = Forwarded::Snapshot {
                        cache: cache.name().clone(),
                        segment,
                        filter,
                    };
                    Sent::Forwarded(forwarder.forward(member, forwarded))
                }
            });
        }
        let replies = requests.into_iter().zip(0..).map(|(sent, segment)| async move {
            match sent {
                Sent::Local(request) => request.await.map_err(unavailable),
                Sent::Forwarded(reply) => match reply.await? {
                    ForwardedReply::Snapshot(part) => part.map(|(position, entries)| Snapshot {
                        segment: SegmentId(segment),
                        entries: entries.into_iter().map(EntryView::from).collect(),
                        position,
                    }),
                    other => Err(forward::mismatched(other)),
                },
            }
        });
        join_all(replies).await.into_iter().collect()
    }

    /// [`Grid::history`] for a client resuming on this member, read from
    /// the member's own copy of the segment when it holds one that reaches
    /// back (a backup keeps its primary's history), so a resume needs no
    /// other member; from the primary otherwise. A member cut off from the
    /// majority reads no copy of its own (it serves nothing).
    pub async fn history_for_resume(
        &self,
        cache: &str,
        segment: SegmentId,
        position: Position,
    ) -> Result<Option<Vec<Arc<Event>>>, GridError> {
        let leased = self.inner.setup.leased.as_ref().is_none_or(|leased| leased());
        let copy = self.cache(cache)?.routes.copy(segment).cloned();
        if let Some(copy) = copy.filter(|_| leased) {
            if let Ok(Some(events)) = copy.send(partition::ReadCopyHistory { after: position }).await {
                return Ok(Some(events));
            }
        }
        self.history(cache, segment, position).await
    }

    /// The events of `segment` after `position`, if its history reaches
    /// back and the position is in its lineage: from this node's primary,
    /// or asked of the member leading it (which sends this node the
    /// cache's events from then on).
    pub async fn history(
        &self,
        cache: &str,
        segment: SegmentId,
        position: Position,
    ) -> Result<Option<Vec<Arc<Event>>>, GridError> {
        let cache = self.cache(cache)?;
        match self.target(&cache, segment, Forwarding::Allowed)? {
            Target::Local(partition) => partition
                .send(partition::ReadHistory { after: position })
                .await
                .map_err(unavailable),
            Target::Remote(forwarder, member) => {
                let forwarded = Forwarded::History {
                    cache: cache.name().clone(),
                    segment,
                    after: position,
                };
                match forwarder.forward(member, forwarded).await? {
                    ForwardedReply::History(events) => {
                        events.map(|events| events.map(|e| e.into_iter().map(Arc::new).collect()))
                    }
                    other => Err(forward::mismatched(other)),
                }
            }
        }
    }
}
