//! Outbound HTTP allowlists: `PUT /api/v1/tenants/{id}/egress` (admin) sets a tenant's
//! ceiling; `PUT /api/v1/egress` sets the tenant's own allowlist, every pattern within the
//! ceiling; `GET /api/v1/egress` shows both. Patterns: `host[:port]` strings or
//! `{host, ports?, schemes?, methods?}` objects (see `crate::egress`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::{Admin, Tenant};
use super::error::ApiError;
use super::extract::{self, Path};
use crate::db::tenant::{
    tenant_egress, tenant_egress_allow_set, tenant_egress_ceiling_locked, tenant_egress_ceiling_set,
};
use crate::egress::{EgressPattern, EgressPolicy};

/// Most patterns in one list.
const MAX_PATTERNS: usize = 256;

/// Body of both `PUT`s.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEgress {
    /// Patterns: `"host[:port]"` strings (`*.` wildcards) or `{host, ports?, schemes?,
    /// methods?}` objects.
    #[schema(value_type = Vec<Object>)]
    allow: Vec<EgressPattern>,
}

/// A tenant's egress ceiling, as set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Ceiling {
    /// The tenant.
    pub tenant: Uuid,
    /// The patterns its allowlist must stay within.
    #[schema(value_type = Vec<Object>)]
    pub ceiling: Value,
}

/// A tenant's egress allowlist and the admin's ceiling over it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Egress {
    /// Hosts its tasks may call.
    #[schema(value_type = Vec<Object>)]
    pub allow: Value,
    /// The admin's ceiling.
    #[schema(value_type = Vec<Object>)]
    pub ceiling: Value,
}

fn patterns_json(patterns: &[EgressPattern]) -> Value {
    serde_json::to_value(patterns).unwrap_or_else(|_| json!([]))
}

fn check_size(patterns: &[EgressPattern]) -> Result<(), ApiError> {
    if patterns.len() > MAX_PATTERNS {
        return Err(ApiError::bad_request(
            "too_many_patterns",
            format!("at most {MAX_PATTERNS} patterns, got {}", patterns.len()),
        ));
    }
    Ok(())
}

/// `PUT /api/v1/tenants/{id}/egress` (admin) `{allow}`: the tenant's ceiling. → `{tenant,
/// ceiling}`. A lowered ceiling applies at once: a request must match both lists.
#[utoipa::path(put, path = "/api/v1/tenants/{id}/egress", tag = "admin",
    params(("id" = String, Path, description = "The tenant")),
    request_body = SetEgress,
    responses((status = 200, description = "Set", body = Ceiling)),
    security(("admin_token" = [])))]
pub async fn set_ceiling(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    extract::Json(body): extract::Json<SetEgress>,
) -> Result<Json<Ceiling>, ApiError> {
    let id = extract::parse_id("tenant", &id)?;
    check_size(&body.allow)?;
    let ceiling = patterns_json(&body.allow);
    let mut tx = state.db.pool.begin().await?;
    if !tenant_egress_ceiling_set(&mut tx, id, &ceiling).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_tenant",
            format!("no tenant {id}"),
        ));
    }
    tx.commit().await?;
    Ok(Json(Ceiling {
        tenant: id,
        ceiling,
    }))
}

/// `PUT /api/v1/egress` `{allow}`: this tenant's allowlist; 400 `outside_ceiling` naming the
/// first pattern the admin's ceiling does not cover. → `{allow, ceiling}`.
#[utoipa::path(put, path = "/api/v1/egress", tag = "egress", request_body = SetEgress,
    responses((status = 200, description = "Set", body = Egress)),
    security(("tenant_token" = [])))]
pub async fn set_allow(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    extract::Json(body): extract::Json<SetEgress>,
) -> Result<Json<Egress>, ApiError> {
    check_size(&body.allow)?;
    let mut tx = state.db.pool.begin().await?;
    let ceiling = tenant_egress_ceiling_locked(&mut tx, tenant).await?;
    let ceiling: Vec<EgressPattern> = serde_json::from_value(ceiling).unwrap_or_default();
    if let Some(outside) = EgressPolicy::outside_ceiling(&body.allow, &ceiling) {
        let pattern = serde_json::to_string(outside).unwrap_or_default();
        return Err(ApiError::bad_request(
            "outside_ceiling",
            format!(
                "{pattern} is outside this tenant's egress ceiling {}: ask the operator to widen it",
                patterns_json(&ceiling)
            ),
        ));
    }
    let allow = patterns_json(&body.allow);
    tenant_egress_allow_set(&mut tx, tenant, &allow).await?;
    tx.commit().await?;
    Ok(Json(Egress {
        allow,
        ceiling: patterns_json(&ceiling),
    }))
}

/// `GET /api/v1/egress` → `{allow, ceiling}`.
#[utoipa::path(get, path = "/api/v1/egress", tag = "egress",
    responses((status = 200, description = "The allowlist and the ceiling", body = Egress)),
    security(("tenant_token" = [])))]
pub async fn get(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
) -> Result<Json<Egress>, ApiError> {
    let mut conn = state.db.pool.acquire().await?;
    let (allow, ceiling) = tenant_egress(&mut conn, tenant)
        .await?
        .unwrap_or_else(|| (json!([]), json!([])));
    Ok(Json(Egress { allow, ceiling }))
}
