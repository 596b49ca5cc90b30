//! The partition's side of replication (`grid::replication`): answering
//! a write once every owner has it ([`WriteReply`]), sending each write's
//! batch to the backups (and bringing them level when in doubt) and, as a
//! backup, applying what the primary sends ([`Replicate`]). Taking a role
//! is `role.rs`.

use actix::dev::{MessageResponse, OneshotSender};
use actix::fut::{wrap_future, ActorFutureExt};
use actix::{AsyncContext, AtomicResponse, Context, Handler, Message, MessageResult, ResponseActFuture};
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
        ctx: &mut Context<Self>,
    ) -> WriteReply<Result<T, GridError>> {
        let barrier = self.replicate(ctx).or_else(|| self.level_backups());
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
        if let Some(acks) = self.replicate(ctx) {
            ctx.wait(acks.map(|_, _, _| ()));
        }
    }

    /// Sends the changes made since the last batch to every backup, and a
    /// whole image to a backup that says it is behind; resolves once every
    /// backup applied them, and publishes the events then. The joining
    /// owners' feeds get the batch too, but nothing waits for them.
    fn replicate(&mut self, ctx: &mut Context<Self>) -> Option<Barrier> {
        let Role::Primary {
            epoch, backups, sink, ..
        } = self.replication.role.clone()
        else {
            return None;
        };
        let ops = self.segment.take_ops();
        if ops.is_empty() {
            self.publish();
            return None;
        }
        self.replication.batch += 1;
        let batch = self.replication.batch;
        self.feed(epoch, batch, &ops, ctx);
        if backups.is_empty() {
            self.publish();
            return None;
        }
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
            send_once_current(sink.clone(), to.clone(), message, epoch)
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

/// How long a batch waits for a backup whose member has not applied the
/// primary's epoch yet (members apply a new topology a moment apart).
const EPOCH_CATCH_UP: std::time::Duration = std::time::Duration::from_millis(1000);
const EPOCH_CATCH_UP_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// Sends `message` (of `epoch`) to `to`, again while `to` answers that
/// it holds the segment at an older epoch, for up to
/// [`EPOCH_CATCH_UP`]: the write waits for the topology to reach the
/// backup rather than fail. A batch is applied at most once (by number).
fn send_once_current(
    sink: Arc<dyn ReplicaSink>,
    to: MemberId,
    message: ReplicaMessage,
    epoch: u64,
) -> ReplicaFuture {
    Box::pin(async move {
        let deadline = tokio::time::Instant::now() + EPOCH_CATCH_UP;
        loop {
            let reply = sink.send(&to, message.clone()).await;
            let lagging = matches!(&reply, Ok(ReplicaReply::OtherEpoch { epoch: theirs }) if *theirs < epoch);
            if !lagging || tokio::time::Instant::now() >= deadline {
                return reply;
            }
            tokio::time::sleep(EPOCH_CATCH_UP_RETRY).await;
        }
    })
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
        let late = self.replication.late_batch(epoch, batch);
        let before = self.segment.len();
        match message {
            ReplicaMessage::Batch { batch, ops, .. } => {
                for op in ops {
                    self.segment.apply(op);
                }
                match &mut self.replication.before {
                    Some((_, last)) if late => *last = batch,
                    _ => self.replication.batch = batch,
                }
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
        self.cache
            .adjust_entries(before, self.segment.len(), self.replication.role.leads());
        self.report_bytes();
        MessageResult(ReplicaReply::Applied)
    }
}
