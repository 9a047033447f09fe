//! `usage_hourly`: what each tenant consumed, per hour and workflow.
//!
//! Rows are upserted in the transactions that create runs and record attempts, sorted by
//! tenant and workflow so two such transactions lock them in the same order.

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// What one attempt consumed, recorded with its result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptUsage {
    /// The workflow it belongs to.
    pub workflow: String,
    /// Wall-clock time, in milliseconds.
    pub wall_ms: i64,
    /// Instructions executed (0 when fuel is not metered).
    pub fuel: i64,
    /// Linear memory held at its end (its peak), in bytes.
    pub memory_bytes: i64,
    /// Outgoing HTTP requests.
    pub egress_requests: i64,
}

/// One row of usage.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    sqlx::FromRow,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct UsageRow {
    /// The hour (its start).
    pub hour: DateTime<Utc>,
    /// The workflow.
    pub workflow: String,
    /// Runs created.
    pub runs: i64,
    /// Attempts executed.
    pub attempts: i64,
    /// Their wall-clock time, in milliseconds.
    pub wall_ms: i64,
    /// Fuel consumed.
    pub fuel: i64,
    /// The largest memory of one attempt, in bytes.
    pub peak_memory_bytes: i64,
    /// Outgoing HTTP requests.
    pub egress_requests: i64,
}

/// The start of the hour `at` falls in.
pub fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

/// Adds `runs` created runs per workflow of `tenant` to the current hour.
pub async fn usage_runs_add(
    conn: &mut PgConnection,
    tenant: Uuid,
    runs: &[(&str, i64)],
) -> Result<(), sqlx::Error> {
    if runs.is_empty() {
        return Ok(());
    }
    let mut runs = runs.to_vec();
    runs.sort_unstable();
    sqlx::query(sql!(
        "INSERT INTO usage_hourly AS u (tenant_id, hour, workflow, runs)
         SELECT $1, $2, r.workflow, sum(r.n) FROM unnest($3::text[], $4::bigint[]) AS r(workflow, n)
         GROUP BY r.workflow ORDER BY r.workflow
         ON CONFLICT (tenant_id, hour, workflow) DO UPDATE SET runs = u.runs + excluded.runs"
    ))
    .bind(tenant)
    .bind(hour_of(Utc::now()))
    .bind(runs.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(runs.iter().map(|r| r.1).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds the attempts of a completion batch, as `(tenant, usage)`, to the current hour.
pub async fn usage_attempts_add(
    conn: &mut PgConnection,
    attempts: &[(Uuid, &AttemptUsage)],
) -> Result<(), sqlx::Error> {
    if attempts.is_empty() {
        return Ok(());
    }
    sqlx::query(sql!(
        "INSERT INTO usage_hourly AS u (tenant_id, hour, workflow, attempts, wall_ms, fuel,
                                        peak_memory_bytes, egress_requests)
         SELECT a.tenant_id, $1, a.workflow, count(*), sum(a.wall_ms), sum(a.fuel),
                max(a.memory), sum(a.egress)
         FROM unnest($2::uuid[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[],
                     $7::bigint[]) AS a(tenant_id, workflow, wall_ms, fuel, memory, egress)
         GROUP BY a.tenant_id, a.workflow ORDER BY a.tenant_id, a.workflow
         ON CONFLICT (tenant_id, hour, workflow) DO UPDATE SET
             attempts = u.attempts + excluded.attempts,
             wall_ms = u.wall_ms + excluded.wall_ms,
             fuel = u.fuel + excluded.fuel,
             peak_memory_bytes = greatest(u.peak_memory_bytes, excluded.peak_memory_bytes),
             egress_requests = u.egress_requests + excluded.egress_requests"
    ))
    .bind(hour_of(Utc::now()))
    .bind(attempts.iter().map(|a| a.0).collect::<Vec<_>>())
    .bind(
        attempts
            .iter()
            .map(|a| a.1.workflow.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(attempts.iter().map(|a| a.1.wall_ms).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.1.fuel).collect::<Vec<_>>())
    .bind(
        attempts
            .iter()
            .map(|a| a.1.memory_bytes)
            .collect::<Vec<_>>(),
    )
    .bind(
        attempts
            .iter()
            .map(|a| a.1.egress_requests)
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Tenant `tenant`'s usage in the hours from `from` (inclusive) to `to` (exclusive), of one
/// workflow or all, oldest hour first; at most `limit` rows.
pub async fn usage_list(
    conn: &mut PgConnection,
    tenant: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    workflow: Option<&str>,
    limit: i64,
) -> Result<Vec<UsageRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT hour, workflow, runs, attempts, wall_ms, fuel, peak_memory_bytes, egress_requests
         FROM usage_hourly
         WHERE tenant_id = $1 AND hour >= $2 AND hour < $3
           AND ($4::text IS NULL OR workflow = $4)
         ORDER BY hour, workflow
         LIMIT $5"
    ))
    .bind(tenant)
    .bind(from)
    .bind(to)
    .bind(workflow)
    .bind(limit)
    .fetch_all(conn)
    .await
}
