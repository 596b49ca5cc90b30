//! [`Grid`]: the handle every front end (REST, WebSocket sessions, the demo
//! feed) uses. It owns the registry of caches and routes each operation
//! through the cache's [`RoutingTable`] to the owner of the key's segment;
//! it holds no entry state itself.
//!
//! The registry is copy-on-write behind an `ArcSwap`, so looking a cache up on
//! the hot path is a lock-free load; only placing or removing a cache
//! (rare) takes a lock, so a cache is placed once however many creations
//! of its name (and the agreed topology) race.
//!
//! The requests themselves are in the submodules: one key's (`keyed`),
//! those gathered from every segment (`gathered`), those other members
//! forward here (`forwarded`), and placing a cache by its owner table
//! (`placement`).

use std::collections::BTreeMap;
use std::sync::Arc;

use std::future::Future;

use actix::dev::Request;
use actix::{Addr, ArbiterHandle, MailboxError, Recipient};
use arc_swap::ArcSwap;
use futures_util::future::join_all;

use super::cache::{CacheConfig, CacheShared};

mod forwarded;
mod gathered;
mod keyed;
mod placement;
use super::forward::{ForwardFuture, ForwardedReply, Forwarder};
use super::hash::segment_of;
use super::owners::{AssignSegments, ForgetCache, MemberId, OwnerTables};
use super::partition::{self, Partition};
use super::replication::ReplicaSink;
use super::routing::{self, Route, RoutingTable};
use super::segment::EntryView;
use super::{
    CacheDeleted, CacheName, CacheStartedAgain, EventSink, GridError, GridMetrics, Incarnation, Key,
    SegmentId,
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
    /// Told of every cache whose segments declared lost were placed again.
    pub restarts: Recipient<CacheStartedAgain>,
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
        let creating = self.inner.creating.lock().await;
        if let Some(existing) = self.check_creation(&name, &config)? {
            return Ok(existing);
        }
        // In a cluster the agreement waits for the other members to have
        // the cache, and they may be placing a topology that needs their
        // own lock while their creations wait for ours: the lock is let go
        // meanwhile. Alone, the assignment is immediate and stays under it.
        let creating = if clustered {
            drop(creating);
            None
        } else {
            Some(creating)
        };
        let table = self
            .inner
            .setup
            .owner_tables
            .assign
            .send(AssignSegments {
                cache: name.clone(),
                config: config.clone(),
            })
            .await
            .map_err(|e| GridError::Unavailable(format!("membership unavailable: {e}")))??;
        let _creating = match creating {
            Some(held) => held,
            None => self.inner.creating.lock().await,
        };
        // Placed meanwhile, by this member following the agreed topology
        // or by a creation of the same name here.
        if let Some(existing) = self.inner.caches.load().get(&name) {
            return match *existing.config() == config {
                true => Ok(Creation::Created),
                false => Err(GridError::Conflict(format!(
                    "cache {name} exists with another config"
                ))),
            };
        }
        let shared = CacheShared::new(name.clone(), config, self.inner.setup.metrics.clone());
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

    /// Whether a cache `name` of `config` may be created here: `None` when
    /// it may, `AlreadyExists` when it is here with that config.
    fn check_creation(&self, name: &CacheName, config: &CacheConfig) -> Result<Option<Creation>, GridError> {
        let caches = self.inner.caches.load();
        if let Some(existing) = caches.get(name) {
            return if existing.config() == config {
                Ok(Some(Creation::AlreadyExists))
            } else {
                Err(GridError::Conflict(format!(
                    "cache {name} exists with another config"
                )))
            };
        }
        let limits = self.inner.setup.limits;
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
        Ok(None)
    }

    /// Deletes a cache: it is gone from the registry at once (requests for
    /// it get `unknown_cache`), the keeper of the owner tables forgets it
    /// (in a cluster: proposes its deletion), its partitions stop and free
    /// their entries, and then the deletion is reported, behind every event
    /// the partitions published.
    pub async fn delete_cache(&self, name: &str) -> Result<(), GridError> {
        self.remove_cache(name, true).await
    }

    /// Removes a cache the cluster agreed to delete, as [`Grid::delete_cache`]
    /// but without proposing the deletion again: a cache of the same name
    /// created since must not be deleted with it.
    pub async fn remove_deleted_cache(&self, name: &str) -> Result<(), GridError> {
        self.remove_cache(name, false).await
    }

    async fn remove_cache(&self, name: &str, forget_owners: bool) -> Result<(), GridError> {
        let _creating = self.inner.creating.lock().await;
        let cache = self.cache(name)?;
        self.inner.caches.rcu(|caches| {
            let mut caches = BTreeMap::clone(caches);
            caches.remove(name);
            caches
        });
        let setup = &self.inner.setup;
        if forget_owners {
            let _ = setup
                .owner_tables
                .forget
                .send(ForgetCache(cache.name().clone()))
                .await;
        }
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
}
