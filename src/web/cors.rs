//! Which other origins may use the push endpoints: those of the allow-list
//! (`push.allowed_origins`) and the pages other members of the cluster
//! served, whose clients fail over to this node. A WebSocket handshake from
//! any other origin is refused; SSE, long-poll and entry answers to an
//! allowed origin carry `Access-Control-Allow-Origin`, so its script may
//! read them, and the entries' preflight lets it write them (a page's
//! `get`, `put` and `remove` follow it to the member it pushes from).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpRequest, HttpResponse};

use super::error::ApiError;
use super::handshake::{origin_allowed, origin_authority};
use super::AppState;
use crate::cluster::membership::IsMemberApi;
use crate::protocol::ErrorCode;

/// The request headers a client's entry requests carry.
const ENTRY_REQUEST_HEADERS: &str = "Authorization, Content-Type, If-Match, If-None-Match";
/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE_SECS: &str = "600";

/// Whether a request from its `Origin` may push: no `Origin` (not a
/// browser), the node's own, one of the allow-list, or another member's.
pub async fn origin_may_push(headers: &HeaderMap, state: &AppState) -> bool {
    if origin_allowed(headers, &state.websocket.allowed_origins) {
        return true;
    }
    let Some(authority) = origin_authority(headers) else {
        return false;
    };
    let asked = state.membership.send(IsMemberApi(authority));
    asked.await.unwrap_or(false)
}

/// `OPTIONS` on an entry: a browser's preflight before a script of another
/// origin writes it, or sends its token. Allowed for an origin that may
/// push (the middleware adds `Access-Control-Allow-Origin`); any other gets
/// `403 unauthorized`.
pub async fn entry_preflight(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !origin_may_push(req.headers(), &state).await {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this Origin may not use this node's entries",
        ));
    }
    Ok(HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, PUT, DELETE"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ENTRY_REQUEST_HEADERS))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE_SECS))
        .finish())
}

/// Middleware for the HTTP fallbacks and the entries: lets a script of an
/// origin that may push read the answer (errors included, so a client
/// learns why) and its `ETag` (an entry's version).
pub async fn share_with_pushing_origins(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let shared = match (&origin, req.app_data::<web::Data<AppState>>()) {
        (Some(_), Some(state)) => origin_may_push(req.headers(), state).await,
        _ => false,
    };
    let mut response = next.call(req).await?;
    if let Some(origin) = origin.filter(|_| shared) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("ETag"),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(response)
}
