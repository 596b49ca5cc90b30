//! Serving the requests other members forward here: from this node's
//! primaries only, so a request crosses at most one link.

use actix::Addr;

use super::{unavailable, Forwarding, Grid, Target};
use crate::grid::forward::{Entry, Forwarded, ForwardedReply};
use crate::grid::partition::{self, Partition};
use crate::grid::segment::PutRequest;
use crate::grid::{Event, GridError, SegmentId};
use std::sync::Arc;

impl Grid {
    /// Serves a request another member forwarded here, from this node's
    /// primaries only: a request is never forwarded twice.
    pub async fn serve_forwarded(&self, request: Forwarded) -> ForwardedReply {
        // The sender routed by a table naming the cache; this member has
        // not placed it yet (it joined just now, say): try again shortly.
        if self.cache(request.cache().as_str()).is_err() {
            let lagging = format!("cache {} is not placed on this member yet", request.cache());
            return request.refusal(GridError::Unavailable(lagging));
        }
        let local = Forwarding::Refused;
        match request {
            Forwarded::Get { cache, key } => {
                ForwardedReply::Entry(self.get_routed(cache.as_str(), key, local).await.map(Entry::from))
            }
            Forwarded::Put {
                cache,
                key,
                value,
                precondition,
                lifespan_ms,
                op,
            } => {
                let request = PutRequest {
                    key,
                    value,
                    precondition,
                    lifespan_ms,
                    op,
                };
                ForwardedReply::Put(self.put_routed(cache.as_str(), request, local).await)
            }
            Forwarded::Remove {
                cache,
                key,
                precondition,
                op,
            } => {
                let removed = self.remove_routed(cache.as_str(), key, precondition, op, local);
                ForwardedReply::Removed(removed.await)
            }
            Forwarded::List {
                cache,
                segment,
                prefix,
                after,
                limit,
            } => {
                let listed = async {
                    let partition = self.local_primary(cache.as_str(), segment)?;
                    let entries = partition
                        .send(partition::List { prefix, after, limit })
                        .await
                        .map_err(unavailable)??;
                    Ok(entries.into_iter().map(Entry::from).collect())
                };
                ForwardedReply::Listed(listed.await)
            }
            Forwarded::Count { cache, segment } => {
                let counted = async {
                    let partition = self.local_primary(cache.as_str(), segment)?;
                    partition
                        .send(partition::CountEntries)
                        .await
                        .map_err(unavailable)?
                };
                ForwardedReply::Counted(counted.await)
            }
            Forwarded::Snapshot {
                cache,
                segment,
                filter,
            } => {
                let taken = async {
                    let partition = self.local_primary(cache.as_str(), segment)?;
                    let snapshot = partition
                        .send(partition::TakeSnapshot { filter })
                        .await
                        .map_err(unavailable)?;
                    let entries = snapshot.entries.into_iter().map(Entry::from).collect();
                    Ok((snapshot.position, entries))
                };
                ForwardedReply::Snapshot(taken.await)
            }
            Forwarded::History {
                cache,
                segment,
                after,
            } => {
                let read = async {
                    let partition = self.local_primary(cache.as_str(), segment)?;
                    let events = partition
                        .send(partition::ReadHistory { after })
                        .await
                        .map_err(unavailable)?;
                    // Shared here, owned on the wire: each event is copied once.
                    let owned = |event: &Arc<Event>| Event::clone(event);
                    Ok(events.map(|events| events.iter().map(owned).collect()))
                };
                ForwardedReply::History(read.await)
            }
        }
    }

    /// This node's primary of `segment`, for a request another member
    /// forwarded (never forwarded on).
    fn local_primary(&self, cache: &str, segment: SegmentId) -> Result<Addr<Partition>, GridError> {
        let cache = self.cache(cache)?;
        match self.target(&cache, segment, Forwarding::Refused)? {
            Target::Local(partition) => Ok(partition.clone()),
            Target::Remote(..) => unreachable!("a refused forwarding never targets another member"),
        }
    }
}
