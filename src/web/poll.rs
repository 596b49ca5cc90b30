//! `GET /api/v1/caches/{cache}/poll`: long polling, for clients that can
//! only make plain HTTP requests. Each request stands alone: the client's
//! position token says what it has, and the answer carries the next one.
//!
//! A poll with `after` is a [`Feed`] of one subscription that resumes from
//! the token: registered with the listener before the history is read, so
//! an event is either in the history read or arrives at the feed; it
//! answers at once with what the history holds past the token, otherwise
//! waits for the first matching event or the timeout.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use super::http_subscription::HttpSubscription;
use super::{AppState, ConnectionSlot};
use crate::grid::{EntryView, GridError};
use crate::protocol::codec::Format;
use crate::protocol::event::EncodedEvent;
use crate::protocol::fallback::PollAnswer;
use crate::protocol::ws::FilterSpec;
use crate::push::feed::{Feed, Item};
use crate::push::outbox::OutboxLimits;
use crate::push::subscription::{read_start, Start, StartFrom};

const DEFAULT_TIMEOUT_MS: u64 = 25_000;
/// A longer `timeout_ms` is cut to this.
const MAX_TIMEOUT_MS: u64 = 60_000;
/// A poll answers with every event it has (never conflated): what it holds
/// is bounded by the history it replays and the one batch it waits for.
const ANSWER_EVERYTHING: OutboxLimits = OutboxLimits {
    conflate_after_bytes: usize::MAX / 2,
    close_after_bytes: usize::MAX,
};

#[derive(Deserialize)]
pub struct PollQuery {
    key: Option<String>,
    prefix: Option<String>,
    after: Option<String>,
    timeout_ms: Option<u64>,
    access_token: Option<String>,
}

pub async fn poll(
    req: HttpRequest,
    cache: web::Path<String>,
    query: web::Query<PollQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let filter = FilterSpec {
        key: query.key,
        prefix: query.prefix,
    };
    let request = HttpSubscription::new(&state, &req, &cache, filter, query.access_token.as_deref())?;
    let timeout = Duration::from_millis(query.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).min(MAX_TIMEOUT_MS));
    let after = query.after.map(|token| request.resume_from(&token)).transpose()?;

    let Some(after) = after else {
        let name = request.cache.name().as_str();
        return match read_start(&state.grid, name, &request.filter, StartFrom::Snapshot).await? {
            Start::Snapshot {
                entries,
                positions,
                reset,
                ..
            } => Ok(answer(PollAnswer {
                reset,
                snapshot: Some(&entries),
                events: &[],
                position: &request.token(&positions),
            })),
            Start::Replay { .. } | Start::Live { .. } => Err(ApiError::new(
                crate::protocol::ErrorCode::Internal,
                "a first poll read no snapshot",
            )),
        };
    };
    let (feed, mut pushes) = Feed::with_channel(state.feed_context(), Format::Json, ANSWER_EVERYTHING);
    let mut feed = feed.tracking_positions().with_max_subscriptions(1);
    let (sub, _, start) = feed
        .open(request.cache.name().clone(), request.filter.clone(), after)
        .map_err(|limit| ApiError(limit.into()))?;
    let start = start.await?;
    // A reset snapshot is taken whole, not framed in chunks.
    let mut snapshot: Option<(Vec<EntryView>, bool)> = None;
    // Nothing is conflated or overloaded under these limits.
    let _ = feed.begin(sub, start, |chunk| {
        let (entries, reset) = snapshot.get_or_insert_with(|| (Vec::new(), chunk.reset));
        *reset = chunk.reset;
        entries.extend_from_slice(chunk.entries);
        None
    });
    let mut events = Vec::new();
    take_events(&mut feed, &mut events);

    if snapshot.is_none() && events.is_empty() {
        let mut shutdown = state.shutdown.clone();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        // A held poll is a connection like a stream, and counts as one.
        let _slot = ConnectionSlot::take(&state)?;
        let _held = GaugeGuard::raise(&state.metrics.push.polls_held);
        loop {
            tokio::select! {
                push = pushes.recv() => {
                    let Some(push) = push else { break };
                    let _ = feed.deliver(push);
                    // Deleted, or started again (segments declared lost):
                    // the next poll's token is of the cache's last life,
                    // and gets a reset.
                    if feed.is_empty() || !feed.restarts().is_empty() {
                        break;
                    }
                    take_events(&mut feed, &mut events);
                    if !events.is_empty() {
                        // Take what else has already arrived, then answer.
                        while let Some(push) = pushes.try_recv() {
                            let _ = feed.deliver(push);
                        }
                        take_events(&mut feed, &mut events);
                        break;
                    }
                }
                _ = &mut deadline => break,
                _ = shutdown.wait_for(|down| *down) => break,
            }
        }
    }
    if feed.is_empty() {
        // Deleted while the poll waited: the next poll would say so too.
        return Err(GridError::UnknownCache(request.cache.name().to_string()).into());
    }
    let position = request.token(feed.positions(sub).expect("a poll's feed tracks positions"));
    let (snapshot, reset) = match &snapshot {
        Some((entries, reset)) => (Some(entries.as_slice()), *reset),
        None => (None, false),
    };
    Ok(answer(PollAnswer {
        reset,
        snapshot,
        events: &events,
        position: &position,
    }))
}

/// Moves every event the feed holds into `events`.
fn take_events(feed: &mut Feed, events: &mut Vec<Arc<EncodedEvent>>) {
    feed.drain(usize::MAX, |item| {
        if let Item::Event { event, .. } = item {
            events.push(event.clone());
        }
    });
}

fn answer(answer: PollAnswer) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(answer.encode())
}

/// Counts a held poll in its gauge for as long as it lives, however the
/// request ends (a client that hangs up drops the handler mid-wait).
struct GaugeGuard<'a>(&'a prometheus::IntGauge);

impl<'a> GaugeGuard<'a> {
    fn raise(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
