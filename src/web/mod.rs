//! The HTTP side of a node: the REST API and, mounted beside it, the push
//! endpoints and the static scoreboard. [`AppState`] is what every handler
//! shares; [`configure`] mounts everything on an actix-web `App`.

pub mod assets;
pub mod command;
pub mod error;
pub mod handshake;
pub mod http_subscription;
pub mod poll;
pub mod rate_limit;
pub mod rest;
pub mod session;
pub mod sse;
pub mod websocket;
mod ws_transport;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpRequest, HttpResponse};

use crate::grid::Grid;
use crate::metrics::Metrics;
use crate::push::listener::Listener;
use crate::push::PushSettings;
use error::ApiError;
use websocket::WebSocketSettings;

/// What the handlers share, cloned into every worker.
pub struct AppState {
    pub grid: Grid,
    pub metrics: Arc<Metrics>,
    pub listener: actix::Addr<Listener>,
    /// What every push transport shares.
    pub push: Arc<PushSettings>,
    /// What only the WebSocket endpoint has.
    pub websocket: Arc<WebSocketSettings>,
    /// Turns true when the node starts shutting down.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub limits: Arc<crate::config::LimitsConfig>,
    pub auth: Arc<crate::auth::Authenticator>,
    /// Open WebSocket connections and SSE streams, against
    /// `limits.max_connections`.
    pub connections: Arc<AtomicUsize>,
}

/// One of the node's `limits.max_connections` places, held by a WebSocket
/// session or an SSE stream for its lifetime and given back on drop.
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    pub fn take(state: &AppState) -> Result<ConnectionSlot, ApiError> {
        let open = state.connections.fetch_add(1, Ordering::SeqCst);
        let slot = ConnectionSlot(state.connections.clone());
        if open >= state.limits.max_connections {
            return Err(ApiError::new(
                crate::protocol::ErrorCode::Unavailable,
                "the node is at its connection limit",
            ));
        }
        Ok(slot)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Mounts every route, the JSON error handlers for malformed query strings
/// and paths, and the JSON fallback for unknown routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default().error_handler(|err, _| ApiError::bad_request(err.to_string()).into()),
    )
    .app_data(
        web::PathConfig::default().error_handler(|err, _| ApiError::bad_request(err.to_string()).into()),
    )
    .route("/ws", web::get().to(websocket::websocket))
    .route("/api/v1/caches/{cache}/events", web::get().to(sse::events))
    .route("/api/v1/caches/{cache}/poll", web::get().to(poll::poll))
    .configure(assets::routes)
    .configure(rest::routes)
    .default_service(web::to(not_found));
}

/// The access of a REST request's `Authorization: Bearer <token>`.
pub fn request_access(state: &AppState, req: &HttpRequest) -> Result<crate::auth::Access, ApiError> {
    let token = match req.headers().get(actix_web::http::header::AUTHORIZATION) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| ApiError::bad_request("Authorization must be \"Bearer <token>\""))?,
        ),
    };
    Ok(state.auth.authenticate(token.map(str::trim))?)
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        crate::protocol::ErrorCode::NotFound,
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

/// Middleware: observes every request's latency, labelled by its route
/// pattern (not its path, which would be unbounded).
pub async fn observe_latency(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = req.method().clone();
    let response = next.call(req).await?;
    if let Some(state) = state {
        let route = response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        state.metrics.http.observe(
            method.as_str(),
            &route,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    Ok(response)
}
