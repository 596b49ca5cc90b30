//! Request bodies: read whole up to a limit, refused with `too_large` as
//! soon as they pass it, and small JSON bodies (a cache's config, a list
//! of segments) with a default for an empty one.

use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;

use super::error::ApiError;
use crate::protocol::ErrorCode;

/// The largest small JSON body accepted: a cache's config, a list of segments.
const MAX_CONFIG_BODY: usize = 64 * 1024;

/// A small JSON request body (at most [`MAX_CONFIG_BODY`]) as a `T`, or
/// `empty` when the body is empty; `what` names it in the error.
pub async fn json_body_or<T: serde::de::DeserializeOwned>(
    body: web::Payload,
    req: &HttpRequest,
    empty: T,
    what: &str,
) -> Result<T, ApiError> {
    let body = read_body(body, req.headers(), MAX_CONFIG_BODY).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(empty);
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid {what}: {e}")))
}

/// Reads a request body of at most `limit` bytes. A body announced or found
/// to be larger is refused with `too_large` as soon as that is known, without
/// reading the rest into memory.
pub async fn read_body(
    mut payload: web::Payload,
    headers: &HeaderMap,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("body exceeds the limit of {limit} bytes"),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(announced.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
