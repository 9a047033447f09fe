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
    sqlx::query_as(
        "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING
         RETURNING id, name, created_at",
    )
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
    sqlx::query_as("SELECT id, name, created_at FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The ids of every tenant (for operators' tools and the benchmarks).
pub async fn tenant_ids(conn: &mut PgConnection) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM tenants ORDER BY id")
        .fetch_all(conn)
        .await
}

/// Tenant `id`'s egress allowlist and ceiling (JSON arrays of patterns), if the tenant exists.
pub async fn tenant_egress(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(serde_json::Value, serde_json::Value)>, sqlx::Error> {
    sqlx::query_as("SELECT egress_allow, egress_ceiling FROM tenants WHERE id = $1")
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
    let updated = sqlx::query("UPDATE tenants SET egress_ceiling = $2 WHERE id = $1")
        .bind(id)
        .bind(ceiling)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    super::notify_ids(conn, super::CHANNEL_EGRESS, &[id]).await?;
    Ok(updated == 1)
}

/// Sets tenant `id`'s egress allowlist (checked against the ceiling by the caller, under the
/// row lock this takes). Nodes drop their cached policy of the tenant at commit.
pub async fn tenant_egress_allow_set(
    conn: &mut PgConnection,
    id: Uuid,
    allow: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tenants SET egress_allow = $2 WHERE id = $1")
        .bind(id)
        .bind(allow)
        .execute(&mut *conn)
        .await?;
    super::notify_ids(conn, super::CHANNEL_EGRESS, &[id]).await?;
    Ok(())
}

/// Tenant `id`'s egress ceiling, locked until the transaction ends (so an allowlist checked
/// against it cannot race a lowered ceiling).
pub async fn tenant_egress_ceiling_locked(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<serde_json::Value, sqlx::Error> {
    sqlx::query_scalar("SELECT egress_ceiling FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_one(conn)
        .await
}
