//! The vacuum service: keeps the dead weight of the hot tables bounded where autovacuum does
//! not (it may be off, as on the servers this project is tested on, or lag behind a drain).
//!
//! Every task run leaves dead row versions, and each claim walks past the dead entries at the
//! head of the ready index, so claims grow slower with every task until a vacuum. Measured at a
//! million runs with autovacuum off: 586,512 dead versions, 2,461 index buffers and 19.5 ms for
//! a claim of 100 (against about 2 ms at a hundred thousand). This service checks the
//! statistics every `interval` and vacuums a table whose dead versions pass
//! `HotTable::dead_min + DEAD_FRACTION × live`; an advisory lock lets one node at a time do it, so a
//! fleet vacuums no more often than one node would. Where autovacuum keeps up, the threshold
//! is never reached and this does nothing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::db::maintenance::{
    HotTable, TableHealth, table_analyze, table_health, table_vacuum, vacuum_lock_try,
    vacuum_unlock,
};
use crate::db::quota::tenant_unfinished_runs_compact;

/// Dead versions a table may carry in proportion to its live rows.
const DEAD_FRACTION: f64 = 0.05;

/// Rows changed since the last statistics that call for fresh ones whatever the size.
const CHANGED_MIN: i64 = 10_000;
/// And in proportion to the rows there were.
const CHANGED_FRACTION: f64 = 0.2;

/// Whether `health` calls for a vacuum.
pub(crate) fn needs_vacuum(table: HotTable, health: TableHealth) -> bool {
    health.dead > table.dead_min() + (health.live as f64 * DEAD_FRACTION) as i64
}

/// Whether `health` calls for fresh planner statistics: a flood of new runs into a table the
/// planner still thinks small makes it pick a sequential scan for every claim (measured: a
/// claim of 100 rose to 100–500 ms for the first seconds after 100,000 runs were enqueued).
pub(crate) fn needs_analyze(health: TableHealth) -> bool {
    let before = (health.live - health.modified_since_analyze).max(0);
    health.modified_since_analyze > CHANGED_MIN + (before as f64 * CHANGED_FRACTION) as i64
}

/// Checks the hot tables every `interval` until `stop`, vacuuming those that need it.
pub(crate) async fn run(db: Db, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        // Each tenant's count of unfinished runs, folded back into one row.
        match db.pool.acquire().await {
            Ok(mut conn) => {
                if let Err(e) = tenant_unfinished_runs_compact(&mut conn).await {
                    tracing::warn!("folding the counts of unfinished runs failed: {e}");
                }
            }
            Err(e) => tracing::warn!("folding the counts of unfinished runs failed: {e}"),
        }
        for table in HotTable::ALL {
            if let Err(e) = check(&db, table, &stop).await {
                tracing::warn!(table = table.name(), "vacuum check failed: {e}");
            }
        }
    }
}

async fn check(db: &Db, table: HotTable, stop: &CancellationToken) -> Result<(), sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    let health = table_health(&mut conn, table).await?;
    let (vacuum, analyze) = (needs_vacuum(table, health), needs_analyze(health));
    if !(vacuum || analyze) || stop.is_cancelled() || !vacuum_lock_try(&mut conn).await? {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let done = if vacuum {
        table_vacuum(&mut conn, table).await
    } else {
        table_analyze(&mut conn, table).await
    };
    vacuum_unlock(&mut conn).await?;
    done?;
    tracing::info!(
        table = table.name(),
        dead = health.dead,
        live = health.live,
        changed = health.modified_since_analyze,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "{}",
        if vacuum { "vacuumed" } else { "analyzed" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_grows_with_the_table() {
        let health = |live, dead| TableHealth {
            live,
            dead,
            ..TableHealth::default()
        };
        let runs = HotTable::TaskRuns;
        assert!(!needs_vacuum(runs, health(0, 20_000)));
        assert!(needs_vacuum(runs, health(0, 20_001)));
        assert!(!needs_vacuum(runs, health(1_000_000, 60_000)));
        assert!(needs_vacuum(runs, health(1_000_000, 80_000)));
        assert!(needs_vacuum(
            HotTable::TenantUnfinishedRuns,
            health(100, 2_100)
        ));
    }

    #[test]
    fn fresh_statistics_follow_a_flood_of_new_rows() {
        let health = |live, modified_since_analyze| TableHealth {
            live,
            modified_since_analyze,
            ..TableHealth::default()
        };
        // 100,000 runs into an empty table: the statistics are stale.
        assert!(needs_analyze(health(100_000, 100_000)));
        assert!(!needs_analyze(health(5_000, 5_000)));
        // A million rows, 100,000 of them new since the last look: still fine.
        assert!(!needs_analyze(health(1_000_000, 100_000)));
        assert!(needs_analyze(health(1_000_000, 300_000)));
    }
}
