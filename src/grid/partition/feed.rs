//! A primary filling the owners its segment gains when a member joins
//! (`Role::Primary::joining`): to each, one ordered stream, the whole
//! segment first and then every batch after it, one message in flight at
//! a time. No write waits for it (the serving owners keep every write
//! safe meanwhile), so the segment does not pause while its copies move;
//! and once the stream has caught up, the new owner's copy is level when
//! the cluster switches to the target table, and taking over costs it a
//! round trip, not a transfer.

use std::collections::VecDeque;
use std::time::Duration;

use actix::fut::{wrap_future, ActorFutureExt};
use actix::{AsyncContext, Context, Handler, Message};

use super::Partition;
use crate::grid::owners::MemberId;
use crate::grid::replication::{ReplicaMessage, ReplicaReply, Role};
use crate::grid::segment::SegmentOp;

/// Batches queued for a feed past which it starts again from a whole
/// segment (cheaper than holding them).
const MAX_QUEUED: usize = 4096;
/// How long a feed whose owner refused (its member has not placed the
/// table yet, say) waits before sending the whole segment again.
const RETRY: Duration = Duration::from_millis(200);

/// One joining owner's stream.
pub(super) struct Feed {
    to: MemberId,
    epoch: u64,
    /// The next message sent is the whole segment, and the queue is
    /// dropped (the segment holds what it had).
    image_needed: bool,
    queue: VecDeque<ReplicaMessage>,
    in_flight: bool,
    /// Refused last time: nothing is sent until the retry.
    waiting: bool,
}

impl Feed {
    fn level(&self) -> bool {
        !self.image_needed && !self.in_flight && !self.waiting && self.queue.is_empty()
    }
}

/// Whether every joining owner of this partition's segment is level with
/// it (true when it has none).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct FeedsLevel;

impl Handler<FeedsLevel> for Partition {
    type Result = bool;

    fn handle(&mut self, _: FeedsLevel, _: &mut Context<Self>) -> bool {
        self.feeds.iter().all(Feed::level)
    }
}

impl Partition {
    /// Starts a feed to each joining owner of the role just taken (those
    /// of the role before stop). They start once the take-over is done:
    /// the whole segment sent is the copy it settled on.
    pub(super) fn start_feeds(&mut self, ctx: &mut Context<Self>) {
        self.feeds.clear();
        let Role::Primary { epoch, joining, .. } = &self.replication.role else {
            return;
        };
        self.feeds = joining
            .iter()
            .map(|to| Feed {
                to: to.clone(),
                epoch: *epoch,
                image_needed: true,
                queue: VecDeque::new(),
                in_flight: false,
                waiting: false,
            })
            .collect();
        ctx.spawn(actix::fut::ready(()).map(|(), partition: &mut Self, ctx| partition.pump_feeds(ctx)));
    }

    /// Sends every feed the whole segment again: this copy changed other
    /// than by a batch (it took a further copy).
    pub(super) fn restart_feeds(&mut self, ctx: &mut Context<Self>) {
        for feed in &mut self.feeds {
            feed.image_needed = true;
        }
        self.pump_feeds(ctx);
    }

    /// Queues batch `batch` of `epoch` for every feed (one that will be
    /// sent the whole segment gets it in there) and sends what is due.
    pub(super) fn feed(&mut self, epoch: u64, batch: u64, ops: &[SegmentOp], ctx: &mut Context<Self>) {
        if self.feeds.is_empty() {
            return;
        }
        for feed in self.feeds.iter_mut().filter(|f| !f.image_needed) {
            if feed.queue.len() >= MAX_QUEUED {
                feed.queue.clear();
                feed.image_needed = true;
                continue;
            }
            feed.queue.push_back(ReplicaMessage::Batch {
                cache: self.cache.name.clone(),
                segment: self.segment.id(),
                epoch,
                batch,
                ops: ops.to_vec(),
            });
        }
        self.pump_feeds(ctx);
    }

    fn pump_feeds(&mut self, ctx: &mut Context<Self>) {
        for index in 0..self.feeds.len() {
            self.pump(index, ctx);
        }
    }

    /// Sends feed `index` its next message, unless one is in flight.
    fn pump(&mut self, index: usize, ctx: &mut Context<Self>) {
        let Role::Primary { epoch, sink, .. } = &self.replication.role else {
            return;
        };
        let (epoch, sink) = (*epoch, sink.clone());
        let feed = &self.feeds[index];
        if feed.in_flight || feed.waiting || feed.epoch != epoch {
            return;
        }
        let message = if feed.image_needed {
            let image = ReplicaMessage::Image {
                cache: self.cache.name.clone(),
                segment: self.segment.id(),
                epoch,
                batch: self.replication.batch,
                image: self.segment.export(),
            };
            let feed = &mut self.feeds[index];
            feed.image_needed = false;
            feed.queue.clear();
            image
        } else {
            match self.feeds[index].queue.pop_front() {
                Some(batch) => batch,
                None => return,
            }
        };
        let feed = &mut self.feeds[index];
        feed.in_flight = true;
        let to = feed.to.clone();
        let sent = wrap_future::<_, Self>(sink.send(&to, message)).map(move |reply, partition, ctx| {
            // Gone with the role it was started for.
            let Some(index) = partition
                .feeds
                .iter()
                .position(|f| f.to == to && f.epoch == epoch)
            else {
                return;
            };
            let feed = &mut partition.feeds[index];
            feed.in_flight = false;
            if matches!(reply, Ok(ReplicaReply::Applied)) {
                partition.pump(index, ctx);
                return;
            }
            log::debug!(
                "{} segment {}: joining owner {} not filled yet ({reply:?})",
                partition.cache.name,
                partition.segment.id().0,
                to.0
            );
            feed.image_needed = true;
            feed.waiting = true;
            feed.queue.clear();
            ctx.run_later(RETRY, move |partition, ctx| {
                if let Some(index) = partition
                    .feeds
                    .iter()
                    .position(|f| f.to == to && f.epoch == epoch)
                {
                    partition.feeds[index].waiting = false;
                    partition.pump(index, ctx);
                }
            });
        });
        ctx.spawn(sent);
    }
}
