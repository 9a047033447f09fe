//! The sandbox holds: every hostile guest fails with its precise reason, and the runtime keeps
//! serving the next task afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hatchery::runtime::{
    Attempt, HostCallError, Limits, LoadedModule, LogLevel, RunInfo, Runtime, SpawnRequest,
    TaskFailure, TaskHost,
};
use tokio::sync::Notify;

use crate::support::{json, load, new_runtime, run, shared_runtime};

async fn hostile() -> (Runtime, Arc<LoadedModule>) {
    let runtime = shared_runtime();
    let module = load(&runtime, hatchery_guests::HOSTILE).await;
    (runtime, module)
}

/// Runs `echo` to show the runtime still serves after a hostile attempt.
async fn assert_still_serving(runtime: &Runtime, module: &Arc<LoadedModule>) {
    let report = run(
        runtime,
        module,
        "echo",
        r#"{"still":"alive"}"#,
        Limits::default(),
    )
    .await;
    assert_eq!(
        json(&report.outcome.expect("echo succeeds")),
        json(r#"{"still":"alive"}"#)
    );
}

async fn failure_of(name: &str, input: &str, limits: Limits) -> TaskFailure {
    let (runtime, module) = hostile().await;
    let report = run(&runtime, &module, name, input, limits).await;
    let failure = report.outcome.expect_err("the hostile task fails");
    assert_still_serving(&runtime, &module).await;
    failure
}

#[tokio::test(flavor = "multi_thread")]
async fn an_infinite_loop_runs_out_of_fuel() {
    let limits = Limits {
        fuel: Some(50_000_000),
        ..Limits::default()
    };
    let failure = failure_of("spin", "{}", limits).await;
    assert_eq!(failure, TaskFailure::OutOfFuel { budget: 50_000_000 });
    assert_eq!(
        failure.to_string(),
        "out of fuel: used all 50000000 instructions of its budget"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_infinite_loop_with_unlimited_fuel_hits_the_deadline() {
    let limits = Limits {
        fuel: None,
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let failure = failure_of("spin", "{}", limits).await;
    assert_eq!(failure.to_string(), "timed out after 300ms");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_blocked_in_a_wasi_sleep_hits_the_deadline() {
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let failure = failure_of("sleep", r#"{"ms": 60000}"#, limits).await;
    assert_eq!(failure.to_string(), "timed out after 200ms");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_bomb_hits_the_memory_limit() {
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let failure = failure_of("membomb", "{}", limits).await;
    assert_eq!(failure, TaskFailure::MemoryLimit { limit: 16 << 20 });
    assert_eq!(
        failure.to_string(),
        "memory limit of 16777216 bytes exceeded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_recursion_overflows_the_stack_cleanly() {
    let failure = failure_of("recurse", "{}", Limits::default()).await;
    // A Rust guest's stack lives at the bottom of its linear memory: overflowing it is an
    // out-of-bounds access, which the trap reports (the host stays healthy either way).
    assert_eq!(failure.code(), "trap");
    assert!(
        failure.to_string().contains("out of bounds memory access"),
        "{failure}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_reports_its_message() {
    let failure = failure_of("panic", "{}", Limits::default()).await;
    assert_eq!(
        failure,
        TaskFailure::Panicked("boom: the guest panicked on purpose".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversize_output_is_refused() {
    let failure = failure_of("oversize", "{}", Limits::default()).await;
    let TaskFailure::OutputTooLarge { size, limit } = failure else {
        panic!("expected OutputTooLarge, got {failure:?}");
    };
    assert_eq!(limit, 1 << 20);
    assert!(size > 2 << 20, "a 2 MiB JSON string, quoted: {size}");
}

#[tokio::test(flavor = "multi_thread")]
async fn task_errors_tell_retryable_from_fatal() {
    let failed = failure_of("fail", "{}", Limits::default()).await;
    assert_eq!(failed, TaskFailure::Failed("transient failure".into()));
    assert!(failed.is_retryable());
    let fatal = failure_of("fatal", "{}", Limits::default()).await;
    assert_eq!(fatal, TaskFailure::Fatal("permanent failure".into()));
    assert!(!fatal.is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn stdout_stderr_and_log_calls_become_log_lines() {
    let (runtime, module) = hostile().await;
    let report = run(&runtime, &module, "log", "{}", Limits::default()).await;
    assert_eq!(json(&report.outcome.expect("log succeeds")), json("{}"));
    let lines: Vec<(LogLevel, &str)> = report
        .logs
        .iter()
        .map(|l| (l.level, l.message.as_str()))
        .collect();
    assert!(lines.contains(&(LogLevel::Info, "to stdout")), "{lines:?}");
    assert!(lines.contains(&(LogLevel::Warn, "to stderr")), "{lines:?}");
    assert!(
        lines.contains(&(LogLevel::Info, "via the log import")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spawn_without_a_server_says_so() {
    let (runtime, module) = hostile().await;
    let report = run(&runtime, &module, "spawn", "{}", Limits::default()).await;
    let output = json(&report.outcome.expect("spawn task handles the error"));
    let error = output["error"].as_str().expect("an error message");
    assert!(error.contains("needs a Hatchery server"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_json_is_a_fatal_task_error() {
    let (runtime, module) = hostile().await;
    let report = run(
        &runtime,
        &module,
        "sleep",
        r#"{"ms": "soon"}"#,
        Limits::default(),
    )
    .await;
    let failure = report.outcome.expect_err("the input does not deserialize");
    assert_eq!(failure.code(), "fatal", "{failure}");
    assert_still_serving(&runtime, &module).await;
}

/// Tells the test when the guest has started running (the `spin` task pushes an event first).
struct StartSignal(Notify);

#[hatchery::runtime::async_trait]
impl TaskHost for StartSignal {
    async fn spawn(&self, _: &RunInfo, _: SpawnRequest) -> Result<String, HostCallError> {
        Err(HostCallError::refused("not in this test"))
    }
    async fn wait(&self, _: &RunInfo, _: &str) -> Result<String, HostCallError> {
        Err(HostCallError::refused("not in this test"))
    }
    async fn push_event(&self, _: &RunInfo, _: &str, _: &str) -> Result<(), HostCallError> {
        self.0.notify_one();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_busy_loop_returns_within_100ms() {
    let runtime = new_runtime();
    let module = load(&runtime, hatchery_guests::HOSTILE).await;
    let started = Arc::new(StartSignal(Notify::new()));
    let attempt = Attempt {
        limits: Limits {
            fuel: None,
            ..Limits::default()
        },
        host: started.clone(),
        ..Attempt::new("spin", "spin", "{}")
    };
    let cancel = attempt.cancel.clone();
    let running = {
        let (runtime, module) = (runtime.clone(), module.clone());
        tokio::spawn(async move { runtime.execute(&module, attempt).await })
    };
    started.0.notified().await;
    let cancelled_at = Instant::now();
    cancel.cancel();
    let report = running.await.expect("the attempt task does not panic");
    let latency = cancelled_at.elapsed();
    assert_eq!(report.outcome, Err(TaskFailure::Cancelled));
    assert!(
        latency < Duration::from_millis(100),
        "cancellation took {latency:?}"
    );
    assert_still_serving(&runtime, &module).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_hostile_attempts_at_once_leave_no_slot_stuck() {
    let runtime = new_runtime();
    let module = load(&runtime, hatchery_guests::HOSTILE).await;
    let free_before = runtime.free_instances();
    let mut attempts = tokio::task::JoinSet::new();
    for name in ["panic", "membomb", "recurse", "fail", "oversize"]
        .into_iter()
        .cycle()
        .take(40)
    {
        let (runtime, module) = (runtime.clone(), module.clone());
        let limits = Limits {
            memory_bytes: 8 << 20,
            ..Limits::default()
        };
        attempts.spawn(async move { run(&runtime, &module, name, "{}", limits).await });
    }
    while let Some(report) = attempts.join_next().await {
        assert!(report.expect("no panic").outcome.is_err());
    }
    assert_eq!(runtime.free_instances(), free_before);
    assert_still_serving(&runtime, &module).await;
}
