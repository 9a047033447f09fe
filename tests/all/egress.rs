//! Outbound HTTP from tasks against a real HTTP server on loopback: what an allowlist lets
//! through, and everything it must refuse or cut — another host, another method, an internal
//! address reached through a DNS name, a redirect to a host not on the list, an oversized or
//! slow response — with the reason in the task's log and the node unharmed. Then the policy
//! set through the API (admin ceiling, tenant allowlist) and applied by a node.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use hatchery::egress::{EgressPattern, EgressPolicy};
use hatchery::runtime::{
    Attempt, AttemptReport, EgressLimits, EngineConfig, LoadedModule, Runtime, RuntimeConfig,
};
use serde_json::{Value, json};

/// A server on 127.0.0.1: `/hello`, `POST /echo`, `/auth` (200 only with `Authorization:
/// Bearer s3cret-value-123`), `/redirect` (to 127.0.0.2), `/big` (2 MiB), `/slow` (answers
/// after 5 s). Returns its port.
pub(crate) async fn server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let port = listener.local_addr().expect("address").port();
    let app =
        Router::new()
            .route("/hello", get(|| async { "hello from the allowed host" }))
            .route("/echo", post(|body: String| async move { body }))
            .route(
                "/auth",
                get(|headers: axum::http::HeaderMap| async move {
                    let authorized = headers
                        .get("authorization")
                        .is_some_and(|v| v == "Bearer s3cret-value-123");
                    if authorized {
                        (StatusCode::OK, "authorized")
                    } else {
                        (StatusCode::UNAUTHORIZED, "who are you")
                    }
                }),
            )
            .route(
                "/redirect",
                get(move || async move {
                    Redirect::temporary(&format!("http://127.0.0.2:{port}/hello"))
                }),
            )
            .route("/big", get(|| async { "x".repeat(2 << 20) }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    (StatusCode::OK, "late").into_response()
                }),
            );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

fn runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Runtime::new(RuntimeConfig {
                engine: EngineConfig::with_instances(16),
                cache_dir: Some(std::env::temp_dir().join("hatchery-test-compile-cache")),
                egress_limits: EgressLimits {
                    request_timeout: Duration::from_millis(1_500),
                    max_response_bytes: 1 << 20,
                    max_requests: 5,
                },
                ..RuntimeConfig::default()
            })
            .expect("runtime starts")
        })
        .clone()
}

async fn module() -> Arc<LoadedModule> {
    runtime()
        .load(&hatchery_guests::read(hatchery_guests::JS_RAW))
        .await
        .expect("loads")
}

fn policy(allow: Value) -> EgressPolicy {
    let allow: Vec<EgressPattern> = serde_json::from_value(allow).expect("patterns");
    EgressPolicy {
        ceiling: allow.clone(),
        allow,
    }
}

async fn fetch(policy: EgressPolicy, url: &str, method: &str) -> (Value, AttemptReport) {
    let input = json!({"url": url, "method": method}).to_string();
    let attempt = Attempt {
        egress: Arc::new(policy),
        ..Attempt::new("js-fetch", "fetch", input)
    };
    let module = module().await;
    let report = runtime().execute(&module, attempt).await;
    let output = serde_json::from_str(report.outcome.as_deref().expect("the task handles it"))
        .expect("json");
    (output, report)
}

fn logged(report: &AttemptReport, text: &str) -> bool {
    report.logs.iter().any(|line| line.message.contains(text))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_request_goes_through_and_is_logged() {
    let port = server().await;
    let (output, report) = fetch(
        policy(json!([format!("127.0.0.1:{port}")])),
        &format!("http://127.0.0.1:{port}/hello"),
        "GET",
    )
    .await;
    assert_eq!(
        output,
        json!({"status": 200, "body": "hello from the allowed host"})
    );
    assert!(
        logged(&report, "HTTP GET 127.0.0.1 → 200 in "),
        "{:?}",
        report.logs
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_off_the_list_are_refused_with_the_reason_in_the_log() {
    let port = server().await;
    let only_get = policy(json!([{"host": "127.0.0.1", "ports": [port], "methods": ["GET"]}]));
    let cases = [
        // Another port of the same host.
        (
            format!("http://127.0.0.1:{}/hello", port.wrapping_add(1)),
            "GET",
            "is not on this tenant's egress allowlist".to_owned(),
        ),
        // Another method.
        (
            format!("http://127.0.0.1:{port}/echo"),
            "POST",
            format!("POST http://127.0.0.1:{port} is not on this tenant's egress allowlist"),
        ),
        // A redirect to a host not on the list: the second hop is refused.
        (
            format!("http://127.0.0.1:{port}/redirect"),
            "GET",
            format!("GET http://127.0.0.2:{port} is not on this tenant's egress allowlist"),
        ),
    ];
    for (url, method, reason) in cases {
        let (output, report) = fetch(only_get.clone(), &url, method).await;
        assert!(output.get("refused").is_some(), "{url}: {output}");
        assert!(logged(&report, &reason), "{url}: {:?}", report.logs);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_internal_address_behind_a_name_is_refused_unless_named() {
    let port = server().await;
    // `localhost` is on the list, but it resolves to a loopback address no pattern names.
    let (output, report) = fetch(
        policy(json!([format!("localhost:{port}")])),
        &format!("http://localhost:{port}/hello"),
        "GET",
    )
    .await;
    assert!(output.get("refused").is_some(), "{output}");
    assert!(
        logged(
            &report,
            "localhost resolves to 127.0.0.1, an internal address"
        ),
        "{:?}",
        report.logs
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_and_slow_responses_are_cut_and_the_runtime_goes_on() {
    let port = server().await;
    let allowed = policy(json!([format!("127.0.0.1:{port}")]));
    for path in ["/big", "/slow"] {
        let started = std::time::Instant::now();
        let (output, _) = fetch(
            allowed.clone(),
            &format!("http://127.0.0.1:{port}{path}"),
            "GET",
        )
        .await;
        assert!(output.get("refused").is_some(), "{path}: {output}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{path} was not cut in time"
        );
    }
    let (output, _) = fetch(allowed, &format!("http://127.0.0.1:{port}/hello"), "GET").await;
    assert_eq!(output["status"], 200, "the runtime still serves requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rust_sdk_client_reaches_an_allowed_host_and_reports_a_refusal() {
    let port = server().await;
    let module = runtime()
        .load(&hatchery_guests::read(hatchery_guests::HTTP_FETCH))
        .await
        .expect("loads");
    let run = |url: String| {
        let module = module.clone();
        async move {
            let attempt = Attempt {
                egress: Arc::new(policy(json!([format!("127.0.0.1:{port}")]))),
                ..Attempt::new("http-fetch", "fetch", json!({"url": url}).to_string())
            };
            runtime().execute(&module, attempt).await
        }
    };
    let report = run(format!("http://127.0.0.1:{port}/hello")).await;
    let output: Value = serde_json::from_str(&report.outcome.expect("fetches")).expect("json");
    assert_eq!(output, json!({"status": 200, "bytes": 27, "body": null}));
    let report = run(format!("http://127.0.0.1:{}/hello", port.wrapping_add(1))).await;
    let error = report.outcome.expect_err("refused").to_string();
    assert!(
        error.contains("refused by Hatchery: GET http://127.0.0.1:")
            && error.contains("is not on this tenant's egress allowlist"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_sends_a_secret_it_never_sees() {
    let port = server().await;
    let module = runtime()
        .load(&hatchery_guests::read(hatchery_guests::HTTP_FETCH))
        .await
        .expect("loads");
    let attempt = |secrets: Vec<(String, String)>| Attempt {
        egress: Arc::new(policy(json!([format!("127.0.0.1:{port}")]))),
        secrets: Arc::new(hatchery::secrets::TaskSecrets(secrets)),
        ..Attempt::new(
            "http-fetch",
            "fetch",
            json!({"url": format!("http://127.0.0.1:{port}/auth"), "secret": "RATES_KEY"})
                .to_string(),
        )
    };
    let with = vec![("RATES_KEY".to_owned(), "s3cret-value-123".to_owned())];
    let report = runtime().execute(&module, attempt(with)).await;
    let output: Value = serde_json::from_str(&report.outcome.expect("fetches")).expect("json");
    assert_eq!(
        output["status"], 200,
        "the host filled the header: {output}"
    );
    let report = runtime().execute(&module, attempt(vec![])).await;
    let error = report.outcome.expect_err("refused").to_string();
    assert!(
        error.contains("a header names secret `RATES_KEY`, which this workflow may not read"),
        "{error}"
    );
}
