//! Housekeeping of the hot tables: how much dead weight they carry, vacuuming them, and
//! deleting finished runs past their tenant's retention.
//!
//! Every task run leaves three or four dead row versions behind, and a claim walks past the
//! dead entries at the head of the ready index until a vacuum removes them, so a queue whose
//! tables are never vacuumed gets slower with every task it runs. Autovacuum does this where it
//! is on and keeps up; where it is off or lags, a node does it (see `scheduler::vacuum`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A table that churns with every task run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HotTable {
    /// `task_runs`: three or four versions per task run.
    TaskRuns,
    /// `workflow_runs`: two versions per run.
    WorkflowRuns,
    /// `tenant_unfinished_runs`: small, but rewritten every second by its compaction.
    TenantUnfinishedRuns,
    /// `task_run_logs`: written once per line, deleted by retention.
    TaskRunLogs,
}

impl HotTable {
    /// Every hot table.
    pub const ALL: [HotTable; 4] = [
        HotTable::TaskRuns,
        HotTable::WorkflowRuns,
        HotTable::TenantUnfinishedRuns,
        HotTable::TaskRunLogs,
    ];

    /// Dead versions the table may carry whatever its size: few for a table read on every
    /// start of a capped tenant.
    pub fn dead_min(self) -> i64 {
        match self {
            HotTable::TaskRuns | HotTable::WorkflowRuns | HotTable::TaskRunLogs => 20_000,
            HotTable::TenantUnfinishedRuns => 2_000,
        }
    }

    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            HotTable::TaskRuns => "task_runs",
            HotTable::WorkflowRuns => "workflow_runs",
            HotTable::TenantUnfinishedRuns => "tenant_unfinished_runs",
            HotTable::TaskRunLogs => "task_run_logs",
        }
    }
}

/// Live and dead row versions of a table, as the statistics collector last saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableHealth {
    /// Live rows.
    pub live: i64,
    /// Dead row versions not yet vacuumed.
    pub dead: i64,
    /// Vacuums of the table so far that autovacuum did not do (a node's or an operator's).
    pub vacuums: i64,
    /// Rows inserted, updated or deleted since the planner's statistics were last refreshed.
    pub modified_since_analyze: i64,
}

/// The health of `table`.
pub async fn table_health(
    conn: &mut PgConnection,
    table: HotTable,
) -> Result<TableHealth, sqlx::Error> {
    let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(sql!(
        "SELECT n_live_tup, n_dead_tup, vacuum_count, n_mod_since_analyze
         FROM pg_stat_user_tables WHERE relid = to_regclass($1)"
    ))
    .bind(table.name())
    .fetch_optional(conn)
    .await?;
    Ok(row.map_or_else(
        TableHealth::default,
        |(live, dead, vacuums, modified_since_analyze)| TableHealth {
            live,
            dead,
            vacuums,
            modified_since_analyze,
        },
    ))
}

/// Key of the advisory lock that lets one node at a time vacuum.
const VACUUM_LOCK: i64 = 0x6861_7463_6876_6163; // "hatchvac"

/// Takes the vacuum lock for this session if no other session holds it.
pub async fn vacuum_lock_try(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(sql!("SELECT pg_try_advisory_lock($1)"))
        .bind(VACUUM_LOCK)
        .fetch_one(conn)
        .await
}

/// Releases the vacuum lock of this session.
pub async fn vacuum_unlock(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(sql!("SELECT pg_advisory_unlock($1)"))
        .bind(VACUUM_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// `VACUUM (ANALYZE)` of `table`: removes dead versions and their index entries, and refreshes
/// the planner's statistics. Must run outside a transaction.
pub async fn table_vacuum(conn: &mut PgConnection, table: HotTable) -> Result<(), sqlx::Error> {
    let statement = match table {
        HotTable::TaskRuns => sql!("VACUUM (ANALYZE) task_runs"),
        HotTable::WorkflowRuns => sql!("VACUUM (ANALYZE) workflow_runs"),
        HotTable::TenantUnfinishedRuns => sql!("VACUUM (ANALYZE) tenant_unfinished_runs"),
        HotTable::TaskRunLogs => sql!("VACUUM (ANALYZE) task_run_logs"),
    };
    sqlx::query(statement).execute(conn).await?;
    Ok(())
}

/// `ANALYZE` of `table`: refreshes the planner's statistics (a sample, so it costs the same
/// at any size).
pub async fn table_analyze(conn: &mut PgConnection, table: HotTable) -> Result<(), sqlx::Error> {
    let statement = match table {
        HotTable::TaskRuns => sql!("ANALYZE task_runs"),
        HotTable::WorkflowRuns => sql!("ANALYZE workflow_runs"),
        HotTable::TenantUnfinishedRuns => sql!("ANALYZE tenant_unfinished_runs"),
        HotTable::TaskRunLogs => sql!("ANALYZE task_run_logs"),
    };
    sqlx::query(statement).execute(conn).await?;
    Ok(())
}

/// What one retention pass deleted, and where the next one starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Workflow runs deleted.
    pub runs: i64,
    /// Their task runs.
    pub task_runs: i64,
    /// Their tasks' log lines.
    pub logs: i64,
    /// Events deleted.
    pub events: i64,
    /// The last tenant looked at (`None`: no tenant after the cursor; start again from the
    /// first).
    pub last_tenant: Option<Uuid>,
    /// Tenants looked at.
    pub tenants: i64,
}

/// One retention pass over up to `tenants` tenants after `after`: deletes at most `batch`
/// finished workflow runs (with their task runs and logs) that finished longer ago than their
/// tenant's retention (`retention_days`, else `default_seconds`), and at most `batch` events
/// older than it, as of `now`. Runs that are not finished are never touched. Each tenant
/// costs one probe of its newest-first indexes, so the pass is bounded by `tenants` and
/// `batch`, not by the size of the tables.
pub async fn retention_purge(
    conn: &mut PgConnection,
    after: Uuid,
    tenants: i64,
    default_seconds: i64,
    batch: i64,
    now: DateTime<Utc>,
) -> Result<Purged, sqlx::Error> {
    let (runs, task_runs, logs, last_tenant, looked): (i64, i64, i64, Option<Uuid>, i64) =
        sqlx::query_as(PURGE_RUNS)
            .bind(after)
            .bind(default_seconds)
            .bind(tenants.max(1))
            .bind(batch.max(1))
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
    let events: i64 = sqlx::query_scalar(PURGE_EVENTS)
        .bind(after)
        .bind(default_seconds)
        .bind(tenants.max(1))
        .bind(batch.max(1))
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Purged {
        runs,
        task_runs,
        logs,
        events,
        last_tenant,
        tenants: looked,
    })
}

/// The tenants of a pass and their retention cut-off.
macro_rules! purge_tenants {
    () => {
        "picked AS (
             SELECT id AS tenant_id,
                    $5::timestamptz
                        - coalesce(retention_days::bigint * 86400, $2) * interval '1 second'
                        AS cutoff
             FROM tenants WHERE id > $1 ORDER BY id LIMIT $3
         )"
    };
}

/// Finished runs past their retention, with their task runs and logs. A run's `created_at`
/// is never after its `finished_at`, so the newest-first index bounds the walk per tenant.
pub(crate) const PURGE_RUNS: &str = sql!(
    "WITH ",
    purge_tenants!(),
    ",
         doomed AS (
             SELECT r.tenant_id, r.id
             FROM picked p
             CROSS JOIN LATERAL (
                 SELECT r.tenant_id, r.id FROM workflow_runs r
                 WHERE r.tenant_id = p.tenant_id AND r.created_at < p.cutoff
                   AND r.status IN ('succeeded', 'failed', 'cancelled')
                   AND r.finished_at < p.cutoff
                 ORDER BY r.created_at, r.id
                 LIMIT $4
                 FOR UPDATE SKIP LOCKED
             ) r
             LIMIT $4
         ),
         tasks AS (
             DELETE FROM task_runs t USING doomed d
             WHERE t.tenant_id = d.tenant_id AND t.workflow_run_id = d.id
             RETURNING t.tenant_id, t.id
         ),
         logs AS (
             DELETE FROM task_run_logs l USING tasks t
             WHERE l.tenant_id = t.tenant_id AND l.task_run_id = t.id
             RETURNING 1
         ),
         runs AS (
             DELETE FROM workflow_runs r USING doomed d
             WHERE r.tenant_id = d.tenant_id AND r.id = d.id
             RETURNING 1
         )
     SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM tasks),
            (SELECT count(*) FROM logs), (SELECT tenant_id FROM picked ORDER BY tenant_id DESC LIMIT 1),
            (SELECT count(*) FROM picked)"
);

/// Events past their tenant's retention.
pub(crate) const PURGE_EVENTS: &str = sql!(
    "WITH ",
    purge_tenants!(),
    ",
         doomed AS (
             SELECT e.tenant_id, e.id
             FROM picked p
             CROSS JOIN LATERAL (
                 SELECT e.tenant_id, e.id FROM events e
                 WHERE e.tenant_id = p.tenant_id AND e.created_at < p.cutoff
                 ORDER BY e.created_at, e.id
                 LIMIT $4
                 FOR UPDATE SKIP LOCKED
             ) e
             LIMIT $4
         ),
         gone AS (
             DELETE FROM events e USING doomed d
             WHERE e.tenant_id = d.tenant_id AND e.id = d.id
             RETURNING 1
         )
     SELECT count(*) FROM gone"
);
