//! The cluster's REST routes: `GET /api/v1/cluster` (members, epoch, each
//! cache's owners and lost segments, the rebalance state) and an
//! operator's declaration that segments lost their data
//! (`POST /api/v1/caches/{cache}/lost`).

use std::collections::BTreeSet;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::body::json_body_or;
use super::error::ApiError;
use super::{check_query_utf8, request_access, AppState};
use crate::cluster::membership::{DeclareLost, DescribeCluster, RebalanceState};
use crate::grid::CacheName;
use crate::protocol::ErrorCode;

#[derive(Deserialize)]
pub(super) struct ClusterQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// Caches per page of the cluster view, by default and at most.
const CLUSTER_PAGE: (usize, usize) = (100, 1000);

pub(super) async fn view(
    state: web::Data<AppState>,
    query: web::Query<ClusterQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    check_query_utf8(&req)?;
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(CLUSTER_PAGE.0);
    if !(1..=CLUSTER_PAGE.1).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: must be 1 to {}, not {limit}",
            CLUSTER_PAGE.1
        )));
    }
    let mut view = state
        .membership
        .send(DescribeCluster {
            after: query.after,
            limit,
        })
        .await
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("membership unavailable: {e}")))?;
    if state.metrics.grid.segments_moving.get() > 0 {
        view.rebalance = RebalanceState::Moving;
    }
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LostSegments {
    segments: Option<BTreeSet<u32>>,
}

/// An operator accepts that segments of a cache lost their data with
/// every owner (`{"segments":[..]}`, or every lost one for an empty
/// body): they start again, empty, in a new incarnation. Answers once this
/// node serves them again.
pub(super) async fn declare_lost(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Payload,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let name = CacheName::parse(&path.into_inner())?;
    request_access(&state, &req)?.check_write(name.as_str())?;
    let asked: LostSegments =
        json_body_or(body, &req, LostSegments { segments: None }, "list of segments").await?;
    let declared = state
        .membership
        .send(DeclareLost {
            cache: name.clone(),
            segments: asked.segments,
        })
        .await
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("membership unavailable: {e}")))??;
    if !declared.declared.is_empty() {
        log::warn!(
            "an operator declared the data of cache {name}'s segments {:?} lost (epoch {})",
            declared.declared,
            declared.epoch
        );
        let placed = async {
            while state.grid.cache(name.as_str())?.owner_epoch() < declared.epoch {
                tokio::time::sleep(PLACEMENT_POLL).await;
            }
            Ok::<_, ApiError>(())
        };
        tokio::time::timeout(PLACEMENT_WAIT, placed).await.map_err(|_| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "segments {:?} were declared lost at epoch {}, but this node has not placed them yet",
                    declared.declared, declared.epoch
                ),
            )
        })??;
    }
    Ok(HttpResponse::Ok().json(declared))
}

/// How often, and how long, a declaration of lost data waits for this
/// node to place the segments again.
const PLACEMENT_POLL: std::time::Duration = std::time::Duration::from_millis(20);
const PLACEMENT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
