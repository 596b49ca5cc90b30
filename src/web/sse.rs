//! `GET /api/v1/caches/{cache}/events`: a subscription as a Server-Sent
//! Events stream, for clients that cannot open a WebSocket.
//!
//! It is delivered through a [`Feed`] like a WebSocket subscription (its
//! own, with the one subscription): registered with the listener before its
//! snapshot or replay is read, its events arriving as the listener's shared
//! encodings, queued in the feed's bounded outbox that conflates for a slow
//! reader. What differs is the framing, and that the feed tracks the
//! positions the stream has sent, so every `id:` is the position token a
//! reconnect resumes from with `Last-Event-ID`. A reader that cannot keep
//! up even with conflation has its stream ended; it reconnects and resumes.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use super::error::ApiError;
use super::http_subscription::HttpSubscription;
use super::{AppState, ConnectionSlot};
use crate::metrics::PushMetrics;
use crate::protocol::codec::{Format, WireFrame};
use crate::protocol::fallback::{sse_cache_deleted, sse_event, sse_notice, sse_snapshot, SSE_HEARTBEAT};
use crate::protocol::ws::FilterSpec;
use crate::push::feed::{Feed, Item, Pushes};
use crate::push::outbox::Outgoing;
use crate::push::subscription::StartFrom;

/// Chunks waiting between the stream and the HTTP response; when they are
/// all unread, the client is not keeping up and the outbox takes over.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Outbox items written per chunk.
const CHUNK_ITEMS: usize = 256;

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
    let request = HttpSubscription::new(&state, &req, &cache, filter, query.access_token.as_deref())?;
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
        .map(|id| request.resume_from(&id))
        .transpose()?;
    let slot = ConnectionSlot::take(&state)?;

    let from = match resume {
        Some(from) => from,
        None if query.snapshot => StartFrom::Snapshot,
        // No snapshot, but the positions it would have had: where the
        // first event's token starts from.
        None => StartFrom::CurrentPositions,
    };
    let (feed, pushes) = Feed::with_channel(state.feed_context(), Format::Json, state.push.outbox);
    let mut feed = feed.tracking_positions().with_max_subscriptions(1);
    let (sub, _, start) = feed
        .open(request.cache.name().clone(), request.filter.clone(), from)
        .map_err(|limit| ApiError(limit.into()))?;
    let start = start.await?;
    let begun = feed.begin(sub, start, |chunk| {
        let mut out = BytesMut::new();
        let token = chunk.done.then(|| request.token(chunk.positions));
        sse_snapshot(&mut out, chunk.entries, chunk.done, chunk.reset, token.as_deref());
        Some(WireFrame::Text(
            ByteString::try_from(out.freeze()).expect("SSE messages are UTF-8"),
        ))
    });
    if begun.is_err() {
        return Err(ApiError::new(
            crate::protocol::ErrorCode::Unavailable,
            "the stream's start does not fit its outbox",
        ));
    }
    let stream = SseStream {
        request,
        feed,
        metrics: state.metrics.push.clone(),
    };
    let (chunks, body) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let heartbeat = state.push.heartbeat_interval;
    actix_web::rt::spawn(stream.run(pushes, chunks, state.shutdown.clone(), heartbeat, slot));

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
    request: HttpSubscription,
    feed: Feed,
    metrics: PushMetrics,
}

impl SseStream {
    /// Writes events, heartbeats and whatever the feed holds until the
    /// client goes away, the node shuts down, or the reader falls too far
    /// behind.
    async fn run(
        mut self,
        mut pushes: Pushes,
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
                push = pushes.recv() => {
                    let Some(push) = push else { break };
                    if self.feed.deliver(push).is_err() {
                        log::warn!("an SSE stream was ended: it could not keep up even with conflation");
                        break;
                    }
                    if !self.feed.restarts().is_empty() {
                        // Segments of its cache were declared lost: the
                        // browser reconnects with the last id it got, of
                        // the cache's last life, and is sent a reset.
                        log::info!("an SSE stream was ended: its cache started again");
                        break;
                    }
                }
                permit = chunks.reserve(), if !self.feed.is_idle() => match permit {
                    Ok(permit) => {
                        permit.send(self.next_chunk());
                        if self.feed.is_empty() && self.feed.is_idle() {
                            // Its cache was deleted and the client told.
                            break;
                        }
                    }
                    Err(_) => break,
                },
                _ = ticks.tick() => self.feed.push(Outgoing::Heartbeat),
            }
        }
        self.metrics.sse_streams.dec();
    }

    fn next_chunk(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        let request = &self.request;
        self.feed.drain(CHUNK_ITEMS, |item| match item {
            Item::Event {
                event,
                conflated,
                positions,
                ..
            } => {
                let positions = positions.expect("an SSE feed tracks positions");
                sse_event(&mut out, event, conflated, &request.token(positions));
            }
            Item::Message(message) => out.extend_from_slice(message.payload()),
            Item::Ended { cache, .. } => sse_cache_deleted(&mut out, cache),
            Item::Heartbeat => out.extend_from_slice(SSE_HEARTBEAT.as_bytes()),
            Item::Health(health) => sse_notice(&mut out, health.name()),
            Item::Pong(_) => {}
        });
        out.freeze()
    }
}
