//! The node's lease services: the heartbeat that renews every lease the node holds, and the
//! reaper that requeues task runs whose leases expired anywhere in the fleet and fails those
//! that waited past their schedule timeout.
//!
//! Both work in bounded batches, each in its own short transaction, so a million-row backlog
//! never turns one sweep into a long lock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::leases::LeaseTable;
use crate::db::Db;
use crate::db::task_run::{task_runs_expire, task_runs_heartbeat, task_runs_reap_lost};
use crate::status::RunStatus;

/// What the heartbeat and the reaper need of the node's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReaperConfig {
    /// The lease owner.
    pub(crate) node_id: Uuid,
    /// How long a lease lasts from its last renewal.
    pub(crate) lease: Duration,
    /// How often leases are renewed.
    pub(crate) heartbeat: Duration,
    /// How often the reaper sweeps.
    pub(crate) reap_interval: Duration,
    /// Lost leases after which a task run fails instead of being requeued.
    pub(crate) max_lost_leases: i32,
    /// Rows one sweep statement touches at most.
    pub(crate) batch: i64,
}

/// Renews every lease the node holds, including those whose results wait for the completer;
/// stops the attempts whose leases are gone.
pub(crate) async fn heartbeat(
    db: Db,
    leases: Arc<LeaseTable>,
    config: ReaperConfig,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(config.heartbeat) => {}
            () = stop.cancelled() => return,
        }
        let held = leases.held();
        if held.is_empty() {
            continue;
        }
        let beat = match db.lossy.acquire().await {
            Ok(mut conn) => {
                task_runs_heartbeat(&mut conn, config.node_id, &held, config.lease).await
            }
            Err(e) => Err(e),
        };
        match beat {
            Ok(beat) => {
                metrics::counter!(crate::metrics::LEASES_LOST).increment(beat.lost.len() as u64);
                leases.lost(&beat.lost);
            }
            Err(e) => tracing::warn!("heartbeat failed: {e}"),
        }
    }
}

/// The maintenance sweeps, each in bounded batches of their own transaction: expired leases,
/// then schedule timeouts. A sweep that filled its batch goes on at once. `work` wakes the
/// dispatcher when requeued task runs wait to be claimed.
pub(crate) async fn reap(db: Db, work: Arc<Notify>, config: ReaperConfig, stop: CancellationToken) {
    let batch = config.batch.max(1);
    loop {
        tokio::select! {
            () = tokio::time::sleep(config.reap_interval) => {}
            () = stop.cancelled() => return,
        }
        for sweep in [Sweep::LostLeases, Sweep::ScheduleTimeouts] {
            loop {
                if stop.is_cancelled() {
                    return;
                }
                let reaped = async {
                    let mut tx = db.pool.begin().await?;
                    let now = chrono::Utc::now();
                    let reaped = match sweep {
                        Sweep::LostLeases => {
                            task_runs_reap_lost(&mut tx, now, config.max_lost_leases, batch).await?
                        }
                        Sweep::ScheduleTimeouts => task_runs_expire(&mut tx, now, batch).await?,
                    };
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(reaped)
                };
                match reaped.await {
                    Ok(reaped) if reaped.touched() > 0 => {
                        tracing::info!(?sweep, ?reaped, "reaped task runs");
                        crate::metrics::runs_finished(
                            RunStatus::Failed,
                            reaped.finished_runs.len(),
                        );
                        if matches!(sweep, Sweep::LostLeases) {
                            metrics::counter!(crate::metrics::LEASES_REAPED)
                                .increment(reaped.touched() as u64);
                        }
                        work.notify_one();
                        if (reaped.touched() as i64) < batch {
                            break;
                        }
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(?sweep, "reaper failed: {e}");
                        break;
                    }
                }
            }
        }
    }
}

/// A maintenance sweep of the reaper.
#[derive(Debug, Clone, Copy)]
enum Sweep {
    LostLeases,
    ScheduleTimeouts,
}
