//! Runs scheduled for later, against real Postgres and real components: never before their
//! time and within a second after it, on whichever node is alive, exactly once across nodes;
//! rescheduled, cancelled; and every run says how it started.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hatchery::db::DEFAULT_TENANT;
use hatchery::db::Db;
use hatchery::scheduler::{
    Node, NodeConfig, Rescheduled, RunError, RunRequest, RunView, cancel_run, get_run,
    reschedule_run, start_run, start_runs, wait_for_run,
};
use hatchery::status::{RunStatus, TaskStatus};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{deployed, test_node_config};

const T: Uuid = DEFAULT_TENANT;

fn at(run_at: DateTime<Utc>) -> RunRequest {
    RunRequest {
        run_at: Some(run_at),
        ..RunRequest::new("noop", json!({}))
    }
}

async fn finished(db: &Db, id: Uuid) -> RunView {
    let view = wait_for_run(db, T, id, Duration::from_secs(60))
        .await
        .expect("db")
        .expect("run exists");
    assert!(
        matches!(
            view.run.status.as_str(),
            "succeeded" | "failed" | "cancelled"
        ),
        "run did not finish in time: {view:#?}"
    );
    view
}

/// How long after `run_at` the run's task started (negative: before).
fn lateness(view: &RunView) -> chrono::Duration {
    let started = view.tasks[0].started_at.expect("started");
    started - view.run.run_at.expect("run_at")
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_scheduled_run_starts_at_its_time_not_before(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let run_at = Utc::now() + chrono::Duration::milliseconds(1_500);
    let id = start_run(&db, T, &at(run_at)).await.expect("starts");
    let waiting = get_run(&db, T, id).await.expect("db").expect("run");
    assert_eq!(waiting.run.status, RunStatus::Scheduled);
    assert_eq!(waiting.run.triggered_by, "schedule");
    assert_eq!(waiting.tasks[0].status, TaskStatus::Pending);
    let view = finished(&db, id).await;
    assert_eq!(view.run.status, RunStatus::Succeeded);
    let late = lateness(&view);
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(1),
        "started {late} after its time"
    );
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn scheduled_runs_start_once_on_two_nodes_even_when_one_dies(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let config = NodeConfig {
        lease: Duration::from_secs(1),
        ..test_node_config()
    };
    let doomed = Node::start(db.clone(), runtime.clone(), config.clone())
        .await
        .expect("node");
    let run_at = Utc::now() + chrono::Duration::seconds(2);
    let requests: Vec<RunRequest> = (0..200).map(|_| at(run_at)).collect();
    let ids = start_runs(&db, T, &requests).await.expect("starts");
    // The node that accepted them dies before they are due; two others share them.
    doomed.kill();
    let first = Node::start(db.clone(), runtime.clone(), config.clone())
        .await
        .expect("node");
    let second = Node::start(db.clone(), runtime, config)
        .await
        .expect("node");
    for id in &ids {
        let view = finished(&db, *id).await;
        assert_eq!(view.run.status, RunStatus::Succeeded);
        assert_eq!(view.tasks[0].attempt, 1, "started exactly once");
        let late = lateness(&view);
        assert!(
            late >= chrono::Duration::zero() && late < chrono::Duration::seconds(1),
            "started {late} after its time"
        );
    }
    first.shutdown().await;
    second.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_scheduled_run_can_be_moved_or_cancelled(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let far = Utc::now() + chrono::Duration::hours(1);
    let moved = start_run(&db, T, &at(far)).await.expect("starts");
    let dropped = start_run(&db, T, &at(Utc::now() + chrono::Duration::seconds(1)))
        .await
        .expect("starts");

    let soon = Utc::now() + chrono::Duration::milliseconds(800);
    assert_eq!(
        reschedule_run(&db, T, moved, soon).await.expect("moves"),
        Rescheduled::Moved
    );
    assert!(cancel_run(&db, T, dropped).await.expect("cancels"));
    let moved_view = finished(&db, moved).await;
    assert_eq!(moved_view.run.status, RunStatus::Succeeded);
    assert_eq!(
        moved_view.run.run_at.map(|t| t.timestamp_micros()),
        Some(soon.timestamp_micros())
    );
    let late = lateness(&moved_view);
    assert!(late >= chrono::Duration::zero() && late < chrono::Duration::seconds(1));

    // Well past its old time, the cancelled run never ran.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let dropped = get_run(&db, T, dropped).await.expect("db").expect("run");
    assert_eq!(dropped.run.status, RunStatus::Cancelled);
    assert_eq!(dropped.tasks[0].status, TaskStatus::Cancelled);
    assert_eq!(dropped.tasks[0].attempt, 0);

    // Only a scheduled run moves, only to a time to come.
    assert_eq!(
        reschedule_run(&db, T, moved, far).await.expect("answers"),
        Rescheduled::NotScheduled(RunStatus::Succeeded)
    );
    assert_eq!(
        reschedule_run(&db, T, Uuid::now_v7(), far)
            .await
            .expect("answers"),
        Rescheduled::NotFound
    );
    let past = Utc::now() - chrono::Duration::seconds(5);
    assert!(matches!(
        reschedule_run(&db, T, moved, past).await,
        Err(RunError::PastRunAt(_))
    ));
    assert!(matches!(
        start_run(&db, T, &at(past)).await,
        Err(RunError::PastRunAt(_))
    ));
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn every_run_says_how_it_started(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let api = start_run(&db, T, &RunRequest::new("noop", json!({})))
        .await
        .expect("starts");
    let parent = start_run(&db, T, &RunRequest::new("respawn", json!({})))
        .await
        .expect("starts");
    let parent = finished(&db, parent).await;
    assert_eq!(finished(&db, api).await.run.triggered_by, "api");
    let child: Uuid = parent.run.output.as_ref().expect("output")["child"]
        .as_str()
        .expect("child id")
        .parse()
        .expect("uuid");
    let child = finished(&db, child).await;
    assert_eq!(child.run.triggered_by, "spawn");
    assert_eq!(child.run.parent_run_id, Some(parent.run.id));
    node.shutdown().await;
}
