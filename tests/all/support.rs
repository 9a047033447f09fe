//! Shared set-up: runtimes, loaded guests, attempts with chosen limits.

use std::sync::{Arc, OnceLock};

use hatchery::runtime::{
    Attempt, AttemptReport, EngineConfig, Limits, LoadedModule, Runtime, RuntimeConfig,
};

/// A runtime with a small pool, no disk cache.
pub fn new_runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        engine: EngineConfig {
            max_instances: 16,
            ..EngineConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .expect("runtime starts")
}

/// One runtime shared by the tests that only need to run tasks (the compile is the slow part).
pub fn shared_runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(new_runtime).clone()
}

/// Loads the guest at `path` into `runtime`.
pub async fn load(runtime: &Runtime, path: &str) -> Arc<LoadedModule> {
    runtime
        .load(&hatchery_guests::read(path))
        .await
        .expect("guest loads")
}

/// Runs the single-task workflow `name` of `module` with `input` and `limits`.
pub async fn run(
    runtime: &Runtime,
    module: &Arc<LoadedModule>,
    name: &str,
    input: &str,
    limits: Limits,
) -> AttemptReport {
    let attempt = Attempt {
        limits,
        ..Attempt::new(name, name, input)
    };
    runtime.execute(module, attempt).await
}

/// Parses JSON text, for comparing outputs structurally.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("valid JSON")
}

/// A database with `guest` deployed, and a runtime to run it.
pub async fn deployed(pool: sqlx::PgPool, guest: &str) -> (hatchery::db::Db, Runtime) {
    let db = hatchery::db::Db::new(pool);
    let runtime = new_runtime();
    hatchery::scheduler::deploy_module(
        &db,
        &runtime,
        hatchery::db::DEFAULT_TENANT,
        &hatchery_guests::read(guest),
    )
    .await
    .expect("deploys");
    (db, runtime)
}

/// A node configuration with short timers, for tests.
pub fn test_node_config() -> hatchery::scheduler::NodeConfig {
    use std::time::Duration;
    hatchery::scheduler::NodeConfig {
        capacity: 8,
        default_slots: 8,
        heartbeat: Duration::from_millis(300),
        reap_interval: Duration::from_millis(100),
        poll_interval: Duration::from_millis(250),
        ..hatchery::scheduler::NodeConfig::default()
    }
}

/// Waits until `check` holds, re-checking every 10 ms, for at most `seconds`.
pub async fn eventually<F, Fut>(seconds: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within {seconds} s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// An answer of the API: status, `Retry-After` in seconds if sent, JSON body (`null` if empty).
pub struct Answer {
    pub status: axum::http::StatusCode,
    pub retry_after: Option<u64>,
    pub body: serde_json::Value,
}

/// Calls `router` (no socket) with `token`.
pub async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    token: &str,
    body: axum::body::Body,
) -> Answer {
    use tower::ServiceExt as _;
    let request = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").parse().expect("seconds"));
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON")
    };
    Answer {
        status,
        retry_after,
        body,
    }
}

/// Calls `router` and insists on a 2xx; returns the body.
pub async fn call_ok(
    router: &axum::Router,
    method: &str,
    uri: &str,
    token: &str,
    body: axum::body::Body,
) -> serde_json::Value {
    let answer = call(router, method, uri, token, body).await;
    assert!(
        answer.status.is_success(),
        "{method} {uri}: {} {}",
        answer.status,
        answer.body
    );
    answer.body
}

/// `router` served on a free port of 127.0.0.1 until `stop`.
pub struct Served {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    /// Serves `router` on a real socket.
    pub async fn start(router: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        );
        Self { url, stop, task }
    }

    /// Stops serving and waits for the server to end.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("joins").expect("serves");
    }
}
