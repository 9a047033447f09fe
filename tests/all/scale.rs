//! Behaviour under load and under a slow database: backpressure, leases held until results are
//! durable, and maintenance sweeps in bounded batches.
//!
//! The slow database is real: a test transaction takes a table lock that every completion
//! needs (`workflow_runs`, updated when a run finishes) for several lease lengths, while claims,
//! heartbeats and the reaper go on. That is the livelock the issue saw at a million runs:
//! completions stuck behind locks while the node kept claiming.

use std::time::{Duration, Instant};

use hatchery::db::task_run::{ClaimParams, task_run_claim, task_runs_expire, task_runs_reap_lost};
use hatchery::db::task_run::{task_run_attempt_counts, task_run_status_counts};
use hatchery::db::{DEFAULT_TENANT, Db};
use hatchery::scheduler::{Node, NodeConfig, RunRequest, start_runs};
use hatchery::status::TaskStatus;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{deployed, eventually, test_node_config};

const T: Uuid = DEFAULT_TENANT;

async fn enqueue(db: &Db, workflow: &str, runs: usize) {
    let requests: Vec<RunRequest> = (0..runs)
        .map(|_| RunRequest::new(workflow, json!({})))
        .collect();
    for chunk in requests.chunks(1_000) {
        start_runs(db, T, chunk).await.expect("starts");
    }
}

async fn count(db: &Db, status: TaskStatus) -> i64 {
    let mut conn = db.pool.acquire().await.expect("conn");
    task_run_status_counts(&mut conn, T)
        .await
        .expect("counts")
        .get(&status)
        .copied()
        .unwrap_or(0)
}

/// Asserts that each of the tenant's `runs` task runs was attempted exactly once.
async fn assert_each_ran_once(db: &Db, runs: i64, why: &str) {
    let mut conn = db.pool.acquire().await.expect("conn");
    let attempts = task_run_attempt_counts(&mut conn, T)
        .await
        .expect("attempts");
    assert_eq!(attempts, [(1, runs)].into_iter().collect(), "{why}");
}

/// A configuration whose lease is short next to the stall the tests cause.
fn short_lease() -> NodeConfig {
    NodeConfig {
        lease: Duration::from_millis(1_000),
        heartbeat: Duration::from_millis(200),
        reap_interval: Duration::from_millis(100),
        ..test_node_config()
    }
}

/// Holds `LOCK TABLE workflow_runs` for `stall` — no run can finish meanwhile, though claims
/// (which only read runs), heartbeats and the reaper go on — calling `during` every 50 ms.
async fn stall_completions(db: &Db, stall: Duration, mut during: impl FnMut()) {
    let mut blocker = db.pool.begin().await.expect("tx");
    hatchery::db::workflow_run::workflow_runs_block_writes(&mut blocker)
        .await
        .expect("lock");
    let until = Instant::now() + stall;
    while Instant::now() < until {
        during();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blocker.rollback().await.expect("unlock");
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_finished_attempts_lease_is_renewed_until_its_result_is_written(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    enqueue(&db, "noop", 40).await;
    let config = short_lease();
    let node = Node::start(db.clone(), runtime, config.clone())
        .await
        .expect("node");
    // Every attempt finishes within the stall; its result cannot be written until it ends.
    let mut held = 0;
    stall_completions(&db, config.lease * 4, || {
        held = held.max(node.leases_held())
    })
    .await;
    assert!(held > 0, "the node claimed nothing during the stall");
    eventually(60, || async {
        count(&db, TaskStatus::Succeeded).await == 40
    })
    .await;
    assert_each_ran_once(
        &db,
        40,
        "no lease was lost while results waited for the database",
    )
    .await;
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_slow_database_makes_a_node_claim_less_and_lose_nothing(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    enqueue(&db, "noop", 3_000).await;
    let config = NodeConfig {
        claim_batch: 100,
        max_unwritten: 200,
        ..short_lease()
    };
    let bound = config.max_held();
    let node = Node::start(db.clone(), runtime, config.clone())
        .await
        .expect("node");
    eventually(60, || async { count(&db, TaskStatus::Succeeded).await > 0 }).await;
    let mut most_held = 0;
    stall_completions(&db, config.lease * 4, || {
        most_held = most_held.max(node.leases_held());
    })
    .await;
    assert!(
        most_held <= bound,
        "held {most_held} leases, more than the bound {bound}"
    );
    assert!(
        most_held >= 200,
        "results did not pile up during the stall ({most_held}): the test stalled nothing"
    );
    // The node catches up once the database is back, and nothing ran twice.
    eventually(120, || async {
        count(&db, TaskStatus::Succeeded).await == 3_000
    })
    .await;
    assert_each_ran_once(&db, 3_000, "nothing ran twice after the stall").await;
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn maintenance_sweeps_touch_at_most_one_batch_per_statement(pool: PgPool) {
    let (db, _runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    enqueue(&db, "noop", 12_000).await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let params = ClaimParams {
        node: Uuid::new_v4(),
        limit: 12_000,
        full_modules: &[],
        skip_tenants: &[],
        lease: Duration::from_millis(1),
    };
    let claimed = task_run_claim(&mut conn, &params).await.expect("claim");
    assert_eq!(claimed.len(), 12_000);
    let later = chrono::Utc::now() + chrono::Duration::minutes(1);
    let mut requeued = Vec::new();
    loop {
        let reaped = task_runs_reap_lost(&mut conn, later, 5, 5_000)
            .await
            .expect("reap");
        if reaped.requeued == 0 {
            break;
        }
        requeued.push(reaped.requeued);
    }
    assert_eq!(requeued, [5_000, 5_000, 2_000]);
    // Past every schedule deadline (5 minutes by default): cancelled in batches too.
    let much_later = chrono::Utc::now() + chrono::Duration::hours(1);
    let mut expired = Vec::new();
    loop {
        let reaped = task_runs_expire(&mut conn, much_later, 5_000)
            .await
            .expect("expire");
        if reaped.expired == 0 {
            break;
        }
        assert_eq!(
            reaped.finished_runs.len(),
            reaped.expired,
            "each expired task fails its run"
        );
        expired.push(reaped.expired);
    }
    assert_eq!(expired, [5_000, 5_000, 2_000]);
    assert_eq!(count(&db, TaskStatus::Cancelled).await, 12_000);
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn completions_and_heartbeats_never_scan_every_running_row(pool: PgPool) {
    use hatchery::db::plans::{backlog_analyze, backlog_fill, hot_statement_plans};
    let db = Db::new(pool);
    let mut conn = db.pool.acquire().await.expect("conn");
    backlog_fill(&mut conn, T, 6_000).await.expect("fill");
    // Many running rows in the statistics: the shape that made the planner scan every running
    // row through the reaper's partial index (cheap-looking, but full of dead entries between
    // vacuums) instead of looking the batch up by key. At this size a sequential scan is
    // legitimately cheap; at a million rows the primary key is the only cheap path left.
    let params = ClaimParams {
        node: Uuid::new_v4(),
        limit: 2_000,
        full_modules: &[],
        skip_tenants: &[],
        lease: Duration::from_secs(60),
    };
    task_run_claim(&mut conn, &params).await.expect("claim");
    backlog_analyze(&mut conn).await.expect("analyze");
    let plans = hot_statement_plans(&mut conn, 300).await.expect("plans");
    for statement in ["complete (succeeded)", "renew leases"] {
        let plan = plans
            .iter()
            .find(|p| p.statement == statement)
            .expect("planned")
            .lines
            .join("\n");
        assert!(
            !plan.contains("task_runs_leases"),
            "{statement} scans the reaper's index of every lease:\n{plan}"
        );
    }
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_node_vacuums_the_dead_weight_autovacuum_leaves(pool: PgPool) {
    use hatchery::db::maintenance::{HotTable, table_health};
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    // Each task run leaves two dead versions: 12,000 runs pass the 20,000 + 5 % threshold.
    enqueue(&db, "noop", 12_000).await;
    let config = NodeConfig {
        vacuum_check: Some(Duration::from_millis(200)),
        ..test_node_config()
    };
    let node = Node::start(db.clone(), runtime, config)
        .await
        .expect("node");
    eventually(120, || async {
        count(&db, TaskStatus::Succeeded).await == 12_000
    })
    .await;
    eventually(60, || async {
        let mut conn = db.pool.acquire().await.expect("conn");
        let health = table_health(&mut conn, HotTable::TaskRuns)
            .await
            .expect("health");
        health.vacuums > 0 && health.dead < 20_000
    })
    .await;
    node.shutdown().await;
}
