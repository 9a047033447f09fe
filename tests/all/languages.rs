//! Tasks in Python and JavaScript, built by the stock toolchains (componentize-py,
//! componentize-js) from `examples/python-hello` and `examples/js-hello` with the guest SDKs:
//! loading, the sandbox they get, pool sizing per module, errors that carry the guest's own
//! message, and the DAG with children end to end through a node and Postgres.

use std::sync::OnceLock;
use std::time::Duration;

use hatchery::db::task_run::task_run_logs_of_run;
use hatchery::db::{DEFAULT_TENANT, Db};
use hatchery::runtime::{
    Attempt, AttemptReport, EngineConfig, LoadError, PoolShare, Runtime, RuntimeConfig,
    TaskFailure, inspect,
};
use hatchery::scheduler::{Node, RunRequest, RunView, deploy_module, start_run, wait_for_run};
use hatchery::status::RunStatus;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{eventually, test_node_config};

/// Compiled interpreters are cached on disk across tests and runs: a compile takes seconds.
fn cache_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("hatchery-test-compile-cache")
}

fn runtime_with(engine: EngineConfig) -> Runtime {
    Runtime::new(RuntimeConfig {
        engine,
        cache_dir: Some(cache_dir()),
        ..RuntimeConfig::default()
    })
    .expect("runtime starts")
}

/// One runtime for the tests that only load and run modules.
fn shared() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| runtime_with(EngineConfig::with_instances(64)))
        .clone()
}

/// One attempt of `workflow`/`task` of `guest` on the shared runtime.
async fn attempt(guest: &str, workflow: &str, task: &str, input: &str) -> AttemptReport {
    let runtime = shared();
    let module = runtime
        .load(&hatchery_guests::read(guest))
        .await
        .expect("loads");
    runtime
        .execute(&module, Attempt::new(workflow, task, input))
        .await
}

async fn node_with(pool: PgPool, guest: &str) -> (Db, Node) {
    let db = Db::new(pool);
    let runtime = runtime_with(EngineConfig::with_instances(32));
    deploy_module(&db, &runtime, DEFAULT_TENANT, &hatchery_guests::read(guest))
        .await
        .expect("deploys");
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    (db, node)
}

async fn finished(db: &Db, id: Uuid) -> RunView {
    let view = wait_for_run(db, DEFAULT_TENANT, id, Duration::from_secs(120))
        .await
        .expect("db")
        .expect("run exists");
    assert!(
        matches!(view.run.status.as_str(), "succeeded" | "failed"),
        "run did not finish in time: {view:#?}"
    );
    view
}

async fn logs(db: &Db, id: Uuid) -> Vec<String> {
    let mut conn = db.pool.acquire().await.expect("connection");
    task_run_logs_of_run(&mut conn, DEFAULT_TENANT, id, None, 1_000)
        .await
        .expect("logs")
        .into_iter()
        .map(|line| line.message)
        .collect()
}

/// The DAG of either example: outputs passed on, one child per kept record, the sum of their
/// squares; `print`/`console.log` and `ctx.log` both in the task log.
async fn dag_with_children(pool: PgPool, guest: &str, prefix: &str) {
    let (db, node) = node_with(pool, guest).await;
    let id = start_run(
        &db,
        DEFAULT_TENANT,
        &RunRequest::new(format!("{prefix}-etl"), json!({})),
    )
    .await
    .expect("starts");
    let view = finished(&db, id).await;
    assert_eq!(view.run.status, RunStatus::Succeeded, "{view:#?}");
    assert_eq!(
        view.run.output,
        Some(json!({"loaded": 3, "total": 10, "squares": 38}))
    );
    let lines = logs(&db, id).await;
    for expected in ["extracted 4 rows, rejected 1", "kept 3 of 4 records"] {
        assert!(lines.iter().any(|l| l == expected), "{expected}: {lines:?}");
    }
    let mut conn = db.pool.acquire().await.expect("connection");
    let children = hatchery::db::workflow_run::workflow_run_children(&mut conn, DEFAULT_TENANT, id)
        .await
        .expect("children");
    assert_eq!(children.len(), 3, "one child per kept record");
    node.shutdown().await;
}

/// A task that throws: its attempts fail with the exception's type and message, the retry
/// policy applies, and the stack is in the log.
async fn a_thrown_error(pool: PgPool, guest: &str, prefix: &str, kind: &str, stack: &str) {
    let (db, node) = node_with(pool, guest).await;
    let id = start_run(
        &db,
        DEFAULT_TENANT,
        &RunRequest::new(format!("{prefix}-etl"), json!({"rows": ["fail"]})),
    )
    .await
    .expect("starts");
    let view = finished(&db, id).await;
    assert_eq!(view.run.status, RunStatus::Failed);
    let extract = view.task("extract").expect("extract");
    assert_eq!(extract.attempt, 2, "retries = 1: two attempts");
    assert_eq!(
        extract.error.as_deref(),
        Some(format!("{kind}: the input asked extract to fail").as_str())
    );
    assert_eq!(extract.error_code.as_deref(), Some("failed"));
    let lines = logs(&db, id).await;
    assert!(lines.iter().any(|l| l.contains(stack)), "{lines:?}");
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_python_dag_spawns_and_waits_for_children(pool: PgPool) {
    dag_with_children(pool, hatchery_guests::PYTHON_HELLO, "py").await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_javascript_dag_spawns_and_waits_for_children(pool: PgPool) {
    dag_with_children(pool, hatchery_guests::JS_HELLO, "js").await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_python_exception_fails_the_attempt_with_its_message(pool: PgPool) {
    a_thrown_error(
        pool,
        hatchery_guests::PYTHON_HELLO,
        "py",
        "ValueError",
        "Traceback (most recent call last)",
    )
    .await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_javascript_exception_fails_the_attempt_with_its_message(pool: PgPool) {
    a_thrown_error(
        pool,
        hatchery_guests::JS_HELLO,
        "js",
        "TypeError",
        "the input asked extract to fail",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fatal_errors_are_not_retried_in_either_language() {
    for (guest, workflow) in [
        (hatchery_guests::PYTHON_HELLO, "py-square"),
        (hatchery_guests::JS_HELLO, "js-square"),
    ] {
        let report = attempt(guest, workflow, "compute", r#"{"n":"x"}"#).await;
        let Err(TaskFailure::Fatal(message)) = &report.outcome else {
            panic!(
                "{workflow}: expected a fatal error, got {:?}",
                report.outcome
            );
        };
        assert!(
            message.starts_with(r#"expected {"n": <integer>}, got"#),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stock_builds_load_and_their_imports_are_what_the_readme_says() {
    for guest in [hatchery_guests::PYTHON_HELLO, hatchery_guests::JS_HELLO] {
        let shape = inspect(&hatchery_guests::read(guest)).expect("parses");
        let imports: Vec<&str> = shape
            .imports
            .iter()
            .map(|i| i.split('@').next().unwrap_or(i))
            .collect();
        assert!(imports.contains(&"wasi:filesystem/preopens"), "{imports:?}");
        for import in &imports {
            assert!(
                hatchery::runtime::GRANTED_INTERFACES.contains(import),
                "{import} is not granted"
            );
        }
        shared()
            .load(&hatchery_guests::read(guest))
            .await
            .expect("the stock build loads unchanged");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_concurrent_python_runs_all_succeed_on_a_small_pool() {
    // Room for 64 component instances but core instances for only a few Python instances at
    // once: admission must reserve each module's real footprint and make the rest wait, not
    // fail with "maximum concurrent limit reached".
    let bytes = hatchery_guests::read(hatchery_guests::PYTHON_HELLO);
    let footprint = inspect(&bytes).expect("parses").footprint;
    assert!(footprint.core_instances > 4, "{footprint:?}");
    let runtime = runtime_with(EngineConfig {
        pool_total: PoolShare {
            core_instances: footprint.core_instances * 3,
            ..PoolShare::default_total(64)
        },
        ..EngineConfig::with_instances(64)
    });
    let module = runtime.load(&bytes).await.expect("loads");
    let runs = (0..64).map(|n| {
        let (runtime, module) = (runtime.clone(), module.clone());
        tokio::spawn(async move {
            let input = format!(r#"{{"n":{n}}}"#);
            let report = runtime
                .execute(&module, Attempt::new("py-square", "compute", input))
                .await;
            (n, report.outcome)
        })
    });
    for run in runs.collect::<Vec<_>>() {
        let (n, outcome) = run.await.expect("task");
        let output: Value = serde_json::from_str(&outcome.expect("runs")).expect("json");
        assert_eq!(output, json!({"square": n * n}));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_module_too_large_for_the_pool_is_refused_with_the_flag_to_raise() {
    let runtime = runtime_with(EngineConfig {
        per_instance: PoolShare {
            core_instances: 4,
            ..PoolShare::PER_INSTANCE
        },
        ..EngineConfig::with_instances(8)
    });
    let error = runtime
        .load(&hatchery_guests::read(hatchery_guests::PYTHON_HELLO))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            error,
            LoadError::TooLargeForPool {
                what: "core instances",
                limit: 4,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("hatchery serve --max-core-instances-per-module"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_describe_reports_the_python_traceback() {
    let error = shared()
        .load(&hatchery_guests::read(hatchery_guests::PYTHON_BROKEN))
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert!(
        message.starts_with("reading the manifest (`describe`) failed: "),
        "{message}"
    );
    assert!(
        message.contains("RuntimeError: this module cannot describe itself"),
        "{message}"
    );
    assert!(!message.contains("wasm trap: wasm trap"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uncaught_javascript_exception_says_what_was_thrown() {
    let report = attempt(hatchery_guests::JS_RAW, "js-raw", "throw", "null").await;
    let failure = report.outcome.expect_err("fails");
    let message = failure.to_string();
    assert!(message.contains("raw boom"), "{message}");
    assert!(!message.contains("wasm trap: wasm trap"), "{message}");
    assert!(
        report
            .logs
            .iter()
            .any(|line| line.message == "running throw"),
        "{:?}",
        report.logs
    );
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn every_node_compiles_a_deployed_module_before_its_first_run(pool: PgPool) {
    let db = Db::new(pool);
    let node = Node::start(
        db.clone(),
        runtime_with(EngineConfig::with_instances(16)),
        test_node_config(),
    )
    .await
    .expect("node");
    let handle = node.handle();
    // Deployed through another runtime (another node's API): this node hears of it only
    // through the database, and loads it without any run asking for it.
    let deployed = deploy_module(
        &db,
        &shared(),
        DEFAULT_TENANT,
        &hatchery_guests::read(hatchery_guests::PYTHON_HELLO),
    )
    .await
    .expect("deploys");
    eventually(120, || {
        let loaded = handle
            .workers()
            .iter()
            .any(|worker| worker.module == deployed.digest);
        async move { loaded }
    })
    .await;
    node.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn with_the_fleets_key_only_the_uploading_node_compiles(pool: PgPool) {
    const KEY: &str = "a secret every node of this fleet shares";
    let keyed = |cache: bool| {
        Runtime::new(RuntimeConfig {
            engine: EngineConfig::with_instances(16),
            cache_dir: cache.then(cache_dir),
            artifact_key: Some(hatchery::runtime::ArtifactKey::derive(KEY)),
            ..RuntimeConfig::default()
        })
        .expect("runtime starts")
    };
    let db = Db::new(pool);
    // No disk cache on the running node: what it does not compile, it took from the database.
    let running = keyed(false);
    let node = Node::start(db.clone(), running.clone(), test_node_config())
        .await
        .expect("node");
    deploy_module(
        &db,
        &keyed(true),
        DEFAULT_TENANT,
        &hatchery_guests::read(hatchery_guests::PYTHON_HELLO),
    )
    .await
    .expect("deploys");
    let id = start_run(
        &db,
        DEFAULT_TENANT,
        &RunRequest::new("py-square", json!({"n": 12})),
    )
    .await
    .expect("starts");
    let view = finished(&db, id).await;
    assert_eq!(view.run.output, Some(json!({"square": 144})));
    assert_eq!(running.compile_count(), 0, "loaded the sealed artifact");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn outgoing_http_is_refused_with_a_line_in_the_task_log() {
    let report = attempt(hatchery_guests::JS_RAW, "js-fetch", "fetch", "null").await;
    let output: Value =
        serde_json::from_str(&report.outcome.expect("the task handles it")).expect("json");
    assert!(
        output["refused"]
            .as_str()
            .is_some_and(|e| e.contains("NetworkError")),
        "{output}"
    );
    assert!(
        report.logs.iter().any(|line| line.message
            == "outbound HTTP refused: POST https://api.example.com:443 is not on this tenant's egress allowlist"),
        "{:?}",
        report.logs
    );
}
