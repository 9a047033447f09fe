//! Statements on `secrets`: sealed values only (see `crate::secrets`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::secrets::Sealed;

/// A secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SecretRow {
    /// Its name.
    pub name: String,
    /// The workflows that may read it; `None`: all.
    pub workflows: Option<Vec<String>>,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

/// A secret as stored, sealed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SealedSecretRow {
    /// Its name.
    pub name: String,
    /// Its nonce.
    pub nonce: Vec<u8>,
    /// Its ciphertext.
    pub ciphertext: Vec<u8>,
    /// The workflows that may read it; `None`: all.
    pub workflows: Option<Vec<String>>,
}

impl SealedSecretRow {
    /// The sealed value.
    pub fn sealed(&self) -> Sealed {
        Sealed {
            nonce: self.nonce.clone(),
            ciphertext: self.ciphertext.clone(),
        }
    }
}

/// Sets secret `name` of `tenant_id`; nodes drop their copy of the tenant's secrets at commit.
pub async fn secret_set(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    name: &str,
    sealed: &Sealed,
    workflows: Option<&[String]>,
) -> Result<SecretRow, sqlx::Error> {
    let row = sqlx::query_as(sql!(
        "INSERT INTO secrets (tenant_id, name, nonce, ciphertext, workflows)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, name) DO UPDATE
             SET nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext,
                 workflows = EXCLUDED.workflows, updated_at = now()
         RETURNING name, workflows, updated_at"
    ))
    .bind(tenant_id)
    .bind(name)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(workflows)
    .fetch_one(&mut *conn)
    .await?;
    super::notify_ids(conn, super::CHANNEL_SECRETS, &[tenant_id]).await?;
    Ok(row)
}

/// The tenant's secrets by name, without values.
pub async fn secrets_list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Vec<SecretRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT name, workflows, updated_at FROM secrets WHERE tenant_id = $1 ORDER BY name"
    ))
    .bind(tenant_id)
    .fetch_all(conn)
    .await
}

/// Deletes secret `name`; `false` if there was none.
pub async fn secret_delete(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query(sql!(
        "DELETE FROM secrets WHERE tenant_id = $1 AND name = $2"
    ))
    .bind(tenant_id)
    .bind(name)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    super::notify_ids(conn, super::CHANNEL_SECRETS, &[tenant_id]).await?;
    Ok(deleted == 1)
}

/// Every sealed secret of the tenant, for a node to open.
pub async fn secrets_sealed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Vec<SealedSecretRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT name, nonce, ciphertext, workflows FROM secrets WHERE tenant_id = $1 ORDER BY name"
    ))
    .bind(tenant_id)
    .fetch_all(conn)
    .await
}

/// Whether any tenant has a secret (a node without a key must then refuse to start).
pub async fn secrets_exist(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(sql!("SELECT EXISTS (SELECT 1 FROM secrets)"))
        .fetch_one(conn)
        .await
}
