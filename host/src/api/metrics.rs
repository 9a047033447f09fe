//! `GET /metrics` (metrics or admin token): the node's Prometheus metrics, with the queue depths and
//! scheduled runs read from the database at the scrape.

use std::collections::HashSet;
use std::sync::Mutex;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::Scraper;
use super::error::ApiError;
use crate::db::task_run::task_runs_queued_by_workflow;
use crate::db::workflow_run::workflow_runs_scheduled_by_tenant;
use crate::metrics::{
    COMPILES, DB_CONNECTIONS, MAX_QUEUE_SERIES, RUNS_SCHEDULED, SLOTS, TASK_RUNS_QUEUED, handle,
};

/// The (tenant, workflow) series the queued gauge reported last time: one that empties is set
/// to 0 rather than left at its last depth.
static QUEUED_SERIES: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);

/// `GET /metrics` → the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "admin",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")),
    security(("metrics_token" = []), ("admin_token" = [])))]
pub async fn metrics(
    _: Scraper,
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Response, ApiError> {
    let Some(handle) = handle() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "another metrics recorder is installed in this process",
        ));
    };
    let mut conn = state.db.pool.acquire().await?;
    let queued = task_runs_queued_by_workflow(&mut conn, MAX_QUEUE_SERIES).await?;
    let scheduled = workflow_runs_scheduled_by_tenant(&mut conn).await?;
    drop(conn);

    let now: HashSet<(String, String)> = queued
        .iter()
        .map(|(tenant, workflow, _)| (tenant.to_string(), workflow.clone()))
        .collect();
    {
        let mut previous = QUEUED_SERIES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (tenant, workflow) in previous.iter().flatten().filter(|s| !now.contains(*s)) {
            metrics::gauge!(TASK_RUNS_QUEUED, "tenant" => tenant.clone(), "workflow" => workflow.clone())
                .set(0.0);
        }
        *previous = Some(now);
    }
    for (tenant, workflow, count) in queued {
        metrics::gauge!(TASK_RUNS_QUEUED, "tenant" => tenant.to_string(), "workflow" => workflow)
            .set(count as f64);
    }
    for (tenant, count) in scheduled {
        metrics::gauge!(RUNS_SCHEDULED, "tenant" => tenant.to_string()).set(count as f64);
    }
    if let Some(node) = &state.node {
        // Each tenant has its own worker of a module: summed per module.
        let mut slots: std::collections::BTreeMap<String, (u32, u32)> = Default::default();
        for worker in node.workers() {
            let module: String = worker.module.chars().take(12).collect();
            let sum = slots.entry(module).or_default();
            sum.0 += worker.slots;
            sum.1 += worker.in_use;
        }
        for (module, (total, in_use)) in slots {
            metrics::gauge!(SLOTS, "module" => module.clone(), "state" => "total")
                .set(f64::from(total));
            metrics::gauge!(SLOTS, "module" => module, "state" => "in_use").set(f64::from(in_use));
        }
    }
    for (pool, handle) in [("durable", &state.db.pool), ("lossy", &state.db.lossy)] {
        let idle = handle.num_idle() as f64;
        metrics::gauge!(DB_CONNECTIONS, "pool" => pool, "state" => "idle").set(idle);
        metrics::gauge!(DB_CONNECTIONS, "pool" => pool, "state" => "in_use")
            .set(f64::from(handle.size()) - idle);
    }
    metrics::counter!(COMPILES).absolute(state.runtime.compile_count());
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response())
}
