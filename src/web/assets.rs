//! The scoreboard page's files, embedded in the binary at build time so it
//! serves them from any working directory.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;
use crate::protocol::ErrorCode;

/// Path, content type, contents.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../../static/index.html"),
    ),
    (
        "/static/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/style.css"),
    ),
    (
        "/static/pushgrid.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/pushgrid.js"),
    ),
    (
        "/static/scoreboard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/scoreboard.js"),
    ),
    (
        "/favicon.ico",
        "image/x-icon",
        include_bytes!("../../static/favicon.ico"),
    ),
];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(asset))
        .route("/favicon.ico", web::get().to(asset))
        .route("/static/{file}", web::get().to(asset));
}

async fn asset(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(path, _, _)| *path == req.path())
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no file {}", req.path())))?;
    Ok(HttpResponse::Ok()
        .content_type(*content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(*body))
}
