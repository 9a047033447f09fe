//! How the hot statements execute at a given table size: a synthetic backlog of any size, and
//! `EXPLAIN (ANALYZE, BUFFERS)` of the claim, completion, DAG-progress, heartbeat and reaper
//! statements over it, inside a transaction that is rolled back; and of the reads the API and
//! the dashboard make of a tenant's runs. Used by `hatchery-bench plans`.

use std::time::Duration;

use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::task_run::{self, ClaimParams};
use crate::status::RunStatus;

/// Adds `runs` workflow runs of a three-task chain (`a` → `b` → `c`) for `tenant_id`, three task
/// runs each. Every other run is history (all tasks succeeded); the rest are backlog (`a`
/// queued, `b` and `c` pending). Returns the task runs added.
pub async fn backlog_fill(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    runs: i64,
) -> Result<u64, sqlx::Error> {
    let added = sqlx::query(sql!(
        "WITH runs AS (
             INSERT INTO workflow_runs (tenant_id, id, workflow, version, module_digest, status,
                                        input, priority, finished_at)
             SELECT $1, gen_random_uuid(), 'chain', 1, 'plans',
                    CASE WHEN i % 2 = 0 THEN 'succeeded' ELSE 'queued' END, '{}', 1,
                    CASE WHEN i % 2 = 0 THEN now() END
             FROM generate_series(1, $2) AS i
             RETURNING tenant_id, id, status
         )
         INSERT INTO task_runs (tenant_id, id, workflow_run_id, workflow, task, module_digest,
                                parents, pending_parents, status, priority, attempt,
                                execution_timeout_ms, schedule_timeout_ms, schedule_deadline,
                                is_leaf, output, finished_at)
         SELECT r.tenant_id, gen_random_uuid(), r.id, 'chain', t.task, 'plans', t.parents,
                CASE WHEN r.status = 'succeeded' THEN 0 ELSE t.pending END,
                CASE WHEN r.status = 'succeeded' THEN 'succeeded' ELSE t.status END,
                1, CASE WHEN r.status = 'succeeded' THEN 1 ELSE 0 END, 60000, 300000,
                CASE WHEN r.status <> 'succeeded' AND t.status = 'queued'
                     THEN now() + interval '5 minutes' END,
                t.leaf,
                CASE WHEN r.status = 'succeeded' THEN '{}'::jsonb END,
                CASE WHEN r.status = 'succeeded' THEN now() END
         FROM runs r
         CROSS JOIN (VALUES ('a', '{}'::text[], 0, 'queued', false),
                            ('b', '{a}'::text[], 1, 'pending', false),
                            ('c', '{b}'::text[], 1, 'pending', true))
              AS t(task, parents, pending, status, leaf)"
    ))
    .bind(tenant_id)
    .bind(runs)
    .execute(conn)
    .await?;
    Ok(added.rows_affected())
}

/// Adds `runs` finished runs of `workflow` for `tenant_id` that ended `age_days` ago, each
/// with one succeeded task run and one log line: history for the retention service to delete.
/// Returns the runs added.
pub async fn history_fill(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    workflow: &str,
    runs: i64,
    age_days: i32,
) -> Result<u64, sqlx::Error> {
    let added = sqlx::query(sql!(
        "WITH runs AS (
             INSERT INTO workflow_runs (tenant_id, id, workflow, version, module_digest, status,
                                        input, output, priority, created_at, started_at,
                                        finished_at)
             SELECT $1, gen_random_uuid(), $2, 1, 'history', 'succeeded', '{}', '{}', 1,
                    now() - make_interval(days => $4), now() - make_interval(days => $4),
                    now() - make_interval(days => $4)
             FROM generate_series(1, $3)
             RETURNING tenant_id, id, created_at
         ),
         tasks AS (
             INSERT INTO task_runs (tenant_id, id, workflow_run_id, workflow, task,
                                    module_digest, status, priority, attempt,
                                    execution_timeout_ms, schedule_timeout_ms, is_leaf, output,
                                    created_at, started_at, finished_at)
             SELECT tenant_id, gen_random_uuid(), id, $2, 'only', 'history', 'succeeded', 1, 1,
                    60000, 300000, true, '{}', created_at, created_at, created_at
             FROM runs
             RETURNING tenant_id, id, created_at
         )
         INSERT INTO task_run_logs (tenant_id, task_run_id, attempt, seq, at, level, message)
         SELECT tenant_id, id, 1, 0, created_at, 'info', 'a line of history' FROM tasks"
    ))
    .bind(tenant_id)
    .bind(workflow)
    .bind(runs)
    .bind(age_days)
    .execute(conn)
    .await?;
    Ok(added.rows_affected())
}

/// Workflow runs of `tenant_id` (all statuses).
pub async fn workflow_runs_count(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "SELECT count(*) FROM workflow_runs WHERE tenant_id = $1"
    ))
    .bind(tenant_id)
    .fetch_one(conn)
    .await
}

/// Adds `count` tenants with nothing to do (for the claim's cost beside idle tenants).
pub async fn idle_tenants_fill(conn: &mut PgConnection, count: i64) -> Result<u64, sqlx::Error> {
    let added = sqlx::query(sql!(
        "INSERT INTO tenants (id, name)
         SELECT gen_random_uuid(), 'idle-' || i || '-' || gen_random_uuid()
         FROM generate_series(1, $1) AS i"
    ))
    .bind(count)
    .execute(&mut *conn)
    .await?;
    sqlx::query(sql!("ANALYZE tenants")).execute(conn).await?;
    Ok(added.rows_affected())
}

/// Task runs of `tenant` queued now.
pub async fn queued_task_runs_of(
    conn: &mut PgConnection,
    tenant: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql!(
        "SELECT count(*) FROM task_runs WHERE tenant_id = $1 AND status = 'queued'"
    ))
    .bind(tenant)
    .fetch_one(conn)
    .await
}

/// Cancels every queued single-task run of `tenant` at once (a benchmark's clean-up between
/// phases; the API cancels run by run).
pub async fn queued_task_runs_cancel(
    conn: &mut PgConnection,
    tenant: Uuid,
) -> Result<u64, sqlx::Error> {
    let cancelled = sqlx::query(sql!(
        "WITH t AS (
             UPDATE task_runs SET status = 'cancelled', finished_at = now()
             WHERE tenant_id = $1 AND status = 'queued'
             RETURNING workflow_run_id
         )
         UPDATE workflow_runs SET status = 'cancelled', finished_at = now()
         WHERE tenant_id = $1 AND id IN (SELECT workflow_run_id FROM t)"
    ))
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(cancelled.rows_affected())
}

/// Refreshes the planner's statistics of the hot tables.
pub async fn backlog_analyze(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(sql!("ANALYZE task_runs, workflow_runs"))
        .execute(conn)
        .await?;
    Ok(())
}

/// Task runs in the table.
pub async fn task_runs_count(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql!("SELECT count(*) FROM task_runs"))
        .fetch_one(conn)
        .await
}

/// The plan of one statement as it ran.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Which statement.
    pub statement: &'static str,
    /// `EXPLAIN (ANALYZE, BUFFERS)` output, one line per entry.
    pub lines: Vec<String>,
}

impl Plan {
    /// The execution time the plan reports, in milliseconds.
    pub fn execution_ms(&self) -> Option<f64> {
        self.lines.iter().find_map(|line| {
            line.trim()
                .strip_prefix("Execution Time: ")?
                .strip_suffix(" ms")?
                .parse()
                .ok()
        })
    }

    /// Shared buffers hit plus read over the whole statement (the first `Buffers:` line).
    pub fn buffers(&self) -> u64 {
        let Some(line) = self.lines.iter().find(|l| l.trim().starts_with("Buffers:")) else {
            return 0;
        };
        line.split_whitespace()
            .filter_map(|part| {
                let (key, value) = part.split_once('=')?;
                matches!(key, "hit" | "read").then(|| value.parse::<u64>().ok())?
            })
            .sum()
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// `EXPLAIN (ANALYZE, BUFFERS)` of `sql` with the arguments `bind` gives it.
async fn explain(
    conn: &mut PgConnection,
    statement: &'static str,
    sql: &str,
    bind: impl for<'q> FnOnce(Query<'q>) -> Query<'q>,
) -> Result<Plan, sqlx::Error> {
    let text = format!("EXPLAIN (ANALYZE, BUFFERS) {sql}");
    let rows = bind(sqlx::query(&text)).fetch_all(conn).await?;
    Ok(Plan {
        statement,
        lines: rows
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?,
    })
}

/// Runs each hot statement once under `EXPLAIN (ANALYZE, BUFFERS)` at the table's current
/// size, as a node would: claim `batch` tasks, complete them (which queues their children),
/// try to finish their runs, renew their leases, and sweep leases and schedule timeouts. All
/// in one transaction that is rolled back, so the backlog is unchanged.
pub async fn hot_statement_plans(
    conn: &mut PgConnection,
    batch: i64,
) -> Result<Vec<Plan>, sqlx::Error> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let node = Uuid::new_v4();
    let lease_ms: i64 = 30_000;
    let none: Vec<String> = Vec::new();
    let mut plans = vec![
        explain(&mut tx, "claim", task_run::CLAIM, |q| {
            q.bind(node)
                .bind(batch)
                .bind(none.clone())
                .bind(lease_ms)
                .bind(Vec::<Uuid>::new())
        })
        .await?,
    ];
    let params = ClaimParams {
        node,
        limit: batch,
        full_modules: &[],
        skip_tenants: &[],
        lease: Duration::from_millis(lease_ms as u64),
    };
    let claimed = task_run::task_run_claim(&mut tx, &params).await?;
    let tenants: Vec<Uuid> = claimed.iter().map(|c| c.tenant_id).collect();
    let ids: Vec<Uuid> = claimed.iter().map(|c| c.id).collect();
    let runs: Vec<Uuid> = claimed.iter().map(|c| c.workflow_run_id).collect();
    let tokens: Vec<i64> = claimed.iter().map(|c| c.lease_token).collect();
    let tasks: Vec<String> = claimed.iter().map(|c| c.task.clone()).collect();
    let outputs: Vec<String> = claimed.iter().map(|_| "{}".to_owned()).collect();
    plans.push(
        explain(&mut tx, "renew leases", task_run::RENEW_LEASES, |q| {
            q.bind(node)
                .bind(tenants.clone())
                .bind(ids.clone())
                .bind(tokens.clone())
                .bind(lease_ms)
        })
        .await?,
    );
    plans.push(
        explain(
            &mut tx,
            "complete (succeeded)",
            task_run::COMPLETE_SUCCEEDED,
            |q| {
                q.bind(tenants.clone())
                    .bind(ids.clone())
                    .bind(tokens.clone())
                    .bind(outputs.clone())
            },
        )
        .await?,
    );
    plans.push(
        explain(
            &mut tx,
            "DAG progress: queue children",
            task_run::QUEUE_CHILDREN,
            |q| {
                q.bind(tenants.clone())
                    .bind(runs.clone())
                    .bind(tasks.clone())
            },
        )
        .await?,
    );
    plans.push(
        explain(
            &mut tx,
            "DAG progress: finish runs",
            task_run::FINISH_RUNS,
            |q| q.bind(tenants.clone()).bind(runs.clone()),
        )
        .await?,
    );
    let now = chrono::Utc::now();
    plans.push(
        explain(&mut tx, "reap lost leases", task_run::REAP_LOST, |q| {
            q.bind(now).bind(5_i32).bind(5_000_i64)
        })
        .await?,
    );
    plans.push(
        explain(&mut tx, "expire schedule timeouts", task_run::EXPIRE, |q| {
            q.bind(now).bind(5_000_i64)
        })
        .await?,
    );
    tx.rollback().await?;
    Ok(plans)
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of the reads `GET /api/v1/runs` makes for the dashboard's
/// pages over `tenant_id`'s runs: the newest page, a page per status (`failed` and `scheduled`
/// are rare or absent: the worst case of a scan that filters), of one workflow, and the second
/// page.
pub async fn run_list_plans(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    workflow: &str,
) -> Result<Vec<Plan>, sqlx::Error> {
    use super::workflow_run::{RunListParams, runs_list_query};
    let page = |before| super::PageParams { limit: 51, before };
    let newest = RunListParams::unfiltered(page(None));
    let first: Vec<super::workflow_run::WorkflowRunRow> = runs_list_query("", tenant_id, &newest)
        .build_query_as()
        .fetch_all(&mut *conn)
        .await?;
    let second = first.get(49).map(|r| (r.created_at, r.id));
    let cases: [(&'static str, RunListParams<'_>); 6] = [
        ("runs: newest page", newest.clone()),
        (
            "runs: second page",
            RunListParams {
                page: page(second),
                ..newest.clone()
            },
        ),
        (
            "runs: status=queued",
            RunListParams {
                status: Some(RunStatus::Queued),
                ..newest.clone()
            },
        ),
        (
            "runs: status=failed",
            RunListParams {
                status: Some(RunStatus::Failed),
                ..newest.clone()
            },
        ),
        (
            "runs: status=scheduled",
            RunListParams {
                status: Some(RunStatus::Scheduled),
                ..newest.clone()
            },
        ),
        (
            "runs: one workflow",
            RunListParams {
                workflow: Some(workflow),
                ..newest.clone()
            },
        ),
    ];
    let mut plans = Vec::new();
    for (statement, params) in cases {
        let rows = runs_list_query("EXPLAIN (ANALYZE, BUFFERS) ", tenant_id, &params)
            .build()
            .fetch_all(&mut *conn)
            .await?;
        plans.push(Plan {
            statement,
            lines: rows
                .iter()
                .map(|row| row.try_get::<String, _>(0))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(plans)
}
