//! Quotas: `GET`/`PUT /api/v1/tenants/{id}/quotas` (admin) and `GET /api/v1/quotas` (a
//! tenant's own), and the pacing of each tenant's requests and uploads on this node.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::{Admin, Tenant};
use super::error::ApiError;
use super::extract::{self, Path};
use crate::db::quota::{
    TenantQuotasRow, tenant_executing, tenant_module_bytes, tenant_quotas, tenant_quotas_set,
    tenant_unfinished_runs,
};
use crate::quota::{QuotaExceeded, Quotas};

/// Body of `PUT /api/v1/tenants/{id}/quotas`: each quota a whole number, or null (or absent)
/// for the node's default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuotas {
    #[serde(default)]
    max_queued_runs: Option<i64>,
    #[serde(default)]
    max_executing: Option<i64>,
    #[serde(default)]
    max_module_bytes: Option<i64>,
    #[serde(default)]
    api_requests_per_second: Option<i64>,
    #[serde(default)]
    uploads_per_hour: Option<i64>,
}

/// A quota from a request: within `min..=max`, or a 400 naming it.
fn quota_field<T: TryFrom<i64>>(
    name: &str,
    value: Option<i64>,
    min: i64,
    max: i64,
) -> Result<Option<T>, ApiError> {
    value
        .map(|v| {
            (min..=max)
                .contains(&v)
                .then(|| T::try_from(v).ok())
                .flatten()
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_quota",
                        format!(
                            "`{name}` is a whole number from {min} to {max}, or null for the default"
                        ),
                    )
                })
        })
        .transpose()
}

impl SetQuotas {
    fn row(&self) -> Result<TenantQuotasRow, ApiError> {
        Ok(TenantQuotasRow {
            max_queued_runs: quota_field("max_queued_runs", self.max_queued_runs, 0, i64::MAX)?,
            max_executing: quota_field(
                "max_executing",
                self.max_executing,
                0,
                i64::from(i32::MAX),
            )?,
            max_module_bytes: quota_field("max_module_bytes", self.max_module_bytes, 0, i64::MAX)?,
            api_requests_per_second: quota_field(
                "api_requests_per_second",
                self.api_requests_per_second,
                1,
                1_000_000,
            )?,
            uploads_per_hour: quota_field("uploads_per_hour", self.uploads_per_hour, 0, 1_000_000)?,
        })
    }
}

/// A tenant's own quotas (`null`: the node's default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OwnQuotas {
    /// Most unfinished (queued or running) runs.
    pub max_queued_runs: Option<i64>,
    /// Most task runs executing at once across the fleet.
    pub max_executing: Option<i32>,
    /// Most bytes of stored modules.
    pub max_module_bytes: Option<i64>,
    /// API requests a second.
    pub api_requests_per_second: Option<i32>,
    /// Module uploads an hour.
    pub uploads_per_hour: Option<i32>,
}

/// What a tenant uses of its quotas now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuotaUse {
    /// Runs queued or running.
    pub unfinished_runs: i64,
    /// Task runs executing across the fleet.
    pub executing: i64,
    /// Bytes of stored modules.
    pub module_bytes: i64,
}

/// A tenant's quotas: its own, the node's defaults, those in force, and its use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuotasView {
    /// Tenant id.
    pub id: Uuid,
    /// Its own settings.
    pub own: OwnQuotas,
    /// The node's defaults (`null`: no limit).
    pub defaults: Quotas,
    /// In force: its own, else the default (`null`: no limit).
    pub effective: Quotas,
    /// Its use now.
    pub used: QuotaUse,
}

/// `{id, own, defaults, effective, used: {unfinished_runs, executing, module_bytes}}`.
async fn describe(state: &AppState, tenant: Uuid) -> Result<Json<QuotasView>, ApiError> {
    let mut conn = state.db.pool.acquire().await?;
    let own = tenant_quotas(&mut conn, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant `{tenant}`")))?;
    let defaults = state.db.quotas;
    let effective = defaults.over(&own);
    let unfinished = tenant_unfinished_runs(&mut conn, tenant).await?;
    let executing = tenant_executing(&mut conn, tenant).await?;
    let module_bytes = tenant_module_bytes(&mut conn, tenant).await?;
    Ok(Json(QuotasView {
        id: tenant,
        own: OwnQuotas {
            max_queued_runs: own.max_queued_runs,
            max_executing: own.max_executing,
            max_module_bytes: own.max_module_bytes,
            api_requests_per_second: own.api_requests_per_second,
            uploads_per_hour: own.uploads_per_hour,
        },
        defaults,
        effective,
        used: QuotaUse {
            unfinished_runs: unfinished,
            executing,
            module_bytes,
        },
    }))
}

/// Tenant `id`'s quotas (its own, the node's defaults, those in force) and what it uses.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/quotas", tag = "admin", params(("id" = String, Path, description = "The tenant")),
    responses((status = 200, description = "Its quotas and use", body = QuotasView)),
    security(("admin_token" = [])))]
pub async fn get_quotas(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Json<QuotasView>, ApiError> {
    let tenant = extract::parse_id("tenant", &tenant)?;
    describe(&state, tenant).await
}

/// The calling tenant's quotas and what it uses.
#[utoipa::path(get, path = "/api/v1/quotas", tag = "tenant",
    responses((status = 200, description = "The tenant's quotas and use", body = QuotasView)),
    security(("tenant_token" = [])))]
pub async fn own_quotas(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
) -> Result<Json<QuotasView>, ApiError> {
    describe(&state, tenant).await
}

/// Replaces tenant `id`'s own quotas (a field null or absent: the node's default): 200 as
/// `GET`. Starts and claims apply them at once; API and upload rates within the token cache's
/// lifetime on other nodes.
#[utoipa::path(put, path = "/api/v1/tenants/{id}/quotas", tag = "admin", params(("id" = String, Path, description = "The tenant")),
    request_body = SetQuotas,
    responses((status = 200, description = "Its quotas and use, as set", body = QuotasView)),
    security(("admin_token" = [])))]
pub async fn set_quotas(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    extract::Json(body): extract::Json<SetQuotas>,
) -> Result<Json<QuotasView>, ApiError> {
    let tenant = extract::parse_id("tenant", &tenant)?;
    let row = body.row()?;
    let mut tx = state.db.pool.begin().await?;
    if !tenant_quotas_set(&mut tx, tenant, &row).await? {
        return Err(ApiError::not_found(format!("no tenant `{tenant}`")));
    }
    tx.commit().await?;
    state.quota_cache.forget(tenant);
    describe(&state, tenant).await
}

/// Tenants' quotas in force, read at most once per token-cache lifetime.
#[derive(Debug, Default)]
pub(super) struct QuotaCache(Mutex<HashMap<Uuid, (Quotas, Instant)>>);

/// Most tenants whose quotas are cached; the cache is emptied when it grows past this.
const MAX_CACHED: usize = 100_000;

impl QuotaCache {
    fn get(&self, tenant: Uuid, ttl: Duration) -> Option<Quotas> {
        let cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(&tenant)
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(quotas, _)| *quotas)
    }

    fn put(&self, tenant: Uuid, quotas: Quotas) {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(tenant, (quotas, Instant::now()));
    }

    fn forget(&self, tenant: Uuid) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&tenant);
    }
}

impl AppState {
    /// The quotas in force for `tenant`.
    pub(super) async fn quotas_of(&self, tenant: Uuid) -> Result<Quotas, ApiError> {
        if let Some(quotas) = self.quota_cache.get(tenant, self.config.token_cache_ttl) {
            return Ok(quotas);
        }
        let mut conn = self.db.pool.acquire().await?;
        let own = tenant_quotas(&mut conn, tenant).await?.unwrap_or_default();
        let quotas = self.db.quotas.over(&own);
        self.quota_cache.put(tenant, quotas);
        Ok(quotas)
    }

    /// Admits one request of `tenant` under its `api_requests_per_second`, or refuses it with
    /// 429 and when to come back.
    pub(super) async fn pace_request(&self, tenant: Uuid) -> Result<(), ApiError> {
        let Some(per_second) = self.quotas_of(tenant).await?.api_requests_per_second else {
            return Ok(());
        };
        let rate = f64::from(per_second);
        self.request_buckets
            .take(tenant, rate, rate)
            .map_err(|retry_after| {
                ApiError::quota(&QuotaExceeded::ApiRate {
                    per_second,
                    retry_after,
                })
            })
    }

    /// Admits one module upload of `tenant` under its `uploads_per_hour`, or refuses it with
    /// 429 and when to come back.
    pub(super) async fn pace_upload(&self, tenant: Uuid) -> Result<(), ApiError> {
        let Some(per_hour) = self.quotas_of(tenant).await?.uploads_per_hour else {
            return Ok(());
        };
        let refused = |retry_after| {
            ApiError::quota(&QuotaExceeded::Uploads {
                per_hour,
                retry_after,
            })
        };
        if per_hour == 0 {
            return Err(refused(Duration::from_secs(3_600)));
        }
        let rate = f64::from(per_hour) / 3_600.0;
        let burst = (f64::from(per_hour) / 10.0).max(1.0);
        self.upload_buckets
            .take(tenant, rate, burst)
            .map_err(refused)
    }
}
