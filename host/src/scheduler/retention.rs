//! The retention service: deletes finished runs (with their task runs and logs) and events
//! once they are older than their tenant's retention, so the tables stay bounded under a
//! steady load.
//!
//! It walks the tenants a slice at a time (`tenants_per_pass` after a cursor that wraps
//! around) and deletes at most `batch` runs per statement, pausing between statements as long
//! as the last one took, so it takes at most about half of one connection and never holds
//! many locks: the queue keeps its pace while old history goes. Runs that are not finished
//! are never touched. Several nodes may sweep at once; `SKIP LOCKED` keeps them apart.

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::Db;
use crate::db::maintenance::{Purged, retention_purge};

/// How the retention service sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    /// How long a finished run is kept, for tenants without a retention of their own (whole
    /// days from the API; shorter here for benchmarks and tests).
    pub default_retention: Duration,
    /// Pause between sweeps once everything due is deleted.
    pub interval: Duration,
    /// Tenants looked at per statement.
    pub tenants_per_pass: i64,
    /// Most runs (and most events) deleted per statement.
    pub batch: i64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            default_retention: Duration::from_secs(7 * 86_400),
            interval: Duration::from_secs(60),
            tenants_per_pass: 1_000,
            batch: 500,
        }
    }
}

/// Sweeps every `config.interval` until `stop`.
pub(crate) async fn run(db: Db, config: RetentionConfig, stop: CancellationToken) {
    loop {
        if let Err(e) = sweep(&db, &config, &stop).await {
            tracing::warn!("retention sweep failed: {e}");
        }
        tokio::select! {
            () = tokio::time::sleep(config.interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One sweep over every tenant now (what the service does every `interval`).
pub async fn purge_expired(db: &Db, config: &RetentionConfig) -> Result<Purged, sqlx::Error> {
    sweep(db, config, &CancellationToken::new()).await
}

/// One sweep over every tenant: passes until the cursor wraps around.
async fn sweep(
    db: &Db,
    config: &RetentionConfig,
    stop: &CancellationToken,
) -> Result<Purged, sqlx::Error> {
    let mut total = Purged::default();
    let mut cursor = Uuid::nil();
    while !stop.is_cancelled() {
        let started = Instant::now();
        let purged = {
            let mut conn = db.pool.acquire().await?;
            retention_purge(
                &mut conn,
                cursor,
                config.tenants_per_pass,
                i64::try_from(config.default_retention.as_secs()).unwrap_or(i64::MAX),
                config.batch,
                Utc::now(),
            )
            .await?
        };
        total.runs += purged.runs;
        total.task_runs += purged.task_runs;
        total.logs += purged.logs;
        total.events += purged.events;
        total.tenants += purged.tenants;
        if purged.runs + purged.events > 0 {
            metrics::counter!(crate::metrics::RUNS_PURGED).increment(purged.runs as u64);
            // Leave the database to the queue as long as this pass held it.
            tokio::select! {
                () = tokio::time::sleep(started.elapsed()) => {}
                () = stop.cancelled() => break,
            }
        }
        // A full batch may have left more in these tenants: look at them again.
        if purged.runs >= config.batch || purged.events >= config.batch {
            continue;
        }
        match purged.last_tenant {
            Some(last) if purged.tenants >= config.tenants_per_pass => cursor = last,
            _ => break,
        }
    }
    if total.runs + total.events > 0 {
        tracing::info!(
            runs = total.runs,
            task_runs = total.task_runs,
            logs = total.logs,
            events = total.events,
            "retention: deleted finished runs and events past their tenants' retention"
        );
    }
    Ok(total)
}
