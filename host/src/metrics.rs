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

/// Records one finished attempt.
pub fn attempt_finished(outcome: &str, elapsed: Duration, fuel: Option<u64>) {
    metrics::counter!(TASK_ATTEMPTS, "outcome" => outcome.to_owned()).increment(1);
    metrics::histogram!(TASK_EXECUTION_SECONDS).record(elapsed.as_secs_f64());
    if let Some(fuel) = fuel {
        metrics::counter!(FUEL_CONSUMED).increment(fuel);
    }
}
