//! [`Feed`]: one client's subscriptions and everything their delivery
//! needs, whatever the transport: a WebSocket session holds one with many
//! subscriptions, an SSE stream and a held long poll one with a single
//! subscription. Each transport keeps only its framing.
//!
//! A feed owns, for every subscription: its registration with the listener
//! (made before its snapshot or replay is read, and undone when the
//! subscription or the feed goes), the events held while it starts and
//! trimmed to what the start covered ([`Subscription`]), the positions its
//! client has been sent (for transports whose client cannot say where it
//! is), and the snapshot's chunking. For all of them together it owns the
//! bounded [`Outbox`] with its metrics, and the one delivery path: the
//! listener sends [`Push`]es to the feed's [`PushSink`] (a session actor's
//! mailbox, or for an SSE stream or a poll a channel, [`Pushes`]), and the
//! transport hands each to [`Feed::deliver`].
//!
//! When segments of a followed cache are declared lost and start again
//! empty, the listener says so in a [`Push`]: the subscription holds its
//! events again and [`Feed::restarts`] gives the transport the read of
//! its reset snapshot, which it passes to [`Feed::begin`] as at the start.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix::Addr;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::filter::Filter;
use super::listener::{Listener, Positioned, Push, PushSink, Register, Unregister};
use super::outbox::{Admission, Outbox, OutboxLimits, Outgoing};
use super::subscription::{read_start, Start, StartFrom, Subscription};
use super::{new_session_id, Health, SessionId, SubId};
use crate::grid::{CacheName, Grid, GridError};
use crate::metrics::PushMetrics;
use crate::protocol::codec::{Format, WireFrame};
use crate::protocol::event::EncodedEvent;
use crate::protocol::position::{self, Positions};
use crate::protocol::SnapshotChunk;

/// Entries per snapshot frame or message, as the contract sets.
pub const SNAPSHOT_CHUNK_ENTRIES: usize = 1000;

/// How long a subscription starting again keeps asking for its reset
/// snapshot while its segments are unavailable (a new primary taking
/// over), and how long it waits between two asks.
const RESTART_READ_AT_MOST: Duration = Duration::from_secs(10);
const RESTART_READ_RETRY: Duration = Duration::from_millis(200);

/// The client is so far behind that even conflation cannot hold what waits
/// for it: the transport ends the connection (1013, or the end of a stream)
/// and the client resumes.
#[derive(Debug, PartialEq, Eq)]
pub struct Overloaded {
    pub pending_bytes: usize,
}

/// A subscription just opened: its number, its wire name and the read of
/// what it starts with.
pub type Opened<Read> = (SubId, Arc<str>, Read);

/// The feed already holds its most subscriptions.
#[derive(Debug, PartialEq, Eq)]
pub struct AtLimit(pub usize);

impl From<AtLimit> for crate::protocol::ErrorDetail {
    fn from(AtLimit(max): AtLimit) -> Self {
        crate::protocol::ErrorDetail::new(
            crate::protocol::ErrorCode::RateLimited,
            format!("at most {max} subscriptions per connection"),
        )
    }
}

/// What the transport writes next, as [`Feed::drain`] hands it out.
pub enum Item<'a> {
    /// A reply or snapshot frame, already framed.
    Message(WireFrame),
    Event {
        /// The subscription's wire name.
        sub: &'a str,
        event: &'a Arc<EncodedEvent>,
        conflated: bool,
        /// The subscription's positions including this event, where the
        /// feed tracks them.
        positions: Option<&'a Positions>,
    },
    /// The subscription's cache was deleted; it is closed.
    Ended {
        sub: &'a str,
        cache: &'a CacheName,
    },
    Heartbeat,
    /// The node's health changed: the client is told.
    Health(Health),
    Pong(bytes::Bytes),
}

/// What every feed of a node shares.
#[derive(Clone)]
pub struct FeedContext {
    pub grid: Grid,
    pub listener: Addr<Listener>,
    pub metrics: PushMetrics,
}

struct Followed {
    subscription: Subscription,
    /// Per segment, the position everything written so far covers.
    sent: Option<Positions>,
    /// What it starts with is being read.
    reading: bool,
    /// Its cache started again while a start was being read: that start
    /// may be of the cache's last life, so it is dropped for a new read.
    again: bool,
}

pub struct Feed {
    id: SessionId,
    grid: Grid,
    listener: Addr<Listener>,
    pushes: PushSink,
    subscriptions: HashMap<SubId, Followed>,
    /// Subscriptions whose cache started again, their reset snapshot not
    /// yet asked for ([`Feed::restarts`]).
    restarting: Vec<SubId>,
    max_subscriptions: usize,
    next_sub: SubId,
    outbox: Outbox,
    metrics: PushMetrics,
    /// Whether the feed tracks, per subscription, the positions its client
    /// has been sent: needed where the client cannot say where it is (SSE
    /// ids, poll tokens), wasted where it can (WebSocket clients track their
    /// own).
    tracks_positions: bool,
}

/// The pushes the listener routes to one feed, in the order it routed
/// them; a [`Stream`] for actors, `recv` for async code.
pub struct Pushes(mpsc::UnboundedReceiver<Push>);

impl Pushes {
    pub async fn recv(&mut self) -> Option<Push> {
        self.0.recv().await
    }

    /// A push already waiting, without waiting for one.
    pub fn try_recv(&mut self) -> Option<Push> {
        self.0.try_recv().ok()
    }
}

impl Stream for Pushes {
    type Item = Push;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Push>> {
        self.0.poll_recv(cx)
    }
}

impl Feed {
    /// A feed whose pushes go to `pushes`, tracking no positions, with no
    /// limit on its subscriptions.
    pub fn new(context: FeedContext, format: Format, limits: OutboxLimits, pushes: PushSink) -> Feed {
        Feed {
            id: new_session_id(),
            grid: context.grid,
            listener: context.listener,
            pushes,
            subscriptions: HashMap::new(),
            restarting: Vec::new(),
            max_subscriptions: usize::MAX,
            next_sub: 1,
            outbox: Outbox::new(format, limits),
            metrics: context.metrics,
            tracks_positions: false,
        }
    }

    /// A feed whose pushes arrive on a channel of its own, for a transport
    /// that is not an actor.
    pub fn with_channel(context: FeedContext, format: Format, limits: OutboxLimits) -> (Feed, Pushes) {
        let (pushes, received) = mpsc::unbounded_channel();
        let feed = Feed::new(context, format, limits, PushSink::Channel(pushes));
        (feed, Pushes(received))
    }

    /// Tracks the positions each subscription's client has been sent.
    pub fn tracking_positions(mut self) -> Feed {
        self.tracks_positions = true;
        self
    }

    /// Holds at most `max` subscriptions at once.
    pub fn with_max_subscriptions(mut self, max: usize) -> Feed {
        self.max_subscriptions = max;
        self
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Opens a subscription: registers it with the listener at once and
    /// returns its number, its wire name (`s<n>`) and the read of what it
    /// starts with, which waits for the registration first, so no write
    /// falls between the two. Pass the read's result to [`Feed::begin`].
    pub fn open(
        &mut self,
        cache: CacheName,
        filter: Filter,
        from: StartFrom,
    ) -> Result<Opened<impl Future<Output = Result<Start, GridError>> + 'static>, AtLimit> {
        if self.subscriptions.len() >= self.max_subscriptions {
            return Err(AtLimit(self.max_subscriptions));
        }
        let sub = self.next_sub;
        self.next_sub += 1;
        let name: Arc<str> = Arc::from(format!("s{sub}"));
        // A resumed client has everything up to where it resumes from.
        let sent = self.tracks_positions.then(|| match &from {
            StartFrom::Resume { positions, .. } => positions.clone(),
            _ => Positions::new(),
        });
        let subscription = Subscription::new(name.clone(), cache.clone(), filter.clone());
        let followed = Followed {
            subscription,
            sent,
            reading: true,
            again: false,
        };
        self.subscriptions.insert(sub, followed);
        let register = self.listener.send(Register {
            session: self.id,
            sub,
            cache: cache.clone(),
            filter: filter.clone(),
            pushes: self.pushes.clone(),
        });
        let grid = self.grid.clone();
        let start = async move {
            register
                .await
                .map_err(|e| GridError::Unavailable(format!("listener unavailable: {e}")))?;
            read_start(&grid, cache.as_str(), &filter, from).await
        };
        Ok((sub, name, start))
    }

    /// Starts delivering `sub` with what it starts with: a snapshot goes
    /// first, in chunks `frame_snapshot` frames (returning `None` when the
    /// transport takes the entries itself); then replayed events, never
    /// conflated, ahead of everything live; then the events held while
    /// starting. Nothing happens for a subscription closed meanwhile. A
    /// start read before its cache started again is dropped: the
    /// subscription's reset snapshot is read instead ([`Feed::restarts`]).
    pub fn begin(
        &mut self,
        sub: SubId,
        start: Start,
        mut frame_snapshot: impl FnMut(SnapshotChunk<'_>) -> Option<WireFrame>,
    ) -> Result<(), Overloaded> {
        let Some(followed) = self.subscriptions.get_mut(&sub) else {
            return Ok(());
        };
        followed.reading = false;
        if std::mem::take(&mut followed.again) {
            followed.subscription.restart();
            self.restarting.push(sub);
            return Ok(());
        }
        let covered = match start {
            Start::Snapshot {
                entries,
                positions,
                incarnation,
                reset,
            } => {
                let chunks = entries.len().div_ceil(SNAPSHOT_CHUNK_ENTRIES).max(1);
                for i in 0..chunks {
                    let end = ((i + 1) * SNAPSHOT_CHUNK_ENTRIES).min(entries.len());
                    let chunk = SnapshotChunk {
                        sub: &followed.subscription.name,
                        entries: &entries[i * SNAPSHOT_CHUNK_ENTRIES..end],
                        done: i + 1 == chunks,
                        reset,
                        positions: &positions,
                        incarnation,
                    };
                    if let Some(frame) = frame_snapshot(chunk) {
                        self.outbox.push(Outgoing::Message(frame));
                    }
                }
                if let Some(sent) = &mut followed.sent {
                    sent.clone_from(&positions);
                }
                positions
            }
            Start::Replay { events, positions } => {
                for event in events {
                    let event = EncodedEvent::new(event);
                    self.outbox.push(Outgoing::Event {
                        sub,
                        event,
                        conflated: false,
                    });
                }
                if followed.sent.is_some() {
                    let covered = positions.clone();
                    self.outbox.push(Outgoing::Covered {
                        sub,
                        positions: covered,
                    });
                }
                positions
            }
            Start::Live { positions } => {
                if let Some(sent) = &mut followed.sent {
                    sent.clone_from(&positions);
                }
                positions
            }
        };
        self.listener.do_send(Positioned {
            session: self.id,
            sub,
            positions: position::versions(&covered),
        });
        for event in followed.subscription.go_live(&covered) {
            self.admit(sub, event)?;
        }
        Ok(())
    }

    /// Closes a subscription: it is unregistered, and its events still
    /// waiting are not sent. False when the feed has no such subscription.
    pub fn close(&mut self, sub: SubId) -> bool {
        let Some(followed) = self.subscriptions.remove(&sub) else {
            return false;
        };
        self.unregister(sub, followed.subscription);
        true
    }

    /// The wire name's subscription, if the feed holds it.
    pub fn find(&self, name: &str) -> Option<SubId> {
        let sub = name.strip_prefix('s')?.parse::<SubId>().ok()?;
        self.subscriptions.contains_key(&sub).then_some(sub)
    }

    /// Takes in what the listener pushed: each event still wanted (its
    /// subscription open, past what its start covered) is queued, and each
    /// subscription whose cache was deleted is closed, with a notice queued
    /// behind its events.
    pub fn deliver(&mut self, push: Push) -> Result<(), Overloaded> {
        for (sub, event) in push.events {
            let Some(followed) = self.subscriptions.get_mut(&sub) else {
                continue;
            };
            if let Some(event) = followed.subscription.offer(event) {
                self.admit(sub, event)?;
            }
        }
        if let Some(health) = push.health {
            self.outbox.push(Outgoing::Health(health));
        }
        for sub in push.restarted {
            match self.subscriptions.get_mut(&sub) {
                Some(followed) if followed.reading => followed.again = true,
                Some(followed) => {
                    followed.subscription.restart();
                    self.restarting.push(sub);
                }
                None => {}
            }
        }
        for sub in push.ended {
            // The listener has already dropped it: nothing to unregister.
            if let Some(followed) = self.subscriptions.remove(&sub) {
                let Subscription { name, cache, .. } = followed.subscription;
                self.outbox.push(Outgoing::Ended { sub: name, cache });
            }
        }
        Ok(())
    }

    /// The reads of the reset snapshots of the subscriptions whose cache
    /// started again since the last call (segments declared lost), to pass
    /// to [`Feed::begin`]. A read asks again while the segments are
    /// unavailable, for up to 10 s.
    pub fn restarts(&mut self) -> Vec<(SubId, impl Future<Output = Result<Start, GridError>> + 'static)> {
        let restarting = std::mem::take(&mut self.restarting);
        restarting
            .into_iter()
            .filter_map(|sub| {
                let followed = self.subscriptions.get_mut(&sub)?;
                followed.reading = true;
                let subscription = &followed.subscription;
                let (grid, cache, filter) = (
                    self.grid.clone(),
                    subscription.cache.clone(),
                    subscription.filter.clone(),
                );
                let read = async move {
                    let deadline = Instant::now() + RESTART_READ_AT_MOST;
                    loop {
                        match read_start(&grid, cache.as_str(), &filter, StartFrom::Again).await {
                            Err(GridError::Unavailable(_)) if Instant::now() < deadline => {
                                tokio::time::sleep(RESTART_READ_RETRY).await;
                            }
                            read => return read,
                        }
                    }
                };
                Some((sub, read))
            })
            .collect()
    }

    /// Whether the feed holds no subscription (an SSE stream whose cache
    /// was deleted has nothing left to send).
    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty()
    }

    fn admit(&mut self, sub: SubId, event: Arc<EncodedEvent>) -> Result<(), Overloaded> {
        match self.outbox.push_event(sub, event) {
            Admission::Queued => Ok(()),
            Admission::Conflated => {
                self.metrics.events_conflated.inc();
                Ok(())
            }
            Admission::Overloaded => {
                self.metrics.slow_consumer_closes.inc();
                Err(Overloaded {
                    pending_bytes: self.outbox.pending_bytes(),
                })
            }
        }
    }

    /// Queues a reply, heartbeat or pong; never conflated.
    pub fn push(&mut self, item: Outgoing) {
        self.outbox.push(item);
    }

    /// Whether nothing waits to be written.
    pub fn is_idle(&self) -> bool {
        self.outbox.is_empty()
    }

    /// Hands up to `max` items to `write`, in order, and counts the events
    /// among them as delivered (once per call, not per event). Returns how
    /// many items it handed out.
    pub fn drain(&mut self, max: usize, mut write: impl FnMut(Item<'_>)) -> usize {
        let (mut handed, mut delivered) = (0, 0);
        while handed < max {
            let Some(outgoing) = self.outbox.pop() else {
                break;
            };
            handed += 1;
            match outgoing {
                Outgoing::Message(frame) => write(Item::Message(frame)),
                Outgoing::Heartbeat => write(Item::Heartbeat),
                Outgoing::Health(health) => write(Item::Health(health)),
                Outgoing::Ended { sub, cache } => write(Item::Ended {
                    sub: &sub,
                    cache: &cache,
                }),
                Outgoing::Pong(bytes) => write(Item::Pong(bytes)),
                Outgoing::Covered { sub, positions } => {
                    if let Some(sent) = self.subscriptions.get_mut(&sub).and_then(|f| f.sent.as_mut()) {
                        for (segment, covered) in positions {
                            position::advance(sent, segment, covered);
                        }
                    }
                }
                Outgoing::Event {
                    sub,
                    event,
                    conflated,
                } => {
                    // Events of a subscription closed since are not sent.
                    let Some(followed) = self.subscriptions.get_mut(&sub) else {
                        continue;
                    };
                    if let Some(sent) = &mut followed.sent {
                        position::advance(sent, event.event.segment, event.event.position());
                    }
                    write(Item::Event {
                        sub: &followed.subscription.name,
                        event: &event,
                        conflated,
                        positions: followed.sent.as_ref(),
                    });
                    delivered += 1;
                }
            }
        }
        if delivered > 0 {
            self.metrics.events_delivered.inc_by(delivered);
        }
        handed
    }

    /// The positions `sub`'s client has been sent, where they are tracked.
    pub fn positions(&self, sub: SubId) -> Option<&Positions> {
        self.subscriptions.get(&sub)?.sent.as_ref()
    }

    fn unregister(&self, sub: SubId, subscription: Subscription) {
        self.listener.do_send(Unregister {
            session: self.id,
            sub,
            cache: subscription.cache,
            filter: subscription.filter,
        });
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        for (sub, followed) in std::mem::take(&mut self.subscriptions) {
            self.unregister(sub, followed.subscription);
        }
    }
}
