//! Reads that gather a cache from every segment, wherever each is led: a
//! listing page, and the snapshots and histories subscriptions start
//! from (asked of the member leading a segment, which then relays the
//! cache's events here).

use std::sync::Arc;

use futures_util::future::join_all;

use super::{unavailable, Cache, Forwarding, Grid, Page, Sent, Target, MAX_PAGE};
use crate::grid::forward::{self, Forwarded, ForwardedReply};
use crate::grid::partition::{self, Partition, Snapshot};
use crate::grid::segment::{EntryView, Position};
use crate::grid::{Event, GridError, KeyFilter, SegmentId};

/// One segment's answer to a gathered read: from this node's partition,
/// or from the member leading the segment.
enum Answer<R> {
    Local(R),
    Forwarded(ForwardedReply),
}

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
        let asked = limit + 1;
        let lists = self
            .gather(
                &cache,
                (0..cache.routes.segments()).map(SegmentId),
                |_| partition::List {
                    prefix: prefix.clone(),
                    after: after.clone(),
                    limit: asked,
                },
                |segment| Forwarded::List {
                    cache: cache.name().clone(),
                    segment,
                    prefix: prefix.clone(),
                    after: after.clone(),
                    limit: asked,
                },
                |_, answer| match answer {
                    Answer::Local(listed) => listed,
                    Answer::Forwarded(ForwardedReply::Listed(listed)) => {
                        listed.map(|e| e.into_iter().map(EntryView::from).collect())
                    }
                    Answer::Forwarded(other) => Err(forward::mismatched(other)),
                },
            )
            .await?;
        let mut entries: Vec<EntryView> = lists.into_iter().flatten().collect();
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
        let held = (0..cache.routes.segments())
            .map(SegmentId)
            .filter(|segment| !lost.contains(segment));
        let counts = self
            .gather(
                &cache,
                held,
                |_| partition::CountEntries,
                |segment| Forwarded::Count {
                    cache: cache.name().clone(),
                    segment,
                },
                |_, answer| match answer {
                    Answer::Local(counted) | Answer::Forwarded(ForwardedReply::Counted(counted)) => counted,
                    Answer::Forwarded(other) => Err(forward::mismatched(other)),
                },
            )
            .await?;
        Ok(counts.into_iter().sum())
    }

    /// Every segment's entries matching `filter` (none without one) and
    /// position, each taken at one instant of its segment: from this
    /// node's primaries, and asked of the member leading each other
    /// segment (which sends this node the cache's events from then on).
    pub async fn snapshot(&self, cache: &str, filter: Option<KeyFilter>) -> Result<Vec<Snapshot>, GridError> {
        let cache = self.cache(cache)?;
        self.gather(
            &cache,
            (0..cache.routes.segments()).map(SegmentId),
            |_| partition::TakeSnapshot {
                filter: filter.clone(),
            },
            |segment| Forwarded::Snapshot {
                cache: cache.name().clone(),
                segment,
                filter: filter.clone(),
            },
            |segment, answer| match answer {
                Answer::Local(snapshot) => Ok(snapshot),
                Answer::Forwarded(ForwardedReply::Snapshot(part)) => {
                    part.map(|(position, entries)| Snapshot {
                        segment,
                        entries: entries.into_iter().map(EntryView::from).collect(),
                        position,
                    })
                }
                Answer::Forwarded(other) => Err(forward::mismatched(other)),
            },
        )
        .await
    }

    /// Sends one request to each of `segments`, `local(segment)` to this
    /// node's primary of it or `forwarded(segment)` to the member leading
    /// it, all before awaiting any; then gathers the answers in segment
    /// order, each taken apart by `answer`. The first error is the whole
    /// read's.
    async fn gather<M, T>(
        &self,
        cache: &Cache,
        segments: impl IntoIterator<Item = SegmentId>,
        local: impl Fn(SegmentId) -> M,
        forwarded: impl Fn(SegmentId) -> Forwarded,
        answer: impl Fn(SegmentId, Answer<M::Result>) -> Result<T, GridError>,
    ) -> Result<Vec<T>, GridError>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        Partition: actix::Handler<M>,
    {
        let mut requests = Vec::new();
        for segment in segments {
            let sent = match self.target(cache, segment, Forwarding::Allowed)? {
                Target::Local(partition) => Sent::Local(partition.send(local(segment))),
                Target::Remote(forwarder, member) => {
                    Sent::Forwarded(forwarder.forward(member, forwarded(segment)))
                }
            };
            requests.push((segment, sent));
        }
        let answer = &answer;
        let replies = requests.into_iter().map(|(segment, sent)| async move {
            let reply = match sent {
                Sent::Local(request) => Answer::Local(request.await.map_err(unavailable)?),
                Sent::Forwarded(reply) => Answer::Forwarded(reply.await?),
            };
            answer(segment, reply)
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
