//! HTTP error mapping, in one place: every failure is
//! `{"error": {"code", "message", "details"}}` with a 4xx/5xx status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use verdict_app::AppError;

/// An error as the API reports it.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Extra structured details (e.g. `{"field": "variants[1].weight"}`).
    pub details: Value,
}

impl ApiError {
    /// A 400 naming the offending field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_field",
            message: format!("`{field}`: {message}"),
            details: json!({ "field": field }),
        }
    }

    /// Any status with a code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: json!({}),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Invalid { field, message } => ApiError::invalid(field, message),
            AppError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            AppError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            AppError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            e @ AppError::IdConflict { event_id, position } => ApiError {
                status: StatusCode::CONFLICT,
                code: "event_id_conflict",
                message: e.to_string(),
                details: json!({ "field": "event_id", "event_id": event_id, "position": position }),
            },
            e @ AppError::NotCaughtUp { wanted, reached } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "not_caught_up",
                message: e.to_string(),
                details: json!({ "min_position": wanted, "position": reached }),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "details": self.details}});
        (self.status, axum::Json(body)).into_response()
    }
}
