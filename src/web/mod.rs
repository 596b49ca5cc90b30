//! The HTTP side of a node: the REST API and, mounted beside it, the push
//! endpoints and the static scoreboard. [`AppState`] is what every handler
//! shares; [`configure`] mounts everything on an actix-web `App`.

pub mod assets;
mod body;
mod cluster;
pub mod command;
mod cors;
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

pub use ws_transport::note_socket;

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
    /// Who the members are and what they own: `GET /api/v1/cluster`.
    pub membership: actix::Addr<crate::cluster::membership::Membership>,
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

impl AppState {
    /// What a new feed needs of the node.
    pub fn feed_context(&self) -> crate::push::feed::FeedContext {
        crate::push::feed::FeedContext {
            grid: self.grid.clone(),
            listener: self.listener.clone(),
            metrics: self.metrics.push.clone(),
        }
    }
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
    .service(resource("/ws", "GET").route(web::get().to(websocket::websocket)))
    .service(
        resource("/api/v1/caches/{cache}/events", "GET")
            .route(web::get().to(sse::events))
            .wrap(actix_web::middleware::from_fn(cors::share_with_pushing_origins)),
    )
    .service(
        resource("/api/v1/caches/{cache}/poll", "GET")
            .route(web::get().to(poll::poll))
            .wrap(actix_web::middleware::from_fn(cors::share_with_pushing_origins)),
    )
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

/// A resource that answers methods other than `allow` with 405, an `Allow`
/// header and the contract's error body.
pub fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
        let detail = crate::protocol::ErrorDetail::new(
            crate::protocol::ErrorCode::BadRequest,
            format!("{} is not allowed on {}; use {allow}", req.method(), req.path()),
        );
        HttpResponse::MethodNotAllowed()
            .insert_header((actix_web::http::header::ALLOW, allow))
            .json(crate::protocol::ErrorBody { error: detail })
    }))
}

/// Refuses a query string whose parameters are not UTF-8 once
/// percent-decoded (the query extractor would replace such bytes and
/// quietly match nothing): the keys' rule, for prefixes and keys given as
/// parameters.
pub fn check_query_utf8(req: &HttpRequest) -> Result<(), ApiError> {
    for pair in req.query_string().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = value.replace('+', " ");
        if percent_encoding::percent_decode_str(&value)
            .decode_utf8()
            .is_err()
        {
            return Err(ApiError::bad_request(format!(
                "query parameter {name:?} is not valid UTF-8 once percent-decoded"
            )));
        }
    }
    Ok(())
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
