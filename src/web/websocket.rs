//! `GET /ws`: the WebSocket endpoint. It checks the origin, subprotocol,
//! token and the node's connection limit, upgrades the connection, and
//! starts its [`Session`] actor.

use std::time::Instant;

use actix::{Actor, ActorFutureExt, AsyncContext, WrapFuture};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::CloseCode;

use super::cors::origin_may_push;
use super::error::ApiError;
use super::handshake::negotiate_format;
use super::rate_limit::RateLimiter;
use super::session::Session;
use super::{ws_transport, AppState, ConnectionSlot};
use crate::protocol::ErrorCode;
use crate::push::feed::Feed;
use crate::push::listener::PushSink;

/// What only the WebSocket endpoint has (what every transport shares is
/// [`crate::push::PushSettings`]).
#[derive(Clone, Debug)]
pub struct WebSocketSettings {
    /// The largest client message; larger ones close the connection (1009).
    pub max_message_bytes: usize,
    /// Origins allowed besides the server's own.
    pub allowed_origins: Vec<String>,
}

/// `GET /ws?access_token=...`
#[derive(serde::Deserialize)]
struct AccessQuery {
    access_token: Option<String>,
}

pub async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !origin_may_push(req.headers(), &state).await {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this Origin may not open a WebSocket",
        ));
    }
    let format = negotiate_format(req.headers())?;
    let token = web::Query::<AccessQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?
        .into_inner()
        .access_token;
    let access = state.auth.authenticate(token.as_deref())?;
    let slot = ConnectionSlot::take(&state)?;
    let upgraded = ws_transport::upgrade(
        &req,
        body,
        format.subprotocol(),
        state.websocket.max_message_bytes,
    )
    .map_err(|err| ApiError::bad_request(format!("not a WebSocket handshake: {err}")))?;
    let limits = state.limits.clone();
    let mut shutdown = state.shutdown.clone();
    Session::create(|ctx| {
        // Pushes arrive in the session's own mailbox.
        let pushes = PushSink::Mailbox(ctx.address().recipient());
        let feed = Feed::new(state.feed_context(), format, state.push.outbox, pushes)
            .with_max_subscriptions(limits.max_subscriptions);
        let session = Session {
            format,
            socket: upgraded.writer,
            grid: state.grid.clone(),
            feed,
            settings: state.push.clone(),
            metrics: state.metrics.push.clone(),
            writing: false,
            last_heard: Instant::now(),
            closing: false,
            limiter: (limits.ops_per_second > 0)
                .then(|| RateLimiter::new(limits.ops_per_second, Instant::now())),
            limits,
            _slot: slot,
            access,
            auth: state.auth.clone(),
        };
        ctx.add_stream(upgraded.incoming);
        // Close with 1001 when the node shuts down.
        let shutting_down = async move { shutdown.wait_for(|down| *down).await.is_ok() };
        ctx.spawn(shutting_down.into_actor(&session).map(|down, session, ctx| {
            if down {
                session.close(CloseCode::Away, "server shutting down", ctx);
            }
        }));
        session
    });
    Ok(upgraded.response)
}
