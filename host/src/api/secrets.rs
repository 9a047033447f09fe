//! Secrets: `PUT /api/v1/secrets/{name}` `{value, workflows?}` stores one (write-only: no
//! endpoint ever returns a value), `GET /api/v1/secrets` lists names, readers and when each was
//! set, `DELETE /api/v1/secrets/{name}` removes one.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::Tenant;
use super::error::{ApiError, ErrorBody};
use super::extract::{self, Path};
use crate::db::secret::{SecretRow, secret_delete, secret_set, secrets_list};
use crate::secrets::{MAX_VALUE_LEN, valid_name};

/// Body of `PUT /api/v1/secrets/{name}`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    /// The value: sealed at rest, never shown again.
    pub value: String,
    /// The workflows that may read it; absent: every workflow of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflows: Option<Vec<String>>,
}

/// A stored secret: its name and readers, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Secret {
    /// Its name (the environment variable tasks read).
    pub name: String,
    /// The workflows that may read it; `null`: every workflow of the tenant.
    pub workflows: Option<Vec<String>>,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

impl From<&SecretRow> for Secret {
    fn from(row: &SecretRow) -> Self {
        Self {
            name: row.name.clone(),
            workflows: row.workflows.clone(),
            updated_at: row.updated_at,
        }
    }
}

/// The tenant's secrets, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretList {
    /// The secrets.
    pub secrets: Vec<Secret>,
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
#[utoipa::path(put, path = "/api/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path, description = "The secret")),
    request_body = SetSecret,
    responses((status = 200, description = "Stored (its value is never shown)", body = Secret),
        (status = 409, description = "The node has no secret key to seal it with", body = ErrorBody)),
    security(("tenant_token" = [])))]
pub async fn set(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(name): Path<String>,
    extract::Json(body): extract::Json<SetSecret>,
) -> Result<Json<Secret>, ApiError> {
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
    Ok(Json(Secret::from(&row)))
}

/// `GET /api/v1/secrets` → `{secrets: [{name, workflows, updated_at}]}`.
#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets",
    responses((status = 200, description = "Names and readers", body = SecretList)),
    security(("tenant_token" = [])))]
pub async fn list(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
) -> Result<Json<SecretList>, ApiError> {
    let mut conn = state.db.pool.acquire().await?;
    let rows = secrets_list(&mut conn, tenant).await?;
    Ok(Json(SecretList {
        secrets: rows.iter().map(Secret::from).collect(),
    }))
}

/// `DELETE /api/v1/secrets/{name}` → 204, or 404.
#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path, description = "The secret")),
    responses((status = 204, description = "Deleted")),
    security(("tenant_token" = [])))]
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
