//! `GET /healthz` (the process answers) and `GET /readyz` (the database is reachable and every
//! migration this binary embeds is applied).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;
use super::error::ApiError;

/// `{status}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    pub status: String,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process answers", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// 200 when the node can serve, else 503 saying why.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready: why", body = super::error::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let not_ready =
        |message: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message);
    match state.db.migrations_applied().await {
        Ok(true) => Ok(Json(Health {
            status: "ready".into(),
        })),
        Ok(false) => Err(not_ready(
            "migrations are pending: run `hatchery migrate`".into(),
        )),
        Err(e) => Err(not_ready(format!("the database is unreachable: {e}"))),
    }
}
