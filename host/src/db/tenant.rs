//! `tenants`: the isolated customers every other row belongs to.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TenantRow {
    /// Tenant id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// Creates tenant `name` with `id`; `None` if the name is taken.
pub async fn tenant_create(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING
         RETURNING id, name, created_at"
    ))
    .bind(id)
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// Tenant `id`, if it exists.
pub async fn tenant_get(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT id, name, created_at FROM tenants WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The ids of every tenant (for operators' tools and the benchmarks).
pub async fn tenant_ids(conn: &mut PgConnection) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(sql!("SELECT id FROM tenants ORDER BY id"))
        .fetch_all(conn)
        .await
}

/// What a node needs of a tenant's settings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantSettingsRow {
    /// Egress allowlist (JSON array of patterns).
    pub egress_allow: serde_json::Value,
    /// Egress ceiling set by the operator (JSON array of patterns).
    pub egress_ceiling: serde_json::Value,
    /// Share of slots and guest CPU when a node is saturated.
    pub weight: i32,
}

/// Tenant `id`'s settings, if the tenant exists.
pub async fn tenant_settings(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<TenantSettingsRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT egress_allow, egress_ceiling, weight FROM tenants WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Sets tenant `id`'s weight (admin); `false` if there is no such tenant. Nodes drop their
/// cached settings of the tenant at commit.
pub async fn tenant_weight_set(
    conn: &mut PgConnection,
    id: Uuid,
    weight: i32,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(sql!("UPDATE tenants SET weight = $2 WHERE id = $1"))
        .bind(id)
        .bind(weight)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    super::notify_ids(conn, super::CHANNEL_TENANT, &[id]).await?;
    Ok(updated == 1)
}

/// Sets tenant `id`'s retention in days (`None`: the nodes' default); `false` if there is no
/// such tenant.
pub async fn tenant_retention_set(
    conn: &mut PgConnection,
    id: Uuid,
    days: Option<i32>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(sql!("UPDATE tenants SET retention_days = $2 WHERE id = $1"))
        .bind(id)
        .bind(days)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(updated == 1)
}

/// A tenant's settings, as an operator sees them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantAdminRow {
    /// Tenant id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Share of slots and guest CPU.
    pub weight: i32,
    /// Days finished runs are kept (`None`: the nodes' default).
    pub retention_days: Option<i32>,
    /// Egress ceiling (JSON array of patterns).
    pub egress_ceiling: serde_json::Value,
}

/// Tenant `id` with its settings, if it exists.
pub async fn tenant_admin_get(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<TenantAdminRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT id, name, created_at, weight, retention_days, egress_ceiling
         FROM tenants WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Tenant `id`'s egress allowlist and ceiling (JSON arrays of patterns), if the tenant exists.
pub async fn tenant_egress(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(serde_json::Value, serde_json::Value)>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT egress_allow, egress_ceiling FROM tenants WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Sets tenant `id`'s egress ceiling (admin); `false` if there is no such tenant. Nodes drop
/// their cached policy of the tenant at commit.
pub async fn tenant_egress_ceiling_set(
    conn: &mut PgConnection,
    id: Uuid,
    ceiling: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(sql!("UPDATE tenants SET egress_ceiling = $2 WHERE id = $1"))
        .bind(id)
        .bind(ceiling)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    super::notify_ids(conn, super::CHANNEL_TENANT, &[id]).await?;
    Ok(updated == 1)
}

/// Sets tenant `id`'s egress allowlist (checked against the ceiling by the caller, under the
/// row lock this takes). Nodes drop their cached policy of the tenant at commit.
pub async fn tenant_egress_allow_set(
    conn: &mut PgConnection,
    id: Uuid,
    allow: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql!("UPDATE tenants SET egress_allow = $2 WHERE id = $1"))
        .bind(id)
        .bind(allow)
        .execute(&mut *conn)
        .await?;
    super::notify_ids(conn, super::CHANNEL_TENANT, &[id]).await?;
    Ok(())
}

/// Tenant `id`'s egress ceiling, locked until the transaction ends (so an allowlist checked
/// against it cannot race a lowered ceiling).
pub async fn tenant_egress_ceiling_locked(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<serde_json::Value, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "SELECT egress_ceiling FROM tenants WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_one(conn)
    .await
}
