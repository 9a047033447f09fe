//! The API's one error type: an HTTP status, a stable machine code and a message that says
//! what to fix, rendered as `{"error": {"code": "...", "message": "..."}}`.
//!
//! Internal failures are logged here and shown as a short message; nothing internal (SQL,
//! other tenants' data) reaches the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::quota::QuotaExceeded;
use crate::scheduler::{DeployError, RunError};

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `unknown_workflow`.
    pub code: &'static str,
    /// What went wrong and what to do about it.
    pub message: String,
    /// When to ask again, sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A refusal by one of the tenant's quotas: 429 `quota_exceeded` with `Retry-After` when
    /// waiting helps, else 403 `quota_exceeded` (room must be made, or the quota raised).
    pub fn quota(exceeded: &QuotaExceeded) -> Self {
        let retry_after = exceeded.retry_after();
        let status = if retry_after.is_some() {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::FORBIDDEN
        };
        Self {
            retry_after,
            ..Self::new(status, "quota_exceeded", exceeded.to_string())
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 413 `payload_too_large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 500 `internal`, logged with its cause.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {cause}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}; the node logged the details"),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The body of every error: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// A stable code and a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable, e.g. `unknown_workflow`, `invalid_json`, `quota_exceeded`.
    pub code: String,
    /// For people.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds.max(1)),
            );
        }
        response
    }
}

/// SQLSTATEs of text the database cannot hold: a NUL byte in a string (22021) or a `\u0000`
/// in JSON (22P05). The request is at fault, not the node.
const UNSTORABLE_TEXT: [&str; 2] = ["22021", "22P05"];

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db
                .code()
                .is_some_and(|code| UNSTORABLE_TEXT.contains(&code.as_ref()))
        {
            return Self::bad_request(
                "invalid_text",
                "the request holds a NUL character (\\u0000), which cannot be stored",
            );
        }
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!("database unavailable: {e}");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; retry later",
                )
            }
            e => Self::internal("database error", e),
        }
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::UnknownWorkflow(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_workflow", e.to_string())
            }
            RunError::InvalidPriority(_) => Self::bad_request("invalid_priority", e.to_string()),
            RunError::InvalidMetadata => Self::bad_request("invalid_metadata", e.to_string()),
            RunError::NulCharacter(_) => Self::bad_request("invalid_input", e.to_string()),
            RunError::Key(_) => Self::bad_request("invalid_key", e.to_string()),
            RunError::InvalidEvent(_) => Self::bad_request("invalid_event", e.to_string()),
            RunError::PastRunAt(_) => Self::bad_request("invalid_run_at", e.to_string()),
            RunError::Quota(exceeded) => Self::quota(&exceeded),
            RunError::Db(e) => e.into(),
            RunError::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            RunError::NotStored(why) => {
                tracing::warn!("a run start was not stored: {why}");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database failed and nothing was stored; retry later",
                )
            }
        }
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::Invalid(e) => Self::bad_request("invalid_module", e.to_string()),
            DeployError::Quota(exceeded) => Self::quota(&exceeded),
            DeployError::Db(e) => e.into(),
        }
    }
}
