//! `GET /api/v1/caches/{cache}/events`: a subscription as a Server-Sent
//! Events stream, for clients that cannot open a WebSocket.
//!
//! It is delivered like a WebSocket subscription: registered with the
//! listener (through an [`Inbox`]) before its snapshot or replay is read,
//! its events arriving as the listener's shared encodings, queued in a
//! bounded [`Outbox`] that conflates for a slow reader. What differs is the
//! framing, and that the stream itself tracks the positions it has sent, so
//! every `id:` is the position token a reconnect resumes from with
//! `Last-Event-ID`. A reader that cannot keep up even with conflation has
//! its stream ended; it reconnects and resumes.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use super::error::ApiError;
use super::follow::Follow;
use super::{AppState, ConnectionSlot};
use crate::grid::EntryView;
use crate::metrics::PushMetrics;
use crate::protocol::fallback::{sse_event, sse_snapshot, SSE_HEARTBEAT};
use crate::protocol::position::{self, Positions};
use crate::protocol::ws::{EncodedEvent, FilterSpec, Format, WireFrame};
use crate::push::inbox::Inbox;
use crate::push::outbox::{Admission, Outbox, Outgoing};
use crate::push::subscription::{read_positions, read_start, Start, Subscription};

/// Entries per snapshot message, as the contract sets.
const SNAPSHOT_MESSAGE_ENTRIES: usize = 1000;
/// Chunks waiting between the stream and the HTTP response; when they are
/// all unread, the client is not keeping up and the outbox takes over.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Outbox items written per chunk.
const CHUNK_ITEMS: usize = 256;
/// The only subscription of a stream.
const SUB: crate::push::SubId = 1;

#[derive(Deserialize)]
pub struct EventsQuery {
    key: Option<String>,
    prefix: Option<String>,
    #[serde(default = "yes")]
    snapshot: bool,
    access_token: Option<String>,
    /// For clients that reconnect by opening a new stream, which cannot
    /// set the `Last-Event-ID` header.
    last_event_id: Option<String>,
}

fn yes() -> bool {
    true
}

pub async fn events(
    req: HttpRequest,
    cache: web::Path<String>,
    query: web::Query<EventsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let filter = FilterSpec {
        key: query.key,
        prefix: query.prefix,
    };
    let follow = Follow::new(&state, &req, &cache, filter, query.access_token.as_deref())?;
    let last_event_id = match req.headers().get("Last-Event-ID") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID is not a position token"))?
                .trim()
                .to_string(),
        ),
        None => query.last_event_id,
    };
    let resume = last_event_id
        .filter(|id| !id.is_empty())
        .map(|id| follow.resume_from(&id))
        .transpose()?;
    let slot = ConnectionSlot::take(&state)?;

    // Registered before the snapshot or replay is read, so no write falls
    // between the two.
    let inbox = Inbox::register(
        &state.listener,
        follow.cache.name().clone(),
        follow.filter.clone(),
    )
    .await?;
    let name = follow.cache.name().as_str();
    // Replayed events' ids start from where the client was.
    let resumed_from = resume.clone().unwrap_or_default();
    let start = match resume {
        // No snapshot, but the positions it would have had: where the
        // first event's token starts from.
        None if !query.snapshot => Start::Snapshot {
            entries: Vec::new(),
            positions: read_positions(&state.grid, name).await?,
            reset: false,
        },
        resume => read_start(&state.grid, name, &follow.filter, query.snapshot, resume).await?,
    };
    let mut stream = SseStream {
        subscription: Subscription::new("sse".into(), follow.cache.name().clone(), follow.filter.clone()),
        outbox: Outbox::new(Format::Json, state.websocket.outbox),
        positions: resumed_from,
        metrics: state.metrics.push.clone(),
        follow,
    };
    let first = stream.begin(start, query.snapshot);
    let (chunks, body) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    if !first.is_empty() {
        chunks.try_send(first).expect("a fresh channel has room");
    }
    let heartbeat = state.websocket.heartbeat_interval;
    actix_web::rt::spawn(stream.run(inbox, chunks, state.shutdown.clone(), heartbeat, slot));

    let body = futures_util::stream::unfold(body, |mut body| async move {
        body.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), body))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Tells buffering proxies (nginx) to pass each message on at once.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

struct SseStream {
    follow: Follow,
    subscription: Subscription,
    outbox: Outbox,
    /// Per segment, the position every message sent so far covers.
    positions: Positions,
    metrics: PushMetrics,
}

impl SseStream {
    /// The messages the stream starts with: the snapshot (its last message
    /// carrying the first id), or the replayed events, each with its id,
    /// counted from the positions the client resumed from.
    fn begin(&mut self, start: Start, snapshot_asked: bool) -> Bytes {
        let mut out = BytesMut::new();
        let covered = match start {
            Start::Snapshot {
                entries,
                positions,
                reset,
            } => {
                self.positions = positions.clone();
                if snapshot_asked || reset {
                    self.write_snapshot(&mut out, &entries, reset);
                }
                positions
            }
            Start::Replay { events, positions } => {
                for event in events {
                    self.write_event(&mut out, &EncodedEvent::new(event), false);
                }
                // Past the last replayed event, every segment is covered up
                // to where its history was read, matching events or not.
                self.positions = positions.clone();
                positions
            }
            Start::Live => Positions::new(),
        };
        let held = self.subscription.go_live(covered);
        debug_assert!(held.is_empty(), "an inbox holds its own events");
        out.freeze()
    }

    fn write_snapshot(&self, out: &mut BytesMut, entries: &[EntryView], reset: bool) {
        let token = self.follow.token(&self.positions);
        let messages = entries.len().div_ceil(SNAPSHOT_MESSAGE_ENTRIES).max(1);
        for i in 0..messages {
            let end = ((i + 1) * SNAPSHOT_MESSAGE_ENTRIES).min(entries.len());
            let done = i + 1 == messages;
            let chunk = &entries[i * SNAPSHOT_MESSAGE_ENTRIES..end];
            sse_snapshot(out, chunk, done, reset, done.then_some(token.as_str()));
        }
    }

    fn write_event(&mut self, out: &mut BytesMut, event: &EncodedEvent, conflated: bool) {
        position::advance(&mut self.positions, event.event.segment, event.event.version);
        sse_event(out, event, conflated, &self.follow.token(&self.positions));
        self.metrics.events_delivered.inc();
    }

    /// Writes events, heartbeats and whatever the outbox holds until the
    /// client goes away, the node shuts down, or the reader falls too far
    /// behind.
    async fn run(
        mut self,
        mut inbox: Inbox,
        chunks: mpsc::Sender<Bytes>,
        mut shutdown: watch::Receiver<bool>,
        heartbeat: Duration,
        _slot: ConnectionSlot,
    ) {
        self.metrics.sse_streams.inc();
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        loop {
            tokio::select! {
                _ = chunks.closed() => break,
                _ = shutdown.wait_for(|down| *down) => break,
                batch = inbox.recv() => {
                    let Some(events) = batch else { break };
                    if !self.accept(events) {
                        break;
                    }
                }
                permit = chunks.reserve(), if !self.outbox.is_empty() => match permit {
                    Ok(permit) => permit.send(self.next_chunk()),
                    Err(_) => break,
                },
                _ = ticks.tick() => {
                    let comment = ByteString::from_static(SSE_HEARTBEAT);
                    self.outbox.push(Outgoing::Message(WireFrame::Text(comment)));
                }
            }
        }
        self.metrics.sse_streams.dec();
    }

    /// Queues routed events; false when the reader is hopelessly behind.
    fn accept(&mut self, events: Vec<std::sync::Arc<EncodedEvent>>) -> bool {
        for event in events {
            let Some(event) = self.subscription.offer(event) else {
                continue;
            };
            match self.outbox.push_event(SUB, event) {
                Admission::Queued => {}
                Admission::Conflated => self.metrics.events_conflated.inc(),
                Admission::Overloaded => {
                    self.metrics.slow_consumer_closes.inc();
                    log::warn!("an SSE stream was ended: it could not keep up even with conflation");
                    return false;
                }
            }
        }
        true
    }

    fn next_chunk(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        for _ in 0..CHUNK_ITEMS {
            match self.outbox.pop() {
                Some(Outgoing::Event { event, conflated, .. }) => {
                    self.write_event(&mut out, &event, conflated)
                }
                Some(Outgoing::Message(message)) => out.extend_from_slice(message.payload()),
                Some(Outgoing::Ping | Outgoing::Pong(_)) => {}
                None => break,
            }
        }
        out.freeze()
    }
}
