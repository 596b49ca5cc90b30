//! `GET /api/v1/caches/{cache}/poll`: long polling, for clients that can
//! only make plain HTTP requests. Each request stands alone: the client's
//! position token says what it has, and the answer carries the next one.
//!
//! A poll with `after` is registered with the listener (through an
//! [`Inbox`]) before the history is read, so an event is either in the
//! history read or arrives at the inbox; it answers at once with what the
//! history holds past the token, otherwise waits for the first matching
//! event or the timeout.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use super::follow::Follow;
use super::AppState;
use crate::protocol::fallback::PollAnswer;
use crate::protocol::position;
use crate::protocol::ws::{EncodedEvent, FilterSpec};
use crate::push::inbox::Inbox;
use crate::push::subscription::{read_start, Start, Subscription};

const DEFAULT_TIMEOUT_MS: u64 = 25_000;
/// A longer `timeout_ms` is cut to this.
const MAX_TIMEOUT_MS: u64 = 60_000;

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
    let follow = Follow::new(&state, &req, &cache, filter, query.access_token.as_deref())?;
    let timeout = Duration::from_millis(query.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).min(MAX_TIMEOUT_MS));
    let after = query.after.map(|token| follow.resume_from(&token)).transpose()?;
    let name = follow.cache.name().as_str();

    let Some(after) = after else {
        let start = read_start(&state.grid, name, &follow.filter, true, None).await?;
        return answer_start(&follow, start);
    };
    // Registered before the history is read, so no write falls between.
    let mut inbox = Inbox::register(
        &state.listener,
        follow.cache.name().clone(),
        follow.filter.clone(),
    )
    .await?;
    let covered = match read_start(&state.grid, name, &follow.filter, false, Some(after)).await? {
        Start::Replay { events, positions } if events.is_empty() => positions,
        start => return answer_start(&follow, start),
    };

    let mut subscription =
        Subscription::new("poll".into(), follow.cache.name().clone(), follow.filter.clone());
    subscription.go_live(covered.clone());
    let mut positions = covered;
    let mut shutdown = state.shutdown.clone();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let held = GaugeGuard::raise(&state.metrics.push.polls_held);
    let mut events = Vec::new();
    loop {
        tokio::select! {
            batch = inbox.recv() => {
                let Some(batch) = batch else { break };
                events.extend(batch.into_iter().filter_map(|e| subscription.offer(e)));
                if !events.is_empty() {
                    // Take what else has already arrived, then answer.
                    while let Some(batch) = inbox.try_recv() {
                        events.extend(batch.into_iter().filter_map(|e| subscription.offer(e)));
                    }
                    break;
                }
            }
            _ = &mut deadline => break,
            _ = shutdown.wait_for(|down| *down) => break,
        }
    }
    drop(held);
    for event in &events {
        position::advance(&mut positions, event.event.segment, event.event.version);
    }
    state.metrics.push.events_delivered.inc_by(events.len() as u64);
    Ok(answer(PollAnswer {
        reset: false,
        snapshot: None,
        events: &events,
        position: &follow.token(&positions),
    }))
}

/// The answer read without waiting: a snapshot (first poll, or a reset) or
/// the replayed events.
fn answer_start(follow: &Follow, start: Start) -> Result<HttpResponse, ApiError> {
    Ok(match start {
        Start::Snapshot {
            entries,
            positions,
            reset,
        } => answer(PollAnswer {
            reset,
            snapshot: Some(&entries),
            events: &[],
            position: &follow.token(&positions),
        }),
        Start::Replay { events, positions } => {
            let events: Vec<Arc<EncodedEvent>> = events.into_iter().map(EncodedEvent::new).collect();
            answer(PollAnswer {
                reset: false,
                snapshot: None,
                events: &events,
                position: &follow.token(&positions),
            })
        }
        // Only a start that reads neither snapshot nor history is live.
        Start::Live => {
            return Err(ApiError::new(
                crate::protocol::ErrorCode::Internal,
                "a poll read no start position",
            ))
        }
    })
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
