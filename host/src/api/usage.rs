//! Usage metering: `GET /api/v1/usage` (a tenant's own) and `GET /api/v1/tenants/{id}/usage`
//! (admin): runs, attempts, wall time, fuel, peak memory and egress requests per hour and
//! workflow, with totals.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::auth::{Admin, Tenant};
use super::error::ApiError;
use super::extract::{self, Query};
use crate::db::usage::{UsageRow, hour_of, usage_list};

/// Most hourly rows one answer holds.
const MAX_ROWS: i64 = 10_000;

/// `GET …/usage` filters: the hours from `from` (default: 24 hours ago) to `to` (default:
/// now), of one `workflow` or all.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    workflow: Option<String>,
}

/// The tenant's own usage.
pub async fn own(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Query(query): Query<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    usage(&state, tenant, query).await
}

/// Tenant `id`'s usage (admin).
pub async fn of_tenant(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Query(query): Query<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
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
async fn usage(state: &AppState, tenant: Uuid, query: UsageQuery) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({
        "from": from,
        "to": to,
        "hours": rows,
        "totals": totals(&rows),
        "truncated": rows.len() as i64 >= MAX_ROWS,
    })))
}

fn totals(rows: &[UsageRow]) -> Value {
    let sum = |f: fn(&UsageRow) -> i64| rows.iter().map(f).fold(0i64, i64::saturating_add);
    json!({
        "runs": sum(|r| r.runs),
        "attempts": sum(|r| r.attempts),
        "wall_ms": sum(|r| r.wall_ms),
        "fuel": sum(|r| r.fuel),
        "peak_memory_bytes": rows.iter().map(|r| r.peak_memory_bytes).max().unwrap_or(0),
        "egress_requests": sum(|r| r.egress_requests),
    })
}
