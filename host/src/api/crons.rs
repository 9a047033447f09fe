//! Crons: `POST /api/v1/workflows/{name}/crons` creates one, `GET /api/v1/crons` lists the
//! tenant's (from manifests and the API) with their next tick, `DELETE /api/v1/crons/{id}`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::extract::{self, Path};
use crate::cron::CronSchedule;
use crate::db::cron::{CronRow, NewCron, cron_create, cron_delete, crons_list};
use crate::db::module::workflow_latest;
use crate::scheduler::runs::check_storable;

/// Most crons one list returns.
const MAX_LISTED: i64 = 10_000;
/// Longest cron name.
const MAX_NAME_LEN: usize = 128;

/// Body of `POST /api/v1/workflows/{name}/crons`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCron {
    /// Five or six fields (`0 9 * * 1-5`).
    pub expression: String,
    /// A name for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The IANA zone it is read in; default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The input of its runs; default `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// The metadata of its runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metadata: Option<Value>,
    /// `none` (default) or `latest`: whether a missed tick runs once when a node is back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<String>,
}

/// A cron: a schedule that starts runs of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cron {
    /// Cron id.
    pub id: Uuid,
    /// The workflow it starts.
    pub workflow: String,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// The cron expression (five or six fields).
    pub expression: String,
    /// The IANA time zone it is read in.
    pub timezone: String,
    /// The input of its runs.
    pub input: Value,
    /// The metadata of its runs.
    pub additional_metadata: Value,
    /// `manifest` or `api`.
    pub source: String,
    /// `none` or `latest`: whether a missed tick runs once when a node is back.
    pub catch_up: String,
    /// Its next tick.
    pub next_tick: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl From<&CronRow> for Cron {
    fn from(cron: &CronRow) -> Self {
        Self {
            id: cron.id,
            workflow: cron.workflow.clone(),
            name: cron.name.clone(),
            expression: cron.expression.clone(),
            timezone: cron.timezone.clone(),
            input: cron.input.clone(),
            additional_metadata: cron.additional_metadata.clone(),
            source: cron.source.clone(),
            catch_up: cron.catch_up.clone(),
            next_tick: cron.next_tick,
            created_at: cron.created_at,
        }
    }
}

/// The tenant's crons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CronList {
    /// The crons.
    pub crons: Vec<Cron>,
}

/// Creates a cron of workflow `name` → 201 with the cron and its next tick.
#[utoipa::path(post, path = "/api/v1/workflows/{name}/crons", tag = "triggers",
    params(("name" = String, Path, description = "The workflow")),
    request_body = CreateCron,
    responses((status = 201, description = "Created", body = Cron)),
    security(("tenant_token" = [])))]
pub async fn create(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(workflow): Path<String>,
    extract::Json(body): extract::Json<CreateCron>,
) -> Result<(StatusCode, Json<Cron>), ApiError> {
    let timezone = body.timezone.as_deref().unwrap_or("UTC");
    let schedule = CronSchedule::parse(&body.expression, timezone)
        .map_err(|e| ApiError::bad_request("invalid_cron", e))?;
    let catch_up = body.catch_up.as_deref().unwrap_or("none");
    if !matches!(catch_up, "none" | "latest") {
        return Err(ApiError::bad_request(
            "invalid_cron",
            format!("catch_up must be `none` or `latest`, got `{catch_up}`"),
        ));
    }
    if body.name.as_ref().is_some_and(|n| n.len() > MAX_NAME_LEN) {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("the cron name is longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    let input = body.input.unwrap_or_else(|| json!({}));
    let metadata = body.additional_metadata.unwrap_or_else(|| json!({}));
    check_storable(&input, &metadata)?;
    let mut tx = state.db.pool.begin().await?;
    if workflow_latest(&mut tx, tenant, &workflow).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_workflow",
            format!("unknown workflow `{workflow}`"),
        ));
    }
    let cron = cron_create(
        &mut tx,
        tenant,
        &NewCron {
            workflow: &workflow,
            name: body.name.as_deref(),
            expression: &body.expression,
            timezone,
            input: &input,
            additional_metadata: &metadata,
            catch_up,
            next_tick: schedule.next_after(chrono::Utc::now()),
        },
        "api",
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(Cron::from(&cron))))
}

/// `{crons: [...]}`, by workflow.
#[utoipa::path(get, path = "/api/v1/crons", tag = "triggers",
    responses((status = 200, description = "The tenant's crons", body = CronList)),
    security(("tenant_token" = [])))]
pub async fn list(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
) -> Result<Json<CronList>, ApiError> {
    let mut conn = state.db.pool.acquire().await?;
    let crons = crons_list(&mut conn, tenant, MAX_LISTED).await?;
    Ok(Json(CronList {
        crons: crons.iter().map(Cron::from).collect(),
    }))
}

/// Deletes a cron → 204.
#[utoipa::path(delete, path = "/api/v1/crons/{id}", tag = "triggers",
    params(("id" = String, Path, description = "The cron")),
    responses((status = 204, description = "Deleted")),
    security(("tenant_token" = [])))]
pub async fn delete(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = extract::parse_id("cron", &id)?;
    let mut conn = state.db.pool.acquire().await?;
    if cron_delete(&mut conn, tenant, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no cron `{id}`")))
    }
}
