//! The one place where a failure becomes an HTTP status and the contract's
//! error body.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::auth::AuthError;
use crate::grid::GridError;
use crate::protocol::{ErrorBody, ErrorCode, ErrorDetail};

/// Any failure of a REST request.
#[derive(Debug)]
pub struct ApiError(pub ErrorDetail);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(ErrorDetail {
            code,
            message: message.into(),
            current_version: None,
        })
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::BadRequest, message)
    }
}

impl From<GridError> for ApiError {
    fn from(err: GridError) -> Self {
        ApiError(err.into())
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        ApiError(err.into())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.code.as_str(), self.0.message)
    }
}

pub fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::UnknownCache | ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::VersionMismatch => StatusCode::PRECONDITION_FAILED,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unauthorized => StatusCode::FORBIDDEN,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        http_status(self.0.code)
    }

    fn error_response(&self) -> HttpResponse {
        if self.0.code == ErrorCode::Internal {
            log::error!("internal error: {}", self.0.message);
        }
        HttpResponse::build(self.status_code()).json(ErrorBody {
            error: self.0.clone(),
        })
    }
}
