//! [`Grid`]: the handle every front end (REST, WebSocket sessions, the demo
//! feed) uses. It owns the registry of caches and routes each operation
//! through the cache's [`RoutingTable`] to the owner of the key's segment;
//! it holds no entry state itself.
//!
//! The registry is copy-on-write behind an `ArcSwap`, so looking a cache up on
//! the hot path is a lock-free load; only creating a cache (rare) takes a
//! lock, to keep two concurrent creations of one name from racing.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::future::Future;

use actix::dev::Request;
use actix::{Addr, ArbiterHandle, MailboxError, Recipient};
use arc_swap::ArcSwap;
use futures_util::future::join_all;

use super::cache::{CacheConfig, CacheShared};

mod placement;
use super::forward::{self, Entry, ForwardFuture, Forwarded, ForwardedReply, Forwarder};
use super::hash::segment_of;
use super::owners::{AssignSegments, ForgetCache, MemberId, OwnerTables};
use super::partition::{self, Partition, Snapshot};
use super::replication::ReplicaSink;
use super::routing::{self, Route, RoutingTable};
use super::segment::{EntryView, Precondition, PutOutcome, PutRequest};
use super::{
    CacheDeleted, CacheName, Event, EventSink, GridError, GridMetrics, Incarnation, JsonValue, Key,
    KeyFilter, OpId, SegmentId, Version,
};

/// The most entries one listing page returns.
pub const MAX_PAGE: usize = 1000;

/// One cache as the node serves it: its shared state, where each of its
/// segments is served, and the incarnation of its histories.
pub struct Cache {
    shared: Arc<CacheShared>,
    routes: RoutingTable,
    incarnation: Incarnation,
    /// Segments declared lost since the cache was made, for the metrics.
    declared_lost: usize,
}

impl Cache {
    pub fn name(&self) -> &CacheName {
        &self.shared.name
    }

    pub fn config(&self) -> &CacheConfig {
        &self.shared.config
    }

    pub fn entry_count(&self) -> usize {
        self.shared.entry_count()
    }

    /// Bytes of keys and values this node holds for the cache.
    pub fn bytes(&self) -> usize {
        self.shared.bytes()
    }

    /// How many of the cache's segments this node leads, and how many it
    /// holds as a backup.
    pub fn segments_held(&self) -> (usize, usize) {
        let primary = self.routes.local().count();
        (primary, self.routes.copies().count() - primary)
    }

    /// How many segments lost their data with every owner and wait for an
    /// operator to declare it lost, and how many were declared lost.
    pub fn segments_lost(&self) -> (usize, usize) {
        (self.routes.lost().count(), self.declared_lost)
    }

    /// The epoch of the owner table the cache is placed by.
    pub fn owner_epoch(&self) -> u64 {
        self.routes.epoch()
    }

    /// Which life of the cache's histories positions in it belong to.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    pub fn segment_of(&self, key: &str) -> SegmentId {
        segment_of(key, self.shared.config.segments)
    }
}

/// Whether `create_cache` made the cache or found it already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Creation {
    Created,
    AlreadyExists,
}

/// One page of a listing; `next` is the key to pass as `after` for the
/// following page.
#[derive(Debug)]
pub struct Page {
    pub entries: Vec<EntryView>,
    pub next: Option<Key>,
}

/// What one node may hold, whatever clients ask for: each segment is an
/// actor with its own memory, so these bound the node's footprint before
/// any entry is written.
#[derive(Clone, Copy, Debug)]
pub struct GridLimits {
    pub max_caches: usize,
    /// Segments over all caches.
    pub max_segments: usize,
}

/// What the grid needs from the node that runs it.
pub struct GridSetup {
    /// The threads partitions run on, one per core.
    pub arbiters: Vec<ArbiterHandle>,
    /// Where owner tables come from: the cluster's membership actor.
    pub owner_tables: OwnerTables,
    pub local_member: MemberId,
    pub events: EventSink,
    /// Told of every deleted cache, after the last event of its partitions.
    pub deletions: Recipient<CacheDeleted>,
    pub metrics: GridMetrics,
    pub limits: GridLimits,
    /// How a primary reaches its backups on other members; none on a node
    /// that is its own cluster.
    pub replicas: Option<Arc<dyn ReplicaSink>>,
    /// How a request reaches the member leading its segment; none on a
    /// node that is its own cluster.
    pub forwarder: Option<Arc<dyn Forwarder>>,
    /// Whether this member may act on its segments now: in a cluster, only
    /// while it holds the majority's lease. None: always.
    pub leased: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

#[derive(Clone)]
pub struct Grid {
    inner: Arc<Inner>,
}

struct Inner {
    caches: ArcSwap<BTreeMap<CacheName, Arc<Cache>>>,
    creating: tokio::sync::Mutex<()>,
    setup: GridSetup,
}

/// Whether a request may be forwarded to the member leading its segment:
/// not once it was forwarded here.
#[derive(Clone, Copy)]
enum Forwarding {
    Allowed,
    Refused,
}

/// Where a request for one segment goes.
enum Target<'a> {
    Local(&'a Addr<Partition>),
    Remote(&'a dyn Forwarder, &'a MemberId),
}

/// A request on its way: queued at a local partition, or forwarded.
enum Sent<M>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
    Partition: actix::Handler<M>,
{
    Local(Request<Partition, M>),
    Forwarded(ForwardFuture),
}

fn unavailable(err: MailboxError) -> GridError {
    GridError::Unavailable(format!("partition unavailable: {err}"))
}

impl Grid {
    pub fn new(setup: GridSetup) -> Self {
        assert!(!setup.arbiters.is_empty(), "a grid runs on at least one arbiter");
        Grid {
            inner: Arc::new(Inner {
                caches: ArcSwap::from_pointee(BTreeMap::new()),
                creating: tokio::sync::Mutex::new(()),
                setup,
            }),
        }
    }

    /// Creates a cache, or confirms one with the same config exists; a cache
    /// of that name with another config is a `Conflict`.
    pub async fn create_cache(&self, name: CacheName, config: CacheConfig) -> Result<Creation, GridError> {
        config.validate().map_err(GridError::BadRequest)?;
        // Two copies by default once there are other members to hold one.
        let clustered = self.inner.setup.forwarder.is_some();
        let config = config.with_default_owners(if clustered { 2 } else { 1 });
        let _creating = self.inner.creating.lock().await;
        let caches = self.inner.caches.load();
        if let Some(existing) = caches.get(&name) {
            return if *existing.config() == config {
                Ok(Creation::AlreadyExists)
            } else {
                Err(GridError::Conflict(format!(
                    "cache {name} exists with another config"
                )))
            };
        }
        let setup = &self.inner.setup;
        let limits = setup.limits;
        if caches.len() >= limits.max_caches {
            return Err(GridError::LimitReached(format!(
                "the node holds its most caches ({}); delete one first",
                limits.max_caches
            )));
        }
        let segments: usize = caches.values().map(|c| c.config().segments as usize).sum();
        if segments + config.segments as usize > limits.max_segments {
            return Err(GridError::LimitReached(format!(
                "the node's caches have {segments} of its most {} segments; {} more do not fit",
                limits.max_segments, config.segments
            )));
        }
        drop(caches);
        let table = setup
            .owner_tables
            .assign
            .send(AssignSegments {
                cache: name.clone(),
                config: config.clone(),
            })
            .await
            .map_err(|e| GridError::Unavailable(format!("membership unavailable: {e}")))??;
        let shared = CacheShared::new(name.clone(), config, setup.metrics.clone());
        let (routes, _) = self.place(&shared, &table, None, true).await?;
        let cache = Arc::new(Cache {
            shared,
            routes,
            incarnation: table.incarnation.unwrap_or_else(Incarnation::new),
            declared_lost: table.declared_lost,
        });
        self.inner.caches.rcu(|caches| {
            let mut caches = BTreeMap::clone(caches);
            caches.insert(name.clone(), cache.clone());
            caches
        });
        Ok(Creation::Created)
    }

    /// Deletes a cache: it is gone from the registry at once (requests for
    /// it get `unknown_cache`), its partitions stop and free their entries,
    /// and then the deletion is reported, behind every event the partitions
    /// published.
    pub async fn delete_cache(&self, name: &str) -> Result<(), GridError> {
        let _creating = self.inner.creating.lock().await;
        let cache = self.cache(name)?;
        self.inner.caches.rcu(|caches| {
            let mut caches = BTreeMap::clone(caches);
            caches.remove(name);
            caches
        });
        let setup = &self.inner.setup;
        let _ = setup
            .owner_tables
            .forget
            .send(ForgetCache(cache.name().clone()))
            .await;
        // Each partition answers after everything queued before; its
        // events are then in the listener's mailbox ahead of the deletion.
        let retired = cache.routes.copies().map(|p| p.send(partition::Retire));
        join_all(retired).await;
        setup.metrics.forget_cache(cache.name());
        setup.deletions.do_send(CacheDeleted(cache.name().clone()));
        Ok(())
    }

    pub fn cache(&self, name: &str) -> Result<Arc<Cache>, GridError> {
        self.inner
            .caches
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| GridError::UnknownCache(name.to_string()))
    }

    /// This node's id among the cluster's members.
    pub fn local_member(&self) -> &MemberId {
        &self.inner.setup.local_member
    }

    /// Every cache, by name.
    pub fn caches(&self) -> Vec<Arc<Cache>> {
        self.inner.caches.load().values().cloned().collect()
    }

    /// Reads an entry. Like [`Grid::put`] and [`Grid::remove`], the request
    /// is routed and queued at the partition when this is called, not when
    /// the future is first polled: one caller's operations reach a
    /// partition in the order it made them, however its futures are polled.
    /// A key whose segment another member leads is forwarded to it.
    pub fn get(&self, cache: &str, key: Key) -> impl Future<Output = Result<EntryView, GridError>> + 'static {
        self.get_routed(cache, key, Forwarding::Allowed)
    }

    fn get_routed(
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

    fn put_routed(
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

    fn remove_routed(
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

    /// Where a request for `segment` of `cache` goes from this node.
    fn target<'a>(
        &'a self,
        cache: &'a Cache,
        segment: SegmentId,
        forwarding: Forwarding,
    ) -> Result<Target<'a>, GridError> {
        match cache.routes.route(segment) {
            Some(Route::Local(_)) if self.inner.setup.leased.as_ref().is_some_and(|leased| !leased()) => Err(
                GridError::Unavailable("this member is cut off from the cluster's majority".into()),
            ),
            Some(Route::Local(partition)) => Ok(Target::Local(partition)),
            Some(Route::Remote(member)) => match (&self.inner.setup.forwarder, forwarding) {
                (Some(forwarder), Forwarding::Allowed) => {
                    self.inner.setup.metrics.forwarded.inc();
                    Ok(Target::Remote(forwarder.as_ref(), member))
                }
                _ => Err(GridError::Unavailable(format!(
                    "segment {} of {} is led by member {}, not this one",
                    segment.0,
                    cache.name(),
                    member.0
                ))),
            },
            Some(Route::Lost) => Err(routing::lost(segment)),
            None => Err(GridError::BadRequest(format!("no segment {}", segment.0))),
        }
    }

    /// Awaits the reply to a request already sent (to a local partition or
    /// another member), and counts the operation's outcome.
    fn reply<M, T>(
        &self,
        op: &'static str,
        sent: Result<Sent<M>, GridError>,
        finish: impl FnOnce(M::Result) -> Result<T, GridError> + 'static,
        finish_forwarded: impl FnOnce(ForwardedReply) -> Result<T, GridError> + 'static,
    ) -> impl Future<Output = Result<T, GridError>> + 'static
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        Partition: actix::Handler<M>,
    {
        let metrics = self.inner.setup.metrics.clone();
        async move {
            let result = match sent {
                Ok(Sent::Local(request)) => request.await.map_err(unavailable).and_then(finish),
                Ok(Sent::Forwarded(reply)) => reply.await.and_then(finish_forwarded),
                Err(err) => Err(err),
            };
            metrics.count_operation(op, &result);
            result
        }
    }

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

    /// The events of `segment` after `position`, if its history reaches
    /// back: from this node's primary, or asked of the member leading it
    /// (which sends this node the cache's events from then on).
    pub async fn history(
        &self,
        cache: &str,
        segment: SegmentId,
        position: Version,
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
