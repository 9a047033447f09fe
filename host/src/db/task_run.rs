//! `task_runs` and their logs: on the hot path, claim with leases, complete in batches (with DAG
//! progress and run completion), heartbeat, and the reaper's requeue of expired leases and
//! schedule timeouts; beside it, the reads of a run's task runs and logs. (Task runs are
//! created with their workflow run, in `workflow_run.rs`.)
//!
//! A completion only counts if it carries the lease token of the current claim and the task is
//! still running: a stale holder's late result changes nothing (invariant 2).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::manifest::{Backoff, RetryPolicy};
use crate::runtime::LogLine;
use crate::status::TaskStatus;

/// What a node asks of the claim.
#[derive(Debug, Clone)]
pub struct ClaimParams<'a> {
    /// The claiming node.
    pub node: Uuid,
    /// Most task runs to claim.
    pub limit: i64,
    /// Modules whose workers on this node have no free slot, as `tenant_id:digest` (each
    /// tenant has its own slots of a module, even of one another tenant deployed too).
    pub full_modules: &'a [String],
    /// Tenants passed over (their runs already wait on this node).
    pub skip_tenants: &'a [Uuid],
    /// How long the lease lasts without a heartbeat.
    pub lease: Duration,
}

/// A claimed task run with everything needed to execute it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedTask {
    /// Owner.
    pub tenant_id: Uuid,
    /// Task run id.
    pub id: Uuid,
    /// Workflow run id.
    pub workflow_run_id: Uuid,
    /// Workflow name.
    pub workflow: String,
    /// Task name.
    pub task: String,
    /// Module to run it with.
    pub module_digest: String,
    /// This attempt's number.
    pub attempt: i32,
    /// The fencing token of this claim.
    pub lease_token: i64,
    /// Wall-clock limit of the attempt.
    pub execution_timeout_ms: i64,
    /// Fuel budget of the attempt set for its task; `None`: the node's.
    pub fuel: Option<i64>,
    /// Failed attempts before this one.
    pub failures: i32,
    /// Retries its task allows.
    pub retries: i32,
    /// Growth factor of its backoff; `None`: retry at once.
    pub backoff_factor: Option<f64>,
    /// Cap of one backoff wait, in seconds.
    pub backoff_max_seconds: Option<i32>,
    /// Seconds from when it could first run (queued, or its retry's backoff over) to its claim.
    pub queue_wait_seconds: f64,
    /// JSON input (the task's own, or the run's).
    pub input: String,
    /// JSON object of the run's additional metadata.
    pub metadata: String,
    /// JSON array of `[parent, output]` pairs.
    pub parent_outputs: String,
}

impl ClaimedTask {
    /// What follows a failure of this attempt: the wait before the next one, or `None` (the
    /// task fails for good). The completion statement persists this decision.
    pub fn retry_after_failure(&self, retryable: bool) -> Option<Duration> {
        let policy = RetryPolicy {
            retries: u32::try_from(self.retries).unwrap_or(0),
            backoff: self.backoff_factor.map(|factor| Backoff {
                factor,
                // SQL's `least` ignores a NULL cap, and so does an unbounded one here.
                max_seconds: self
                    .backoff_max_seconds
                    .and_then(|s| u32::try_from(s).ok())
                    .unwrap_or(u32::MAX),
            }),
        };
        policy.after_failure(u32::try_from(self.failures).unwrap_or(0), retryable)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Claims up to `limit` ready task runs for `node`: per tenant highest priority then oldest,
/// interleaved across tenants (each tenant's first, then each tenant's second, …) so one
/// tenant's backlog cannot starve another's. Rows locked by another claimer are skipped.
///
/// The claim leaves `workflow_runs` alone: a run is shown `running` once one of its tasks has
/// started (derived when read, see `workflow_run::select_runs!`), which spares every task a
/// second row version on the hot path.
pub async fn task_run_claim(
    conn: &mut PgConnection,
    params: &ClaimParams<'_>,
) -> Result<Vec<ClaimedTask>, sqlx::Error> {
    sqlx::query_as(CLAIM)
        .bind(params.node)
        .bind(params.limit)
        .bind(params.full_modules)
        .bind(millis(params.lease))
        .bind(params.skip_tenants)
        .fetch_all(conn)
        .await
}

/// Claims for the tenants `capped` (with their caps), which `quota::capped_tenants_lock`
/// locked in this transaction, as `params` says (`CLAIM_CAPPED`).
pub async fn task_run_claim_capped(
    conn: &mut PgConnection,
    params: &ClaimParams<'_>,
    capped: &[(Uuid, i32)],
) -> Result<Vec<ClaimedTask>, sqlx::Error> {
    let (tenants, caps): (Vec<Uuid>, Vec<i32>) = capped.iter().copied().unzip();
    sqlx::query_as(CLAIM_CAPPED)
        .bind(params.node)
        .bind(params.limit)
        .bind(params.full_modules)
        .bind(millis(params.lease))
        .bind(params.skip_tenants)
        .bind(tenants)
        .bind(caps)
        .fetch_all(conn)
        .await
}

/// How an attempt ended, as the completer records it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// Succeeded with this JSON output.
    Succeeded(String),
    /// Failed.
    Failed {
        /// The message.
        error: String,
        /// `TaskFailure::code`.
        code: String,
        /// The wait before the next attempt (`ClaimedTask::retry_after_failure`); `None`: the
        /// task failed for good.
        retry_after: Option<Duration>,
    },
    /// Handed back unfinished (node shutdown): queued again, no retry consumed.
    Released,
}

/// The end of one attempt, to be written.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Owner.
    pub tenant_id: Uuid,
    /// Task run.
    pub task_run_id: Uuid,
    /// Attempt number.
    pub attempt: i32,
    /// Fencing token of the claim.
    pub lease_token: i64,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Its log lines.
    pub logs: Vec<LogLine>,
    /// What it consumed; `None` when it did not execute (handed back before it started).
    pub usage: Option<super::usage::AttemptUsage>,
}

/// What a batch of completions changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompletionEffects {
    /// Completions recorded.
    pub accepted: usize,
    /// Completions ignored: their lease was no longer current.
    pub rejected: usize,
    /// Workflow runs that finished.
    pub finished_runs: Vec<Uuid>,
    /// How many of `finished_runs` succeeded (the others failed).
    pub runs_succeeded: usize,
    /// Whether any task became ready (dispatchers were notified).
    pub queued: bool,
    /// Whether a place under a concurrency key may have been freed (admission was notified).
    pub gated: bool,
}

#[derive(Debug, sqlx::FromRow)]
struct Finished {
    tenant_id: Uuid,
    workflow_run_id: Uuid,
    task: String,
    status: TaskStatus,
    is_on_failure: bool,
    is_leaf: bool,
    error: Option<String>,
    /// Whether the task had flow-control gates (its end may free a place).
    gated: bool,
}

/// Records a batch of completions in one transaction: outputs, retries with backoff, logs, DAG
/// progress, failure propagation (cancel the rest, queue on-failure) and run completion.
pub async fn task_runs_complete(
    conn: &mut PgConnection,
    completions: &[Completion],
) -> Result<CompletionEffects, sqlx::Error> {
    let mut effects = CompletionEffects::default();
    let mut finished: Vec<Finished> = Vec::new();

    let succeeded: Vec<&Completion> = completions
        .iter()
        .filter(|c| matches!(c.outcome, AttemptOutcome::Succeeded(_)))
        .collect();
    if !succeeded.is_empty() {
        let rows: Vec<Finished> = sqlx::query_as(COMPLETE_SUCCEEDED)
            .bind(succeeded.iter().map(|c| c.tenant_id).collect::<Vec<_>>())
            .bind(succeeded.iter().map(|c| c.task_run_id).collect::<Vec<_>>())
            .bind(succeeded.iter().map(|c| c.lease_token).collect::<Vec<_>>())
            .bind(
                succeeded
                    .iter()
                    .map(|c| match &c.outcome {
                        AttemptOutcome::Succeeded(output) => output.as_str(),
                        _ => "null",
                    })
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *conn)
            .await?;
        finished.extend(rows);
    }

    let failed: Vec<(&Completion, &str, &str, Option<i64>)> = completions
        .iter()
        .filter_map(|c| match &c.outcome {
            AttemptOutcome::Failed {
                error,
                code,
                retry_after,
            } => Some((c, error.as_str(), code.as_str(), retry_after.map(millis))),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        // The node decided whether and when to retry (`ClaimedTask::retry_after_failure`):
        // `c.retry_ms` NULL is a failure for good.
        let rows: Vec<Finished> = sqlx::query_as(
            sql!("UPDATE task_runs t SET
                 failures = t.failures + 1,
                 status = CASE WHEN c.retry_ms IS NULL THEN 'failed' ELSE 'queued' END,
                 available_at = coalesce(now() + c.retry_ms * interval '1 millisecond',
                                         t.available_at),
                 schedule_deadline = now() + (c.retry_ms + t.schedule_timeout_ms)
                                             * interval '1 millisecond',
                 finished_at = CASE WHEN c.retry_ms IS NULL THEN now() END,
                 error = c.error, error_code = c.code,
                 lease_owner = NULL, lease_expires_at = NULL
             FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::bigint[])
                  AS c(tenant_id, id, token, error, code, retry_ms)
             WHERE t.tenant_id = c.tenant_id AND t.id = c.id AND t.lease_token = c.token
               AND t.status = 'running'
             RETURNING t.tenant_id, t.workflow_run_id, t.task, t.status, t.is_on_failure, t.is_leaf, t.error,
                       t.gate IS NOT NULL AS gated"),
        )
        .bind(failed.iter().map(|f| f.0.tenant_id).collect::<Vec<_>>())
        .bind(failed.iter().map(|f| f.0.task_run_id).collect::<Vec<_>>())
        .bind(failed.iter().map(|f| f.0.lease_token).collect::<Vec<_>>())
        .bind(failed.iter().map(|f| f.1).collect::<Vec<_>>())
        .bind(failed.iter().map(|f| f.2).collect::<Vec<_>>())
        .bind(failed.iter().map(|f| f.3).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        effects.queued |= rows.iter().any(|r| r.status == TaskStatus::Queued);
        finished.extend(rows);
    }

    let released: Vec<&Completion> = completions
        .iter()
        .filter(|c| c.outcome == AttemptOutcome::Released)
        .collect();
    if !released.is_empty() {
        let handed_back: Vec<bool> = sqlx::query_scalar(sql!(
            "UPDATE task_runs t SET status = 'queued', available_at = now(),
                 lease_owner = NULL, lease_expires_at = NULL
             FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS c(tenant_id, id, token)
             WHERE t.tenant_id = c.tenant_id AND t.id = c.id AND t.lease_token = c.token
               AND t.status = 'running'
             RETURNING t.gate IS NOT NULL"
        ))
        .bind(released.iter().map(|c| c.tenant_id).collect::<Vec<_>>())
        .bind(released.iter().map(|c| c.task_run_id).collect::<Vec<_>>())
        .bind(released.iter().map(|c| c.lease_token).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        effects.gated |= handed_back.iter().any(|g| *g);
        let count = handed_back.len();
        effects.accepted += count;
        effects.rejected += released.len() - count;
        effects.queued |= count > 0;
    }
    effects.accepted += finished.len();
    effects.rejected += succeeded.len() + failed.len() - finished.len();

    logs_insert(conn, completions).await?;
    let progress = runs_progress(conn, &finished).await?;
    effects.finished_runs = progress.finished_runs;
    effects.runs_succeeded = progress.runs_succeeded;
    effects.queued |= progress.queued;
    effects.gated |= progress.gated || finished.iter().any(|f| f.gated);
    // Last: the usage rows are the ones every completer shares, so they are locked the
    // shortest time. Stale results count too: their attempts did run.
    let usage: Vec<(Uuid, &super::usage::AttemptUsage)> = completions
        .iter()
        .filter_map(|c| Some((c.tenant_id, c.usage.as_ref()?)))
        .collect();
    super::usage::usage_attempts_add(conn, &usage).await?;
    if effects.queued {
        let tenants: Vec<Uuid> = completions.iter().map(|c| c.tenant_id).collect();
        super::notify_work(conn, &tenants).await?;
    }
    if effects.gated {
        super::flow::notify_gated(conn).await?;
    }
    super::notify_ids(conn, super::CHANNEL_RUN_FINISHED, &effects.finished_runs).await?;
    Ok(effects)
}

/// Column arrays of log lines to insert in one statement.
#[derive(Default)]
struct LogColumns<'a> {
    tenants: Vec<Uuid>,
    task_runs: Vec<Uuid>,
    attempts: Vec<i32>,
    seqs: Vec<i32>,
    times: Vec<DateTime<Utc>>,
    levels: Vec<&'static str>,
    messages: Vec<&'a str>,
}

async fn logs_insert(
    conn: &mut PgConnection,
    completions: &[Completion],
) -> Result<(), sqlx::Error> {
    let mut columns = LogColumns::default();
    for completion in completions {
        for (seq, line) in completion.logs.iter().enumerate() {
            columns.tenants.push(completion.tenant_id);
            columns.task_runs.push(completion.task_run_id);
            columns.attempts.push(completion.attempt);
            columns.seqs.push(seq as i32);
            columns.times.push(DateTime::<Utc>::from(line.at));
            columns.levels.push(line.level.as_str());
            columns.messages.push(&line.message);
        }
    }
    if columns.tenants.is_empty() {
        return Ok(());
    }
    sqlx::query(sql!(
        "INSERT INTO task_run_logs (tenant_id, task_run_id, attempt, seq, at, level, message)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::int[], $5::timestamptz[],
                              $6::text[], $7::text[])
         ON CONFLICT DO NOTHING"
    ))
    .bind(columns.tenants)
    .bind(columns.task_runs)
    .bind(columns.attempts)
    .bind(columns.seqs)
    .bind(columns.times)
    .bind(columns.levels)
    .bind(columns.messages)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Default)]
struct Progress {
    finished_runs: Vec<Uuid>,
    /// How many of `finished_runs` succeeded (the others failed).
    runs_succeeded: usize,
    queued: bool,
    /// A run held by a workflow-level rule finished.
    gated: bool,
}

/// After tasks reached a final state: queue children whose parents all succeeded, fail runs
/// whose task failed for good, and finish runs whose tasks all succeeded.
async fn runs_progress(
    conn: &mut PgConnection,
    finished: &[Finished],
) -> Result<Progress, sqlx::Error> {
    let mut progress = Progress::default();
    let done: Vec<&Finished> = finished
        .iter()
        .filter(|f| f.status == TaskStatus::Succeeded && !f.is_on_failure)
        .collect();
    // Leaves have no children to queue.
    let parents: Vec<&&Finished> = done.iter().filter(|d| !d.is_leaf).collect();
    if !parents.is_empty() {
        let queued: Vec<Option<Uuid>> = sqlx::query_scalar(QUEUE_CHILDREN)
            .bind(parents.iter().map(|d| d.tenant_id).collect::<Vec<_>>())
            .bind(
                parents
                    .iter()
                    .map(|d| d.workflow_run_id)
                    .collect::<Vec<_>>(),
            )
            .bind(parents.iter().map(|d| d.task.as_str()).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?;
        progress.queued |= queued.iter().any(Option::is_some);
    }

    // Only a leaf can be the last task of its run to succeed (every other task has a
    // child that succeeds after it), so only runs with a leaf among these can be finished.
    let mut runs: Vec<(Uuid, Uuid)> = done
        .iter()
        .filter(|d| d.is_leaf)
        .map(|d| (d.tenant_id, d.workflow_run_id))
        .collect();
    runs.sort();
    runs.dedup();
    if !runs.is_empty() {
        // One pass over each run's tasks: finished when every task succeeded; output from
        // the leaves (one leaf: its output; several: keyed by name).
        let succeeded: Vec<(Uuid, bool)> = sqlx::query_as(FINISH_RUNS)
            .bind(runs.iter().map(|r| r.0).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.1).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?;
        progress.gated |= succeeded.iter().any(|s| s.1);
        progress.runs_succeeded = succeeded.len();
        progress
            .finished_runs
            .extend(succeeded.into_iter().map(|s| s.0));
    }

    let failed: Vec<&Finished> = finished
        .iter()
        .filter(|f| {
            matches!(f.status, TaskStatus::Failed | TaskStatus::Cancelled) && !f.is_on_failure
        })
        .collect();
    if !failed.is_empty() {
        // The first failure of each still-active run fails it. Lock order: task_runs (the
        // rest cancelled, the on-failure task queued) before workflow_runs, as everywhere.
        let mut first: Vec<&Finished> = Vec::new();
        for failure in failed {
            if !first.iter().any(|f| {
                f.tenant_id == failure.tenant_id && f.workflow_run_id == failure.workflow_run_id
            }) {
                first.push(failure);
            }
        }
        let active: Vec<Uuid> = sqlx::query_scalar(sql!(
            "SELECT w.id FROM workflow_runs w
             JOIN unnest($1::uuid[], $2::uuid[]) AS r(tenant_id, id)
               ON w.tenant_id = r.tenant_id AND w.id = r.id
             WHERE w.status IN ('queued', 'running')"
        ))
        .bind(first.iter().map(|f| f.tenant_id).collect::<Vec<_>>())
        .bind(first.iter().map(|f| f.workflow_run_id).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        let failing: Vec<&Finished> = first
            .into_iter()
            .filter(|f| active.contains(&f.workflow_run_id))
            .collect();
        if !failing.is_empty() {
            let tenants: Vec<Uuid> = failing.iter().map(|f| f.tenant_id).collect();
            let runs: Vec<Uuid> = failing.iter().map(|f| f.workflow_run_id).collect();
            let errors: Vec<String> = failing
                .iter()
                .map(|f| {
                    format!(
                        "task `{}` failed: {}",
                        f.task,
                        f.error.as_deref().unwrap_or("unknown error")
                    )
                })
                .collect();
            sqlx::query(sql!(
                "UPDATE task_runs t SET status = 'cancelled', finished_at = now(),
                     error = 'cancelled: the workflow run failed', error_code = 'cancelled'
                 FROM unnest($1::uuid[], $2::uuid[]) AS r(tenant_id, id)
                 WHERE t.tenant_id = r.tenant_id AND t.workflow_run_id = r.id
                   AND t.status IN ('pending', 'queued') AND NOT t.is_on_failure"
            ))
            .bind(&tenants)
            .bind(&runs)
            .execute(&mut *conn)
            .await?;
            let on_failure = sqlx::query(sql!(
                "UPDATE task_runs t SET status = 'queued', available_at = now(),
                     schedule_deadline = now() + t.schedule_timeout_ms * interval '1 millisecond',
                     input = jsonb_build_object('error', r.error, 'input', w.input)
                 FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS r(tenant_id, id, error)
                 JOIN workflow_runs w ON w.tenant_id = r.tenant_id AND w.id = r.id
                 WHERE t.tenant_id = r.tenant_id AND t.workflow_run_id = r.id
                   AND t.is_on_failure AND t.status = 'pending'"
            ))
            .bind(&tenants)
            .bind(&runs)
            .bind(&errors)
            .execute(&mut *conn)
            .await?;
            progress.queued |= on_failure.rows_affected() > 0;
            let failed_runs: Vec<(Uuid, bool)> = sqlx::query_as(
                sql!("UPDATE workflow_runs w SET status = 'failed', finished_at = now(), error = r.error,
                     started_at = (SELECT min(s.started_at) FROM task_runs s
                                   WHERE s.tenant_id = w.tenant_id AND s.workflow_run_id = w.id)
                 FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS r(tenant_id, id, error)
                 WHERE w.tenant_id = r.tenant_id AND w.id = r.id AND w.status IN ('queued', 'running')
                 RETURNING w.id, w.gated"),
            )
            .bind(&tenants)
            .bind(&runs)
            .bind(&errors)
            .fetch_all(&mut *conn)
            .await?;
            progress.gated |= failed_runs.iter().any(|f| f.1);
            progress
                .finished_runs
                .extend(failed_runs.into_iter().map(|f| f.0));
        }
    }
    let unique: HashSet<Uuid> = progress.finished_runs.drain(..).collect();
    progress.finished_runs = unique.into_iter().collect();
    Ok(progress)
}

/// Fails queued task runs that can never start (`(tenant, task run, reason)`), with their
/// workflow runs; returns the runs that finished.
pub(crate) async fn task_runs_fail_queued(
    conn: &mut PgConnection,
    failed: &[(Uuid, Uuid, String)],
    code: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows: Vec<Finished> = sqlx::query_as(sql!(
        "UPDATE task_runs t SET status = 'failed', finished_at = now(), error = f.reason,
             error_code = $4
         FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS f(tenant_id, id, reason)
         WHERE t.tenant_id = f.tenant_id AND t.id = f.id AND t.status = 'queued'
         RETURNING t.tenant_id, t.workflow_run_id, t.task, t.status, t.is_on_failure, t.is_leaf,
                   t.error, t.gate IS NOT NULL AS gated"
    ))
    .bind(failed.iter().map(|f| f.0).collect::<Vec<_>>())
    .bind(failed.iter().map(|f| f.1).collect::<Vec<_>>())
    .bind(failed.iter().map(|f| f.2.as_str()).collect::<Vec<_>>())
    .bind(code)
    .fetch_all(&mut *conn)
    .await?;
    let progress = runs_progress(conn, &rows).await?;
    if progress.queued {
        let tenants: Vec<Uuid> = rows.iter().map(|r| r.tenant_id).collect();
        super::notify_work(conn, &tenants).await?;
    }
    super::notify_ids(conn, super::CHANNEL_RUN_FINISHED, &progress.finished_runs).await?;
    Ok(progress.finished_runs)
}

/// What one heartbeat learned about the leases a node holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Tokens whose lease was extended.
    pub renewed: Vec<i64>,
    /// Tokens whose lease is gone for good: the task was cancelled, reaped or finished by
    /// someone else. Their attempts should stop.
    pub lost: Vec<i64>,
}

/// Extends the leases node `node` still holds. A row locked by another transaction — above all
/// the node's own completion being written — is skipped, neither renewed nor lost, so a slow
/// completion never blocks the heartbeat of every other lease; the reaper skips locked rows
/// too, so the lease of a result being committed cannot be taken meanwhile.
pub async fn task_runs_heartbeat(
    conn: &mut PgConnection,
    node: Uuid,
    held: &[(Uuid, Uuid, i64)],
    lease: Duration,
) -> Result<Heartbeat, sqlx::Error> {
    if held.is_empty() {
        return Ok(Heartbeat::default());
    }
    let tenants: Vec<Uuid> = held.iter().map(|h| h.0).collect();
    let ids: Vec<Uuid> = held.iter().map(|h| h.1).collect();
    let tokens: Vec<i64> = held.iter().map(|h| h.2).collect();
    let renewed: Vec<i64> = sqlx::query_scalar(RENEW_LEASES)
        .bind(node)
        .bind(&tenants)
        .bind(&ids)
        .bind(&tokens)
        .bind(millis(lease))
        .fetch_all(&mut *conn)
        .await?;
    // The last committed state of the rest (a plain read waits for no lock).
    let lost: Vec<i64> = sqlx::query_scalar(sql!(
        "SELECT h.token
         FROM unnest($2::uuid[], $3::uuid[], $4::bigint[]) AS h(tenant_id, id, token)
         LEFT JOIN task_runs t ON t.tenant_id = h.tenant_id AND t.id = h.id
         WHERE NOT h.token = ANY($5)
           AND (t.id IS NULL OR t.lease_token IS DISTINCT FROM h.token
                OR t.lease_owner IS DISTINCT FROM $1 OR t.status <> 'running')"
    ))
    .bind(node)
    .bind(&tenants)
    .bind(&ids)
    .bind(&tokens)
    .bind(&renewed)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Heartbeat { renewed, lost })
}

/// What one pass of the reaper did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Task runs whose lease expired and that were queued again.
    pub requeued: usize,
    /// Task runs failed because they lost their lease too often.
    pub failed: usize,
    /// Task runs cancelled because they waited past their schedule timeout.
    pub expired: usize,
    /// Workflow runs that finished as a result.
    pub finished_runs: Vec<Uuid>,
}

impl Reaped {
    /// Task runs changed.
    pub fn touched(&self) -> usize {
        self.requeued + self.failed + self.expired
    }
}

/// Requeues up to `batch` running task runs whose lease expired before `now` (a lost node does
/// not consume retries; more than `max_lost_leases` losses fail the task). Rows locked by
/// another transaction (a completion being written) are skipped, so the sweep never waits on a
/// completion and never holds more than `batch` rows; call again while it returns `batch`.
pub async fn task_runs_reap_lost(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    max_lost_leases: i32,
    batch: i64,
) -> Result<Reaped, sqlx::Error> {
    let mut reaped = Reaped::default();
    let lost: Vec<Finished> = sqlx::query_as(REAP_LOST)
        .bind(now)
        .bind(max_lost_leases)
        .bind(batch.max(1))
        .fetch_all(&mut *conn)
        .await?;
    reaped.requeued = lost
        .iter()
        .filter(|l| l.status == TaskStatus::Queued)
        .count();
    reaped.failed = lost.len() - reaped.requeued;
    let gated = lost.iter().any(|l| l.gated);
    let failed: Vec<Finished> = lost
        .into_iter()
        .filter(|l| l.status == TaskStatus::Failed)
        .collect();
    let progress = runs_progress(conn, &failed).await?;
    if reaped.requeued > 0 || progress.queued {
        super::notify_work(conn, &[]).await?;
    }
    if gated || progress.gated {
        super::flow::notify_gated(conn).await?;
    }
    super::notify_ids(conn, super::CHANNEL_RUN_FINISHED, &progress.finished_runs).await?;
    reaped.finished_runs = progress.finished_runs;
    Ok(reaped)
}

/// Cancels up to `batch` queued task runs past their schedule deadline, failing their
/// workflow runs. Rows locked by another transaction (a claim) are skipped; call again while
/// it returns `batch`.
pub async fn task_runs_expire(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    batch: i64,
) -> Result<Reaped, sqlx::Error> {
    let expired: Vec<Finished> = sqlx::query_as(EXPIRE)
        .bind(now)
        .bind(batch.max(1))
        .fetch_all(&mut *conn)
        .await?;
    let mut reaped = Reaped {
        expired: expired.len(),
        ..Reaped::default()
    };
    let progress = runs_progress(conn, &expired).await?;
    if progress.queued {
        super::notify_work(conn, &[]).await?;
    }
    if progress.gated {
        super::flow::notify_gated(conn).await?;
    }
    super::notify_ids(conn, super::CHANNEL_RUN_FINISHED, &progress.finished_runs).await?;
    reaped.finished_runs = progress.finished_runs;
    Ok(reaped)
}

/// One batch of each sweep in one transaction: expired leases, then schedule timeouts (for
/// tests and tools; the node runs each sweep in transactions of its own).
pub async fn task_runs_reap(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    max_lost_leases: i32,
    batch: i64,
) -> Result<Reaped, sqlx::Error> {
    let mut reaped = task_runs_reap_lost(conn, now, max_lost_leases, batch).await?;
    let expired = task_runs_expire(conn, now, batch).await?;
    reaped.expired = expired.expired;
    reaped.finished_runs.extend(expired.finished_runs);
    Ok(reaped)
}

// The hot statements, named so that `plans` can show how each executes at any table size.

/// The claim (see `task_run_claim`).
pub(crate) const CLAIM: &str = sql!(
    tenants_with_ready_work!(),
    ",
         candidates AS (
             SELECT r.tenant_id, r.id, r.priority, r.available_at,
                    row_number() OVER (PARTITION BY r.tenant_id
                                       ORDER BY r.priority DESC, r.available_at, r.id) AS turn
             FROM (SELECT tenant_id FROM ready
                   WHERE tenant_id IS NOT NULL AND tenant_id <> ALL($5::uuid[])) tn
             CROSS JOIN LATERAL (
                 SELECT tr.tenant_id, tr.id, tr.priority, tr.available_at
                 FROM task_runs tr
                 WHERE tr.tenant_id = tn.tenant_id AND tr.status = 'queued' AND tr.gate IS NULL
                   AND tr.available_at <= now()
                   AND tr.tenant_id::text || ':' || tr.module_digest <> ALL($3)
                 ORDER BY tr.priority DESC, tr.available_at, tr.id
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ) r
         ),
         ",
    lease_picked!()
);

/// The claim for tenants capped on executing task runs (`quota::Quotas::max_executing`),
/// after `quota::capped_tenants_lock` locked them in the same transaction: each gets at most
/// its cap less its task runs leased now, anywhere in the fleet. `$6`/`$7`: the locked tenants
/// and their caps. Running rows are counted through `task_runs_leases`, which holds only
/// them (a fleet's worth of leases, not a table's worth of history).
pub(crate) const CLAIM_CAPPED: &str = sql!(
    "WITH caps AS (
             SELECT * FROM unnest($6::uuid[], $7::int[]) AS c(tenant_id, cap)
         ),
         executing AS (
             SELECT tenant_id, count(*)::int AS n FROM task_runs
             WHERE status = 'running' AND lease_expires_at >= '-infinity'
               AND tenant_id = ANY($6)
             GROUP BY tenant_id
         ),
         room AS (
             SELECT c.tenant_id, c.cap - coalesce(e.n, 0) AS room
             FROM caps c LEFT JOIN executing e ON e.tenant_id = c.tenant_id
             WHERE c.tenant_id <> ALL($5::uuid[])
         ),
         candidates AS (
             SELECT r.tenant_id, r.id, r.priority, r.available_at,
                    row_number() OVER (PARTITION BY r.tenant_id
                                       ORDER BY r.priority DESC, r.available_at, r.id) AS turn
             FROM room tn
             CROSS JOIN LATERAL (
                 SELECT tr.tenant_id, tr.id, tr.priority, tr.available_at
                 FROM task_runs tr
                 WHERE tr.tenant_id = tn.tenant_id AND tr.status = 'queued' AND tr.gate IS NULL
                   AND tr.available_at <= now()
                   AND tr.tenant_id::text || ':' || tr.module_digest <> ALL($3)
                 ORDER BY tr.priority DESC, tr.available_at, tr.id
                 LIMIT greatest(0, least($2, tn.room))
                 FOR UPDATE SKIP LOCKED
             ) r
         ),
         ",
    lease_picked!()
);

/// Records successful attempts whose lease is current.
pub(crate) const COMPLETE_SUCCEEDED: &str = sql!("UPDATE task_runs t SET status = 'succeeded', output = c.output::jsonb,
                 finished_at = now(), error = NULL, error_code = NULL,
                 lease_owner = NULL, lease_expires_at = NULL
             FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[])
                  AS c(tenant_id, id, token, output)
             WHERE t.tenant_id = c.tenant_id AND t.id = c.id AND t.lease_token = c.token
               AND t.status = 'running'
             RETURNING t.tenant_id, t.workflow_run_id, t.task, t.status, t.is_on_failure, t.is_leaf, t.error,
                       t.gate IS NOT NULL AS gated");

/// DAG progress: children whose parents all succeeded become queued.
pub(crate) const QUEUE_CHILDREN: &str = sql!("WITH done AS (
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS d(tenant_id, run_id, task)
             ),
             hits AS (
                 SELECT ch.tenant_id, ch.id, count(*)::int AS n
                 FROM done d
                 JOIN task_runs ch ON ch.tenant_id = d.tenant_id AND ch.workflow_run_id = d.run_id
                                  AND d.task = ANY(ch.parents)
                 WHERE ch.status = 'pending' AND NOT ch.is_on_failure
                 GROUP BY ch.tenant_id, ch.id
             )
             UPDATE task_runs ch SET
                 pending_parents = ch.pending_parents - hits.n,
                 status = CASE WHEN ch.pending_parents - hits.n <= 0 THEN 'queued' ELSE 'pending' END,
                 available_at = now(),
                 schedule_deadline = CASE WHEN ch.pending_parents - hits.n <= 0
                     THEN now() + ch.schedule_timeout_ms * interval '1 millisecond' END
             FROM hits WHERE ch.tenant_id = hits.tenant_id AND ch.id = hits.id
             RETURNING CASE WHEN ch.status = 'queued' THEN ch.id END");

/// Finishes the runs whose tasks all succeeded, with the output of their leaves.
pub(crate) const FINISH_RUNS: &str = sql!("WITH runs AS (
                 SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS r(tenant_id, id)
             ),
             summary AS (
                 SELECT t.tenant_id, t.workflow_run_id AS id,
                        min(t.started_at) AS first_start,
                        count(*) FILTER (WHERE NOT t.is_on_failure AND t.status <> 'succeeded') AS open,
                        count(*) FILTER (WHERE t.is_leaf AND NOT t.is_on_failure) AS leaves,
                        (array_agg(t.output) FILTER (WHERE t.is_leaf AND NOT t.is_on_failure))[1] AS single,
                        jsonb_object_agg(t.task, t.output) FILTER (WHERE t.is_leaf AND NOT t.is_on_failure) AS keyed
                 FROM runs r
                 JOIN task_runs t ON t.tenant_id = r.tenant_id AND t.workflow_run_id = r.id
                 GROUP BY t.tenant_id, t.workflow_run_id
             )
             UPDATE workflow_runs w SET status = 'succeeded', finished_at = now(),
                 started_at = s.first_start,
                 output = CASE WHEN s.leaves = 1 THEN s.single ELSE s.keyed END
             FROM summary s
             WHERE w.tenant_id = s.tenant_id AND w.id = s.id AND s.open = 0
               AND w.status IN ('queued', 'running')
             RETURNING w.id, w.gated");

/// Extends the leases a node holds, skipping rows locked by another transaction.
pub(crate) const RENEW_LEASES: &str = sql!(
    "WITH mine AS (
             SELECT t.tenant_id, t.id
             FROM unnest($2::uuid[], $3::uuid[], $4::bigint[]) AS h(tenant_id, id, token)
             JOIN task_runs t ON t.tenant_id = h.tenant_id AND t.id = h.id
             WHERE t.lease_token = h.token AND t.lease_owner = $1 AND t.status = 'running'
             ORDER BY t.tenant_id, t.id
             FOR UPDATE OF t SKIP LOCKED
         )
         UPDATE task_runs t SET lease_expires_at = now() + $5 * interval '1 millisecond'
         FROM mine WHERE t.tenant_id = mine.tenant_id AND t.id = mine.id
         RETURNING t.lease_token"
);

/// Requeues (or fails) one batch of task runs whose lease expired.
pub(crate) const REAP_LOST: &str = sql!("WITH expired AS (
             SELECT tenant_id, id FROM task_runs
             WHERE status = 'running' AND lease_expires_at < $1
             ORDER BY lease_expires_at
             LIMIT $3
             FOR UPDATE SKIP LOCKED
         )
         UPDATE task_runs t SET
             lost_leases = t.lost_leases + 1,
             status = CASE WHEN t.lost_leases + 1 > $2 THEN 'failed' ELSE 'queued' END,
             error = CASE WHEN t.lost_leases + 1 > $2
                          THEN 'its node was lost ' || (t.lost_leases + 1) || ' times' ELSE t.error END,
             error_code = CASE WHEN t.lost_leases + 1 > $2 THEN 'lost' ELSE t.error_code END,
             finished_at = CASE WHEN t.lost_leases + 1 > $2 THEN now() END,
             available_at = now(),
             schedule_deadline = now() + t.schedule_timeout_ms * interval '1 millisecond',
             lease_owner = NULL, lease_expires_at = NULL
         FROM expired e WHERE t.tenant_id = e.tenant_id AND t.id = e.id
         RETURNING t.tenant_id, t.workflow_run_id, t.task, t.status, t.is_on_failure, t.is_leaf, t.error,
                       t.gate IS NOT NULL AS gated");

/// Cancels one batch of queued task runs past their schedule deadline.
pub(crate) const EXPIRE: &str = sql!("WITH late AS (
             SELECT tenant_id, id FROM task_runs
             WHERE status = 'queued' AND schedule_deadline < $1
             ORDER BY schedule_deadline
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         )
         UPDATE task_runs t SET status = 'cancelled', finished_at = now(),
             error_code = 'schedule_timeout',
             error = 'not started within its schedule timeout of '
                     || (t.schedule_timeout_ms / 1000.0)::text || 's'
         FROM late WHERE t.tenant_id = late.tenant_id AND t.id = late.id
         RETURNING t.tenant_id, t.workflow_run_id, t.task, t.status, t.is_on_failure, t.is_leaf, t.error,
                       t.gate IS NOT NULL AS gated");

/// Queued task runs by tenant and workflow, the deepest queues first, at most `limit` groups
/// (the metrics scrape).
pub async fn task_runs_queued_by_workflow(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<(Uuid, String, i64)>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT tenant_id, workflow, count(*) FROM task_runs WHERE status = 'queued'
         GROUP BY tenant_id, workflow ORDER BY count(*) DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// A task run as shown with its workflow run.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TaskRunRow {
    /// Task run id.
    pub id: Uuid,
    /// Task name.
    pub task: String,
    /// Where the task run is.
    pub status: TaskStatus,
    /// Attempts started.
    pub attempt: i32,
    /// Failed attempts (which consumed retries).
    pub failures: i32,
    /// Leases lost to dead nodes.
    pub lost_leases: i32,
    /// Whether this is the on-failure task.
    pub is_on_failure: bool,
    /// The tasks whose outputs it waits for (its edges in the run's DAG).
    pub parents: Vec<String>,
    /// Output once succeeded.
    pub output: Option<Value>,
    /// Last error.
    pub error: Option<String>,
    /// Code of the last error.
    pub error_code: Option<String>,
    /// First started.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// The task runs of a workflow run, in creation order.
pub async fn task_runs_of_run(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
) -> Result<Vec<TaskRunRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT id, task, status, attempt, failures, lost_leases, is_on_failure, parents, output,
                error, error_code, started_at, finished_at
         FROM task_runs WHERE tenant_id = $1 AND workflow_run_id = $2 ORDER BY id"
    ))
    .bind(tenant_id)
    .bind(run_id)
    .fetch_all(conn)
    .await
}

/// One log line of a task attempt, with the task it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RunLogLine {
    /// When the line was written.
    pub at: DateTime<Utc>,
    /// trace | debug | info | warn | error.
    pub level: String,
    /// The text.
    pub message: String,
    /// Task name.
    pub task: String,
    /// Task run id.
    pub task_run_id: Uuid,
    /// Attempt number.
    pub attempt: i32,
    /// Position within the attempt.
    pub seq: i32,
}

/// Where a page of log lines starts: after this line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    /// Time of the line.
    pub at: DateTime<Utc>,
    /// Its task run.
    pub task_run_id: Uuid,
    /// Its attempt.
    pub attempt: i32,
    /// Its position within the attempt.
    pub seq: i32,
}

/// Up to `limit` log lines of the attempts of run `run_id`, oldest first, after `after`.
pub async fn task_run_logs_of_run(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
    after: Option<LogPosition>,
    limit: i64,
) -> Result<Vec<RunLogLine>, sqlx::Error> {
    sqlx::query_as(
        sql!("SELECT l.at, l.level, l.message, t.task, l.task_run_id, l.attempt, l.seq
         FROM task_runs t
         JOIN task_run_logs l ON l.tenant_id = t.tenant_id AND l.task_run_id = t.id
         WHERE t.tenant_id = $1 AND t.workflow_run_id = $2
           AND ($3::timestamptz IS NULL OR (l.at, l.task_run_id, l.attempt, l.seq) > ($3, $4, $5, $6))
         ORDER BY l.at, l.task_run_id, l.attempt, l.seq LIMIT $7"),
    )
    .bind(tenant_id)
    .bind(run_id)
    .bind(after.map(|p| p.at))
    .bind(after.map(|p| p.task_run_id))
    .bind(after.map(|p| p.attempt))
    .bind(after.map(|p| p.seq))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Counts of task runs by status, for tests and the benchmark.
pub async fn task_run_status_counts(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<HashMap<TaskStatus, i64>, sqlx::Error> {
    let rows: Vec<(TaskStatus, i64)> = sqlx::query_as(sql!(
        "SELECT status, count(*) FROM task_runs WHERE tenant_id = $1 GROUP BY status"
    ))
    .bind(tenant_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// How many task runs took how many attempts, for tests and the benchmark.
pub async fn task_run_attempt_counts(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<HashMap<i32, i64>, sqlx::Error> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(sql!(
        "SELECT attempt, count(*) FROM task_runs WHERE tenant_id = $1 GROUP BY attempt"
    ))
    .bind(tenant_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Leases lost in all, and task runs attempted more than once, for tests and the benchmark.
pub async fn task_runs_repeats(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT coalesce(sum(lost_leases), 0)::bigint, count(*) FILTER (WHERE attempt > 1)
         FROM task_runs WHERE tenant_id = $1"
    ))
    .bind(tenant_id)
    .fetch_one(conn)
    .await
}
