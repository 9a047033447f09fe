//! `GET /healthz` (the process answers) and `GET /readyz` (the database is reachable and every
//! migration this binary embeds is applied).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;

/// 200 while the process runs.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when the node can serve, else 503 saying why.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let not_ready =
        |message: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message);
    match state.db.migrations_applied().await {
        Ok(true) => Ok(Json(json!({"status": "ready"}))),
        Ok(false) => Err(not_ready(
            "migrations are pending: run `hatchery migrate`".into(),
        )),
        Err(e) => Err(not_ready(format!("the database is unreachable: {e}"))),
    }
}
