//! The REST API under `/api/v1`, plus `/healthz` and `/metrics`: thin
//! handlers that parse the request, call the [`Grid`] and shape the reply.
//!
//! Entry keys are taken from the raw request path and percent-decoded here,
//! so that a `/` in a key may arrive literally or as `%2F` alike.

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::body::{json_body_or, read_body};
use super::error::ApiError;
use super::{check_query_utf8, resource};
use super::{cluster, cors};
use super::{request_access, AppState};
use crate::cluster::membership::DescribeStatus;
use crate::grid::segment::PutRequest;
use crate::grid::{
    check_prefix, parse_key, Cache, CacheConfig, CacheName, Creation, Grid, GridError, JsonValue, Key, OpId,
    Precondition, Version,
};
use crate::metrics::{CacheFigures, ClusterFigures};
use crate::protocol::depth::json_within_depth;
use crate::protocol::{CacheList, CacheSummary, EntryPage, ErrorCode, ListedEntry, WriteAck};

const DEFAULT_PAGE: usize = 100;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz", "GET").route(web::get().to(healthz)))
        .service(resource("/metrics", "GET").route(web::get().to(metrics)))
        .service(
            web::scope("/api/v1")
                .service(resource("/cluster", "GET").route(web::get().to(cluster::view)))
                .service(resource("/caches", "GET").route(web::get().to(list_caches)))
                .service(
                    resource("/caches/{cache}", "GET, PUT, DELETE")
                        .route(web::get().to(describe_cache))
                        .route(web::put().to(create_cache))
                        .route(web::delete().to(delete_cache)),
                )
                .service(
                    resource("/caches/{cache}/lost", "POST").route(web::post().to(cluster::declare_lost)),
                )
                .service(resource("/caches/{cache}/entries", "GET").route(web::get().to(list_entries)))
                .service(
                    resource("/caches/{cache}/entries/{key:.*}", "GET, PUT, DELETE")
                        .route(web::get().to(get_entry))
                        .route(web::put().to(put_entry))
                        .route(web::delete().to(delete_entry))
                        .route(web::method(Method::OPTIONS).to(cors::entry_preflight))
                        .wrap(actix_web::middleware::from_fn(cors::share_with_pushing_origins)),
                ),
        );
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "serving"}))
}

async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let status = state
        .membership
        .send(DescribeStatus)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("membership unavailable: {e}")))?;
    let cluster = ClusterFigures {
        members: status.members,
        epoch: status.epoch,
        leased: status.leased,
    };
    let caches = state.grid.caches();
    let figures = caches.iter().map(|cache| {
        let (segments_primary, segments_backup) = cache.segments_held();
        let (segments_lost, segments_declared_lost) = cache.segments_lost();
        CacheFigures {
            name: cache.name().as_str(),
            entries: cache.entry_count(),
            bytes: cache.bytes(),
            segments_primary,
            segments_backup,
            segments_lost,
            segments_declared_lost,
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(cluster, figures)))
}

/// A cache as the API shows it: its entries counted across the cluster,
/// the bytes this node holds.
async fn summary(grid: &Grid, cache: &Cache) -> Result<CacheSummary, GridError> {
    Ok(CacheSummary {
        name: cache.name().clone(),
        entries: grid.count_entries(cache.name().as_str()).await?,
        bytes: cache.bytes(),
        incarnation: cache.incarnation(),
        config: cache.config().clone(),
    })
}

async fn describe_cache(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let name = CacheName::parse(&path.into_inner())?;
    request_access(&state, &req)?.check_read(name.as_str())?;
    let cache = state.grid.cache(name.as_str())?;
    Ok(HttpResponse::Ok().json(summary(&state.grid, &cache).await?))
}

/// Deletes the cache and everything in it; its subscribers are told
/// (`cache_deleted`) after the events they were owed.
async fn delete_cache(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let name = CacheName::parse(&path.into_inner())?;
    request_access(&state, &req)?.check_write(name.as_str())?;
    state.grid.delete_cache(name.as_str()).await?;
    log::info!("cache {name} deleted");
    Ok(HttpResponse::NoContent().finish())
}

async fn list_caches(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let access = request_access(&state, &req)?;
    let readable: Vec<_> = state
        .grid
        .caches()
        .into_iter()
        .filter(|cache| access.check_read(cache.name().as_str()).is_ok())
        .collect();
    let summaries = readable.iter().map(|cache| summary(&state.grid, cache));
    let mut caches = Vec::with_capacity(readable.len());
    for summary in futures_util::future::join_all(summaries).await {
        match summary {
            Ok(summary) => caches.push(summary),
            // Deleted while listed: no longer one of the caches.
            Err(GridError::UnknownCache(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(HttpResponse::Ok().json(CacheList { caches }))
}

async fn create_cache(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Payload,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let name = CacheName::parse(&path.into_inner())?;
    request_access(&state, &req)?.check_write(name.as_str())?;
    let config: CacheConfig = json_body_or(body, &req, CacheConfig::default(), "cache config").await?;
    let status = match state.grid.create_cache(name.clone(), config).await? {
        Creation::Created => StatusCode::CREATED,
        Creation::AlreadyExists => StatusCode::OK,
    };
    // The config as settled by the grid (defaults filled in).
    let config = state.grid.cache(name.as_str())?.config().clone();
    if status == StatusCode::CREATED {
        log::info!(
            "cache {name} created ({} segments, {} owners)",
            config.segments,
            config.owners()
        );
    }
    Ok(HttpResponse::build(status).json(serde_json::json!({"name": name, "config": config})))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    after: Option<String>,
}

async fn list_entries(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let name = CacheName::parse(&path.into_inner())?;
    request_access(&state, &req)?.check_read(name.as_str())?;
    check_query_utf8(&req)?;
    check_prefix(&query.prefix)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    let page = state
        .grid
        .list(name.as_str(), &query.prefix, query.after.as_deref(), limit)
        .await?;
    let entries = page
        .entries
        .into_iter()
        .map(|e| ListedEntry {
            key: e.key,
            value: e.value,
            version: e.version,
        })
        .collect();
    Ok(HttpResponse::Ok().json(EntryPage {
        entries,
        next: page.next,
    }))
}

async fn get_entry(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let (cache, key) = entry_target(&req)?;
    request_access(&state, &req)?.check_read(cache.as_str())?;
    let entry = state.grid.get(cache.as_str(), key).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag(entry.version)))
        .content_type("application/json")
        .body(entry.value.get().to_owned()))
}

#[derive(Deserialize)]
struct PutQuery {
    lifespan_ms: Option<u64>,
}

async fn put_entry(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<PutQuery>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (cache_name, key) = entry_target(&req)?;
    request_access(&state, &req)?.check_write(cache_name.as_str())?;
    let cache = state.grid.cache(cache_name.as_str())?;
    let precondition = write_precondition(req.headers())?;
    let body = read_body(body, req.headers(), cache.config().max_value_bytes).await?;
    let value = parse_value(&body, state.limits.max_depth)?;
    let request = PutRequest {
        key,
        value,
        precondition,
        lifespan_ms: query.lifespan_ms,
        op: idempotency_key(req.headers())?,
    };
    let outcome = state.grid.put_request(cache_name.as_str(), request).await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status)
        .insert_header((header::ETAG, etag(outcome.version)))
        .json(WriteAck {
            version: outcome.version,
            created: Some(outcome.created),
        }))
}

async fn delete_entry(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let (cache, key) = entry_target(&req)?;
    request_access(&state, &req)?.check_write(cache.as_str())?;
    let precondition = match write_precondition(req.headers())? {
        Precondition::IfAbsent => {
            return Err(ApiError::bad_request("If-None-Match does not apply to DELETE"))
        }
        other => other,
    };
    let op = idempotency_key(req.headers())?;
    let remove = state.grid.remove_once(cache.as_str(), key, precondition, op);
    remove.await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The client's name for a write (`Idempotency-Key`), so that the write
/// sent again is answered as the first time instead of applied twice.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<OpId>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?;
    OpId::parse(text.trim())
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("Idempotency-Key: {e}")))
}

/// The cache and key of `/api/v1/caches/{cache}/entries/{key}`, read from
/// the raw path: the router has already matched its shape.
fn entry_target(req: &HttpRequest) -> Result<(CacheName, Key), ApiError> {
    parse_entry_path(req.uri().path())
}

/// The cache and key of a raw (still percent-encoded) entry path. Public
/// for the fuzz targets.
pub fn parse_entry_path(path: &str) -> Result<(CacheName, Key), ApiError> {
    let malformed = || ApiError::bad_request("expected /api/v1/caches/{cache}/entries/{key}");
    let rest = path.strip_prefix("/api/v1/caches/").ok_or_else(malformed)?;
    let (cache, rest) = rest.split_once('/').ok_or_else(malformed)?;
    let raw_key = rest.strip_prefix("entries/").ok_or_else(malformed)?;
    let decode = |raw: &str, what: &str| {
        percent_decode_str(raw)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| ApiError::bad_request(format!("{what} is not valid UTF-8 once percent-decoded")))
    };
    let cache = CacheName::parse(&decode(cache, "cache name")?)?;
    let key = parse_key(&decode(raw_key, "key")?)?;
    Ok((cache, key))
}

/// A request body as a stored value: JSON, nested at most `max_depth` deep
/// (checked before parsing), kept as its exact text without whitespace
/// between tokens. A number no reader can hold (`1e99999`) is refused, so
/// every stored value encodes in every format. Public for the fuzz targets.
pub fn parse_value(body: &[u8], max_depth: usize) -> Result<JsonValue, ApiError> {
    if !json_within_depth(body, max_depth) {
        return Err(ApiError::bad_request(format!(
            "the value nests deeper than {max_depth} levels"
        )));
    }
    let text =
        std::str::from_utf8(body).map_err(|e| ApiError::bad_request(format!("body is not UTF-8: {e}")))?;
    JsonValue::parse_compact(text)
        .map_err(|e| ApiError::bad_request(format!("body is not a valid value: {e}")))
}

fn etag(version: Version) -> String {
    format!("\"{}\"", version.0)
}

/// `If-Match: "<v>"` or `*`, and `If-None-Match: *`, as a grid precondition.
fn write_precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    fn text(value: &HeaderValue) -> Result<&str, ApiError> {
        value
            .to_str()
            .map(str::trim)
            .map_err(|_| ApiError::bad_request("precondition headers must be ASCII"))
    }
    let if_match = headers.get(header::IF_MATCH).map(text).transpose()?;
    let if_none_match = headers.get(header::IF_NONE_MATCH).map(text).transpose()?;
    match (if_match, if_none_match) {
        (None, None) => Ok(Precondition::None),
        (Some(_), Some(_)) => Err(ApiError::bad_request("send If-Match or If-None-Match, not both")),
        (Some("*"), None) => Ok(Precondition::IfPresent),
        (Some(tag), None) => tag
            .trim_matches('"')
            .parse()
            .map(|v| Precondition::IfVersion(Version(v)))
            .map_err(|_| ApiError::bad_request(format!("If-Match must be \"<version>\" or *, not {tag}"))),
        (None, Some("*")) => Ok(Precondition::IfAbsent),
        (None, Some(tag)) => Err(ApiError::bad_request(format!(
            "If-None-Match supports only *, not {tag}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn preconditions_come_from_the_headers() {
        let parse = |name, value| {
            let req = TestRequest::default()
                .insert_header((name, value))
                .to_http_request();
            write_precondition(req.headers()).map_err(|e| e.0.code)
        };
        assert_eq!(
            parse(header::IF_MATCH, "\"7\""),
            Ok(Precondition::IfVersion(Version(7)))
        );
        assert_eq!(parse(header::IF_MATCH, "*"), Ok(Precondition::IfPresent));
        assert_eq!(parse(header::IF_NONE_MATCH, "*"), Ok(Precondition::IfAbsent));
        assert_eq!(parse(header::IF_MATCH, "\"x\""), Err(ErrorCode::BadRequest));
        assert_eq!(parse(header::IF_NONE_MATCH, "\"3\""), Err(ErrorCode::BadRequest));
    }

    #[test]
    fn keys_are_percent_decoded_and_may_hold_slashes() {
        let target = |path| {
            let req = TestRequest::with_uri(path).to_http_request();
            entry_target(&req)
                .map(|(c, k)| (c.to_string(), k.to_string()))
                .map_err(|e| e.0.code)
        };
        assert_eq!(
            target("/api/v1/caches/s/entries/match/7"),
            Ok(("s".into(), "match/7".into()))
        );
        assert_eq!(
            target("/api/v1/caches/s/entries/match%2F7"),
            Ok(("s".into(), "match/7".into()))
        );
        assert_eq!(
            target("/api/v1/caches/s/entries/a%20b%25"),
            Ok(("s".into(), "a b%".into()))
        );
        assert_eq!(target("/api/v1/caches/s/entries/"), Err(ErrorCode::BadRequest));
        assert_eq!(target("/api/v1/caches/s/entries/%FF"), Err(ErrorCode::BadRequest));
        assert_eq!(
            target("/api/v1/caches/b%20d/entries/k"),
            Err(ErrorCode::BadRequest)
        );
    }
}
