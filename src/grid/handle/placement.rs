//! Placing a cache's segments on this node as the cluster's owner table
//! says: a partition per owned segment with its role, routes to the
//! primaries, and the hand-off of replication messages to local copies.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::{Actor, Addr};
use futures_util::future::join_all;

use super::{unavailable, Cache, Grid};
use crate::grid::cache::CacheShared;
use crate::grid::owners::{MemberId, OwnerTable};
use crate::grid::partition::{self, EvictionRing, Partition, Replicate, SetRole};
use crate::grid::replication::{ReplicaMessage, ReplicaReply, Role};
use crate::grid::routing::{Route, RoutingTable};
use crate::grid::{CacheStartedAgain, GridError, SegmentId};

impl Grid {
    /// Places a cache's segments on this node as `table` says: a
    /// partition for every segment it owns (kept from `previous` where
    /// there is one), each told its role (backups first, so a local primary
    /// finds them at the epoch), routes to the primaries, and the eviction
    /// ring of the local primaries. A lost segment gets no partition and a
    /// [`Route::Lost`]. Returns the routes and the partitions of
    /// `previous` this node no longer owns, to retire once the new routes
    /// are published.
    ///
    /// A new primary asks its backups, and the segment's owners in the
    /// table of the epoch before that no longer own it, how far they got.
    /// An owner of the target table (while one is filled) holds a backup's
    /// copy, which its primary fills.
    /// With `keep_departing` (this member is still in the cluster, or is
    /// the one leaving it), a copy it no longer owns is kept (routes go to
    /// the new primary) until the new primary has got as far.
    pub(super) async fn place(
        &self,
        shared: &Arc<CacheShared>,
        table: &OwnerTable,
        previous: Option<&RoutingTable>,
        keep_departing: bool,
    ) -> Result<(RoutingTable, Vec<Addr<Partition>>), GridError> {
        let setup = &self.inner.setup;
        let me = &setup.local_member;
        let (owners, epoch, previous_owners) = (&table.owners, table.epoch, table.previous.as_deref());
        let (mut routes, mut copies, mut roles, mut retired) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for segment in (0..owners.segments()).map(SegmentId) {
            let row = owners.owners(segment);
            // Owners of the target table being filled hold a backup's copy.
            let joining = table.joining(segment);
            // A copy that stopped (it handed over) is not kept.
            let kept = previous
                .and_then(|p| p.copy(segment))
                .filter(|copy| copy.connected())
                .cloned();
            let moved_from: Vec<MemberId> = previous_owners
                .map(|table| table.owners(segment))
                .unwrap_or_default()
                .iter()
                .filter(|m| !row.contains(m) && *m != me)
                .cloned()
                .collect();
            log::debug!(
                "{} {} segment {}: epoch {epoch}, previous table {}, moved from {moved_from:?}",
                me.0,
                shared.name,
                segment.0,
                previous_owners.is_some()
            );
            let Some(primary) = row.first() else {
                return Err(GridError::Unavailable(format!(
                    "segment {} has no owner",
                    segment.0
                )));
            };
            if table.lost.contains(&segment.0) {
                routes.push(Route::Lost);
                retired.extend(kept);
                copies.push(None);
                continue;
            }
            if !row.contains(me) && !joining.contains(me) {
                routes.push(Route::Remote(primary.clone()));
                match (kept, &setup.replicas) {
                    // Kept, refusing clients, until the new primary got as
                    // far (it may take this copy first).
                    (Some(kept), Some(sink)) if keep_departing => {
                        let departing = Role::Departing {
                            epoch,
                            to: primary.clone(),
                            sink: sink.clone(),
                        };
                        roles.push((kept.clone(), departing));
                        copies.push(Some(kept));
                    }
                    (kept, _) => {
                        retired.extend(kept);
                        copies.push(None);
                    }
                }
                continue;
            }
            let partition = kept.unwrap_or_else(|| {
                let arbiter = &setup.arbiters[segment.0 as usize % setup.arbiters.len()];
                let (shared, events) = (shared.clone(), setup.events.clone());
                Partition::start_in_arbiter(arbiter, move |_| Partition::new(shared, segment, events))
            });
            let role = match (&setup.replicas, primary == me) {
                (_, false) => Role::Backup {
                    epoch,
                    filling: !row.contains(me),
                },
                (Some(sink), true) => Role::Primary {
                    epoch,
                    backups: row[1..].to_vec(),
                    sink: sink.clone(),
                    sources: moved_from,
                    joining,
                },
                (None, true) => Role::Solo,
            };
            roles.push((partition.clone(), role));
            routes.push(if primary == me {
                Route::Local(partition.clone())
            } else {
                Route::Remote(primary.clone())
            });
            copies.push(Some(partition));
        }
        if setup.replicas.is_some() {
            // This member's share of `max_entries`: its primaries' shares.
            let led = (0..owners.segments())
                .filter(|s| owners.owners(SegmentId(*s)).first() == Some(me) && !table.lost.contains(s));
            let share = led.map(|s| shared.config.entries_share(s).unwrap_or(usize::MAX));
            shared.set_entry_limit(share.fold(0, usize::saturating_add));
        }
        roles.sort_by_key(|(_, role)| !matches!(role, Role::Backup { .. }));
        for (partition, role) in roles {
            partition.send(SetRole(role)).await.map_err(unavailable)?;
        }
        let routes = RoutingTable::new(routes, copies, epoch);
        let ring: EvictionRing = routes.local().map(|(_, p)| p.clone().recipient()).collect();
        let ready = routes.local().enumerate().map(|(place, (_, partition))| {
            partition.send(partition::Ready {
                ring: ring.clone(),
                place,
            })
        });
        for ready in join_all(ready).await {
            ready.map_err(unavailable)?;
        }
        Ok((routes, retired))
    }

    /// Places an existing cache's segments as the cluster's owner table
    /// says (see [`Grid::place`]); a table of an epoch already placed is
    /// ignored. Segments declared lost since the last table start a new
    /// incarnation of the cache's histories.
    pub async fn set_owners(
        &self,
        name: &str,
        table: &OwnerTable,
        keep_departing: bool,
    ) -> Result<(), GridError> {
        let _creating = self.inner.creating.lock().await;
        let cache = self.cache(name)?;
        if table.epoch <= cache.routes.epoch() {
            return Ok(());
        }
        let (routes, retired) = self
            .place(&cache.shared, table, Some(&cache.routes), keep_departing)
            .await?;
        let placed = Arc::new(Cache {
            shared: cache.shared.clone(),
            routes,
            incarnation: table.incarnation.unwrap_or(cache.incarnation),
            declared_lost: table.declared_lost,
        });
        self.inner.caches.rcu(|caches| {
            let mut caches = BTreeMap::clone(caches);
            caches.insert(placed.name().clone(), placed.clone());
            caches
        });
        join_all(retired.iter().map(|p| p.send(partition::Retire))).await;
        if placed.incarnation != cache.incarnation {
            let restarts = &self.inner.setup.restarts;
            restarts.do_send(CacheStartedAgain(placed.name().clone()));
        }
        Ok(())
    }

    /// Hands a message from a segment's primary (or a new primary) to this
    /// node's copy of the segment.
    pub async fn replicate(&self, message: ReplicaMessage) -> ReplicaReply {
        let (cache, segment) = message.segment();
        let copy = self
            .cache(cache.as_str())
            .ok()
            .and_then(|c| c.routes.copy(segment).cloned());
        match copy {
            Some(partition) => partition
                .send(Replicate(message))
                .await
                .unwrap_or(ReplicaReply::NotOwner),
            None => ReplicaReply::NotOwner,
        }
    }

    /// Whether every copy this node holds of a segment another member now
    /// leads has been taken by that member: its copy got at least as far.
    /// What a member leaving the cluster waits for before it stops.
    /// Caches not yet placed by an owner table of `epoch` or later are
    /// not handed over yet.
    pub async fn handed_over(&self, epoch: u64) -> bool {
        let Some(sink) = &self.inner.setup.replicas else {
            return true;
        };
        for cache in self.caches().iter() {
            if cache.owner_epoch() < epoch {
                return false;
            }
            for (segment, copy) in cache.routes.held_for_others() {
                let position = ReplicaMessage::Position {
                    cache: cache.name().clone(),
                    segment,
                    epoch: cache.owner_epoch(),
                };
                let ours = match copy.send(Replicate(position.clone())).await {
                    Ok(ReplicaReply::Position { sequence }) => sequence,
                    _ => continue, // stopped: nothing left to hand over
                };
                let Some(Route::Remote(primary)) = cache.routes.route(segment) else {
                    continue;
                };
                match sink.send(primary, position).await {
                    Ok(ReplicaReply::Position { sequence }) if sequence >= ours => {}
                    _ => return false,
                }
            }
        }
        true
    }

    /// Whether every owner this node's primaries are filling (the owners
    /// their segments gain in the target tables) is level with them, once
    /// every cache is placed by a table of `epoch` or later.
    pub async fn feeds_level(&self, epoch: u64) -> bool {
        for cache in self.caches().iter() {
            if cache.owner_epoch() < epoch {
                return false;
            }
            let asked = cache.routes.local().map(|(_, p)| p.send(partition::FeedsLevel));
            if !join_all(asked)
                .await
                .into_iter()
                .all(|level| level.unwrap_or(true))
            {
                return false;
            }
        }
        true
    }
}
