//! Tenant quotas as stored, and what enforcing them reads: unfinished runs, module bytes, the
//! tenants capped on executing task runs (policy in `crate::quota`).

use sqlx::PgConnection;
use uuid::Uuid;

/// A tenant's own quotas; `None` takes the node's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct TenantQuotasRow {
    /// Most unfinished workflow runs.
    pub max_queued_runs: Option<i64>,
    /// Most task runs executing across the fleet.
    pub max_executing: Option<i32>,
    /// Most bytes of stored modules.
    pub max_module_bytes: Option<i64>,
    /// API requests a second.
    pub api_requests_per_second: Option<i32>,
    /// Module uploads an hour.
    pub uploads_per_hour: Option<i32>,
}

/// Tenant `id`'s own quotas, if the tenant exists.
pub async fn tenant_quotas(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<TenantQuotasRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT max_queued_runs, max_executing, max_module_bytes, api_requests_per_second,
                uploads_per_hour
         FROM tenants WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Replaces tenant `id`'s own quotas (admin); `false` if there is no such tenant. Nodes drop
/// what they cached of the tenant at commit.
pub async fn tenant_quotas_set(
    conn: &mut PgConnection,
    id: Uuid,
    quotas: &TenantQuotasRow,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(sql!(
        "UPDATE tenants SET max_queued_runs = $2, max_executing = $3, max_module_bytes = $4,
                api_requests_per_second = $5, uploads_per_hour = $6
         WHERE id = $1"
    ))
    .bind(id)
    .bind(quotas.max_queued_runs)
    .bind(quotas.max_executing)
    .bind(quotas.max_module_bytes)
    .bind(quotas.api_requests_per_second)
    .bind(quotas.uploads_per_hour)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    super::notify_ids(conn, super::CHANNEL_TENANT, &[id]).await?;
    Ok(updated == 1)
}

/// Holds tenant `id`'s quota lock until the transaction ends: starts and uploads that check a
/// quota take it first, so two of them never both see room for the same last unit.
pub async fn tenant_quota_lock(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(sql!(
        "INSERT INTO tenant_quota_locks (tenant_id) VALUES ($1)
         ON CONFLICT (tenant_id) DO UPDATE SET tenant_id = excluded.tenant_id"
    ))
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// How many of tenant `id`'s workflow runs are unfinished (queued or running). Run after
/// `tenant_quota_lock` in its own statement, it sees every start committed before the lock.
pub async fn tenant_unfinished_runs(conn: &mut PgConnection, id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "SELECT coalesce(sum(runs), 0)::bigint FROM tenant_unfinished_runs WHERE tenant_id = $1"
    ))
    .bind(id)
    .fetch_one(conn)
    .await
}

/// Folds every tenant's unfinished-run changes into one row each (the vacuum service, every
/// few seconds); returns the rows removed. Changes appended meanwhile are kept as they are.
pub async fn tenant_unfinished_runs_compact(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    let removed: i64 = sqlx::query_scalar(sql!(
        "WITH gone AS (
             DELETE FROM tenant_unfinished_runs
             WHERE tenant_id IN (SELECT tenant_id FROM tenant_unfinished_runs
                                 GROUP BY tenant_id HAVING count(*) > 1)
             RETURNING tenant_id, runs
         ),
         folded AS (
             INSERT INTO tenant_unfinished_runs (tenant_id, runs)
             SELECT tenant_id, sum(runs) FROM gone GROUP BY tenant_id HAVING sum(runs) <> 0
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM folded)"
    ))
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(removed).unwrap_or(0))
}

/// The bytes of tenant `id`'s stored modules.
pub async fn tenant_module_bytes(conn: &mut PgConnection, id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "SELECT coalesce(sum(octet_length(bytes)), 0)::bigint FROM modules WHERE tenant_id = $1"
    ))
    .bind(id)
    .fetch_one(conn)
    .await
}

/// The tenants with their own cap on executing task runs.
pub async fn tenants_capped(conn: &mut PgConnection) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "SELECT id FROM tenants WHERE max_executing IS NOT NULL ORDER BY id"
    ))
    .fetch_all(conn)
    .await
}

/// Which tenants to look at in `capped_tenants_lock`.
#[derive(Debug, Clone, Copy)]
pub struct CappedScope<'a> {
    /// The cap of tenants without their own (`None`: only tenants with their own are capped).
    pub default_cap: Option<i32>,
    /// Only these tenants (those known to have their own cap), when there is no default.
    pub only: Option<&'a [Uuid]>,
    /// Tenants passed over.
    pub skip: &'a [Uuid],
}

/// Locks, until the transaction ends, the capped tenants with queued work that no other node
/// is claiming for (`SKIP LOCKED`), and returns them with their caps. The claim that follows
/// in the same transaction counts their executing task runs in a statement of its own, after
/// the locks, so it sees every claim committed before them: two nodes never both fill the
/// same last place. With a default cap every tenant with ready work is looked at (a loose
/// index scan, as the claim's); else only the tenants listed, one probe each.
pub async fn capped_tenants_lock(
    conn: &mut PgConnection,
    scope: CappedScope<'_>,
) -> Result<Vec<(Uuid, i32)>, sqlx::Error> {
    match scope.only {
        None => {
            sqlx::query_as(sql!(
                tenants_with_ready_work!(),
                "
             SELECT t.id, coalesce(t.max_executing, $1)
             FROM tenants t
             WHERE t.id IN (SELECT tenant_id FROM ready WHERE tenant_id IS NOT NULL)
               AND t.id <> ALL($2)
               AND coalesce(t.max_executing, $1) IS NOT NULL
             ORDER BY t.id
             FOR NO KEY UPDATE OF t SKIP LOCKED"
            ))
            .bind(scope.default_cap)
            .bind(scope.skip)
            .fetch_all(conn)
            .await
        }
        Some(only) => {
            sqlx::query_as(sql!(
                "SELECT t.id, t.max_executing
             FROM tenants t
             WHERE t.id = ANY($1) AND t.id <> ALL($2) AND t.max_executing IS NOT NULL
               AND EXISTS (SELECT 1 FROM task_runs tr
                           WHERE tr.tenant_id = t.id AND tr.status = 'queued'
                             AND tr.gate IS NULL AND tr.available_at <= now())
             ORDER BY t.id
             FOR NO KEY UPDATE OF t SKIP LOCKED"
            ))
            .bind(only)
            .bind(scope.skip)
            .fetch_all(conn)
            .await
        }
    }
}

/// How many of tenant `id`'s task runs are leased now (executing, or claimed and about to).
pub async fn tenant_executing(conn: &mut PgConnection, id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "SELECT count(*) FROM task_runs
         WHERE status = 'running' AND lease_expires_at >= '-infinity' AND tenant_id = $1"
    ))
    .bind(id)
    .fetch_one(conn)
    .await
}

/// Of `tenants`, those capped on executing task runs (their own cap, else `default_cap`), with
/// their caps, and which of those this transaction now holds locked (`SKIP LOCKED`: another
/// node claiming for a tenant keeps it out of this transaction's hands until it commits).
pub async fn capped_among_lock(
    conn: &mut PgConnection,
    tenants: &[Uuid],
    default_cap: Option<i32>,
) -> Result<(Vec<(Uuid, i32)>, Vec<Uuid>), sqlx::Error> {
    let capped: Vec<(Uuid, i32)> = sqlx::query_as(sql!(
        "SELECT id, coalesce(max_executing, $2) FROM tenants
         WHERE id = ANY($1) AND coalesce(max_executing, $2) IS NOT NULL
         ORDER BY id"
    ))
    .bind(tenants)
    .bind(default_cap)
    .fetch_all(&mut *conn)
    .await?;
    if capped.is_empty() {
        return Ok((capped, Vec::new()));
    }
    let ids: Vec<Uuid> = capped.iter().map(|c| c.0).collect();
    let locked: Vec<Uuid> = sqlx::query_scalar(sql!(
        "SELECT id FROM tenants WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED"
    ))
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    Ok((capped, locked))
}

/// How many task runs of each of `tenants` are leased now (after their locks: see
/// `capped_tenants_lock`).
pub async fn tenants_executing(
    conn: &mut PgConnection,
    tenants: &[Uuid],
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT tenant_id, count(*) FROM task_runs
         WHERE status = 'running' AND lease_expires_at >= '-infinity' AND tenant_id = ANY($1)
         GROUP BY tenant_id"
    ))
    .bind(tenants)
    .fetch_all(conn)
    .await
}
