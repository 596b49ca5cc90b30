//! Events across members, so a subscriber on any member sees every write
//! of the cluster. The [`Relay`] actor stands between this node's
//! partitions and its listener: it passes every event they publish (as
//! primary or as backup: every owner reports each write) to the listener
//! and to each member that watches the event's cache: the event itself
//! where one of that member's filters matches its key, otherwise only its
//! version, as skipped (ranges of them coalesced), so the member's
//! listener, which passes on only the next version of each segment, does
//! not take it for missing. Events other members relay here go to the
//! listener, which drops the second copy of each.
//!
//! Whom to send them to is [`Watchers`]' business; [`keep_others_told`]
//! tells the other members what this node's subscribers watch, on every
//! change and every [`WATCH_REFRESH`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler, Recipient};
use tokio::sync::{mpsc, watch};

use super::member::ClusterMember;
use super::messages::{PeerReply, PeerRequest};
use super::watchers::Watchers;
use crate::grid::owners::MemberId;
use crate::grid::{wanted, Interests, Published, Relayed, RelayedItem};

/// How often each member tells the others what it watches, whether or not
/// it changed: how a member that joined, or missed a message, learns it.
pub const WATCH_REFRESH: Duration = Duration::from_secs(2);

/// Events queued for one member before the oldest are dropped: a member
/// that cannot take them is cut off or gone.
const OUTBOX: usize = 65_536;

/// The most events in one message to a member.
const BATCH: usize = 1024;

/// Passes this node's events to its listener and to the members watching
/// their cache.
pub struct Relay {
    listener: Recipient<Published>,
    watchers: Arc<Watchers>,
    member: Arc<ClusterMember>,
    /// This member's id, which the watchers of a cache may include.
    me: MemberId,
    outboxes: HashMap<MemberId, mpsc::Sender<RelayedItem>>,
}

impl Relay {
    pub fn new(listener: Recipient<Published>, watchers: Arc<Watchers>, member: Arc<ClusterMember>) -> Self {
        Relay {
            listener,
            watchers,
            me: member.id(),
            member,
            outboxes: HashMap::new(),
        }
    }

    /// The queue of events for `to`, with the task that sends them.
    fn outbox(&mut self, to: &MemberId) -> &mpsc::Sender<RelayedItem> {
        let member = &self.member;
        self.outboxes.entry(to.clone()).or_insert_with(|| {
            let (queue, events) = mpsc::channel(OUTBOX);
            tokio::spawn(send_events(member.clone(), to.clone(), events));
            queue
        })
    }
}

impl Actor for Relay {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(65_536);
    }
}

impl Handler<Published> for Relay {
    type Result = ();

    fn handle(&mut self, published: Published, _: &mut Context<Self>) {
        if let Some(watchers) = self.watchers.of(&published.0.cache) {
            let event = &published.0;
            for (to, filters) in watchers.iter() {
                if *to == self.me {
                    continue;
                }
                let item = if wanted(filters, &event.key) {
                    RelayedItem::Event(event.clone())
                } else {
                    RelayedItem::Skipped {
                        cache: event.cache.clone(),
                        segment: event.segment,
                        first: event.version,
                        last: event.version,
                    }
                };
                if self.outbox(to).try_send(item).is_err() {
                    log::warn!("events for member {} are not leaving; dropping one", to.0);
                }
            }
        }
        self.listener.do_send(published);
    }
}

/// Sends the events queued for `to`, in order, as many at a time as are
/// waiting (up to [`BATCH`]); one message at a time, so they arrive in
/// the order they were published. A message not taken is sent again
/// (the listener there drops what it already has) for as long as `to` is
/// a member: a member cut off for a while gets its subscribers' events
/// once the link is back, as long as they fit in its outbox.
async fn send_events(member: Arc<ClusterMember>, to: MemberId, mut events: mpsc::Receiver<RelayedItem>) {
    let timeout = member.failure_timeout();
    while let Some(first) = events.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match events.try_recv() {
                Ok(item) => push_coalesced(&mut batch, item),
                Err(_) => break,
            }
        }
        let request = PeerRequest::Events(Relayed(batch));
        loop {
            let why = match member.request(&to, &request, timeout).await {
                Ok(PeerReply::Done) => break,
                Ok(other) => format!("{other:?}"),
                Err(e) => e,
            };
            if !member.topology().borrow().members.contains_key(&to) {
                log::debug!("member {} left; its events are dropped", to.0);
                break;
            }
            log::debug!("member {} did not take events ({why}); sending them again", to.0);
            tokio::time::sleep(RESEND_PAUSE).await;
        }
    }
}

/// Appends `item`, joining a skipped version to the skipped range before
/// it when they are of the same segment and follow each other.
fn push_coalesced(batch: &mut Vec<RelayedItem>, item: RelayedItem) {
    if let (
        Some(RelayedItem::Skipped {
            cache, segment, last, ..
        }),
        RelayedItem::Skipped {
            cache: next_cache,
            segment: next_segment,
            first: next_first,
            last: next_last,
        },
    ) = (batch.last_mut(), &item)
    {
        if cache == next_cache && segment == next_segment && last.0 + 1 == next_first.0 {
            *last = *next_last;
            return;
        }
    }
    batch.push(item);
}

/// How long a relay waits before sending events again to a member that
/// did not take them.
const RESEND_PAUSE: Duration = Duration::from_millis(100);

/// Tells every other member which caches this node's subscribers watch,
/// and with which filters:
/// whenever that changes, and every [`WATCH_REFRESH`]. Forgets, in
/// `watchers`, the members that left. Runs until the topology log stops.
pub async fn keep_others_told(
    member: Arc<ClusterMember>,
    mut watched: watch::Receiver<Interests>,
    watchers: Arc<Watchers>,
) {
    let mut topology = member.topology();
    let me = member.id();
    loop {
        let members: BTreeSet<MemberId> = topology.borrow_and_update().members.keys().cloned().collect();
        watchers.keep_only(&members);
        let list: Interests = watched.borrow_and_update().clone();
        let others = members.iter().filter(|m| **m != me);
        let told = others.map(|to| {
            let request = PeerRequest::Watch(list.clone());
            let member = member.clone();
            async move { member.request(to, &request, member.failure_timeout()).await }
        });
        futures_util::future::join_all(told).await;
        tokio::select! {
            changed = topology.changed() => if changed.is_err() { return },
            changed = watched.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(WATCH_REFRESH) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{CacheName, SegmentId, Version};

    fn skipped(segment: u32, first: u64, last: u64) -> RelayedItem {
        RelayedItem::Skipped {
            cache: CacheName::parse("c").unwrap(),
            segment: SegmentId(segment),
            first: Version(first),
            last: Version(last),
        }
    }

    fn ranges(batch: &[RelayedItem]) -> Vec<(u32, u64, u64)> {
        batch
            .iter()
            .map(|item| match item {
                RelayedItem::Skipped {
                    segment, first, last, ..
                } => (segment.0, first.0, last.0),
                RelayedItem::Event(_) => panic!("no events here"),
            })
            .collect()
    }

    #[test]
    fn skipped_versions_that_follow_each_other_travel_as_one_range() {
        let mut batch = vec![skipped(0, 4, 4)];
        for item in [
            skipped(0, 5, 5),
            skipped(0, 6, 6),
            skipped(1, 7, 7),
            skipped(0, 8, 8),
            skipped(0, 10, 10),
        ] {
            push_coalesced(&mut batch, item);
        }
        assert_eq!(ranges(&batch), vec![(0, 4, 6), (1, 7, 7), (0, 8, 8), (0, 10, 10)]);
    }
}
