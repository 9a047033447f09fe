//! Flow control against real Postgres and real components, on one or two nodes: each
//! concurrency strategy never lets more than `max_runs` of a key overlap (checked from the
//! database's times and from the guest's own clock), round robin is fair, rate limits hold in
//! every sliding window, and a killed node's places come back.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hatchery::db::DEFAULT_TENANT;
use hatchery::db::Db;
use hatchery::db::flow::{rate_limit_set, rate_limits_list};
use hatchery::scheduler::{
    Node, NodeConfig, RunError, RunRequest, RunView, get_run, start_run, start_runs, wait_for_run,
};
use hatchery::status::{RunStatus, TaskStatus};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{deployed, eventually, test_node_config};

const T: Uuid = DEFAULT_TENANT;

fn request(workflow: &str, input: Value) -> RunRequest {
    RunRequest::new(workflow, input)
}

async fn finished(db: &Db, id: Uuid) -> RunView {
    let view = wait_for_run(db, T, id, Duration::from_secs(120))
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

async fn all_finished(db: &Db, ids: &[Uuid]) -> Vec<RunView> {
    let mut views = Vec::with_capacity(ids.len());
    for id in ids {
        views.push(finished(db, *id).await);
    }
    views
}

/// The most intervals (half-open) that overlap at any instant.
pub(crate) fn max_overlap(intervals: &[(i64, i64)]) -> usize {
    let mut events: Vec<(i64, i32)> = Vec::new();
    for (start, end) in intervals {
        events.push((*start, 1));
        events.push((*end, -1));
    }
    // At the same instant an end comes before a start: [a, b) and [b, c) do not overlap.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in events {
        now += step;
        most = most.max(now);
    }
    most as usize
}

fn millis(time: Option<DateTime<Utc>>) -> i64 {
    time.expect("time is set").timestamp_micros()
}

/// The guest's own [start, end) of task `task`, in ms.
pub(crate) fn guest_interval(view: &RunView, task: &str) -> (i64, i64) {
    let output = view
        .task(task)
        .and_then(|t| t.output.clone())
        .expect("output");
    (
        output["start_ms"].as_i64().expect("start_ms"),
        output["end_ms"].as_i64().expect("end_ms"),
    )
}

/// The database's [started, finished) of task `task` (a superset of its execution).
fn db_interval(view: &RunView, task: &str) -> (i64, i64) {
    let task = view.task(task).expect("task");
    (millis(task.started_at), millis(task.finished_at))
}

/// The most overlapping intervals of any one key.
fn max_overlap_per_key(intervals: &[(String, (i64, i64))]) -> usize {
    let mut by_key: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
    for (key, interval) in intervals {
        by_key.entry(key.as_str()).or_default().push(*interval);
    }
    by_key.values().map(|v| max_overlap(v)).max().unwrap_or(0)
}

pub(crate) async fn two_nodes(db: &Db, runtime: &hatchery::runtime::Runtime) -> (Node, Node) {
    let first = Node::start(db.clone(), runtime.clone(), test_node_config())
        .await
        .expect("node");
    let second = Node::start(db.clone(), runtime.clone(), test_node_config())
        .await
        .expect("node");
    (first, second)
}

#[test]
fn overlap_counts_half_open_intervals() {
    assert_eq!(max_overlap(&[(0, 10), (10, 20), (20, 30)]), 1);
    assert_eq!(max_overlap(&[(0, 10), (5, 20), (6, 7)]), 3);
    assert_eq!(max_overlap(&[]), 0);
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn round_robin_never_overlaps_more_than_max_runs_on_two_nodes(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let requests: Vec<RunRequest> = (0..36)
        .map(|i| {
            request(
                "per-user-2",
                json!({"user_id": format!("u{}", i % 3), "ms": 40}),
            )
        })
        .collect();
    let ids = start_runs(&db, T, &requests).await.expect("starts");
    let (first, second) = two_nodes(&db, &runtime).await;
    let views = all_finished(&db, &ids).await;
    let mut guest = Vec::new();
    let mut database = Vec::new();
    for view in &views {
        assert_eq!(view.run.status, RunStatus::Succeeded, "{view:#?}");
        let key = view.run.input["user_id"].as_str().expect("user").to_owned();
        guest.push((key.clone(), guest_interval(view, "hold")));
        database.push((key, db_interval(view, "hold")));
    }
    assert_eq!(max_overlap_per_key(&guest), 2, "guest clock");
    assert_eq!(max_overlap_per_key(&database), 2, "database clock");
    first.shutdown().await;
    second.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_workflow_rule_holds_the_place_between_tasks(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let requests: Vec<RunRequest> = (0..8)
        .map(|i| {
            request(
                "two-steps",
                json!({"user_id": format!("u{}", i % 2), "ms": 30}),
            )
        })
        .collect();
    let ids = start_runs(&db, T, &requests).await.expect("starts");
    let (first, second) = two_nodes(&db, &runtime).await;
    let views = all_finished(&db, &ids).await;
    let runs: Vec<(String, (i64, i64))> = views
        .iter()
        .map(|view| {
            assert_eq!(view.run.status, RunStatus::Succeeded, "{view:#?}");
            let key = view.run.input["user_id"].as_str().expect("user").to_owned();
            (
                key,
                (
                    guest_interval(view, "first").0,
                    guest_interval(view, "second").1,
                ),
            )
        })
        .collect();
    assert_eq!(max_overlap_per_key(&runs), 1);
    first.shutdown().await;
    second.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn round_robin_serves_every_key_in_turn(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    // Key A's 500 runs are all older than the others'.
    let mut requests: Vec<RunRequest> = (0..500)
        .map(|_| request("per-user", json!({"user_id": "A"})))
        .collect();
    for key in ["B", "C", "D", "E", "F", "G", "H", "I", "J"] {
        requests.extend((0..5).map(|_| request("per-user", json!({"user_id": key}))));
    }
    let ids = start_runs(&db, T, &requests).await.expect("starts");
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let views = all_finished(&db, &ids).await;
    let mut a_starts: Vec<i64> = Vec::new();
    let mut others_last = i64::MIN;
    for view in &views {
        assert_eq!(view.run.status, RunStatus::Succeeded);
        let start = db_interval(view, "hold").0;
        if view.run.input["user_id"] == "A" {
            a_starts.push(start);
        } else {
            others_last = others_last.max(start);
        }
    }
    a_starts.sort_unstable();
    assert!(
        others_last < a_starts[29],
        "every B-J run starts before A's 30th: last other at {others_last}, A's 30th at {}",
        a_starts[29]
    );
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn every_rule_must_admit_a_run(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let mut requests = Vec::new();
    for i in 0..24 {
        let mut r = request("pair", json!({"a": format!("a{}", i % 3), "ms": 20}));
        r.additional_metadata = json!({"b": format!("b{}", i % 4)});
        requests.push(r);
    }
    let ids = start_runs(&db, T, &requests).await.expect("starts");
    let (first, second) = two_nodes(&db, &runtime).await;
    let views = all_finished(&db, &ids).await;
    let mut by_a = Vec::new();
    let mut by_b = Vec::new();
    for view in &views {
        assert_eq!(view.run.status, RunStatus::Succeeded);
        let interval = guest_interval(view, "hold");
        by_a.push((view.run.input["a"].to_string(), interval));
        by_b.push((view.run.additional_metadata["b"].to_string(), interval));
    }
    assert_eq!(max_overlap_per_key(&by_a), 1);
    assert_eq!(max_overlap_per_key(&by_b), 1);
    first.shutdown().await;
    second.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_task_rule_limits_only_its_task(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let requests: Vec<RunRequest> = (0..12)
        .map(|_| request("staged", json!({"user_id": "u", "ms": 40})))
        .collect();
    let ids = start_runs(&db, T, &requests).await.expect("starts");
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let views = all_finished(&db, &ids).await;
    let prep: Vec<(i64, i64)> = views.iter().map(|v| guest_interval(v, "prep")).collect();
    let call: Vec<(i64, i64)> = views.iter().map(|v| guest_interval(v, "call")).collect();
    assert_eq!(max_overlap(&call), 1, "one `call` per user at a time");
    assert!(
        max_overlap(&prep) > 1,
        "`prep` has no rule and runs side by side"
    );
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn cancel_newest_cancels_runs_that_find_their_key_full(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let holder = start_run(
        &db,
        T,
        &request("newest", json!({"user_id": "u", "ms": 1500})),
    )
    .await
    .expect("starts");
    eventually(10, || async {
        get_run(&db, T, holder)
            .await
            .expect("db")
            .expect("run")
            .run
            .status
            == RunStatus::Running
    })
    .await;
    let newer = start_run(&db, T, &request("newest", json!({"user_id": "u", "ms": 0})))
        .await
        .expect("starts");
    let other_key = start_run(&db, T, &request("newest", json!({"user_id": "v", "ms": 0})))
        .await
        .expect("starts");
    let newer = finished(&db, newer).await;
    assert_eq!(newer.run.status, RunStatus::Cancelled);
    let error = newer.run.error.clone().expect("error");
    assert!(
        error.contains("CANCEL_NEWEST") && error.contains("`u`") && error.contains("input.user_id"),
        "the error names the rule and key: {error}"
    );
    assert_eq!(
        finished(&db, other_key).await.run.status,
        RunStatus::Succeeded
    );
    assert_eq!(finished(&db, holder).await.run.status, RunStatus::Succeeded);
    // The place is free again.
    let after = start_run(&db, T, &request("newest", json!({"user_id": "u", "ms": 0})))
        .await
        .expect("starts");
    assert_eq!(finished(&db, after).await.run.status, RunStatus::Succeeded);
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn cancel_in_progress_cancels_the_oldest_for_the_newest(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let oldest = start_run(
        &db,
        T,
        &request("in-progress", json!({"user_id": "u", "ms": 60000})),
    )
    .await
    .expect("starts");
    eventually(10, || async {
        get_run(&db, T, oldest)
            .await
            .expect("db")
            .expect("run")
            .run
            .status
            == RunStatus::Running
    })
    .await;
    let newest = start_run(
        &db,
        T,
        &request("in-progress", json!({"user_id": "u", "ms": 50})),
    )
    .await
    .expect("starts");
    let oldest = finished(&db, oldest).await;
    assert_eq!(oldest.run.status, RunStatus::Cancelled);
    let error = oldest.run.error.clone().expect("error");
    assert!(
        error.contains("CANCEL_IN_PROGRESS") && error.contains("`u`"),
        "the error names the rule and key: {error}"
    );
    assert_eq!(finished(&db, newest).await.run.status, RunStatus::Succeeded);
    // Queued together, only the newest of a burst survives.
    let burst: Vec<RunRequest> = (0..5)
        .map(|_| request("in-progress", json!({"user_id": "w", "ms": 0})))
        .collect();
    let ids = start_runs(&db, T, &burst).await.expect("starts");
    let views = all_finished(&db, &ids).await;
    let statuses: Vec<&str> = views.iter().map(|v| v.run.status.as_str()).collect();
    assert_eq!(statuses.last(), Some(&"succeeded"), "{statuses:?}");
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_key_that_cannot_be_computed_refuses_the_run(pool: PgPool) {
    let (db, _runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let error = start_run(&db, T, &request("per-user", json!({"name": "no user id"})))
        .await
        .expect_err("no user_id");
    assert!(matches!(error, RunError::Key(_)), "{error:?}");
    assert!(error.to_string().contains("input.user_id"), "{error}");
    let error = start_run(
        &db,
        T,
        &request("per-user", json!({"user_id": {"nested": 1}})),
    )
    .await
    .expect_err("a map is no key");
    assert!(
        error
            .to_string()
            .contains("string, an integer or a boolean"),
        "{error}"
    );
}

/// Every start, in µs, of the runs.
fn starts(views: &[RunView], task: &str) -> Vec<i64> {
    let mut starts: Vec<i64> = views.iter().map(|v| db_interval(v, task).0).collect();
    starts.sort_unstable();
    starts
}

/// The most starts in any window of `window_us` (half-open).
fn most_in_any_window(starts: &[i64], window_us: i64) -> usize {
    let mut most = 0;
    let mut first = 0;
    for (last, start) in starts.iter().enumerate() {
        while *start - starts[first] >= window_us {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_static_rate_limit_holds_in_every_sliding_window(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    {
        let mut conn = db.pool.acquire().await.expect("conn");
        rate_limit_set(&mut conn, T, "api", 10, Duration::from_secs(1))
            .await
            .expect("set");
    }
    let requests: Vec<RunRequest> = (0..45).map(|_| request("metered", json!({}))).collect();
    let ids = start_runs(&db, T, &requests).await.expect("starts");
    let (first, second) = two_nodes(&db, &runtime).await;
    let views = all_finished(&db, &ids).await;
    assert!(views.iter().all(|v| v.run.status == RunStatus::Succeeded));
    let starts = starts(&views, "hold");
    assert_eq!(most_in_any_window(&starts, 1_000_000), 10);
    let span = starts.last().expect("starts") - starts[0];
    assert!(
        span >= 4_000_000,
        "45 units at 10/s take over 4 windows: {span} µs"
    );
    let mut conn = db.pool.acquire().await.expect("conn");
    let listed = rate_limits_list(&mut conn, T, 100).await.expect("list");
    let api = listed.iter().find(|r| r.key == "api").expect("api listed");
    assert_eq!((api.limit_units, api.source.as_str()), (Some(10), "api"));
    first.shutdown().await;
    second.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn dynamic_rate_limit_keys_are_independent(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let requests: Vec<RunRequest> = (0..24)
        .map(|i| {
            request(
                "per-tenant",
                json!({"tenant": if i % 2 == 0 { "x" } else { "y" }}),
            )
        })
        .collect();
    let ids = start_runs(&db, T, &requests).await.expect("starts");
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let views = all_finished(&db, &ids).await;
    let (x, y): (Vec<RunView>, Vec<RunView>) = views
        .into_iter()
        .partition(|v| v.run.input["tenant"] == "x");
    let (x, y) = (starts(&x, "hold"), starts(&y, "hold"));
    assert_eq!(most_in_any_window(&x, 1_000_000), 5);
    assert_eq!(most_in_any_window(&y, 1_000_000), 5);
    // Independent: y's first window is not pushed behind x's.
    assert!(
        (x[0] - y[0]).abs() < 500_000,
        "x at {}, y at {}",
        x[0],
        y[0]
    );
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn asking_more_units_than_the_limit_fails_at_once(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    {
        let mut conn = db.pool.acquire().await.expect("conn");
        rate_limit_set(&mut conn, T, "api", 100, Duration::from_secs(60))
            .await
            .expect("set");
    }
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let id = start_run(&db, T, &request("greedy", json!({})))
        .await
        .expect("starts");
    let view = finished(&db, id).await;
    assert_eq!(view.run.status, RunStatus::Failed);
    let task = view.task("hold").expect("task");
    assert_eq!(task.error_code.as_deref(), Some("rate_limit"));
    assert!(
        task.error
            .as_deref()
            .unwrap_or("")
            .contains("whose limit is 100"),
        "{task:?}"
    );
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn queued_tasks_say_what_they_wait_for(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let holder = start_run(
        &db,
        T,
        &request("per-user", json!({"user_id": "u", "ms": 3000})),
    )
    .await
    .expect("starts");
    eventually(10, || async {
        get_run(&db, T, holder)
            .await
            .expect("db")
            .expect("run")
            .run
            .status
            == RunStatus::Running
    })
    .await;
    let waiting = start_run(
        &db,
        T,
        &request("per-user", json!({"user_id": "u", "ms": 0})),
    )
    .await
    .expect("starts");
    let view = get_run(&db, T, waiting).await.expect("db").expect("run");
    let task = view.task("hold").expect("task");
    assert_eq!(task.status, TaskStatus::Queued);
    let why = &view.waiting_for[&task.id];
    assert_eq!((why.kind, why.key.as_deref()), ("concurrency", Some("u")));
    // A limit declared nowhere: the task waits for it.
    let metered = start_run(&db, T, &request("metered", json!({})))
        .await
        .expect("starts");
    let view = get_run(&db, T, metered).await.expect("db").expect("run");
    let task = view.task("hold").expect("task");
    let why = &view.waiting_for[&task.id];
    assert_eq!((why.kind, why.key.as_deref()), ("rate_limit", Some("api")));
    // A DAG task waits for its parents.
    let staged = start_run(
        &db,
        T,
        &request("staged", json!({"user_id": "s", "ms": 2000})),
    )
    .await
    .expect("starts");
    let view = get_run(&db, T, staged).await.expect("db").expect("run");
    let call = view.task("call").expect("call");
    assert_eq!(view.waiting_for[&call.id].kind, "parents");
    assert_eq!(
        finished(&db, waiting).await.run.status,
        RunStatus::Succeeded
    );
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_killed_node_gives_its_places_back(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let short_lease = NodeConfig {
        lease: Duration::from_secs(1),
        heartbeat: Duration::from_millis(200),
        ..test_node_config()
    };
    // A task-level place (held by the attempt) and a run-level one (held by the run).
    let staged = start_run(
        &db,
        T,
        &request("staged", json!({"user_id": "k", "ms": 2000})),
    )
    .await
    .expect("starts");
    // `staged` runs `prep` then `call` for 2 s each: `whole` is still running when `call` is.
    let whole = start_run(
        &db,
        T,
        &request("per-user", json!({"user_id": "k", "ms": 5000})),
    )
    .await
    .expect("starts");
    let doomed = Node::start(db.clone(), runtime.clone(), short_lease.clone())
        .await
        .expect("node");
    eventually(20, || async {
        let staged = get_run(&db, T, staged).await.expect("db").expect("run");
        let whole = get_run(&db, T, whole).await.expect("db").expect("run");
        staged.task("call").expect("call").status == TaskStatus::Running
            && whole.task("hold").expect("hold").status == TaskStatus::Running
    })
    .await;
    doomed.kill();
    // The same keys again: they start once the reaper has freed the places.
    let staged_next = start_run(&db, T, &request("staged", json!({"user_id": "k", "ms": 0})))
        .await
        .expect("starts");
    let whole_next = start_run(
        &db,
        T,
        &request("per-user", json!({"user_id": "k", "ms": 0})),
    )
    .await
    .expect("starts");
    let survivor = Node::start(db.clone(), runtime, short_lease)
        .await
        .expect("node");
    let views = all_finished(&db, &[staged, whole, staged_next, whole_next]).await;
    for view in &views {
        assert_eq!(view.run.status, RunStatus::Succeeded, "{view:#?}");
    }
    // Never two at once: the earlier run re-ran on the survivor before the later one started.
    let calls: Vec<(i64, i64)> = [&views[0], &views[2]]
        .iter()
        .map(|v| guest_interval(v, "call"))
        .collect();
    assert_eq!(max_overlap(&calls), 1);
    let holds: Vec<(i64, i64)> = [&views[1], &views[3]]
        .iter()
        .map(|v| guest_interval(v, "hold"))
        .collect();
    assert_eq!(max_overlap(&holds), 1);
    survivor.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_run_keeps_its_place_through_retries_and_frees_it_when_cancelled(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    // Each run fails once and waits 1 s before its retry: the other waits all along.
    let ids = start_runs(
        &db,
        T,
        &[
            request("retry-held", json!({"user_id": "r", "ms": 0})),
            request("retry-held", json!({"user_id": "r", "ms": 0})),
        ],
    )
    .await
    .expect("starts");
    let views = all_finished(&db, &ids).await;
    let (first, second) = if millis(views[0].run.started_at) < millis(views[1].run.started_at) {
        (&views[0], &views[1])
    } else {
        (&views[1], &views[0])
    };
    for view in [first, second] {
        assert_eq!(view.run.status, RunStatus::Succeeded);
        assert_eq!(view.task("flaky").expect("flaky").attempt, 2);
    }
    assert!(
        millis(second.run.started_at) >= millis(first.run.finished_at),
        "the second run started only once the first (with its retry) finished"
    );

    // Cancelling the run that holds the place lets the next one in at once.
    let holder = start_run(
        &db,
        T,
        &request("per-user", json!({"user_id": "c", "ms": 60000})),
    )
    .await
    .expect("starts");
    eventually(10, || async {
        get_run(&db, T, holder)
            .await
            .expect("db")
            .expect("run")
            .run
            .status
            == RunStatus::Running
    })
    .await;
    let next = start_run(
        &db,
        T,
        &request("per-user", json!({"user_id": "c", "ms": 0})),
    )
    .await
    .expect("starts");
    hatchery::scheduler::cancel_run(&db, T, holder)
        .await
        .expect("cancels");
    let next = wait_for_run(&db, T, next, Duration::from_secs(10))
        .await
        .expect("db")
        .expect("run");
    assert_eq!(next.run.status, RunStatus::Succeeded, "{next:#?}");
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn priority_orders_the_runs_of_one_key(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let mut requests: Vec<RunRequest> = (0..10)
        .map(|_| request("per-user", json!({"user_id": "p"})))
        .collect();
    let mut urgent = request("per-user", json!({"user_id": "p"}));
    urgent.priority = Some(3);
    requests.push(urgent);
    let ids = start_runs(&db, T, &requests).await.expect("starts");
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let views = all_finished(&db, &ids).await;
    let urgent_start = db_interval(&views[10], "hold").0;
    let earlier = views[..10]
        .iter()
        .filter(|v| db_interval(v, "hold").0 < urgent_start)
        .count();
    assert_eq!(earlier, 0, "the priority-3 run of the key starts first");
    node.shutdown().await;
}

/// The database's [started, finished) of the task of each run that started, by key.
fn started_intervals(views: &[RunView], task: &str) -> Vec<(String, (i64, i64))> {
    views
        .iter()
        .filter_map(|view| {
            let task = view.task(task)?;
            let started = task.started_at?;
            Some((
                view.run.input["user_id"].to_string(),
                (started.timestamp_micros(), millis(task.finished_at)),
            ))
        })
        .collect()
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn cancel_strategies_never_overlap_more_than_max_runs_on_two_nodes(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let (first, second) = two_nodes(&db, &runtime).await;
    for workflow in ["newest", "in-progress"] {
        // Waves of runs over three keys, each wave while the last one still runs.
        let mut ids = Vec::new();
        for wave in 0..6 {
            let requests: Vec<RunRequest> = (0..6)
                .map(|i| {
                    request(
                        workflow,
                        json!({"user_id": format!("u{}", i % 3), "ms": 60}),
                    )
                })
                .collect();
            ids.extend(start_runs(&db, T, &requests).await.expect("starts"));
            tokio::time::sleep(Duration::from_millis(20 * wave)).await;
        }
        let views = all_finished(&db, &ids).await;
        let succeeded = views
            .iter()
            .filter(|v| v.run.status == RunStatus::Succeeded)
            .count();
        let cancelled = views
            .iter()
            .filter(|v| v.run.status == RunStatus::Cancelled)
            .count();
        assert_eq!(
            succeeded + cancelled,
            views.len(),
            "{workflow}: nothing fails"
        );
        assert!(
            succeeded >= 3 && cancelled >= 3,
            "{workflow}: {succeeded} / {cancelled}"
        );
        assert_eq!(
            max_overlap_per_key(&started_intervals(&views, "hold")),
            1,
            "{workflow}"
        );
    }
    first.shutdown().await;
    second.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_replayed_run_is_admitted_again(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let ids = start_runs(
        &db,
        T,
        &[
            request("newest", json!({"user_id": "r", "ms": 300})),
            request("newest", json!({"user_id": "r", "ms": 300})),
        ],
    )
    .await
    .expect("starts");
    let views = all_finished(&db, &ids).await;
    assert_eq!(views[0].run.status, RunStatus::Succeeded);
    assert_eq!(views[1].run.status, RunStatus::Cancelled);
    assert!(
        hatchery::scheduler::replay_run(&db, T, ids[1])
            .await
            .expect("replays")
    );
    let replayed = finished(&db, ids[1]).await;
    assert_eq!(replayed.run.status, RunStatus::Succeeded, "{replayed:#?}");
    assert!(millis(replayed.task("hold").expect("hold").started_at) > 0);
    node.shutdown().await;
}
