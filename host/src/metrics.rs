//! Prometheus metrics: the process-wide recorder, the names every part records under, and the
//! gauges read from the database when `/metrics` is scraped.
//!
//! Labels are bounded: outcome codes, tenant ids and workflow names (the queued gauge keeps at
//! most `MAX_QUEUE_SERIES` series), never run or task ids.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Attempts finished, by outcome (`succeeded` or a failure code).
pub const TASK_ATTEMPTS: &str = "hatchery_task_attempts_total";
/// Seconds a task run waited, from when it could run to its claim.
pub const QUEUE_WAIT_SECONDS: &str = "hatchery_task_queue_wait_seconds";
/// Workflow runs started, by trigger (`api`, `cron`, `schedule`, `event`, `spawn`).
pub const RUNS_STARTED: &str = "hatchery_runs_started_total";
/// Workflow runs finished, by status (`succeeded`, `failed`, `cancelled`).
pub const RUNS_FINISHED: &str = "hatchery_runs_finished_total";
/// Leases this node found taken from it (its lease expired and another node may run the task).
pub const LEASES_LOST: &str = "hatchery_leases_lost_total";
/// Components loaded instead of compiled, by source (`disk`: this node's cache; `artifact`:
/// one another node compiled and sealed in the database).
pub const COMPILE_CACHE_HITS: &str = "hatchery_compile_cache_hits_total";
/// Wall-clock seconds of attempts.
pub const TASK_EXECUTION_SECONDS: &str = "hatchery_task_execution_seconds";
/// Fuel (wasm instructions) consumed by attempts.
pub const FUEL_CONSUMED: &str = "hatchery_fuel_consumed_total";
/// Task runs claimed per claim statement.
pub const CLAIM_BATCH: &str = "hatchery_claim_batch_size";
/// Seconds a claim statement took.
pub const CLAIM_SECONDS: &str = "hatchery_claim_seconds";
/// Leases of dead nodes requeued (or failed) by the reaper.
pub const LEASES_REAPED: &str = "hatchery_leases_reaped_total";
/// Task runs queued now, by tenant and workflow (read at scrape).
pub const TASK_RUNS_QUEUED: &str = "hatchery_task_runs_queued";
/// Workflow runs waiting for their time, by tenant (read at scrape).
pub const RUNS_SCHEDULED: &str = "hatchery_runs_scheduled";
/// Slots of this node, in all and in use, by module.
pub const SLOTS: &str = "hatchery_slots";
/// Connections of the node's database pools, by state.
pub const DB_CONNECTIONS: &str = "hatchery_db_connections";
/// Components this node compiled (rather than loaded from a cache or a sealed artifact).
pub const COMPILES: &str = "hatchery_compiles_total";
/// Finished workflow runs deleted by the retention service.
pub const RUNS_PURGED: &str = "hatchery_runs_purged_total";

/// Every metric above, for checks that dashboards name only metrics that exist.
pub const ALL: &[&str] = &[
    TASK_ATTEMPTS,
    QUEUE_WAIT_SECONDS,
    RUNS_STARTED,
    RUNS_FINISHED,
    LEASES_LOST,
    COMPILE_CACHE_HITS,
    TASK_EXECUTION_SECONDS,
    FUEL_CONSUMED,
    CLAIM_BATCH,
    CLAIM_SECONDS,
    LEASES_REAPED,
    TASK_RUNS_QUEUED,
    RUNS_SCHEDULED,
    SLOTS,
    DB_CONNECTIONS,
    COMPILES,
    RUNS_PURGED,
];

/// Most (tenant, workflow) series the queued gauge reports, the deepest queues first.
pub const MAX_QUEUE_SERIES: i64 = 1_000;

/// The process's recorder, installed on first use; `None` if another recorder was installed
/// first (then nothing is recorded here).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 300.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &seconds,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(CLAIM_BATCH.into()),
                        &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1_000.0],
                    )
                })
                .and_then(PrometheusBuilder::install_recorder)
                .inspect_err(|e| tracing::warn!("metrics are off: {e}"))
                .ok()
        })
        .as_ref()
}

/// Records one claimed task run.
pub fn claimed(queue_wait_seconds: f64) {
    metrics::histogram!(QUEUE_WAIT_SECONDS).record(queue_wait_seconds.max(0.0));
}

/// Records `count` workflow runs started by `trigger`. Counted as they are written: a start
/// whose transaction then fails (rare: the client is told) may be counted.
pub fn runs_started(trigger: &'static str, count: usize) {
    if count > 0 {
        metrics::counter!(RUNS_STARTED, "trigger" => trigger).increment(count as u64);
    }
}

/// Records `count` workflow runs that finished in `status`, once their transaction committed.
pub fn runs_finished(status: crate::status::RunStatus, count: usize) {
    if count > 0 {
        metrics::counter!(RUNS_FINISHED, "status" => status.as_str()).increment(count as u64);
    }
}

/// Records one finished attempt.
pub fn attempt_finished(outcome: &str, elapsed: Duration, fuel: Option<u64>) {
    metrics::counter!(TASK_ATTEMPTS, "outcome" => outcome.to_owned()).increment(1);
    metrics::histogram!(TASK_EXECUTION_SECONDS).record(elapsed.as_secs_f64());
    if let Some(fuel) = fuel {
        metrics::counter!(FUEL_CONSUMED).increment(fuel);
    }
}
