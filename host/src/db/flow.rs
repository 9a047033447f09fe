//! Flow control's state: concurrency keys and their holders, rate limits and their usage, and
//! the statements of one admission (walk the waiting keys, lock them, read their state, lease
//! the admitted task runs). The policy itself is `crate::flow`; the transaction that strings
//! these together is `scheduler::admission`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::task_run::{ClaimParams, ClaimedTask};
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
        sqlx::query(sql!(
            "INSERT INTO concurrency_keys (tenant_id, key)
             SELECT * FROM unnest($1::uuid[], $2::text[]) ORDER BY 1, 2
             ON CONFLICT DO NOTHING"
        ))
        .bind(tenants)
        .bind(keys)
        .execute(&mut *conn)
        .await?;
    }
    if !dynamic_limits.is_empty() {
        sqlx::query(sql!(
            "INSERT INTO rate_limits (tenant_id, key, limit_units, window_ms, source)
             SELECT t, k, l, w, 'dynamic'
             FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[]) AS r(t, k, l, w)
             ORDER BY 1, 2
             ON CONFLICT DO NOTHING"
        ))
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
    sqlx::query(sql!(
        "INSERT INTO rate_limits (tenant_id, key, limit_units, window_ms, source)
         SELECT $1, k, l, w, 'manifest'
         FROM unnest($2::text[], $3::int[], $4::bigint[]) AS d(k, l, w)
         ORDER BY 2
         ON CONFLICT (tenant_id, key) DO UPDATE
             SET limit_units = excluded.limit_units, window_ms = excluded.window_ms,
                 updated_at = now()
             WHERE rate_limits.source = 'manifest' AND excluded.limit_units IS NOT NULL"
    ))
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
    sqlx::query(sql!(
        "INSERT INTO rate_limits (tenant_id, key, limit_units, window_ms, source)
         VALUES ($1, $2, $3, $4, 'api')
         ON CONFLICT (tenant_id, key) DO UPDATE
             SET limit_units = excluded.limit_units, window_ms = excluded.window_ms,
                 source = 'api', updated_at = now()"
    ))
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
    sqlx::query_as(sql!(
        "SELECT r.key, r.limit_units, r.window_ms, r.source, r.updated_at,
                coalesce((SELECT sum(u.units) FROM rate_limit_usage u
                          WHERE u.tenant_id = r.tenant_id AND u.key = r.key
                            AND u.until_ms > (extract(epoch FROM clock_timestamp()) * 1000)::bigint
                                             - coalesce(r.window_ms, 0)), 0)::bigint AS used
         FROM rate_limits r WHERE r.tenant_id = $1
         ORDER BY r.key LIMIT $2"
    ))
    .bind(tenant_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// One admission's view of the queue: the keys walked, in order, and their ready heads.
#[derive(Debug, Clone, Default)]
pub struct GatedWalk {
    /// Up to `walk` distinct keys with waiting task runs, in key order after the cursor, then
    /// from the first key up to the cursor (round robin).
    pub keys: Vec<TenantKey>,
    /// The first ready task runs of each key (priority, then oldest), in key order; about
    /// `limit` in all, spread over the keys.
    pub heads: Vec<GatedRow>,
    /// The concurrency keys the heads need that this transaction now holds locked.
    pub locked_concurrency: Vec<TenantKey>,
    /// The rate limits the heads need that this transaction now holds locked, with their
    /// stored limit and window.
    pub locked_rates: Vec<(Uuid, String, Option<i32>, Option<i64>)>,
}

/// A waiting gated task run.
#[derive(Debug, Clone)]
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

/// Walks the keys with waiting gated task runs from `after` (a loose index scan: one probe per
/// key, however many runs wait under each), reads their heads (leaving out modules without a
/// free slot) and locks the keys the heads need — in one statement.
pub async fn gated_walk(
    conn: &mut PgConnection,
    after: &TenantKey,
    walk: i64,
    limit: i64,
    full_modules: &[String],
) -> Result<GatedWalk, sqlx::Error> {
    type Row = (
        String,
        Uuid,
        String,
        Option<i32>,
        Option<Uuid>,
        Option<Uuid>,
        Option<String>,
        Option<i32>,
        Option<i64>,
        Option<i16>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = sqlx::query_as(sql!(
        "WITH RECURSIVE
         onward(tenant_id, gate, n) AS (
             (SELECT tenant_id, gate, 1 FROM task_runs
              WHERE status = 'queued' AND gate IS NOT NULL AND (tenant_id, gate) > ($1, $2)
              ORDER BY tenant_id, gate LIMIT 1)
             UNION ALL
             SELECT next.tenant_id, next.gate, o.n + 1 FROM onward o
             CROSS JOIN LATERAL (
                 SELECT tenant_id, gate FROM task_runs
                 WHERE status = 'queued' AND gate IS NOT NULL
                   AND (tenant_id, gate) > (o.tenant_id, o.gate)
                 ORDER BY tenant_id, gate LIMIT 1
             ) next
             WHERE o.n < $3
         ),
         wrapped(tenant_id, gate, n) AS (
             (SELECT tenant_id, gate, 1 FROM task_runs
              WHERE status = 'queued' AND gate IS NOT NULL AND (tenant_id, gate) <= ($1, $2)
              ORDER BY tenant_id, gate LIMIT 1)
             UNION ALL
             SELECT next.tenant_id, next.gate, w.n + 1 FROM wrapped w
             CROSS JOIN LATERAL (
                 SELECT tenant_id, gate FROM task_runs
                 WHERE status = 'queued' AND gate IS NOT NULL
                   AND (tenant_id, gate) > (w.tenant_id, w.gate)
                   AND (tenant_id, gate) <= ($1, $2)
                 ORDER BY tenant_id, gate LIMIT 1
             ) next
             WHERE w.n < $3
         ),
         walked AS (
             SELECT tenant_id, gate, n FROM onward
             UNION ALL
             SELECT tenant_id, gate, n + (SELECT count(*) FROM onward) FROM wrapped
             WHERE n <= $3 - (SELECT count(*) FROM onward)
         ),
         per_key AS (SELECT least($4, $4 / greatest(count(*), 1) + 1) AS n FROM walked),
         heads AS (
             SELECT k.tenant_id, k.gate, k.n, c.id, c.workflow_run_id, c.gates, c.priority,
                    c.available_at
             FROM walked k
             LEFT JOIN LATERAL (
                 SELECT t.id, t.workflow_run_id, t.gates, t.priority, t.available_at
                 FROM task_runs t
                 WHERE t.tenant_id = k.tenant_id AND t.gate = k.gate AND t.status = 'queued'
                   AND t.available_at <= now()
                   AND t.tenant_id::text || ':' || t.module_digest <> ALL($5)
                 ORDER BY t.priority DESC, t.available_at, t.id
                 LIMIT (SELECT n FROM per_key)
             ) c ON true
         ),
         needed AS (
             SELECT DISTINCT h.tenant_id, g->>'kind' AS kind, g->>'key' AS key
             FROM heads h CROSS JOIN LATERAL jsonb_array_elements(h.gates) g
         ),
         -- Lock every key the heads need, in one order; a key another node is admitting into
         -- is skipped (its heads wait for the next round). The keys' state is read by the
         -- next statement, whose snapshot sees every admission committed before these locks.
         locked_concurrency AS (
             SELECT ck.tenant_id, ck.key FROM concurrency_keys ck
             JOIN needed n ON n.kind = 'concurrency' AND ck.tenant_id = n.tenant_id
                          AND ck.key = n.key
             ORDER BY ck.tenant_id, ck.key
             FOR UPDATE OF ck SKIP LOCKED
         ),
         locked_rates AS (
             SELECT rl.tenant_id, rl.key, rl.limit_units, rl.window_ms FROM rate_limits rl
             JOIN needed n ON n.kind = 'rate_limit' AND rl.tenant_id = n.tenant_id
                          AND rl.key = n.key
             ORDER BY rl.tenant_id, rl.key
             FOR UPDATE OF rl SKIP LOCKED
         )
         SELECT 'head' AS part, tenant_id, gate, n::int, id, workflow_run_id, gates::text,
                NULL::int AS limit_units, NULL::bigint AS window_ms, priority, available_at
         FROM heads
         UNION ALL
         SELECT 'concurrency', tenant_id, key, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
         FROM locked_concurrency
         UNION ALL
         SELECT 'rate_limit', tenant_id, key, NULL, NULL, NULL, NULL, limit_units, window_ms,
                NULL, NULL
         FROM locked_rates
         ORDER BY part, n, priority DESC, available_at, id"
    ))
    .bind(after.0)
    .bind(&after.1)
    .bind(walk)
    .bind(limit)
    .bind(full_modules)
    .fetch_all(conn)
    .await?;
    let mut walked = GatedWalk::default();
    for (part, tenant_id, gate, _, id, run, gates, limit_units, window_ms, _, _) in rows {
        match part.as_str() {
            "concurrency" => {
                walked.locked_concurrency.push((tenant_id, gate));
                continue;
            }
            "rate_limit" => {
                walked
                    .locked_rates
                    .push((tenant_id, gate, limit_units, window_ms));
                continue;
            }
            _ => {}
        }
        if walked.keys.last() != Some(&(tenant_id, gate.clone())) {
            walked.keys.push((tenant_id, gate.clone()));
        }
        if let (Some(id), Some(workflow_run_id), Some(gates)) = (id, run, gates) {
            walked.heads.push(GatedRow {
                tenant_id,
                id,
                workflow_run_id,
                gate,
                gates,
            });
        }
    }
    Ok(walked)
}

/// The database clock now, in milliseconds since the epoch — read after the keys were locked,
/// so the times of one key follow the order of its locks — and the places under these keys
/// that still count (their holder is in progress), oldest first. With `prune`, the rows that no
/// longer count are deleted (the keys must be locked).
pub async fn concurrency_holders_live(
    conn: &mut PgConnection,
    keys: &[TenantKey],
    prune: bool,
) -> Result<(i64, HashMap<TenantKey, Vec<Holder>>), sqlx::Error> {
    let mut live: HashMap<TenantKey, Vec<Holder>> =
        keys.iter().map(|k| (k.clone(), Vec::new())).collect();
    let (tenants, names) = split(keys);
    type Row = (
        i64,
        Option<Uuid>,
        Option<String>,
        Option<Uuid>,
        Option<Uuid>,
        Option<bool>,
    );
    let rows: Vec<Row> = sqlx::query_as(sql!(
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint, h.tenant_id, h.key,
                h.holder, h.run_id, h.live
         FROM (SELECT 1) one
         LEFT JOIN LATERAL (
             SELECT h.tenant_id, h.key, h.holder, h.run_id, h.since,
                    coalesce(CASE WHEN h.lease_token IS NULL
                                  THEN w.status IN ('queued', 'running')
                                  ELSE t.status = 'running' AND t.lease_token = h.lease_token
                             END, false) AS live
             FROM unnest($1::uuid[], $2::text[]) AS k(tenant_id, key)
             JOIN concurrency_holders h ON h.tenant_id = k.tenant_id AND h.key = k.key
             LEFT JOIN workflow_runs w
               ON h.lease_token IS NULL AND w.tenant_id = h.tenant_id AND w.id = h.holder
             LEFT JOIN task_runs t
               ON h.lease_token IS NOT NULL AND t.tenant_id = h.tenant_id AND t.id = h.holder
         ) h ON true
         ORDER BY h.since, h.holder"
    ))
    .bind(&tenants)
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    let now_ms = rows.first().map_or(0, |r| r.0);
    let mut stale: Vec<(Uuid, String, Uuid)> = Vec::new();
    for (_, tenant, key, holder, run_id, is_live) in rows {
        let (Some(tenant), Some(key), Some(holder), Some(run_id)) = (tenant, key, holder, run_id)
        else {
            continue;
        };
        if is_live == Some(true) {
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
        sqlx::query(sql!(
            "DELETE FROM concurrency_holders h
             USING unnest($1::uuid[], $2::text[], $3::uuid[]) AS s(tenant_id, key, holder)
             WHERE h.tenant_id = s.tenant_id AND h.key = s.key AND h.holder = s.holder"
        ))
        .bind(stale.iter().map(|s| s.0).collect::<Vec<_>>())
        .bind(stale.iter().map(|s| s.1.as_str()).collect::<Vec<_>>())
        .bind(stale.iter().map(|s| s.2).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok((now_ms, live))
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
        sqlx::query(sql!(
            "DELETE FROM rate_limit_usage u
             USING unnest($1::uuid[], $2::text[], $3::bigint[]) AS k(tenant_id, key, window_ms)
             WHERE u.tenant_id = k.tenant_id AND u.key = k.key
               AND u.until_ms <= $4 - greatest(k.window_ms, 86400000)"
        ))
        .bind(&tenants)
        .bind(&names)
        .bind(&windows)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    let rows: Vec<(Uuid, String, i64)> = sqlx::query_as(sql!(
        "SELECT k.tenant_id, k.key,
                coalesce((SELECT sum(u.units) FROM rate_limit_usage u
                          WHERE u.tenant_id = k.tenant_id AND u.key = k.key
                            AND u.until_ms > $4 - k.window_ms), 0)::bigint
         FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS k(tenant_id, key, window_ms)"
    ))
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

/// A place an admitted task run takes once leased.
#[derive(Debug, Clone)]
pub struct NewHolder {
    /// Owner.
    pub tenant_id: Uuid,
    /// The admitted task run.
    pub task_run_id: Uuid,
    /// The key.
    pub key: String,
    /// The task run's workflow run.
    pub run_id: Uuid,
    /// A task-level place (held by the attempt); else the run's (kept if it holds one).
    pub task_scope: bool,
}

/// Units an admitted task run consumes once leased.
#[derive(Debug, Clone)]
pub struct NewUsage {
    /// Owner.
    pub tenant_id: Uuid,
    /// The admitted task run.
    pub task_run_id: Uuid,
    /// The rate limit.
    pub key: String,
    /// Its window in milliseconds (the bucket is a hundredth of it).
    pub window_ms: i64,
    /// Units.
    pub units: i64,
}

/// Leases the admitted task runs (those still queued) to `node`, started at `now_ms`, and
/// records the places and units of those leased — one statement.
pub async fn task_runs_claim_admitted(
    conn: &mut PgConnection,
    params: &ClaimParams<'_>,
    now_ms: i64,
    admitted: &[(Uuid, Uuid)],
    holders: &[NewHolder],
    usage: &[NewUsage],
) -> Result<Vec<ClaimedTask>, sqlx::Error> {
    if admitted.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(sql!(
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
             WHERE t.tenant_id = p.tenant_id AND t.id = p.id AND t.status = 'queued'",
        claimed_returning!(),
        "
         ),
         held AS (
             INSERT INTO concurrency_holders (tenant_id, key, holder, run_id, lease_token, since)
             SELECT DISTINCT ON (1, 2, 3)
                    h.t, h.k, CASE WHEN h.task_scope THEN c.id ELSE h.r END, h.r,
                    CASE WHEN h.task_scope THEN c.lease_token END, to_timestamp($5 / 1000.0)
             FROM unnest($6::uuid[], $7::uuid[], $8::text[], $9::uuid[], $10::bool[])
                  AS h(t, task, k, r, task_scope)
             JOIN claimed c ON c.tenant_id = h.t AND c.id = h.task
             ORDER BY 1, 2, 3
             ON CONFLICT (tenant_id, key, holder) DO UPDATE
                 SET lease_token = excluded.lease_token, since = excluded.since
                 WHERE concurrency_holders.lease_token IS NOT NULL
         ),
         used AS (
             INSERT INTO rate_limit_usage (tenant_id, key, until_ms, units)
             SELECT u.t, u.k, ($5 / greatest(u.w / 100, 1) + 1) * greatest(u.w / 100, 1),
                    sum(u.n)
             FROM unnest($11::uuid[], $12::uuid[], $13::text[], $14::bigint[], $15::bigint[])
                  AS u(t, task, k, w, n)
             JOIN claimed c ON c.tenant_id = u.t AND c.id = u.task
             GROUP BY 1, 2, 3
             ORDER BY 1, 2
             ON CONFLICT (tenant_id, key, until_ms) DO UPDATE
                 SET units = rate_limit_usage.units + excluded.units
         )",
        claimed_tasks!()
    ))
    .bind(params.node)
    .bind(admitted.iter().map(|a| a.0).collect::<Vec<_>>())
    .bind(admitted.iter().map(|a| a.1).collect::<Vec<_>>())
    .bind(i64::try_from(params.lease.as_millis()).unwrap_or(i64::MAX))
    .bind(now_ms)
    .bind(holders.iter().map(|h| h.tenant_id).collect::<Vec<_>>())
    .bind(holders.iter().map(|h| h.task_run_id).collect::<Vec<_>>())
    .bind(holders.iter().map(|h| h.key.as_str()).collect::<Vec<_>>())
    .bind(holders.iter().map(|h| h.run_id).collect::<Vec<_>>())
    .bind(holders.iter().map(|h| h.task_scope).collect::<Vec<_>>())
    .bind(usage.iter().map(|u| u.tenant_id).collect::<Vec<_>>())
    .bind(usage.iter().map(|u| u.task_run_id).collect::<Vec<_>>())
    .bind(usage.iter().map(|u| u.key.as_str()).collect::<Vec<_>>())
    .bind(usage.iter().map(|u| u.window_ms).collect::<Vec<_>>())
    .bind(usage.iter().map(|u| u.units).collect::<Vec<_>>())
    .fetch_all(conn)
    .await
}

/// The gates of the queued task runs of a run, for `waiting_for`.
pub async fn task_run_gates_of_run(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT id, gates::text FROM task_runs
         WHERE tenant_id = $1 AND workflow_run_id = $2 AND status = 'queued'
           AND gates IS NOT NULL"
    ))
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
    sqlx::query_as(sql!(
        "SELECT r.tenant_id, r.key, r.limit_units, r.window_ms FROM rate_limits r
         JOIN unnest($1::uuid[], $2::text[]) AS k(tenant_id, key)
           ON r.tenant_id = k.tenant_id AND r.key = k.key"
    ))
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
    sqlx::query(sql!("SELECT pg_notify($1, '')"))
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
    sqlx::query_as(sql!(
        "SELECT t.created_at, t.started_at FROM task_runs t
         WHERE t.tenant_id = $1 AND t.workflow = $2 AND t.started_at IS NOT NULL
         ORDER BY t.started_at"
    ))
    .bind(tenant_id)
    .bind(workflow)
    .fetch_all(conn)
    .await
}

/// The database clock now (not the transaction's start), in milliseconds since the epoch.
pub async fn clock_ms(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    ))
    .fetch_one(conn)
    .await
}
