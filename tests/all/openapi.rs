//! The OpenAPI document: it names every route the router serves, and schemathesis, fuzzing a
//! live node from it (with a seeded tenant), finds no server error and no answer the document
//! does not describe.
//!
//! The fuzz test needs schemathesis in `target/schemathesis` (`scripts/test-tools` installs it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hatchery::api::types::{RunDetail, TenantCreated};
use hatchery::api::{ApiConfig, AppState, router};
use hatchery::db::Db;
use hatchery::scheduler::Node;
use hatchery::status::RunStatus;
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt as _;

use crate::support::{Served, call_ok, new_runtime, test_node_config};

const ADMIN: &str = "openapi-admin-token";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (method, path) of every `.route(…)` in the router's source, but the dashboard's and the
/// document's own.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let source =
        std::fs::read_to_string(root().join("host/src/api/mod.rs")).expect("the router's source");
    let mut routes = BTreeSet::new();
    for chunk in source.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).expect("a path literal").to_owned();
        let call = &chunk[..chunk.find("\n        .").unwrap_or(chunk.len())];
        for method in ["get", "post", "put", "delete"] {
            if call.contains(&format!("{method}(")) {
                routes.insert((method.to_owned(), path.clone()));
            }
        }
    }
    routes.retain(|(_, path)| {
        path != "/" && !path.starts_with("/dashboard/") && path != "/api/v1/openapi.json"
    });
    routes
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn the_document_is_openapi_3_1_and_names_every_route(pool: PgPool) {
    let state = AppState::new(Db::new(pool), new_runtime(), None, ApiConfig::default());
    let response = router(state)
        .oneshot(
            Request::builder()
                .uri("/api/v1/openapi.json")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK, "served without a token");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let document: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        document["openapi"]
    );

    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            documented.insert((method.clone(), path.clone()));
            let responses = operation["responses"].as_object().expect("responses");
            for status in ["400", "401", "404", "413", "429", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} does not document {status}"
                );
            }
            if path.starts_with("/api/v1/") {
                assert!(
                    operation["security"].is_array(),
                    "{method} {path} names no token"
                );
            }
        }
    }
    let served = routes_in_source();
    assert!(
        served.len() > 40,
        "the router's routes were read: {served:?}"
    );
    let missing: Vec<_> = served.difference(&documented).collect();
    assert!(missing.is_empty(), "routes without a document: {missing:?}");
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(extra.is_empty(), "documented but not served: {extra:?}");
    for scheme in ["tenant_token", "admin_token", "metrics_token"] {
        assert_eq!(
            document["components"]["securitySchemes"][scheme]["scheme"], "bearer",
            "{scheme}"
        );
    }
}

/// Runs schemathesis against `url` with `token`, on the operations `filter` selects; returns
/// its report when it found nothing.
fn schemathesis(url: &str, token: &str, filter: &[&str]) -> String {
    let bin = root().join("target/schemathesis/bin/schemathesis");
    assert!(
        bin.exists(),
        "the fuzz test needs schemathesis ({}): run scripts/test-tools",
        bin.display()
    );
    let output = std::process::Command::new(bin)
        .args(["run", &format!("{url}/api/v1/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: hypothesis parses sources with `ast`, which CPython 3.11 cannot do from
        // two threads at once ("AST constructor recursion depth mismatch").
        .args(["--max-examples", "25", "--workers", "1", "--seed", "1"])
        .args(["--suppress-health-check", "all", "--no-color"])
        .args(filter)
        .env("SCHEMATHESIS_HOOKS", "")
        // Its cache of crashes goes beside it, not into the source tree.
        .current_dir(root().join("target/schemathesis"))
        .output()
        .expect("schemathesis runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}"
    );
    report
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer(pool: PgPool) {
    let db = Db::new(pool);
    let runtime = new_runtime();
    let secrets = Some(hatchery::secrets::SecretBox::derive("fuzzed-secret-key"));
    let node_config = hatchery::scheduler::NodeConfig {
        secrets: secrets.clone(),
        ..test_node_config()
    };
    let node = Node::start(db.clone(), runtime.clone(), node_config)
        .await
        .expect("node starts");
    let state = AppState::new(
        db,
        runtime,
        Some(node.handle()),
        ApiConfig {
            admin_token: Some(ADMIN.into()),
            secrets,
            ..ApiConfig::default()
        },
    );
    let router = router(state);
    // A tenant with something in every list, so reads return real objects to check.
    let tenant = call_ok(
        &router,
        "POST",
        "/api/v1/tenants",
        ADMIN,
        Body::from(json!({"name": "fuzzed"}).to_string()),
    )
    .await;
    let tenant: TenantCreated = serde_json::from_value(tenant).expect("a TenantCreated");
    let token = tenant.token;
    call_ok(
        &router,
        "POST",
        "/api/v1/modules",
        &token,
        Body::from(hatchery_guests::read(hatchery_guests::ETL)),
    )
    .await;
    let run = call_ok(
        &router,
        "POST",
        "/api/v1/workflows/etl/runs?wait=30",
        &token,
        Body::from(json!({"input": {"rows": ["1,fig"]}}).to_string()),
    )
    .await;
    let run: RunDetail = serde_json::from_value(run).expect("a RunDetail");
    assert_eq!(run.run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(
        run.tasks
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["extract", "transform", "load"]
    );
    let body = json!({"expression": "0 * * * *"}).to_string();
    call_ok(
        &router,
        "POST",
        "/api/v1/workflows/etl/crons",
        &token,
        Body::from(body),
    )
    .await;
    let body = json!({"key": "order.created", "payload": {"id": 1}}).to_string();
    call_ok(&router, "POST", "/api/v1/events", &token, Body::from(body)).await;
    let body = json!({"limit": 10, "duration": "second"}).to_string();
    call_ok(
        &router,
        "PUT",
        "/api/v1/rate-limits/fuzz",
        &token,
        Body::from(body),
    )
    .await;

    let served = Served::start(router).await;
    let url = served.url.clone();

    let (tenant_url, admin_url) = (url.clone(), url.clone());
    let (tenant_token, admin_token) = (token.clone(), ADMIN.to_owned());
    // The tenant's operations with its token; the admin's with the admin token. Blocking
    // processes, so off the runtime that serves them.
    let tenant_report = tokio::task::spawn_blocking(move || {
        schemathesis(&tenant_url, &tenant_token, &["--exclude-tag", "admin"])
    })
    .await
    .expect("joins");
    let admin_report = tokio::task::spawn_blocking(move || {
        schemathesis(&admin_url, &admin_token, &["--include-tag", "admin"])
    })
    .await
    .expect("joins");
    for report in [&tenant_report, &admin_report] {
        assert!(report.contains("passed"), "{report}");
    }

    served.stop().await;
    node.shutdown().await;
}
