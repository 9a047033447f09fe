//! Test fixture for the durable core: a diamond DAG, flaky and failing tasks with retries and
//! an on-failure handler, slow and spinning tasks for timeouts, cancellation and crashes.

use std::hint::black_box;
use std::time::Duration;

use hatchery_sdk::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

/// Returns `{"task": <its name>, "parents": {<parent>: <output>}}`.
fn node(_input: Value, ctx: &Context) -> Result<Value, TaskError> {
    let mut parents = serde_json::Map::new();
    for parent in ["a", "b", "c"] {
        if let Ok(output) = ctx.parent_output::<Value>(parent) {
            parents.insert(parent.into(), output);
        }
    }
    Ok(json!({ "task": ctx.task(), "parents": parents }))
}

/// Fails until its third attempt.
fn flaky(_input: Value, ctx: &Context) -> Result<Value, TaskError> {
    if ctx.attempt() < 3 {
        return Err(TaskError::failed(format!(
            "flaky attempt {}",
            ctx.attempt()
        )));
    }
    Ok(json!({ "attempt": ctx.attempt() }))
}

/// Fails on its first attempt only (a replay makes a second one).
fn once(_input: Value, ctx: &Context) -> Result<Value, TaskError> {
    if ctx.attempt() == 1 {
        return Err(TaskError::failed("first attempt fails"));
    }
    Ok(json!({ "attempt": ctx.attempt() }))
}

/// Always fails, retryably.
fn broken(_input: Value, _ctx: &Context) -> Result<Value, TaskError> {
    Err(TaskError::failed("broken on purpose"))
}

/// Fails for good.
fn fatal(_input: Value, _ctx: &Context) -> Result<Value, TaskError> {
    Err(TaskError::fatal("fatal on purpose"))
}

/// The on-failure handler: reports what it was told.
fn cleanup(input: Value, _ctx: &Context) -> Result<Value, TaskError> {
    Ok(json!({ "handled": input["error"] }))
}

/// Returns `{}` at once.
fn noop(_input: Value, _ctx: &Context) -> Result<Value, TaskError> {
    Ok(json!({}))
}

/// The input of `hold`.
#[derive(Deserialize)]
struct Hold {
    ms: u64,
}

/// Sleeps `ms` milliseconds, then returns `{"slept": ms}`.
fn hold(input: Hold, _ctx: &Context) -> Result<Value, TaskError> {
    std::thread::sleep(Duration::from_millis(input.ms));
    Ok(json!({ "slept": input.ms }))
}

/// Burns CPU forever.
fn spin(_input: Value, _ctx: &Context) -> Result<Value, TaskError> {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Spawns a `noop` child, then fails on its first attempt: the retry must get the same child.
fn respawn(_input: Value, ctx: &Context) -> Result<Value, TaskError> {
    let child = ctx.spawn("noop", &json!({}))?;
    if ctx.attempt() == 1 {
        return Err(TaskError::failed("failing after the spawn"));
    }
    Ok(json!({ "child": child.id() }))
}

/// Spawns a `spin` child and waits for it (forever, unless cancelled).
fn watch_spinner(_input: Value, ctx: &Context) -> Result<Value, TaskError> {
    ctx.run_child::<_, Value>("spin", &json!({}))
}

/// Pushes the event `signal:go` with the run's input as payload.
fn signal(input: Value, ctx: &Context) -> Result<Value, TaskError> {
    ctx.push_event("signal:go", &input)?;
    Ok(json!({ "pushed": "signal:go" }))
}

/// Logs and returns text with NUL characters, which PostgreSQL cannot store as is.
fn nul(_input: Value, ctx: &Context) -> Result<Value, TaskError> {
    println!("before\0after");
    ctx.log("log\0line");
    Ok(json!({ "text": "a\u{0}b" }))
}

/// The module.
fn module() -> Module {
    Module::new()
        .workflow(
            Workflow::new("diamond")
                .task(Task::new("a", node))
                .task(Task::new("b", node).parent("a"))
                .task(Task::new("c", node).parent("a"))
                .task(Task::new("d", node).parents(["b", "c"])),
        )
        .workflow(Workflow::new("flaky").task(Task::new("flaky", flaky).retries(3)))
        .workflow(Workflow::new("once").task(Task::new("once", once)))
        .workflow(
            Workflow::new("doomed")
                .task(Task::new("first", noop))
                .task(Task::new("second", broken).parent("first").retries(1))
                .task(Task::new("third", noop).parent("second"))
                .on_failure(Task::new("cleanup", cleanup)),
        )
        .workflow(Workflow::new("fatal").task(Task::new("fatal", fatal).retries(5)))
        .workflow(Workflow::new("noop").task(Task::new("noop", noop)))
        .workflow(
            // A cron from the manifest (once a year: it never fires during a test).
            Workflow::new("ticker")
                .on_cron("0 0 1 1 *")
                .task(Task::new("noop", noop)),
        )
        .workflow(Workflow::new("hold").task(Task::new("hold", hold)))
        .workflow(
            Workflow::new("slow").task(
                Task::new("slow", hold)
                    .execution_timeout(Duration::from_millis(300))
                    .retries(1),
            ),
        )
        .workflow(
            Workflow::new("impatient")
                .task(Task::new("impatient", noop).schedule_timeout(Duration::from_millis(100))),
        )
        .workflow(Workflow::new("spin").task(Task::new("spin", spin)))
        .workflow(Workflow::new("nul").task(Task::new("nul", nul)))
        .workflow(Workflow::new("signal").task(Task::new("signal", signal)))
        .workflow(
            Workflow::new("on-signal")
                .on_event("signal:*")
                .task(Task::new("echo", |input: Value, _ctx: &Context| {
                    Ok::<_, TaskError>(input)
                })),
        )
        .workflow(Workflow::new("respawn").task(Task::new("respawn", respawn).retries(1)))
        .workflow(Workflow::new("watch-spinner").task(Task::new("watch", watch_spinner)))
        .workflow(
            Workflow::new("backoff").task(Task::new("backoff", broken).retries(1).backoff(2.0, 60)),
        )
}

hatchery_sdk::export!(module);
