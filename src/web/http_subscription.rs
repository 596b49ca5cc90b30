//! An HTTP subscription request, what the two HTTP fallbacks (SSE and long
//! polling) share: which cache and keys it follows, who may follow them,
//! and the position tokens it resumes from and is given.

use std::sync::Arc;

use actix_web::HttpRequest;

use super::error::ApiError;
use super::{request_access, AppState};
use crate::grid::{Cache, SegmentId};
use crate::protocol::position::{self, Positions, Token};
use crate::protocol::ws::FilterSpec;
use crate::push::filter::{self, Filter};
use crate::push::subscription::{segments_of, StartFrom};

/// A cache and filter an HTTP client subscribes to.
pub struct HttpSubscription {
    pub cache: Arc<Cache>,
    pub filter: Filter,
    /// The segments its positions cover: a key's own, or all.
    segments: Vec<SegmentId>,
}

impl HttpSubscription {
    /// Checks the request's access (its `Authorization` header, or an
    /// `access_token` parameter, since `EventSource` cannot set headers),
    /// the cache and the filter.
    pub fn new(
        state: &AppState,
        req: &HttpRequest,
        cache: &str,
        filter: FilterSpec,
        access_token: Option<&str>,
    ) -> Result<HttpSubscription, ApiError> {
        let access = match access_token {
            Some(token) if !req.headers().contains_key(actix_web::http::header::AUTHORIZATION) => {
                state.auth.authenticate(Some(token))?
            }
            _ => request_access(state, req)?,
        };
        access.check_read(cache)?;
        super::check_query_utf8(req)?;
        let cache = state.grid.cache(cache)?;
        let filter = filter::from_spec(&filter)?;
        let segments = segments_of(&cache, &filter);
        Ok(HttpSubscription {
            cache,
            filter,
            segments,
        })
    }

    /// Where a client's token resumes from; a token naming a segment this
    /// cache does not have is refused.
    pub fn resume_from(&self, token: &str) -> Result<StartFrom, ApiError> {
        let Token {
            positions,
            incarnation,
        } = position::decode(token).map_err(ApiError::bad_request)?;
        let segments = self.cache.config().segments;
        match positions.keys().find(|s| s.0 >= segments) {
            Some(s) => Err(ApiError::bad_request(format!(
                "the position token names segment {}, but {} has {segments}",
                s.0,
                self.cache.name()
            ))),
            None => Ok(StartFrom::Resume {
                positions,
                incarnation,
            }),
        }
    }

    /// The token for `positions` (of the cache's current incarnation),
    /// holding only the segments this filter covers.
    pub fn token(&self, positions: &Positions) -> String {
        let incarnation = self.cache.incarnation();
        if let [only] = self.segments[..] {
            return position::encode_each(incarnation, positions.get(&only).map(|v| (only, *v)));
        }
        position::encode(incarnation, positions)
    }
}
