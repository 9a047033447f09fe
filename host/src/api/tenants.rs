//! Admin endpoints: `POST /api/v1/tenants`, `POST /api/v1/tenants/{id}/tokens`,
//! `DELETE /api/v1/tokens/{id}`, `GET /api/v1/tenants/{id}`, `PUT /api/v1/tenants/{id}/weight`,
//! `PUT /api/v1/tenants/{id}/retention`. Tokens are returned once, here, and never again.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::{Admin, new_token};
use super::error::{ApiError, ErrorBody};
use super::extract::{self, Body, Path};
use crate::db::tenant::{
    tenant_admin_get, tenant_create, tenant_get, tenant_retention_set, tenant_weight_set,
};
use crate::db::token::{NewTokenParams, token_create, token_revoke};

/// A tenant just created, with its first token (shown once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TenantCreated {
    /// Tenant id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its first token: keep it, it is not shown again.
    pub token: String,
    /// The token's id (to revoke it).
    pub token_id: Uuid,
}

/// A token just created (shown once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    /// Token id (to revoke it).
    pub id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// Its name.
    pub name: String,
    /// The token: keep it, it is not shown again.
    pub token: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A tenant and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TenantSettings {
    /// Tenant id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its share of slots and CPU when nodes are saturated.
    pub weight: i32,
    /// Days finished runs are kept; `null`: the nodes' default.
    pub retention_days: Option<i32>,
    /// Its egress ceiling: patterns its allowlist must stay within.
    #[schema(value_type = Vec<Object>)]
    pub egress_ceiling: Value,
}

/// A tenant's weight, as set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WeightSet {
    /// Tenant id.
    pub id: Uuid,
    /// Its weight.
    pub weight: i32,
}

/// A tenant's retention, as set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetentionSet {
    /// Tenant id.
    pub id: Uuid,
    /// Days; `null`: the nodes' default.
    pub retention_days: Option<i32>,
}

/// Longest tenant or token name.
const MAX_NAME_LEN: usize = 128;

/// Body of `POST /api/v1/tenants`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Its name, unique.
    pub name: String,
}

/// Body of `PUT /api/v1/tenants/{id}/weight`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetWeight {
    weight: i64,
}

/// Body of `PUT /api/v1/tenants/{id}/retention`: `days` null returns to the default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRetention {
    days: Option<i64>,
}

/// Longest retention, in days.
const MAX_RETENTION_DAYS: i64 = 3_650;

/// Highest tenant weight.
const MAX_WEIGHT: i64 = 1_000;

/// Body of `POST /api/v1/tenants/{id}/tokens` (optional).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A label for it.
    #[serde(default)]
    pub name: String,
}

fn check_name(what: &str, name: &str, required: bool) -> Result<(), ApiError> {
    if required && name.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("the {what} name must not be empty"),
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("the {what} name is longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Creates a tenant and its first token: 201 `{id, name, created_at, token, token_id}`.
#[utoipa::path(post, path = "/api/v1/tenants", tag = "admin", request_body = CreateTenant,
    responses((status = 201, description = "Created, with its first token", body = TenantCreated),
        (status = 409, description = "The name is taken", body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn create_tenant(
    _: Admin,
    State(state): State<AppState>,
    extract::Json(body): extract::Json<CreateTenant>,
) -> Result<(StatusCode, Json<TenantCreated>), ApiError> {
    check_name("tenant", &body.name, true)?;
    let (token, hash) = new_token()?;
    let token_id = Uuid::now_v7();
    let mut tx = state.db.pool.begin().await?;
    let tenant = tenant_create(&mut tx, Uuid::now_v7(), &body.name)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "tenant_exists",
                format!("a tenant named `{}` already exists", body.name),
            )
        })?;
    token_create(
        &mut tx,
        &NewTokenParams {
            tenant_id: tenant.id,
            id: token_id,
            name: "initial",
            hash: &hash,
        },
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(TenantCreated {
            id: tenant.id,
            name: tenant.name,
            created_at: tenant.created_at,
            token,
            token_id,
        }),
    ))
}

/// Creates another token of tenant `id`: 201 `{id, tenant_id, name, token, created_at}`.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/tokens", tag = "admin", params(("id" = String, Path, description = "The tenant")),
    request_body(content = Option<CreateToken>, description = "Optional: the token's name"),
    responses((status = 201, description = "Created", body = TokenCreated)),
    security(("admin_token" = [])))]
pub async fn create_token(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    Body(bytes): Body,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let body: CreateToken = if bytes.iter().all(u8::is_ascii_whitespace) {
        CreateToken::default()
    } else {
        extract::parse_json(&bytes)?
    };
    check_name("token", &body.name, false)?;
    let tenant_id = extract::parse_id("tenant", &tenant_id)?;
    let mut conn = state.db.pool.acquire().await?;
    if tenant_get(&mut conn, tenant_id).await?.is_none() {
        return Err(ApiError::not_found(format!("no tenant `{tenant_id}`")));
    }
    let (token, hash) = new_token()?;
    let id = Uuid::now_v7();
    let created_at = token_create(
        &mut conn,
        &NewTokenParams {
            tenant_id,
            id,
            name: &body.name,
            hash: &hash,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            id,
            tenant_id,
            name: body.name,
            token,
            created_at,
        }),
    ))
}

/// Sets tenant `id`'s weight, its share of slots and guest CPU when nodes are saturated
/// (1–1000, default 1): 200 `{id, weight}`. Nodes apply it to attempts that start after.
#[utoipa::path(put, path = "/api/v1/tenants/{id}/weight", tag = "admin", params(("id" = String, Path, description = "The tenant")),
    request_body = SetWeight,
    responses((status = 200, description = "Set", body = WeightSet)),
    security(("admin_token" = [])))]
pub async fn set_weight(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    extract::Json(body): extract::Json<SetWeight>,
) -> Result<Json<WeightSet>, ApiError> {
    let tenant_id = extract::parse_id("tenant", &tenant_id)?;
    let weight = i32::try_from(body.weight)
        .ok()
        .filter(|w| (1..=MAX_WEIGHT).contains(&i64::from(*w)))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_weight",
                format!("a weight is a whole number from 1 to {MAX_WEIGHT}"),
            )
        })?;
    let mut tx = state.db.pool.begin().await?;
    if !tenant_weight_set(&mut tx, tenant_id, weight).await? {
        return Err(ApiError::not_found(format!("no tenant `{tenant_id}`")));
    }
    tx.commit().await?;
    Ok(Json(WeightSet {
        id: tenant_id,
        weight,
    }))
}

/// Tenant `id` and its settings: 200 `{id, name, created_at, weight, retention_days,
/// egress_ceiling}` (`retention_days` null: the nodes' default).
#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "admin", params(("id" = String, Path, description = "The tenant")),
    responses((status = 200, description = "The tenant and its settings", body = TenantSettings)),
    security(("admin_token" = [])))]
pub async fn get_tenant(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
) -> Result<Json<TenantSettings>, ApiError> {
    let tenant_id = extract::parse_id("tenant", &tenant_id)?;
    let mut conn = state.db.pool.acquire().await?;
    let tenant = tenant_admin_get(&mut conn, tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant `{tenant_id}`")))?;
    Ok(Json(TenantSettings {
        id: tenant.id,
        name: tenant.name,
        created_at: tenant.created_at,
        weight: tenant.weight,
        retention_days: tenant.retention_days,
        egress_ceiling: tenant.egress_ceiling,
    }))
}

/// Sets how long tenant `id`'s finished runs and events are kept (1–3650 days, or null for
/// the nodes' default): 200 `{id, retention_days}`.
#[utoipa::path(put, path = "/api/v1/tenants/{id}/retention", tag = "admin", params(("id" = String, Path, description = "The tenant")),
    request_body = SetRetention,
    responses((status = 200, description = "Set", body = RetentionSet)),
    security(("admin_token" = [])))]
pub async fn set_retention(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    extract::Json(body): extract::Json<SetRetention>,
) -> Result<Json<RetentionSet>, ApiError> {
    let tenant_id = extract::parse_id("tenant", &tenant_id)?;
    let days = match body.days {
        None => None,
        Some(days) => Some(
            i32::try_from(days)
                .ok()
                .filter(|d| (1..=MAX_RETENTION_DAYS).contains(&i64::from(*d)))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_retention",
                        format!("a retention is a whole number of days from 1 to {MAX_RETENTION_DAYS}, or null for the default"),
                    )
                })?,
        ),
    };
    let mut conn = state.db.pool.acquire().await?;
    if !tenant_retention_set(&mut conn, tenant_id, days).await? {
        return Err(ApiError::not_found(format!("no tenant `{tenant_id}`")));
    }
    Ok(Json(RetentionSet {
        id: tenant_id,
        retention_days: days,
    }))
}

/// Revokes token `id`: 204, or 404 if there is no such unrevoked token.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "admin",
    params(("id" = String, Path, description = "The token")),
    responses((status = 204, description = "Revoked")),
    security(("admin_token" = [])))]
pub async fn revoke_token(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = extract::parse_id("token", &id)?;
    let mut conn = state.db.pool.acquire().await?;
    let hash = token_revoke(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no token `{id}`")))?;
    state.forget_token(&hash);
    Ok(StatusCode::NO_CONTENT)
}
