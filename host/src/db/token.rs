//! `tokens`: bearer tokens of tenants, stored as sha256 hashes, revocable.
//!
//! The token decides the tenant, so `token_tenant` looks a hash up without a tenant id, and
//! the admin's `token_revoke` names a token by its (globally unique) id alone.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A new token to store.
#[derive(Debug, Clone)]
pub struct NewTokenParams<'a> {
    /// Owner.
    pub tenant_id: Uuid,
    /// Token id.
    pub id: Uuid,
    /// A human label.
    pub name: &'a str,
    /// sha256 of the token.
    pub hash: &'a [u8],
}

/// Stores a token.
pub async fn token_create(
    conn: &mut PgConnection,
    params: &NewTokenParams<'_>,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "INSERT INTO tokens (tenant_id, id, name, hash) VALUES ($1, $2, $3, $4)
         RETURNING created_at"
    ))
    .bind(params.tenant_id)
    .bind(params.id)
    .bind(params.name)
    .bind(params.hash)
    .fetch_one(conn)
    .await
}

/// The tenant of the unrevoked token whose sha256 is `hash`.
pub async fn token_tenant(
    conn: &mut PgConnection,
    hash: &[u8],
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "SELECT tenant_id FROM tokens WHERE hash = $1 AND revoked_at IS NULL"
    ))
    .bind(hash)
    .fetch_optional(conn)
    .await
}

/// Revokes token `id`; returns its hash, or `None` if there is no such unrevoked token.
pub async fn token_revoke(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "UPDATE tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING hash"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}
