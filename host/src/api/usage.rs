//! Usage metering: `GET /api/v1/usage` (a tenant's own) and `GET /api/v1/tenants/{id}/usage`
//! (admin): runs, attempts, wall time, fuel, peak memory and egress requests per hour and
//! workflow, with totals.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::{Admin, Tenant};
use super::error::ApiError;
use super::extract::{self, Path, Query};
use crate::db::usage::{UsageRow, hour_of, usage_list};

/// Most hourly rows one answer holds.
const MAX_ROWS: i64 = 10_000;

/// `GET …/usage` filters: the hours from `from` (default: 24 hours ago) to `to` (default:
/// now), of one `workflow` or all.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// From this time (RFC 3339; default: 24 hours before `to`), to the hour.
    from: Option<DateTime<Utc>>,
    /// To this time (default: now).
    to: Option<DateTime<Utc>>,
    /// Only this workflow.
    workflow: Option<String>,
}

/// Usage summed over the hours of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageTotals {
    /// Runs created.
    pub runs: i64,
    /// Attempts executed.
    pub attempts: i64,
    /// Their wall-clock time, in milliseconds.
    pub wall_ms: i64,
    /// Fuel consumed.
    pub fuel: i64,
    /// The largest memory of one attempt, in bytes.
    pub peak_memory_bytes: i64,
    /// Outgoing HTTP requests.
    pub egress_requests: i64,
}

/// A tenant's usage per hour and workflow, oldest hour first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// The first hour.
    pub from: DateTime<Utc>,
    /// The end.
    pub to: DateTime<Utc>,
    /// One row per hour and workflow.
    pub hours: Vec<UsageRow>,
    /// Their sums.
    pub totals: UsageTotals,
    /// Whether rows were left out (at most 10,000): ask for a shorter span.
    pub truncated: bool,
}

/// The tenant's own usage.
#[utoipa::path(get, path = "/api/v1/usage", tag = "tenant", params(UsageQuery),
    responses((status = 200, description = "Usage per hour and workflow", body = UsageReport)),
    security(("tenant_token" = [])))]
pub async fn own(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Query(query): Query<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    usage(&state, tenant, query).await
}

/// Tenant `id`'s usage (admin).
#[utoipa::path(get, path = "/api/v1/tenants/{id}/usage", tag = "admin",
    params(("id" = String, Path, description = "The tenant"), UsageQuery),
    responses((status = 200, description = "Usage per hour and workflow", body = UsageReport)),
    security(("admin_token" = [])))]
pub async fn of_tenant(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Query(query): Query<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let tenant = extract::parse_id("tenant", &tenant)?;
    let mut conn = state.db.pool.acquire().await?;
    if crate::db::tenant::tenant_get(&mut conn, tenant)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("no tenant `{tenant}`")));
    }
    drop(conn);
    usage(&state, tenant, query).await
}

/// `{from, to, hours: [{hour, workflow, runs, attempts, wall_ms, fuel, peak_memory_bytes,
/// egress_requests}], totals: {...}}`, oldest hour first.
async fn usage(
    state: &AppState,
    tenant: Uuid,
    query: UsageQuery,
) -> Result<Json<UsageReport>, ApiError> {
    let now = Utc::now();
    let to = query.to.unwrap_or(now);
    let from = hour_of(query.from.unwrap_or(to - TimeDelta::hours(24)));
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`from` must be before `to`",
        ));
    }
    let mut conn = state.db.pool.acquire().await?;
    let rows = usage_list(
        &mut conn,
        tenant,
        from,
        to,
        query.workflow.as_deref(),
        MAX_ROWS,
    )
    .await?;
    Ok(Json(UsageReport {
        from,
        to,
        totals: totals(&rows),
        truncated: rows.len() as i64 >= MAX_ROWS,
        hours: rows,
    }))
}

fn totals(rows: &[UsageRow]) -> UsageTotals {
    let sum = |f: fn(&UsageRow) -> i64| rows.iter().map(f).fold(0i64, i64::saturating_add);
    UsageTotals {
        runs: sum(|r| r.runs),
        attempts: sum(|r| r.attempts),
        wall_ms: sum(|r| r.wall_ms),
        fuel: sum(|r| r.fuel),
        peak_memory_bytes: rows.iter().map(|r| r.peak_memory_bytes).max().unwrap_or(0),
        egress_requests: sum(|r| r.egress_requests),
    }
}
