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
