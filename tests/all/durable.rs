//! The durable core against real Postgres (a fresh database per test) and real components:
//! runs, DAGs, retries, failures, timeouts, cancellation, replay, child runs, several nodes,
//! crashes and graceful shutdown.

use std::time::{Duration, Instant};

use hatchery::db::task_run::{
    AttemptOutcome, ClaimParams, Completion, task_run_claim, task_runs_complete, task_runs_reap,
};
use hatchery::db::task_run::{task_run_attempt_counts, task_run_status_counts};
use hatchery::db::{DEFAULT_TENANT, Db};
use hatchery::manifest::RetryPolicy;
use hatchery::runtime::local::LocalRunner;
use hatchery::runtime::{Limits, Worker};
use hatchery::scheduler::{
    Node, NodeConfig, RunRequest, RunView, cancel_run, get_run, replay_run, start_run, start_runs,
    wait_for_run,
};
use hatchery::status::{RunStatus, TaskStatus};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{deployed, eventually, load, test_node_config};

const T: Uuid = DEFAULT_TENANT;

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

async fn run(db: &Db, workflow: &str, input: serde_json::Value) -> Uuid {
    start_run(db, T, &RunRequest::new(workflow, input))
        .await
        .expect("starts")
}

async fn task_status(db: &Db, run_id: Uuid, task: &str) -> TaskStatus {
    let view = get_run(db, T, run_id).await.expect("db").expect("run");
    view.task(task).expect("task").status
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_single_task_run_succeeds(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::HELLO).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let id = run(&db, "hello", json!({"name": "Ada"})).await;
    let view = finished(&db, id).await;
    assert_eq!(view.run.status, RunStatus::Succeeded);
    assert_eq!(view.run.output, Some(json!({"greeting": "Hello, Ada!"})));
    let greet = view.task("greet").expect("greet");
    assert_eq!((greet.status.as_str(), greet.attempt), ("succeeded", 1));
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_dag_runs_in_order_and_passes_outputs(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::ETL).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let view = finished(&db, run(&db, "etl", json!({})).await).await;
    assert_eq!(view.run.status, RunStatus::Succeeded);
    assert_eq!(view.run.output, Some(json!({"loaded": 3, "total": 10})));
    let (extract, transform, load) = (
        view.task("extract").expect("e"),
        view.task("transform").expect("t"),
        view.task("load").expect("l"),
    );
    assert!(extract.finished_at <= transform.started_at);
    assert!(transform.finished_at <= load.started_at);
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_diamond_joins_both_branches(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let view = finished(&db, run(&db, "diamond", json!({})).await).await;
    assert_eq!(view.run.status, RunStatus::Succeeded);
    let a = json!({"task": "a", "parents": {}});
    let output = view.run.output.expect("output");
    assert_eq!(output["task"], "d");
    assert_eq!(
        output["parents"]["b"],
        json!({"task": "b", "parents": {"a": a}})
    );
    assert_eq!(
        output["parents"]["c"],
        json!({"task": "c", "parents": {"a": a}})
    );
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_failure_fails_the_run_cancels_the_rest_and_runs_on_failure(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let id = run(&db, "doomed", json!({"x": 1})).await;
    let view = finished(&db, id).await;
    assert_eq!(view.run.status, RunStatus::Failed);
    assert_eq!(
        view.run.error.as_deref(),
        Some("task `second` failed: broken on purpose")
    );
    let second = view.task("second").expect("second");
    assert_eq!(
        (second.status.as_str(), second.failures),
        ("failed", 2),
        "one retry, then failed"
    );
    assert_eq!(
        view.task("third").expect("third").status,
        TaskStatus::Cancelled
    );
    eventually(30, || async {
        task_status(&db, id, "cleanup").await == TaskStatus::Succeeded
    })
    .await;
    let view = get_run(&db, T, id).await.expect("db").expect("run");
    let cleanup = view.task("cleanup").expect("cleanup");
    assert_eq!(
        cleanup.output,
        Some(json!({"handled": "task `second` failed: broken on purpose"}))
    );
    assert_eq!(
        view.run.status,
        RunStatus::Failed,
        "the on-failure task does not change the outcome"
    );
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn retries_until_success(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let view = finished(&db, run(&db, "flaky", json!({})).await).await;
    assert_eq!(view.run.status, RunStatus::Succeeded);
    assert_eq!(view.run.output, Some(json!({"attempt": 3})));
    assert_eq!(view.task("flaky").expect("flaky").failures, 2);
    node.shutdown().await;
}

/// `hatchery exec` (the local runner) and the durable queue take one retry decision
/// (`RetryPolicy`): the same attempts for a task that succeeds on its third, one that spends its
/// retries and one whose error is fatal; and the wait the node asks the completion to persist
/// is the policy's.
#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn exec_and_the_scheduler_retry_alike(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let module = load(&runtime, hatchery_guests::DURABLE).await;

    let backoff = module
        .manifest
        .workflow("backoff")
        .and_then(|w| w.task("backoff"))
        .expect("backoff task");
    let id = run(&db, "backoff", json!({})).await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let claimed = task_run_claim(
        &mut conn,
        &ClaimParams {
            node: Uuid::new_v4(),
            limit: 1,
            full_modules: &[],
            skip_tenants: &[],
            lease: Duration::from_secs(30),
        },
    )
    .await
    .expect("claim")
    .remove(0);
    let policy = RetryPolicy::of(backoff);
    assert_eq!(
        claimed.retry_after_failure(true),
        policy.after_failure(0, true)
    );
    assert_eq!(
        claimed.retry_after_failure(true),
        Some(Duration::from_secs(1))
    );
    assert_eq!(claimed.retry_after_failure(false), None);
    let effects = task_runs_complete(
        &mut conn,
        &[Completion {
            tenant_id: T,
            task_run_id: claimed.id,
            attempt: claimed.attempt,
            lease_token: claimed.lease_token,
            outcome: AttemptOutcome::Failed {
                error: "broken".into(),
                code: "error".into(),
                retry_after: claimed.retry_after_failure(true),
            },
            logs: vec![],
            usage: None,
        }],
    )
    .await
    .expect("complete");
    assert_eq!(effects.accepted, 1);
    let view = get_run(&db, T, id).await.expect("db").expect("run");
    let task = view.task("backoff").expect("task");
    assert_eq!((task.status, task.failures), (TaskStatus::Queued, 1));
    drop(conn);

    let runner = LocalRunner::new(Worker::new(runtime.clone(), module, 4), Limits::default());
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    for (workflow, tasks) in [
        ("flaky", &["flaky"][..]),
        ("doomed", &["first", "second"][..]),
        ("fatal", &["fatal"][..]),
    ] {
        let local = runner
            .run_workflow(workflow, r#"{"x":1}"#.into(), "{}".into())
            .await
            .expect("known workflow");
        let durable = finished(&db, run(&db, workflow, json!({"x": 1})).await).await;
        for &name in tasks {
            let report = local.tasks.iter().find(|t| t.task == name).expect("ran");
            let locally = (
                report.attempts.len(),
                report.attempts.last().is_some_and(|a| a.outcome.is_ok()),
            );
            let task = durable.task(name).expect("task");
            let queued = (
                usize::try_from(task.attempt).expect("attempts"),
                task.status == TaskStatus::Succeeded,
            );
            assert_eq!(locally, queued, "{workflow}/{name}: exec vs the queue");
        }
    }
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_fatal_error_skips_the_retries(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let view = finished(&db, run(&db, "fatal", json!({})).await).await;
    assert_eq!(view.run.status, RunStatus::Failed);
    let task = view.task("fatal").expect("fatal");
    assert_eq!(
        (task.attempt, task.error_code.as_deref()),
        (1, Some("fatal"))
    );
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn the_execution_timeout_fails_each_attempt(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let view = finished(&db, run(&db, "slow", json!({"ms": 10_000})).await).await;
    assert_eq!(view.run.status, RunStatus::Failed);
    let task = view.task("slow").expect("slow");
    assert_eq!(task.error.as_deref(), Some("timed out after 300ms"));
    assert_eq!(task.attempt, 2, "the timeout is retryable: one retry");
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn the_schedule_timeout_cancels_a_run_that_waited_too_long(pool: PgPool) {
    let (db, _runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let id = run(&db, "impatient", json!({})).await;
    let mut tx = db.pool.begin().await.expect("tx");
    let early = task_runs_reap(&mut tx, chrono::Utc::now(), 5, 5_000)
        .await
        .expect("reap");
    assert_eq!(early.expired, 0, "not yet past its 100 ms");
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    let reaped = task_runs_reap(&mut tx, later, 5, 5_000)
        .await
        .expect("reap");
    tx.commit().await.expect("commit");
    assert_eq!(reaped.expired, 1);
    let view = get_run(&db, T, id).await.expect("db").expect("run");
    assert_eq!(view.run.status, RunStatus::Failed);
    let task = view.task("impatient").expect("task");
    assert_eq!(
        (task.status.as_str(), task.error_code.as_deref()),
        ("cancelled", Some("schedule_timeout"))
    );
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn cancelling_a_queued_run_cancels_its_tasks(pool: PgPool) {
    let (db, _runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let id = run(&db, "diamond", json!({})).await;
    assert!(cancel_run(&db, T, id).await.expect("cancel"));
    let view = get_run(&db, T, id).await.expect("db").expect("run");
    assert_eq!(view.run.status, RunStatus::Cancelled);
    assert!(
        view.tasks.iter().all(|t| t.status == TaskStatus::Cancelled),
        "{:#?}",
        view.tasks
    );
    assert!(
        !cancel_run(&db, T, Uuid::now_v7()).await.expect("cancel"),
        "unknown run"
    );
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn cancelling_a_running_task_interrupts_it_on_its_node(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let id = run(&db, "spin", json!({})).await;
    eventually(30, || async { node.running() == 1 }).await;
    let cancelled_at = Instant::now();
    assert!(cancel_run(&db, T, id).await.expect("cancel"));
    eventually(5, || async { node.running() == 0 }).await;
    let latency = cancelled_at.elapsed();
    assert!(
        latency < Duration::from_secs(1),
        "a running task stopped {latency:?} after its cancel"
    );
    let view = get_run(&db, T, id).await.expect("db").expect("run");
    assert_eq!(
        (
            view.run.status.as_str(),
            view.task("spin").expect("spin").status.as_str()
        ),
        ("cancelled", "cancelled")
    );
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_replay_reruns_the_failed_tasks(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let id = run(&db, "once", json!({})).await;
    assert_eq!(finished(&db, id).await.run.status, RunStatus::Failed);
    assert!(replay_run(&db, T, id).await.expect("replay"));
    let view = finished(&db, id).await;
    assert_eq!(view.run.status, RunStatus::Succeeded);
    assert_eq!(view.run.output, Some(json!({"attempt": 2})));
    assert!(
        !replay_run(&db, T, id).await.expect("replay"),
        "a succeeded run is not replayed"
    );
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn an_idempotency_key_returns_the_first_run(pool: PgPool) {
    let (db, _runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let request = RunRequest {
        key: Some("order-42".into()),
        ..RunRequest::new("noop", json!({}))
    };
    let first = start_run(&db, T, &request).await.expect("starts");
    let second = start_run(&db, T, &request).await.expect("starts");
    assert_eq!(first, second);
    let both = start_runs(&db, T, &[request.clone(), request])
        .await
        .expect("bulk");
    assert_eq!(both, [first, first]);
    let mut conn = db.pool.acquire().await.expect("conn");
    assert_eq!(
        task_run_status_counts(&mut conn, T)
            .await
            .expect("counts")
            .values()
            .sum::<i64>(),
        1
    );
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn higher_priority_runs_start_first(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let low: Vec<RunRequest> = (0..5)
        .map(|_| RunRequest {
            priority: Some(1),
            ..RunRequest::new("noop", json!({}))
        })
        .collect();
    let high: Vec<RunRequest> = (0..5)
        .map(|_| RunRequest {
            priority: Some(3),
            ..RunRequest::new("noop", json!({}))
        })
        .collect();
    let low = start_runs(&db, T, &low).await.expect("low");
    let high = start_runs(&db, T, &high).await.expect("high");
    let config = NodeConfig {
        capacity: 1,
        claim_batch: 1,
        ..test_node_config()
    };
    let node = Node::start(db.clone(), runtime, config)
        .await
        .expect("node");
    let mut last_high = None;
    for id in &high {
        last_high = last_high.max(finished(&db, *id).await.run.started_at);
    }
    for id in &low {
        let started = finished(&db, *id).await.run.started_at;
        assert!(
            started >= last_high,
            "a low-priority run started before a high-priority one"
        );
    }
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_task_fans_out_to_1000_children_and_waits(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FANOUT).await;
    let config = NodeConfig {
        capacity: 8,
        ..test_node_config()
    };
    let node = Node::start(db.clone(), runtime, config)
        .await
        .expect("node");
    let view = finished(&db, run(&db, "fanout", json!({"count": 1000})).await).await;
    assert_eq!(
        view.run.status,
        RunStatus::Succeeded,
        "{:?}",
        view.run.error
    );
    assert_eq!(
        view.run.output,
        Some(json!({"sum": 333_833_500u64, "children": 1000}))
    );
    let mut conn = db.pool.acquire().await.expect("conn");
    let children = hatchery::db::workflow_run::workflow_run_children(&mut conn, T, view.run.id)
        .await
        .expect("children");
    assert_eq!(children.len(), 1000);
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_waiting_parent_lends_its_only_slot_to_its_children(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FANOUT).await;
    let config = NodeConfig {
        capacity: 1,
        default_slots: 1,
        ..test_node_config()
    };
    let node = Node::start(db.clone(), runtime, config)
        .await
        .expect("node");
    let view = finished(&db, run(&db, "fanout", json!({"count": 5})).await).await;
    assert_eq!(
        view.run.status,
        RunStatus::Succeeded,
        "{:?}",
        view.run.error
    );
    assert_eq!(view.run.output, Some(json!({"sum": 55, "children": 5})));
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn two_nodes_share_2000_runs_and_run_each_exactly_once(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let requests: Vec<RunRequest> = (0..2000)
        .map(|i| RunRequest::new("noop", json!({"i": i})))
        .collect();
    start_runs(&db, T, &requests).await.expect("bulk");
    let first = Node::start(db.clone(), runtime.clone(), test_node_config())
        .await
        .expect("node");
    let second = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    eventually(120, || async {
        let mut conn = db.pool.acquire().await.expect("conn");
        task_run_status_counts(&mut conn, T)
            .await
            .expect("counts")
            .get(&TaskStatus::Succeeded)
            == Some(&2000)
    })
    .await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let attempts = task_run_attempt_counts(&mut conn, T)
        .await
        .expect("attempts");
    assert_eq!(
        attempts,
        [(1, 2000)].into_iter().collect(),
        "every run executed exactly once"
    );
    first.shutdown().await;
    second.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_dead_nodes_run_is_finished_by_another_without_using_a_retry(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let short_lease = NodeConfig {
        lease: Duration::from_secs(1),
        ..test_node_config()
    };
    let doomed = Node::start(db.clone(), runtime.clone(), short_lease.clone())
        .await
        .expect("node");
    let id = run(&db, "hold", json!({"ms": 1500})).await;
    eventually(30, || async { doomed.running() == 1 }).await;
    doomed.kill();
    let survivor = Node::start(db.clone(), runtime, short_lease)
        .await
        .expect("node");
    let view = finished(&db, id).await;
    assert_eq!(view.run.status, RunStatus::Succeeded);
    let task = view.task("hold").expect("hold");
    assert_eq!((task.attempt, task.failures, task.lost_leases), (2, 0, 1));
    survivor.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_stale_lease_holder_cannot_complete(pool: PgPool) {
    let (db, _runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let id = run(&db, "noop", json!({})).await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let params = ClaimParams {
        node: Uuid::new_v4(),
        limit: 1,
        full_modules: &[],
        skip_tenants: &[],
        lease: Duration::from_secs(30),
    };
    let stale = task_run_claim(&mut conn, &params)
        .await
        .expect("claim")
        .remove(0);
    let reaped = task_runs_reap(
        &mut conn,
        chrono::Utc::now() + chrono::Duration::seconds(60),
        5,
        5_000,
    )
    .await
    .expect("reap");
    assert_eq!(reaped.requeued, 1);
    let fresh = task_run_claim(&mut conn, &params)
        .await
        .expect("claim")
        .remove(0);
    assert_eq!((fresh.id, fresh.attempt), (stale.id, 2));
    let completion = |claim: &hatchery::db::task_run::ClaimedTask, output: &str| Completion {
        tenant_id: T,
        task_run_id: claim.id,
        attempt: claim.attempt,
        lease_token: claim.lease_token,
        outcome: AttemptOutcome::Succeeded(output.into()),
        logs: vec![],
        usage: None,
    };
    let late = task_runs_complete(&mut conn, &[completion(&stale, r#""stale""#)])
        .await
        .expect("complete");
    assert_eq!((late.accepted, late.rejected), (0, 1));
    let current = task_runs_complete(&mut conn, &[completion(&fresh, r#""fresh""#)])
        .await
        .expect("complete");
    assert_eq!((current.accepted, current.rejected), (1, 0));
    let view = get_run(&db, T, id).await.expect("db").expect("run");
    assert_eq!(
        (view.run.status.as_str(), view.run.output),
        ("succeeded", Some(json!("fresh")))
    );
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn shutdown_drains_then_hands_back_what_is_left(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let config = NodeConfig {
        shutdown_grace: Duration::from_millis(1500),
        ..test_node_config()
    };
    let node = Node::start(db.clone(), runtime, config)
        .await
        .expect("node");
    let quick = run(&db, "hold", json!({"ms": 300})).await;
    let endless = run(&db, "spin", json!({})).await;
    eventually(30, || async { node.running() == 2 }).await;
    node.shutdown().await;
    let quick = get_run(&db, T, quick).await.expect("db").expect("run");
    assert_eq!(
        quick.run.status,
        RunStatus::Succeeded,
        "finished within the grace period"
    );
    let endless = get_run(&db, T, endless).await.expect("db").expect("run");
    let spin = endless.task("spin").expect("spin");
    assert_eq!(
        (spin.status.as_str(), spin.failures),
        ("queued", 0),
        "handed back, no retry used"
    );
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_retried_parent_gets_the_same_child_back(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let view = finished(&db, run(&db, "respawn", json!({})).await).await;
    assert_eq!(
        view.run.status,
        RunStatus::Succeeded,
        "{:?}",
        view.run.error
    );
    let mut conn = db.pool.acquire().await.expect("conn");
    let children = hatchery::db::workflow_run::workflow_run_children(&mut conn, T, view.run.id)
        .await
        .expect("children");
    assert_eq!(
        children.len(),
        1,
        "the second attempt's spawn returned the first child"
    );
    let output = view.run.output.expect("output");
    assert_eq!(output["child"], json!(children[0].to_string()));
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn cancelling_a_parent_cancels_its_children(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let parent = run(&db, "watch-spinner", json!({})).await;
    // The parent waits (its slot lent out) while the child spins.
    eventually(30, || async { node.running() == 2 }).await;
    assert!(cancel_run(&db, T, parent).await.expect("cancel"));
    eventually(10, || async { node.running() == 0 }).await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let children = hatchery::db::workflow_run::workflow_run_children(&mut conn, T, parent)
        .await
        .expect("children");
    assert_eq!(children.len(), 1);
    let child = get_run(&db, T, children[0])
        .await
        .expect("db")
        .expect("child");
    assert_eq!(child.run.status, RunStatus::Cancelled);
    assert_eq!(
        child.task("spin").expect("spin").status,
        TaskStatus::Cancelled
    );
    assert_eq!(
        get_run(&db, T, parent)
            .await
            .expect("db")
            .expect("parent")
            .run
            .status,
        RunStatus::Cancelled
    );
    node.shutdown().await;
}

/// `bytes` with an empty custom section named `name` appended: same behaviour, new digest.
fn variant(bytes: &[u8], name: &str) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.push(0);
    out.push(u8::try_from(name.len() + 1).expect("short name"));
    out.push(u8::try_from(name.len()).expect("short name"));
    out.extend_from_slice(name.as_bytes());
    out
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn new_runs_use_the_newest_version_and_old_runs_keep_theirs(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::HELLO).await;
    let first = run(&db, "hello", json!({"name": "v1"})).await;
    let second_version = variant(&hatchery_guests::read(hatchery_guests::HELLO), "v2");
    let deployed = hatchery::scheduler::deploy_module(&db, &runtime, T, &second_version)
        .await
        .expect("deploys");
    assert_eq!(deployed.workflows[0].version, 2);
    let second = run(&db, "hello", json!({"name": "v2"})).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let (first, second) = (finished(&db, first).await, finished(&db, second).await);
    assert_eq!(
        (first.run.version, first.run.status.as_str()),
        (1, "succeeded")
    );
    assert_eq!(
        (second.run.version, second.run.status.as_str()),
        (2, "succeeded")
    );
    let mut digests: Vec<String> = node.workers().into_iter().map(|w| w.module).collect();
    digests.sort();
    digests.dedup();
    assert_eq!(
        digests.len(),
        2,
        "each run ran on the module of its version"
    );
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_retry_waits_for_its_backoff(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    // backoff(2.0, 60): the first retry waits 2^0 = 1 s.
    let view = finished(&db, run(&db, "backoff", json!({})).await).await;
    assert_eq!(view.run.status, RunStatus::Failed);
    let task = view.task("backoff").expect("task");
    assert_eq!((task.attempt, task.failures), (2, 2));
    let (started, finished) = (
        task.started_at.expect("started"),
        task.finished_at.expect("finished"),
    );
    assert!(
        finished - started >= chrono::Duration::milliseconds(1000),
        "retried after {}",
        finished - started
    );
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn an_event_pushed_by_a_task_starts_each_subscribed_workflow_once(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let view = finished(&db, run(&db, "signal", json!({"order": 7})).await).await;
    assert_eq!(
        view.run.status,
        RunStatus::Succeeded,
        "{:?}",
        view.run.error
    );
    let params = hatchery::db::workflow_run::RunListParams {
        workflow: Some("on-signal"),
        status: None,
        metadata: None,
        parent_run_id: None,
        triggered_by: None,
        top_level: false,
        page: hatchery::db::PageParams {
            before: None,
            limit: 10,
        },
    };
    let mut conn = db.pool.acquire().await.expect("conn");
    let triggered = hatchery::db::workflow_run::workflow_runs_list(&mut conn, T, &params)
        .await
        .expect("list");
    assert_eq!(
        triggered.len(),
        1,
        "the event was pushed before the signal task finished"
    );
    let triggered = finished(&db, triggered[0].id).await.run;
    assert_eq!(triggered.output, Some(json!({"order": 7})));
    assert_eq!(
        triggered.additional_metadata,
        json!({"event_key": "signal:go"})
    );
    // The task's event went the way of every event: stored with the run it started.
    let events = hatchery::db::event::events_list(
        &mut conn,
        T,
        Some("signal:go"),
        &hatchery::db::PageParams {
            before: None,
            limit: 10,
        },
    )
    .await
    .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].run_ids, vec![triggered.id]);
    assert_eq!(triggered.triggered_by, "event");
    assert_eq!(triggered.trigger_id, Some(events[0].id));
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn an_output_postgres_cannot_store_fails_its_task_and_blocks_nothing(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let requests: Vec<RunRequest> = (0..20)
        .map(|i| RunRequest::new(if i == 10 { "nul" } else { "noop" }, json!({})))
        .collect();
    let ids = start_runs(&db, T, &requests).await.expect("bulk");
    for (i, id) in ids.iter().enumerate() {
        let view = finished(&db, *id).await;
        if i == 10 {
            assert_eq!(view.run.status, RunStatus::Failed);
            let task = view.task("nul").expect("nul");
            assert_eq!(task.error_code.as_deref(), Some("invalid_output"));
            assert!(
                task.error
                    .as_deref()
                    .is_some_and(|e| e.contains("cannot be stored")),
                "{task:?}"
            );
        } else {
            assert_eq!(
                view.run.status,
                RunStatus::Succeeded,
                "the other completions of its batch are kept"
            );
        }
    }
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn one_tenants_backlog_does_not_starve_another(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let other = Uuid::now_v7();
    let mut conn = db.pool.acquire().await.expect("conn");
    hatchery::db::tenant::tenant_create(&mut conn, other, "other")
        .await
        .expect("tenant")
        .expect("new");
    drop(conn);
    hatchery::scheduler::deploy_module(
        &db,
        &runtime,
        other,
        &hatchery_guests::read(hatchery_guests::DURABLE),
    )
    .await
    .expect("deploys");
    // The default tenant's backlog is older than everything the other tenant asks for.
    let backlog: Vec<RunRequest> = (0..50)
        .map(|_| RunRequest::new("noop", json!({})))
        .collect();
    let backlog = start_runs(&db, T, &backlog).await.expect("backlog");
    let few: Vec<RunRequest> = (0..5).map(|_| RunRequest::new("noop", json!({}))).collect();
    let few = start_runs(&db, other, &few).await.expect("few");
    let config = NodeConfig {
        capacity: 1,
        claim_batch: 10,
        ..test_node_config()
    };
    let node = Node::start(db.clone(), runtime, config)
        .await
        .expect("node");
    let mut last_other = None;
    for id in &few {
        let view = wait_for_run(&db, other, *id, Duration::from_secs(60))
            .await
            .expect("db")
            .expect("run");
        assert_eq!(view.run.status, RunStatus::Succeeded);
        last_other = last_other.max(view.run.started_at);
    }
    let mut backlog_before = 0;
    for id in &backlog {
        if finished(&db, *id).await.run.started_at < last_other {
            backlog_before += 1;
        }
    }
    // Claims interleave tenants: the first claim of 10 took 5 of each.
    assert_eq!(
        backlog_before, 0,
        "the other tenant waited behind {backlog_before} older runs"
    );
    node.shutdown().await;
}
