//! The examples run end to end through the library: a single task, a DAG with outputs passed
//! on, and a task that spawns children and waits for them.

use hatchery::runtime::local::LocalRunner;
use hatchery::runtime::{Attempt, Limits, Worker};

use crate::support::{json, load, shared_runtime};

#[tokio::test(flavor = "multi_thread")]
async fn hello_greets_through_the_library() {
    let runtime = shared_runtime();
    let module = load(&runtime, hatchery_guests::HELLO).await;
    let report = runtime
        .execute(&module, Attempt::new("hello", "greet", r#"{"name":"Ada"}"#))
        .await;
    assert_eq!(
        json(&report.outcome.expect("greets")),
        json(r#"{"greeting":"Hello, Ada!"}"#)
    );
    assert!(
        report
            .logs
            .iter()
            .any(|line| line.message == "greeting Ada"),
        "{:?}",
        report.logs
    );
    assert!(report.fuel_used.is_some_and(|fuel| fuel > 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manifest_is_read_at_load() {
    let runtime = shared_runtime();
    let etl = load(&runtime, hatchery_guests::ETL).await;
    let workflow = etl.manifest.workflow("etl").expect("declares etl");
    let tasks: Vec<(&str, Vec<&str>)> = workflow
        .tasks
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.parents.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        tasks,
        [
            ("extract", vec![]),
            ("transform", vec!["extract"]),
            ("load", vec!["transform"])
        ]
    );
    let transform = workflow.task("transform").expect("transform");
    assert_eq!(transform.retries, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_etl_dag_passes_outputs_from_parent_to_child() {
    let runtime = shared_runtime();
    let module = load(&runtime, hatchery_guests::ETL).await;
    let runner = LocalRunner::new(Worker::new(runtime, module, 4), Limits::default());
    let report = runner
        .run_workflow("etl", "{}".into(), "{}".into())
        .await
        .expect("known workflow");
    assert_eq!(
        json(&report.outcome.expect("succeeds")),
        json(r#"{"loaded":3,"total":10}"#)
    );
    let order: Vec<&str> = report.tasks.iter().map(|t| t.task.as_str()).collect();
    assert_eq!(order, ["extract", "transform", "load"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn fanout_spawns_children_and_waits_for_them() {
    let runtime = shared_runtime();
    let module = load(&runtime, hatchery_guests::FANOUT).await;
    let runner = LocalRunner::new(Worker::new(runtime, module, 4), Limits::default());
    let report = runner
        .run_workflow("fanout", r#"{"count":200}"#.into(), "{}".into())
        .await
        .expect("known");
    assert_eq!(
        json(&report.outcome.expect("succeeds")),
        json(r#"{"sum":2686700,"children":200}"#)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_workflow_is_named() {
    let runtime = shared_runtime();
    let module = load(&runtime, hatchery_guests::HELLO).await;
    let runner = LocalRunner::new(Worker::new(runtime, module, 1), Limits::default());
    let error = runner
        .run_workflow("helo", "{}".into(), "{}".into())
        .await
        .expect_err("unknown");
    assert_eq!(error, "unknown workflow `helo`; this module has: hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_hands_out_at_most_its_slots() {
    let runtime = shared_runtime();
    let module = load(&runtime, hatchery_guests::HELLO).await;
    let worker = Worker::new(runtime, module, 2);
    let slots = worker.try_acquire_slots(5);
    assert_eq!(slots.len(), 2);
    assert_eq!(worker.slots_in_use(), 2);
    assert!(worker.try_acquire_slots(1).is_empty());
    drop(slots);
    assert_eq!(worker.slots_in_use(), 0);
}
