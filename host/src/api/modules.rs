//! `POST /api/v1/modules` (the raw component as the body) and `GET /api/v1/modules`.
//!
//! An upload is validated by the runtime (compile, world, manifest) before anything is stored;
//! a rejected one is a 400 carrying the loader's reason.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::extract::{Body, Query};
use super::page::{self, PageQuery};
use super::workflows::workflow_json;
use crate::db::module::modules_list;
use crate::scheduler::deploy_module;

/// Deploys a module: 201 `{digest, already_deployed, workflows}`.
pub async fn deploy(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Body(bytes): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_module",
            "the body is empty: send the component's bytes (Content-Type: application/wasm)",
        ));
    }
    state.pace_upload(tenant).await?;
    let deployed = deploy_module(&state.db, &state.runtime, tenant, &bytes).await?;
    tracing::info!(
        %tenant,
        digest = %deployed.digest,
        already = deployed.already_deployed,
        "module deployed"
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "digest": deployed.digest,
            "already_deployed": deployed.already_deployed,
            "workflows": deployed.workflows.iter().map(workflow_json).collect::<Vec<_>>(),
        })),
    ))
}

/// `GET /api/v1/modules?limit=&cursor=` → `{modules, next_cursor}`, newest first.
pub async fn list_modules(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let params = query.params()?;
    let mut conn = state.db.pool.acquire().await?;
    let mut rows = modules_list(&mut conn, tenant, &params).await?;
    let next = page::finish(&mut rows, query.limit()?, |m| {
        (m.created_at, m.digest.clone())
    });
    let modules: Vec<Value> = rows
        .iter()
        .map(|m| {
            json!({
                "digest": m.digest,
                "size": m.size,
                "slots": m.manifest.slots,
                "workflows": m.manifest.workflows.iter().map(|w| &w.name).collect::<Vec<_>>(),
                "created_at": m.created_at,
            })
        })
        .collect();
    Ok(Json(json!({"modules": modules, "next_cursor": next})))
}
