//! The partition's side of replication (`grid::replication`): answering
//! a write once every owner has it ([`WriteReply`]), sending each write's
//! batch to the backups, taking a role ([`SetRole`]) and, as a backup,
//! applying what the primary sends ([`Replicate`]).

use actix::dev::{MessageResponse, OneshotSender};
use actix::fut::{wrap_future, ActorFutureExt};
use actix::{
    ActorContext, AsyncContext, AtomicResponse, Context, Handler, Message, MessageResult, ResponseActFuture,
};
use futures_util::future::join_all;

use super::Partition;
use std::sync::Arc;

use crate::grid::owners::MemberId;
use crate::grid::replication::{ReplicaFuture, ReplicaMessage, ReplicaReply, ReplicaSink, Role};
use crate::grid::GridError;

/// What a write's handler answers: its result at once, or once every
/// owner of the segment has the write.
pub enum WriteReply<T> {
    Now(T),
    AfterAcks(AtomicResponse<Partition, T>),
}

impl<M, T> MessageResponse<Partition, M> for WriteReply<T>
where
    M: Message<Result = T>,
    T: 'static,
{
    fn handle(self, ctx: &mut Context<Partition>, tx: Option<OneshotSender<T>>) {
        match self {
            WriteReply::Now(result) => {
                if let Some(tx) = tx {
                    let _ = tx.send(result);
                }
            }
            WriteReply::AfterAcks(response) => {
                <AtomicResponse<Partition, T> as MessageResponse<Partition, M>>::handle(response, ctx, tx)
            }
        }
    }
}

/// What settles once every backup has what this copy has: `Err` when one
/// could not be reached (a client's outcome is then unknown).
type Barrier = ResponseActFuture<Partition, Result<(), GridError>>;

impl Partition {
    /// A write's reply: at once when nothing is replicated, else once every
    /// backup acknowledged its changes (an owner that did not makes the
    /// write's outcome unknown to the client: `unavailable`). A write that
    /// changed nothing (a retry answered from memory, a failed
    /// precondition) is answered as a read is ([`Partition::confirmed`]).
    pub(super) fn acknowledged<T: 'static>(
        &mut self,
        result: Result<T, GridError>,
    ) -> WriteReply<Result<T, GridError>> {
        let barrier = self.replicate().or_else(|| self.level_backups());
        Self::after(barrier, result)
    }

    /// The reply to a request that shows a client what this copy holds (a
    /// read, or a retried write's remembered outcome): at once, unless an
    /// earlier batch may not have reached every backup; then once they
    /// are brought level, so nothing is shown that a failover could lose.
    pub(super) fn confirmed<T: 'static>(
        &mut self,
        result: Result<T, GridError>,
    ) -> WriteReply<Result<T, GridError>> {
        let barrier = self.level_backups();
        Self::after(barrier, result)
    }

    fn after<T: 'static>(
        barrier: Option<Barrier>,
        result: Result<T, GridError>,
    ) -> WriteReply<Result<T, GridError>> {
        match barrier {
            None => WriteReply::Now(result),
            Some(barrier) => {
                let reply = barrier.map(move |levelled, _, _| levelled.and(result));
                WriteReply::AfterAcks(AtomicResponse::new(Box::pin(reply)))
            }
        }
    }

    /// Replicates what a write with no client to answer (an expiry, an
    /// eviction) changed, holding the mailbox until the backups have it.
    pub(super) fn replicate_before_anything_else(&mut self, ctx: &mut Context<Self>) {
        if let Some(acks) = self.replicate() {
            ctx.wait(acks.map(|_, _, _| ()));
        }
    }

    /// Sends the changes made since the last batch to every backup, and a
    /// whole image to a backup that says it is behind; resolves once every
    /// backup applied them, and publishes the events then.
    fn replicate(&mut self) -> Option<Barrier> {
        let Role::Primary {
            epoch, backups, sink, ..
        } = self.replication.role.clone()
        else {
            return None;
        };
        let ops = self.segment.take_ops();
        if backups.is_empty() || ops.is_empty() {
            self.publish();
            return None;
        }
        self.replication.batch += 1;
        let batch = self.replication.batch;
        let (cache, segment) = (self.cache.name.clone(), self.segment.id());
        let started = std::time::Instant::now();
        let sends = backups.iter().map(|to| {
            let message = ReplicaMessage::Batch {
                cache: cache.clone(),
                segment,
                epoch,
                batch,
                ops: ops.clone(),
            };
            sink.send(to, message)
        });
        let sent = wrap_future::<_, Self>(join_all(sends)).then(move |replies, partition, _| {
            partition
                .cache
                .metrics
                .replication_seconds
                .observe(started.elapsed().as_secs_f64());
            partition.settle(sink, backups, epoch, batch, replies)
        });
        Some(Box::pin(sent.map(|settled, partition, _| {
            partition.publish();
            settled
        })))
    }

    /// Brings every backup level with this copy when a batch may not have
    /// reached one (`uncertain`): tells each how far this copy got
    /// (`Align`), and sends the whole segment to each that is behind.
    /// `None` when there is no doubt.
    fn level_backups(&mut self) -> Option<Barrier> {
        let Role::Primary {
            epoch, backups, sink, ..
        } = self.replication.role.clone()
        else {
            return None;
        };
        if !self.replication.uncertain || backups.is_empty() {
            return None;
        }
        self.replication.batch += 1;
        let batch = self.replication.batch;
        let (cache, segment) = (self.cache.name.clone(), self.segment.id());
        let sequence = self.segment.position().0;
        let aligns = backups.iter().map(|to| {
            let message = ReplicaMessage::Align {
                cache: cache.clone(),
                segment,
                epoch,
                batch,
                sequence,
            };
            sink.send(to, message)
        });
        let aligned = wrap_future::<_, Self>(join_all(aligns))
            .then(move |replies, partition, _| partition.settle(sink, backups, epoch, batch, replies));
        Some(Box::pin(aligned))
    }

    /// Given each backup's reply to a batch (or an `Align`) of `batch`:
    /// sends the whole segment to each that answered behind, and resolves
    /// once all have what this copy has, or with why one does not. Clears
    /// or raises the primary's doubt accordingly.
    fn settle(
        &mut self,
        sink: Arc<dyn ReplicaSink>,
        backups: Vec<MemberId>,
        epoch: u64,
        batch: u64,
        replies: Vec<Result<ReplicaReply, String>>,
    ) -> Barrier {
        let mut failure = None;
        let mut behind = Vec::new();
        for (to, reply) in backups.iter().zip(replies) {
            match reply {
                Ok(ReplicaReply::Applied) => {}
                Ok(ReplicaReply::Behind { .. }) => behind.push(to.clone()),
                Ok(refused) => failure = Some(format!("owner {} refused: {refused:?}", to.0)),
                Err(e) => failure = Some(format!("owner {} did not acknowledge: {e}", to.0)),
            }
        }
        let images = if failure.is_none() && !behind.is_empty() {
            self.send_image(&sink, &behind, epoch, batch)
        } else {
            Vec::new()
        };
        let settled = wrap_future::<_, Self>(join_all(images)).map(move |replies, partition, _| {
            for (to, reply) in behind.iter().zip(replies) {
                if !matches!(reply, Ok(ReplicaReply::Applied)) {
                    failure = Some(format!("owner {} did not take the segment: {reply:?}", to.0));
                }
            }
            partition.replication.uncertain = failure.is_some();
            match failure {
                None => Ok(()),
                Some(why) => Err(GridError::Unavailable(why)),
            }
        });
        Box::pin(settled)
    }
}

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
        let (backup, primary) = (
            matches!(role, Role::Backup { .. } | Role::Departing { .. }),
            matches!(role, Role::Primary { .. }),
        );
        if backup {
            // Batches are numbered by each primary: a new epoch's primary
            // starts its own count.
            self.replication.batch = 0;
        }
        self.replication.uncertain = false;
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
        if let Role::Departing { epoch, to, sink } = &self.replication.role {
            self.hand_over(ctx, *epoch, to.clone(), sink.clone(), HAND_OVER_ATTEMPTS);
        }
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

    /// Sends the whole segment, as of `batch`, to each of `owners`.
    fn send_image(
        &self,
        sink: &Arc<dyn ReplicaSink>,
        owners: &[MemberId],
        epoch: u64,
        batch: u64,
    ) -> Vec<ReplicaFuture> {
        let image = self.segment.export();
        owners
            .iter()
            .map(|to| {
                let message = ReplicaMessage::Image {
                    cache: self.cache.name.clone(),
                    segment: self.segment.id(),
                    epoch,
                    batch,
                    image: image.clone(),
                };
                sink.send(to, message)
            })
            .collect()
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
        let level = furthest.then(move |(fetched, backup_positions), partition, _| {
            if let Some(ReplicaReply::Image(image)) = fetched {
                let before = partition.segment.len();
                partition.segment.import(image);
                partition.cache.adjust_entries(before, partition.segment.len());
                partition.report_bytes();
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

/// A change of the segment from its primary, for this backup to apply.
#[derive(Message)]
#[rtype(result = "ReplicaReply")]
pub struct Replicate(pub ReplicaMessage);

impl Handler<Replicate> for Partition {
    type Result = MessageResult<Replicate>;

    fn handle(&mut self, Replicate(message): Replicate, _: &mut Context<Self>) -> Self::Result {
        let (epoch, batch) = match &message {
            ReplicaMessage::Batch { epoch, batch, .. } => (*epoch, Some(*batch)),
            ReplicaMessage::Image { epoch, .. } | ReplicaMessage::Align { epoch, .. } => (*epoch, None),
            ReplicaMessage::Position { epoch, .. } => {
                self.replication.fenced = self.replication.fenced.max(*epoch);
                let sequence = self.segment.position().0;
                return MessageResult(ReplicaReply::Position { sequence });
            }
            ReplicaMessage::Fetch { epoch, .. } => {
                self.replication.fenced = self.replication.fenced.max(*epoch);
                return MessageResult(ReplicaReply::Image(self.segment.export()));
            }
        };
        if let Some(refusal) = self.replication.refusal(epoch, batch) {
            return MessageResult(refusal);
        }
        let before = self.segment.len();
        match message {
            ReplicaMessage::Batch { batch, ops, .. } => {
                for op in ops {
                    self.segment.apply(op);
                }
                self.replication.batch = batch;
                self.publish();
            }
            // An image older than the last batch applied is stale news.
            ReplicaMessage::Image { batch, image, .. } if batch >= self.replication.batch => {
                self.segment.import(image);
                self.replication.batch = batch;
            }
            ReplicaMessage::Image { .. } => {}
            ReplicaMessage::Align { batch, sequence, .. } => {
                if self.segment.position().0 != sequence {
                    return MessageResult(ReplicaReply::Behind {
                        have: self.replication.batch,
                    });
                }
                self.replication.batch = batch;
            }
            ReplicaMessage::Position { .. } | ReplicaMessage::Fetch { .. } => unreachable!("answered above"),
        }
        // Counted, but never evicted from here: the primary evicts.
        self.cache.adjust_entries(before, self.segment.len());
        self.report_bytes();
        MessageResult(ReplicaReply::Applied)
    }
}
