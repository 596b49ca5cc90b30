//! A partition taking a role ([`SetRole`]): a new primary taking over
//! (asking the other copies how far they got, taking the furthest,
//! bringing its backups level before it serves), and a copy departing
//! this member (kept, refusing clients, until its new primary has got as
//! far).

use std::sync::Arc;

use actix::fut::{wrap_future, ActorFutureExt};
use actix::{ActorContext, AsyncContext, Context, Handler, Message, ResponseActFuture};
use futures_util::future::join_all;

use super::Partition;
use crate::grid::owners::MemberId;
use crate::grid::replication::{ReplicaFuture, ReplicaMessage, ReplicaReply, ReplicaSink, Role};

/// Makes the partition the segment's only owner, its primary or a backup.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetRole(pub Role);

/// How often, and how far apart, a new primary tries to bring its backups
/// level before leaving it to the next write: 10 s in all.
const TAKE_OVER_ATTEMPTS: u32 = 50;
const TAKE_OVER_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

impl Handler<SetRole> for Partition {
    type Result = ();

    fn handle(&mut self, SetRole(role): SetRole, ctx: &mut Context<Self>) {
        self.segment.set_replicating(role.replicates());
        if let Role::Primary { epoch, .. } = role {
            self.segment.set_epoch(epoch);
        }
        let (backup, primary) = (
            matches!(role, Role::Backup { .. } | Role::Departing { .. }),
            matches!(role, Role::Primary { .. }),
        );
        if backup {
            // Batches are numbered by each primary: a new epoch's primary
            // starts its own count. The old count goes on for the batches
            // the old epoch's primary still sends.
            self.replication.before = match self.replication.role {
                Role::Backup { epoch: old, .. } if role_epoch(&role) > old => {
                    Some((old, self.replication.batch))
                }
                _ => None,
            };
            self.replication.batch = 0;
        }
        self.replication.uncertain = false;
        if role.leads() != self.replication.role.leads() {
            self.cache.lead_entries(self.segment.len(), role.leads());
        }
        self.replication.role = role;
        if backup {
            // A backup's entries expire when its primary says so.
            if let Some((_, handle)) = self.reaper.take() {
                ctx.cancel_future(handle);
            }
        } else {
            self.aim_reaper(ctx);
        }
        self.set_moving(primary || matches!(self.replication.role, Role::Departing { .. }));
        if primary {
            ctx.wait(self.take_over(TAKE_OVER_ATTEMPTS));
        }
        self.start_feeds(ctx);
        if let Role::Departing { epoch, to, sink } = &self.replication.role {
            self.hand_over(ctx, *epoch, to.clone(), sink.clone(), HAND_OVER_ATTEMPTS);
        }
    }
}

/// The epoch a role was given at (none for a single node's).
fn role_epoch(role: &Role) -> u64 {
    match role {
        Role::Solo => 0,
        Role::Primary { epoch, .. } | Role::Backup { epoch, .. } | Role::Departing { epoch, .. } => *epoch,
    }
}

/// How often, and how many times, a departing copy asks whether the new
/// primary has got as far, before it stops anyway.
const HAND_OVER_ATTEMPTS: u32 = 200;
const HAND_OVER_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

impl Partition {
    /// Marks the segment as moving here or not, for the node's count.
    pub(super) fn set_moving(&mut self, moving: bool) {
        if self.replication.moving != moving {
            self.replication.moving = moving;
            let gauge = &self.cache.metrics.segments_moving;
            if moving {
                gauge.inc()
            } else {
                gauge.dec()
            }
        }
    }

    /// While this copy is departing at `epoch`: stops it once `to`, the
    /// new primary, is as far as it is (the new primary takes the copy
    /// when it is behind), asking again until then.
    fn hand_over(
        &mut self,
        ctx: &mut Context<Self>,
        epoch: u64,
        to: MemberId,
        sink: Arc<dyn ReplicaSink>,
        attempts_left: u32,
    ) {
        let ours = self.segment.position().0;
        let message = ReplicaMessage::Position {
            cache: self.cache.name.clone(),
            segment: self.segment.id(),
            epoch,
        };
        let asked = wrap_future::<_, Self>(sink.send(&to, message)).map(move |reply, partition, ctx| {
            let still_departing =
                matches!(&partition.replication.role, Role::Departing { epoch: now, .. } if *now == epoch);
            if !still_departing {
                return;
            }
            match reply {
                Ok(ReplicaReply::Position { sequence }) if sequence >= ours => ctx.stop(),
                _ if attempts_left <= 1 => {
                    log::warn!(
                        "{} segment {}: member {} never got as far as this copy ({ours}); dropping it",
                        partition.cache.name,
                        partition.segment.id().0,
                        to.0
                    );
                    ctx.stop();
                }
                _ => {
                    ctx.run_later(HAND_OVER_RETRY, move |partition, ctx| {
                        partition.hand_over(ctx, epoch, to, sink, attempts_left - 1)
                    });
                }
            }
        });
        ctx.spawn(asked);
    }

    /// What a new primary does before it serves anything (its mailbox is
    /// held meanwhile): takes the copy of an owner that got further than
    /// its own, then brings every backup level with its copy. A backup not
    /// reached now is tried again shortly (its node may not have the new
    /// topology yet), and is brought level anyway by the first write's
    /// batch, which it will find does not follow its last.
    fn take_over(&mut self, attempts_left: u32) -> ResponseActFuture<Self, ()> {
        let Role::Primary {
            epoch,
            backups,
            sink,
            sources,
            ..
        } = self.replication.role.clone()
        else {
            return Box::pin(actix::fut::ready(()));
        };
        let (cache, segment) = (self.cache.name.clone(), self.segment.id());
        // The previous primary (moved by a rebalance) and a member leaving
        // gracefully still hold their copies: either may be the furthest
        // (the only one, with one owner). Asking fences each copy asked.
        let holders: Vec<MemberId> = backups.iter().chain(&sources).cloned().collect();
        let asked = holders.iter().map(|to| {
            let message = ReplicaMessage::Position {
                cache: cache.clone(),
                segment,
                epoch,
            };
            sink.send(to, message)
        });
        let backup_count = backups.len();
        let furthest = wrap_future::<_, Self>(join_all(asked)).then({
            let (sink, cache) = (sink.clone(), cache.clone());
            move |positions, partition, _| {
                let ours = partition.segment.position().0;
                log::debug!(
                    "{cache} segment {}: epoch {epoch}, ours {ours}, asked {holders:?}: {positions:?}",
                    segment.0
                );
                let positions: Vec<Option<u64>> = positions
                    .into_iter()
                    .map(|reply| match reply {
                        Ok(ReplicaReply::Position { sequence }) => Some(sequence),
                        _ => None,
                    })
                    .collect();
                let ahead = holders
                    .iter()
                    .zip(&positions)
                    .filter_map(|(to, position)| position.filter(|p| *p > ours).map(|p| (p, to)))
                    .max_by_key(|(sequence, _)| *sequence);
                let backup_positions = positions[..backup_count].to_vec();
                let fetched = ahead.map(|(_, to)| {
                    let fetch = ReplicaMessage::Fetch {
                        cache,
                        segment,
                        epoch,
                    };
                    sink.send(to, fetch)
                });
                wrap_future::<_, Self>(async move {
                    let fetched = match fetched {
                        Some(fetched) => fetched.await.ok(),
                        None => None,
                    };
                    (fetched, backup_positions)
                })
            }
        });
        let level = furthest.then(move |(fetched, backup_positions), partition, ctx| {
            let took = matches!(fetched, Some(ReplicaReply::Image(_)));
            if let Some(ReplicaReply::Image(image)) = fetched {
                let before = partition.segment.len();
                partition.segment.import(image);
                partition
                    .cache
                    .adjust_entries(before, partition.segment.len(), true);
                partition.report_bytes();
                partition.restart_feeds(ctx);
            }
            // A new count of batches, past any a backup took before, so a
            // copy not brought level here takes no batch (it is behind).
            partition.replication.batch += 1;
            let batch = partition.replication.batch;
            let ours = partition.segment.position().0;
            let (cache, segment_id) = (partition.cache.name.clone(), partition.segment.id());
            // The whole segment only to a copy that answered with another
            // position: one that did not answer (its node has not placed
            // the segment yet, say) is aligned, refuses, and is asked again
            // on the next attempt, so an image is not sent in vain.
            let stale = |position: &Option<u64>| matches!(position, Some(p) if *p != ours);
            let image = backup_positions
                .iter()
                .any(stale)
                .then(|| partition.segment.export());
            if took || image.is_some() {
                partition
                    .cache
                    .metrics
                    .count_take_over_transfer(&partition.cache.name);
            }
            let pushed: Vec<ReplicaFuture> = backups
                .iter()
                .zip(&backup_positions)
                .map(|(to, position)| {
                    let message = match (&image, stale(position)) {
                        (Some(image), true) => ReplicaMessage::Image {
                            cache: cache.clone(),
                            segment: segment_id,
                            epoch,
                            batch,
                            image: image.clone(),
                        },
                        _ => ReplicaMessage::Align {
                            cache: cache.clone(),
                            segment: segment_id,
                            epoch,
                            batch,
                            sequence: ours,
                        },
                    };
                    sink.send(to, message)
                })
                .collect();
            wrap_future::<_, Self>(join_all(pushed)).map(move |replies, partition, ctx| {
                let mut all_level = true;
                for (to, reply) in backups.iter().zip(replies) {
                    if !matches!(reply, Ok(ReplicaReply::Applied)) {
                        all_level = false;
                        log::info!(
                            "{} segment {}: owner {} not yet level ({reply:?})",
                            partition.cache.name,
                            segment.0,
                            to.0
                        );
                    }
                }
                partition.aim_reaper(ctx);
                // A backup not level yet may lack what this copy holds.
                partition.replication.uncertain = !all_level;
                let same_epoch =
                    matches!(partition.replication.role, Role::Primary { epoch: now, .. } if now == epoch);
                if !all_level && same_epoch && attempts_left > 1 {
                    ctx.run_later(TAKE_OVER_RETRY, move |partition, ctx| {
                        ctx.wait(partition.take_over(attempts_left - 1));
                    });
                } else if same_epoch {
                    partition.set_moving(false);
                }
            })
        });
        Box::pin(level)
    }
}
