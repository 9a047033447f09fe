//! `PUT /api/v1/rate-limits/{key}` sets a static rate limit; `GET /api/v1/rate-limits` lists
//! the tenant's limits (static and dynamic) with the units used in the window that ends now.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::extract::{self, Path};
use crate::db::flow::{RateLimitRow, rate_limit_set, rate_limits_list};
use crate::manifest::RateLimitDuration;

/// Longest rate limit key.
const MAX_KEY_LEN: usize = 256;
/// Most limits one list returns.
const MAX_LISTED: i64 = 10_000;

/// Body of `PUT /api/v1/rate-limits/{key}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRateLimit {
    /// Units per window.
    pub limit: u32,
    /// The window.
    pub duration: RateLimitDuration,
}

fn duration_name(window_ms: Option<i64>) -> Option<&'static str> {
    Some(match window_ms? {
        1_000 => "second",
        60_000 => "minute",
        3_600_000 => "hour",
        86_400_000 => "day",
        _ => return None,
    })
}

/// A rate limit with the units used in the window that ends now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RateLimit {
    /// Its key (static, or computed by a dynamic rule).
    pub key: String,
    /// Units per window; `null` for a dynamic key without a limit of its own.
    pub limit: Option<i32>,
    /// `second`, `minute`, `hour` or `day`.
    pub duration: Option<String>,
    /// `api` or `manifest`, or `dynamic`.
    pub source: String,
    /// Units used in the window ending now.
    pub used: i64,
    /// When it was last set or used.
    pub updated_at: DateTime<Utc>,
}

impl From<&RateLimitRow> for RateLimit {
    fn from(row: &RateLimitRow) -> Self {
        Self {
            key: row.key.clone(),
            limit: row.limit_units,
            duration: duration_name(row.window_ms).map(str::to_owned),
            source: row.source.clone(),
            used: row.used,
            updated_at: row.updated_at,
        }
    }
}

/// The tenant's rate limits, by key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RateLimitList {
    /// The limits.
    pub rate_limits: Vec<RateLimit>,
}

/// Sets `{limit, duration}` (`duration`: `second|minute|hour|day`) for static key `key`; it
/// wins over a limit declared in a manifest. → the limit with its use now.
#[utoipa::path(put, path = "/api/v1/rate-limits/{key}", tag = "flow control",
    params(("key" = String, Path, description = "The static key")),
    request_body = SetRateLimit,
    responses((status = 200, description = "The limit with its use now", body = RateLimit)),
    security(("tenant_token" = [])))]
pub async fn set(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(key): Path<String>,
    extract::Json(body): extract::Json<SetRateLimit>,
) -> Result<Json<RateLimit>, ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_key",
            format!("a rate limit key must be 1 to {MAX_KEY_LEN} bytes without control characters"),
        ));
    }
    if body.limit == 0 || body.limit > i32::MAX as u32 {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("the limit must be between 1 and {}", i32::MAX),
        ));
    }
    let mut conn = state.db.pool.acquire().await?;
    rate_limit_set(
        &mut conn,
        tenant,
        &key,
        body.limit,
        body.duration.as_duration(),
    )
    .await?;
    let rows = rate_limits_list(&mut conn, tenant, MAX_LISTED).await?;
    let row = rows
        .iter()
        .find(|r| r.key == key)
        .ok_or_else(|| ApiError::not_found(format!("no rate limit `{key}`")))?;
    Ok(Json(RateLimit::from(row)))
}

/// `{rate_limits: [{key, limit, duration, source, used, updated_at}]}`, by key.
#[utoipa::path(get, path = "/api/v1/rate-limits", tag = "flow control",
    responses((status = 200, description = "The tenant's rate limits", body = RateLimitList)),
    security(("tenant_token" = [])))]
pub async fn list(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
) -> Result<Json<RateLimitList>, ApiError> {
    let mut conn = state.db.pool.acquire().await?;
    let rows = rate_limits_list(&mut conn, tenant, MAX_LISTED).await?;
    Ok(Json(RateLimitList {
        rate_limits: rows.iter().map(RateLimit::from).collect(),
    }))
}
