//! Flow control's state: concurrency keys and their holders, rate limits and their usage, and
//! the statements of one admission (walk the waiting keys, lock them, read their state, lease
//! the admitted task runs). The policy itself is `crate::flow`; the transaction that strings
//! these together is `scheduler::admission`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::task_run::ClaimedTask;
use crate::flow::{Holder, RateState};

/// A (tenant, key) pair.
pub type TenantKey = (Uuid, String);

fn split(keys: &[TenantKey]) -> (Vec<Uuid>, Vec<&str>) {
    (
        keys.iter().map(|k| k.0).collect(),
        keys.iter().map(|k| k.1.as_str()).collect(),
    )
}

/// Creates the rows admission locks for these keys (first use of a key).
pub async fn flow_keys_ensure(
    conn: &mut PgConnection,
    concurrency: &[TenantKey],
    dynamic_limits: &[(Uuid, String, u32, u64)],
) -> Result<(), sqlx::Error> {
    if !concurrency.is_empty() {
        let (tenants, keys) = split(concurrency);
        sqlx::query(
            "INSERT INTO concurrency_keys (tenant_id, key)
             SELECT * FROM unnest($1::uuid[], $2::text[]) ORDER BY 1, 2
             ON CONFLICT DO NOTHING",
        )
        .bind(tenants)
        .bind(keys)
        .execute(&mut *conn)
        .await?;
    }
    if !dynamic_limits.is_empty() {
        sqlx::query(
            "INSERT INTO rate_limits (tenant_id, key, limit_units, window_ms, source)
             SELECT t, k, l, w, 'dynamic'
             FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[]) AS r(t, k, l, w)
             ORDER BY 1, 2
             ON CONFLICT DO NOTHING",
        )
        .bind(dynamic_limits.iter().map(|d| d.0).collect::<Vec<_>>())
        .bind(
            dynamic_limits
                .iter()
                .map(|d| d.1.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            dynamic_limits
                .iter()
                .map(|d| d.2 as i32)
                .collect::<Vec<_>>(),
        )
        .bind(
            dynamic_limits
                .iter()
                .map(|d| d.3 as i64)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Records the static rate limits a deployed manifest declares: a declared limit replaces an
/// earlier declaration but never one set through the API; an undeclared one is listed empty.
pub async fn rate_limits_declare(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    declared: &[(String, Option<u32>, Option<u64>)],
) -> Result<(), sqlx::Error> {
    if declared.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO rate_limits (tenant_id, key, limit_units, window_ms, source)
         SELECT $1, k, l, w, 'manifest'
         FROM unnest($2::text[], $3::int[], $4::bigint[]) AS d(k, l, w)
         ORDER BY 2
         ON CONFLICT (tenant_id, key) DO UPDATE
             SET limit_units = excluded.limit_units, window_ms = excluded.window_ms,
                 updated_at = now()
             WHERE rate_limits.source = 'manifest' AND excluded.limit_units IS NOT NULL",
    )
    .bind(tenant_id)
    .bind(declared.iter().map(|d| d.0.as_str()).collect::<Vec<_>>())
    .bind(
        declared
            .iter()
            .map(|d| d.1.map(|l| l as i32))
            .collect::<Vec<_>>(),
    )
    .bind(
        declared
            .iter()
            .map(|d| d.2.map(|w| w as i64))
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets a static rate limit through the API (it then wins over any manifest's declaration).
pub async fn rate_limit_set(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    key: &str,
    limit: u32,
    window: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rate_limits (tenant_id, key, limit_units, window_ms, source)
         VALUES ($1, $2, $3, $4, 'api')
         ON CONFLICT (tenant_id, key) DO UPDATE
             SET limit_units = excluded.limit_units, window_ms = excluded.window_ms,
                 source = 'api', updated_at = now()",
    )
    .bind(tenant_id)
    .bind(key)
    .bind(limit as i32)
    .bind(window.as_millis() as i64)
    .execute(&mut *conn)
    .await?;
    notify_gated(conn).await
}

/// A rate limit with its use now.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RateLimitRow {
    /// Its key.
    pub key: String,
    /// Units per window; `None` while declared without a limit.
    pub limit_units: Option<i32>,
    /// The window in milliseconds.
    pub window_ms: Option<i64>,
    /// "api", "manifest" or "dynamic".
    pub source: String,
    /// Units consumed in the window that ends now.
    pub used: i64,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The tenant's rate limits, by key, with their use now.
pub async fn rate_limits_list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    limit: i64,
) -> Result<Vec<RateLimitRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.key, r.limit_units, r.window_ms, r.source, r.updated_at,
                coalesce((SELECT sum(u.units) FROM rate_limit_usage u
                          WHERE u.tenant_id = r.tenant_id AND u.key = r.key
                            AND u.until_ms > (extract(epoch FROM clock_timestamp()) * 1000)::bigint
                                             - coalesce(r.window_ms, 0)), 0)::bigint AS used
         FROM rate_limits r WHERE r.tenant_id = $1
         ORDER BY r.key LIMIT $2",
    )
    .bind(tenant_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Up to `limit` distinct keys with waiting gated task runs, in key order after `after`
/// (a loose index scan: one probe per key, however many runs wait under each).
pub async fn gated_keys_after(
    conn: &mut PgConnection,
    after: &TenantKey,
    limit: i64,
) -> Result<Vec<TenantKey>, sqlx::Error> {
    sqlx::query_as(
        "WITH RECURSIVE walk(tenant_id, gate, n) AS (
             (SELECT tenant_id, gate, 1 FROM task_runs
              WHERE status = 'queued' AND gate IS NOT NULL AND (tenant_id, gate) > ($1, $2)
              ORDER BY tenant_id, gate LIMIT 1)
             UNION ALL
             SELECT next.tenant_id, next.gate, walk.n + 1 FROM walk
             CROSS JOIN LATERAL (
                 SELECT tenant_id, gate FROM task_runs
                 WHERE status = 'queued' AND gate IS NOT NULL
                   AND (tenant_id, gate) > (walk.tenant_id, walk.gate)
                 ORDER BY tenant_id, gate LIMIT 1
             ) next
             WHERE walk.n < $3
         )
         SELECT tenant_id, gate FROM walk",
    )
    .bind(after.0)
    .bind(&after.1)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// A waiting gated task run.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GatedRow {
    /// Owner.
    pub tenant_id: Uuid,
    /// Task run.
    pub id: Uuid,
    /// Its workflow run.
    pub workflow_run_id: Uuid,
    /// The key it waits under.
    pub gate: String,
    /// Its gates, as JSON.
    pub gates: String,
}

/// The first `per_key` ready task runs of each key (highest priority, then oldest), leaving
/// out modules without a free slot.
pub async fn gated_heads(
    conn: &mut PgConnection,
    keys: &[TenantKey],
    per_key: i64,
    full_modules: &[String],
) -> Result<Vec<GatedRow>, sqlx::Error> {
    let (tenants, gates) = split(keys);
    sqlx::query_as(
        "SELECT c.* FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS k(tenant_id, gate, n)
         CROSS JOIN LATERAL (
             SELECT t.tenant_id, t.id, t.workflow_run_id, t.gate, t.gates::text AS gates
             FROM task_runs t
             WHERE t.tenant_id = k.tenant_id AND t.gate = k.gate AND t.status = 'queued'
               AND t.available_at <= now() AND t.module_digest <> ALL($4)
             ORDER BY t.priority DESC, t.available_at, t.id
             LIMIT $3
         ) c
         ORDER BY k.n",
    )
    .bind(tenants)
    .bind(gates)
    .bind(per_key)
    .bind(full_modules)
    .fetch_all(conn)
    .await
}

/// Locks the concurrency keys no one else is admitting into; returns those locked.
pub async fn concurrency_keys_lock(
    conn: &mut PgConnection,
    keys: &[TenantKey],
) -> Result<Vec<TenantKey>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let (tenants, names) = split(keys);
    sqlx::query_as(
        "SELECT c.tenant_id, c.key FROM concurrency_keys c
         JOIN unnest($1::uuid[], $2::text[]) AS k(tenant_id, key)
           ON c.tenant_id = k.tenant_id AND c.key = k.key
         ORDER BY c.tenant_id, c.key
         FOR UPDATE OF c SKIP LOCKED",
    )
    .bind(tenants)
    .bind(names)
    .fetch_all(conn)
    .await
}

/// Locks the rate limits no one else is admitting into; returns those locked with their
/// stored limit and window.
pub async fn rate_limits_lock(
    conn: &mut PgConnection,
    keys: &[TenantKey],
) -> Result<Vec<(Uuid, String, Option<i32>, Option<i64>)>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let (tenants, names) = split(keys);
    sqlx::query_as(
        "SELECT r.tenant_id, r.key, r.limit_units, r.window_ms FROM rate_limits r
         JOIN unnest($1::uuid[], $2::text[]) AS k(tenant_id, key)
           ON r.tenant_id = k.tenant_id AND r.key = k.key
         ORDER BY r.tenant_id, r.key
         FOR UPDATE OF r SKIP LOCKED",
    )
    .bind(tenants)
    .bind(names)
    .fetch_all(conn)
    .await
}

/// The places under these keys that still count (their holder is in progress), oldest first.
/// With `prune`, the rows that no longer count are deleted (the keys must be locked).
pub async fn concurrency_holders_live(
    conn: &mut PgConnection,
    keys: &[TenantKey],
    prune: bool,
) -> Result<HashMap<TenantKey, Vec<Holder>>, sqlx::Error> {
    let mut live: HashMap<TenantKey, Vec<Holder>> =
        keys.iter().map(|k| (k.clone(), Vec::new())).collect();
    if keys.is_empty() {
        return Ok(live);
    }
    let (tenants, names) = split(keys);
    let rows: Vec<(Uuid, String, Uuid, Uuid, bool)> = sqlx::query_as(
        "SELECT h.tenant_id, h.key, h.holder, h.run_id,
                CASE WHEN h.lease_token IS NULL
                     THEN coalesce(w.status IN ('queued', 'running'), false)
                     ELSE coalesce(t.status = 'running' AND t.lease_token = h.lease_token, false)
                END AS live
         FROM unnest($1::uuid[], $2::text[]) AS k(tenant_id, key)
         JOIN concurrency_holders h ON h.tenant_id = k.tenant_id AND h.key = k.key
         LEFT JOIN workflow_runs w
           ON h.lease_token IS NULL AND w.tenant_id = h.tenant_id AND w.id = h.holder
         LEFT JOIN task_runs t
           ON h.lease_token IS NOT NULL AND t.tenant_id = h.tenant_id AND t.id = h.holder
         ORDER BY h.since, h.holder",
    )
    .bind(&tenants)
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    let mut stale: Vec<(Uuid, String, Uuid)> = Vec::new();
    for (tenant, key, holder, run_id, is_live) in rows {
        if is_live {
            live.entry((tenant, key)).or_default().push(Holder {
                holder,
                run_id,
                candidate: None,
            });
        } else {
            stale.push((tenant, key, holder));
        }
    }
    if prune && !stale.is_empty() {
        sqlx::query(
            "DELETE FROM concurrency_holders h
             USING unnest($1::uuid[], $2::text[], $3::uuid[]) AS s(tenant_id, key, holder)
             WHERE h.tenant_id = s.tenant_id AND h.key = s.key AND h.holder = s.holder",
        )
        .bind(stale.iter().map(|s| s.0).collect::<Vec<_>>())
        .bind(stale.iter().map(|s| s.1.as_str()).collect::<Vec<_>>())
        .bind(stale.iter().map(|s| s.2).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(live)
}

/// The database clock in milliseconds since the epoch, read now (not at transaction start):
/// admission stamps consumption and starts with it after locking the keys, so times of one key
/// follow the order of its locks.
pub async fn clock_ms(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
        .fetch_one(conn)
        .await
}

/// Units consumed under each (tenant, key, window in ms) in the window ending at `now_ms`.
/// With `prune`, buckets older than any window are deleted (the keys must be locked).
pub async fn rate_usage(
    conn: &mut PgConnection,
    keys: &[(Uuid, String, i64)],
    now_ms: i64,
    prune: bool,
) -> Result<HashMap<TenantKey, RateState>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let tenants: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let names: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let windows: Vec<i64> = keys.iter().map(|k| k.2).collect();
    if prune {
        sqlx::query(
            "DELETE FROM rate_limit_usage u
             USING unnest($1::uuid[], $2::text[], $3::bigint[]) AS k(tenant_id, key, window_ms)
             WHERE u.tenant_id = k.tenant_id AND u.key = k.key
               AND u.until_ms <= $4 - greatest(k.window_ms, 86400000)",
        )
        .bind(&tenants)
        .bind(&names)
        .bind(&windows)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    let rows: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT k.tenant_id, k.key,
                coalesce((SELECT sum(u.units) FROM rate_limit_usage u
                          WHERE u.tenant_id = k.tenant_id AND u.key = k.key
                            AND u.until_ms > $4 - k.window_ms), 0)::bigint
         FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS k(tenant_id, key, window_ms)",
    )
    .bind(&tenants)
    .bind(&names)
    .bind(&windows)
    .bind(now_ms)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, key, used)| {
            (
                (tenant, key),
                RateState {
                    stored: None,
                    used: used.max(0) as u64,
                },
            )
        })
        .collect())
}

/// Leases the admitted task runs (those still queued) to `node`, started at `now_ms`.
pub async fn task_runs_claim_admitted(
    conn: &mut PgConnection,
    node: Uuid,
    lease: Duration,
    now_ms: i64,
    admitted: &[(Uuid, Uuid)],
) -> Result<Vec<ClaimedTask>, sqlx::Error> {
    if admitted.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(concat!(
        "WITH picked AS (
             SELECT t.tenant_id, t.id FROM task_runs t
             JOIN unnest($2::uuid[], $3::uuid[]) AS a(tenant_id, id)
               ON t.tenant_id = a.tenant_id AND t.id = a.id
             WHERE t.status = 'queued'
             ORDER BY t.tenant_id, t.id
             FOR UPDATE OF t
         ),
         claimed AS (
             UPDATE task_runs t SET
                 status = 'running', attempt = t.attempt + 1, lease_owner = $1,
                 lease_token = nextval('lease_tokens'),
                 lease_expires_at = now() + $4 * interval '1 millisecond',
                 started_at = coalesce(t.started_at, to_timestamp($5 / 1000.0))
             FROM picked p
             WHERE t.tenant_id = p.tenant_id AND t.id = p.id AND t.status = 'queued'
             RETURNING t.tenant_id, t.id, t.workflow_run_id, t.workflow, t.task, t.module_digest,
                       t.attempt, t.lease_token, t.execution_timeout_ms, t.input, t.parents
         )",
        claimed_tasks!()
    ))
    .bind(node)
    .bind(admitted.iter().map(|a| a.0).collect::<Vec<_>>())
    .bind(admitted.iter().map(|a| a.1).collect::<Vec<_>>())
    .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .bind(now_ms)
    .fetch_all(conn)
    .await
}

/// A place taken by an admitted task run.
#[derive(Debug, Clone)]
pub struct NewHolder {
    /// Owner.
    pub tenant_id: Uuid,
    /// The key.
    pub key: String,
    /// The run (workflow-level rule) or task run (task-level rule) holding it.
    pub holder: Uuid,
    /// The holder's workflow run.
    pub run_id: Uuid,
    /// The claim's token for a task-level place; `None` for a run's.
    pub lease_token: Option<i64>,
}

/// Records places taken (a run's place is kept if it already holds one; a task run's is
/// renewed with its new claim).
pub async fn concurrency_holders_add(
    conn: &mut PgConnection,
    holders: &[NewHolder],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    if holders.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO concurrency_holders (tenant_id, key, holder, run_id, lease_token, since)
         SELECT t, k, h, r, l, to_timestamp($6 / 1000.0)
         FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::bigint[])
              AS n(t, k, h, r, l)
         ON CONFLICT (tenant_id, key, holder) DO UPDATE
             SET lease_token = excluded.lease_token, since = excluded.since
             WHERE concurrency_holders.lease_token IS NOT NULL",
    )
    .bind(holders.iter().map(|h| h.tenant_id).collect::<Vec<_>>())
    .bind(holders.iter().map(|h| h.key.as_str()).collect::<Vec<_>>())
    .bind(holders.iter().map(|h| h.holder).collect::<Vec<_>>())
    .bind(holders.iter().map(|h| h.run_id).collect::<Vec<_>>())
    .bind(holders.iter().map(|h| h.lease_token).collect::<Vec<_>>())
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds consumed units under each (tenant, key, window in ms), in the bucket (a hundredth of
/// the window) that holds `now_ms`.
pub async fn rate_usage_add(
    conn: &mut PgConnection,
    used: &[(Uuid, String, i64, i64)],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    if used.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO rate_limit_usage (tenant_id, key, until_ms, units)
         SELECT t, k, ($4 / greatest(w / 100, 1) + 1) * greatest(w / 100, 1), sum(n)
         FROM unnest($1::uuid[], $2::text[], $3::bigint[], $5::bigint[]) AS u(t, k, w, n)
         GROUP BY 1, 2, 3
         ORDER BY 1, 2
         ON CONFLICT (tenant_id, key, until_ms) DO UPDATE
             SET units = rate_limit_usage.units + excluded.units",
    )
    .bind(used.iter().map(|u| u.0).collect::<Vec<_>>())
    .bind(used.iter().map(|u| u.1.as_str()).collect::<Vec<_>>())
    .bind(used.iter().map(|u| u.2).collect::<Vec<_>>())
    .bind(now_ms)
    .bind(used.iter().map(|u| u.3).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// The gates of the queued task runs of a run, for `waiting_for`.
pub async fn task_run_gates_of_run(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, gates::text FROM task_runs
         WHERE tenant_id = $1 AND workflow_run_id = $2 AND status = 'queued'
           AND gates IS NOT NULL",
    )
    .bind(tenant_id)
    .bind(run_id)
    .fetch_all(conn)
    .await
}

/// The stored limit and window of each rate limit key (no lock).
pub async fn rate_limits_stored(
    conn: &mut PgConnection,
    keys: &[TenantKey],
) -> Result<Vec<(Uuid, String, Option<i32>, Option<i64>)>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let (tenants, names) = split(keys);
    sqlx::query_as(
        "SELECT r.tenant_id, r.key, r.limit_units, r.window_ms FROM rate_limits r
         JOIN unnest($1::uuid[], $2::text[]) AS k(tenant_id, key)
           ON r.tenant_id = k.tenant_id AND r.key = k.key",
    )
    .bind(tenants)
    .bind(names)
    .fetch_all(conn)
    .await
}

/// Fails task runs that can never be admitted (they ask more units than their limit), with
/// their workflow runs; returns the runs that finished.
pub async fn task_runs_fail_gated(
    conn: &mut PgConnection,
    failed: &[(Uuid, Uuid, String)],
) -> Result<Vec<Uuid>, sqlx::Error> {
    if failed.is_empty() {
        return Ok(Vec::new());
    }
    super::task_run::task_runs_fail_queued(conn, failed, "rate_limit").await
}

/// Wakes admission on every node (delivered at commit).
pub async fn notify_gated(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(super::CHANNEL_GATED)
        .execute(conn)
        .await?;
    Ok(())
}

/// When each task run of `workflow` first started (and when its run was created), oldest
/// first: for benchmarks and tests of rate limits.
pub async fn task_run_starts(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    workflow: &str,
) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.created_at, t.started_at FROM task_runs t
         WHERE t.tenant_id = $1 AND t.workflow = $2 AND t.started_at IS NOT NULL
         ORDER BY t.started_at",
    )
    .bind(tenant_id)
    .bind(workflow)
    .fetch_all(conn)
    .await
}
