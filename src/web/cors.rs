//! Which other origins may use the push endpoints: those of the allow-list
//! (`push.allowed_origins`) and the pages other members of the cluster
//! served, whose clients fail over to this node. A WebSocket handshake from
//! any other origin is refused; SSE and long-poll answers to an allowed
//! origin carry `Access-Control-Allow-Origin`, so its script may read them.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error};

use super::handshake::{origin_allowed, origin_authority};
use super::AppState;
use crate::cluster::membership::IsMemberApi;

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

/// Middleware for the HTTP fallbacks: lets a script of an origin that may
/// push read the answer (errors included, so a client learns why).
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
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(response)
}
