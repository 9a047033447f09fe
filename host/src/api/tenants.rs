//! Admin endpoints: `POST /api/v1/tenants`, `POST /api/v1/tenants/{id}/tokens`,
//! `DELETE /api/v1/tokens/{id}`, `GET /api/v1/tenants/{id}`, `PUT /api/v1/tenants/{id}/weight`,
//! `PUT /api/v1/tenants/{id}/retention`. Tokens are returned once, here, and never again.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::auth::{Admin, new_token};
use super::error::ApiError;
use super::extract::{self, Body};
use crate::db::tenant::{
    tenant_admin_get, tenant_create, tenant_get, tenant_retention_set, tenant_weight_set,
};
use crate::db::token::{NewTokenParams, token_create, token_revoke};

/// Longest tenant or token name.
const MAX_NAME_LEN: usize = 128;

/// Body of `POST /api/v1/tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    name: String,
}

/// Body of `PUT /api/v1/tenants/{id}/weight`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetWeight {
    weight: i64,
}

/// Body of `PUT /api/v1/tenants/{id}/retention`: `days` null returns to the default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRetention {
    days: Option<i64>,
}

/// Longest retention, in days.
const MAX_RETENTION_DAYS: i64 = 3_650;

/// Highest tenant weight.
const MAX_WEIGHT: i64 = 1_000;

/// Body of `POST /api/v1/tenants/{id}/tokens` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    #[serde(default)]
    name: String,
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
pub async fn create_tenant(
    _: Admin,
    State(state): State<AppState>,
    extract::Json(body): extract::Json<CreateTenant>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
        Json(json!({
            "id": tenant.id,
            "name": tenant.name,
            "created_at": tenant.created_at,
            "token": token,
            "token_id": token_id,
        })),
    ))
}

/// Creates another token of tenant `id`: 201 `{id, tenant_id, name, token, created_at}`.
pub async fn create_token(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    Body(bytes): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
        Json(json!({
            "id": id,
            "tenant_id": tenant_id,
            "name": body.name,
            "token": token,
            "created_at": created_at,
        })),
    ))
}

/// Sets tenant `id`'s weight, its share of slots and guest CPU when nodes are saturated
/// (1–1000, default 1): 200 `{id, weight}`. Nodes apply it to attempts that start after.
pub async fn set_weight(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    extract::Json(body): extract::Json<SetWeight>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "id": tenant_id, "weight": weight })))
}

/// Tenant `id` and its settings: 200 `{id, name, created_at, weight, retention_days,
/// egress_ceiling}` (`retention_days` null: the nodes' default).
pub async fn get_tenant(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = extract::parse_id("tenant", &tenant_id)?;
    let mut conn = state.db.pool.acquire().await?;
    let tenant = tenant_admin_get(&mut conn, tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant `{tenant_id}`")))?;
    Ok(Json(json!({
        "id": tenant.id,
        "name": tenant.name,
        "created_at": tenant.created_at,
        "weight": tenant.weight,
        "retention_days": tenant.retention_days,
        "egress_ceiling": tenant.egress_ceiling,
    })))
}

/// Sets how long tenant `id`'s finished runs and events are kept (1–3650 days, or null for
/// the nodes' default): 200 `{id, retention_days}`.
pub async fn set_retention(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    extract::Json(body): extract::Json<SetRetention>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "id": tenant_id, "retention_days": days })))
}

/// Revokes token `id`: 204, or 404 if there is no such unrevoked token.
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
