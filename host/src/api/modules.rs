//! `POST /api/v1/modules` (the raw component as the body) and `GET /api/v1/modules`.
//!
//! An upload is validated by the runtime (compile, world, manifest) before anything is stored;
//! a rejected one is a 400 carrying the loader's reason.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::Tenant;
use super::error::{ApiError, ErrorBody};
use super::extract::{Body, Query};
use super::page::{self, PageQuery};
use super::workflows::Workflow;
use crate::db::module::modules_list;
use crate::scheduler::deploy_module;

/// The bytes of a component, as the body of an upload.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[expect(
    dead_code,
    reason = "only its schema is used: the handler reads the raw body"
)]
pub struct ModuleBytes(Vec<u8>);

/// A module just deployed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deployed {
    /// Its sha256.
    pub digest: String,
    /// Whether this tenant had deployed the same bytes before (nothing changed).
    pub already_deployed: bool,
    /// The workflows it provides, at their new versions.
    pub workflows: Vec<Workflow>,
}

/// A deployed module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Module {
    /// Its sha256.
    pub digest: String,
    /// Its size in bytes.
    pub size: i64,
    /// Task runs of it one node runs at once; `null`: the node's default.
    pub slots: Option<u32>,
    /// The workflows it provides.
    pub workflows: Vec<String>,
    /// When it was deployed.
    pub created_at: DateTime<Utc>,
}

/// A page of modules, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModulePage {
    /// The modules.
    pub modules: Vec<Module>,
    /// Give it as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// Deploys a module: 201 `{digest, already_deployed, workflows}`.
#[utoipa::path(post, path = "/api/v1/modules", tag = "modules",
    request_body(content = ModuleBytes, content_type = "application/octet-stream",
        description = "The component's bytes (any content type is read as the component, \
                       `application/wasm` included)"),
    responses((status = 201, description = "Deployed", body = Deployed),
        (status = 403, description = "Past the tenant's module storage quota", body = ErrorBody)),
    security(("tenant_token" = [])))]
pub async fn deploy(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Body(bytes): Body,
) -> Result<(StatusCode, Json<Deployed>), ApiError> {
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
        Json(Deployed {
            digest: deployed.digest.to_string(),
            already_deployed: deployed.already_deployed,
            workflows: deployed.workflows.iter().map(Workflow::from).collect(),
        }),
    ))
}

/// `GET /api/v1/modules?limit=&cursor=` → `{modules, next_cursor}`, newest first.
#[utoipa::path(get, path = "/api/v1/modules", tag = "modules", params(PageQuery),
    responses((status = 200, description = "Modules, newest first", body = ModulePage)),
    security(("tenant_token" = [])))]
pub async fn list_modules(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Json<ModulePage>, ApiError> {
    let params = query.params()?;
    let mut conn = state.db.pool.acquire().await?;
    let mut rows = modules_list(&mut conn, tenant, &params).await?;
    let next = page::finish(&mut rows, query.limit()?, |m| {
        (m.created_at, m.digest.clone())
    });
    let modules = rows
        .iter()
        .map(|m| Module {
            digest: m.digest.clone(),
            size: m.size,
            slots: m.manifest.slots,
            workflows: m
                .manifest
                .workflows
                .iter()
                .map(|w| w.name.clone())
                .collect(),
            created_at: m.created_at,
        })
        .collect();
    Ok(Json(ModulePage {
        modules,
        next_cursor: next,
    }))
}
