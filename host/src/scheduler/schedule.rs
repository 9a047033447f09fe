//! The schedule service: queues each scheduled run when it is due, on whichever node gets to
//! it first (the promotion locks the run row with `SKIP LOCKED`, so a run is promoted once).
//!
//! It sleeps until the next run is due, or until a run is scheduled or rescheduled (a
//! notification), and polls at most `poll` apart in case a notification was missed. A run is
//! never queued before its time; the delay after it is one statement plus the timer's slack.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::db::workflow_run::{workflow_runs_next_due, workflow_runs_promote_due};

/// Most runs promoted per statement.
const BATCH: i64 = 1_000;

/// Runs until `stop`; `wake` is notified when a run is scheduled or rescheduled.
pub(crate) async fn run(db: Db, wake: Arc<Notify>, poll: Duration, stop: CancellationToken) {
    loop {
        let next = match promote(&db).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!("promoting scheduled runs failed: {e}");
                Some(poll)
            }
        };
        let sleep = next.unwrap_or(poll).min(poll);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = wake.notified() => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Promotes every due run; returns how long until the next one is due.
async fn promote(db: &Db) -> Result<Option<Duration>, sqlx::Error> {
    loop {
        let mut tx = db.pool.begin().await?;
        let promoted = workflow_runs_promote_due(&mut tx, Utc::now(), BATCH).await?;
        tx.commit().await?;
        if promoted.runs < BATCH as usize {
            break;
        }
    }
    let mut conn = db.pool.acquire().await?;
    let next = workflow_runs_next_due(&mut conn).await?;
    Ok(next.map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)))
}
