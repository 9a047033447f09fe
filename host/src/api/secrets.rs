//! Secrets: `PUT /api/v1/secrets/{name}` `{value, workflows?}` stores one (write-only: no
//! endpoint ever returns a value), `GET /api/v1/secrets` lists names, readers and when each was
//! set, `DELETE /api/v1/secrets/{name}` removes one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::extract;
use crate::db::secret::{SecretRow, secret_delete, secret_set, secrets_list};
use crate::secrets::{MAX_VALUE_LEN, valid_name};

/// Body of `PUT /api/v1/secrets/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    value: String,
    /// The workflows that may read it; absent: every workflow of the tenant.
    #[serde(default)]
    workflows: Option<Vec<String>>,
}

fn secret_json(row: &SecretRow) -> Value {
    json!({"name": row.name, "workflows": row.workflows, "updated_at": row.updated_at})
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if !valid_name(name) {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!(
                "`{name}` is not a secret name: tasks read secrets as environment variables, so \
                 a name is a letter or `_` then letters, digits or `_` (at most {} bytes)",
                crate::secrets::MAX_NAME_LEN
            ),
        ));
    }
    Ok(())
}

/// Stores secret `name` → `{name, workflows, updated_at}` (never the value).
pub async fn set(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(name): Path<String>,
    extract::Json(body): extract::Json<SetSecret>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    if body.value.len() > MAX_VALUE_LEN {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!("a secret's value is at most {MAX_VALUE_LEN} bytes"),
        ));
    }
    if body.value.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_value",
            "a secret's value must not be empty",
        ));
    }
    if let Some(workflows) = &body.workflows
        && (workflows.is_empty() || workflows.iter().any(String::is_empty))
    {
        return Err(ApiError::bad_request(
            "invalid_workflows",
            "`workflows` lists workflow names (omit it for every workflow)",
        ));
    }
    let Some(keys) = &state.config.secrets else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_secret_key",
            "this node has no HATCHERY_SECRET_KEY, so it cannot encrypt secrets",
        ));
    };
    let sealed = keys
        .seal(tenant, &name, &body.value)
        .map_err(|e| ApiError::internal("cannot seal the secret", e))?;
    let mut tx = state.db.pool.begin().await?;
    let row = secret_set(&mut tx, tenant, &name, &sealed, body.workflows.as_deref()).await?;
    tx.commit().await?;
    Ok(Json(secret_json(&row)))
}

/// `GET /api/v1/secrets` → `{secrets: [{name, workflows, updated_at}]}`.
pub async fn list(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.db.pool.acquire().await?;
    let rows = secrets_list(&mut conn, tenant).await?;
    Ok(Json(
        json!({"secrets": rows.iter().map(secret_json).collect::<Vec<_>>()}),
    ))
}

/// `DELETE /api/v1/secrets/{name}` → 204, or 404.
pub async fn delete(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.db.pool.begin().await?;
    let deleted = secret_delete(&mut tx, tenant, &name).await?;
    tx.commit().await?;
    if !deleted {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_secret",
            format!("no secret `{name}`"),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}
