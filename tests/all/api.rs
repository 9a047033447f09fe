//! The HTTP API through its router (no socket) and once over a real socket: every endpoint,
//! tenants and tokens, cross-tenant isolation, every kind of bad input, run-and-wait and bulk.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use hatchery::api::{ApiConfig, AppState, router};
use hatchery::db::Db;
use hatchery::scheduler::Node;
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt as _;

use crate::support::{eventually, new_runtime, test_node_config};

const ADMIN: &str = "test-admin-token";

/// A router over a fresh database, with (or without) a node running the runs.
struct Api {
    router: Router,
    node: Option<Node>,
}

impl Api {
    async fn start(pool: PgPool, with_node: bool) -> Self {
        Self::with_config(pool, with_node, ApiConfig::default()).await
    }

    async fn with_config(pool: PgPool, with_node: bool, config: ApiConfig) -> Self {
        let db = Db::new(pool);
        let runtime = new_runtime();
        let node = if with_node {
            let node_config = hatchery::scheduler::NodeConfig {
                secrets: config.secrets.clone(),
                ..test_node_config()
            };
            Some(
                Node::start(db.clone(), runtime.clone(), node_config)
                    .await
                    .expect("node starts"),
            )
        } else {
            None
        };
        let state = AppState::new(
            db.clone(),
            runtime,
            node.as_ref().map(Node::handle),
            ApiConfig {
                admin_token: Some(ADMIN.into()),
                ..config
            },
        );
        Self {
            router: router(state),
            node,
        }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(body.into()).expect("request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("not JSON: {}", String::from_utf8_lossy(&bytes));
            })
        };
        (status, body)
    }

    async fn get(&self, uri: &str, token: &str) -> (StatusCode, Value) {
        self.call("GET", uri, Some(token), Body::empty()).await
    }

    async fn post(&self, uri: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", uri, Some(token), body.to_string()).await
    }

    /// Creates tenant `name`; returns its token.
    async fn tenant(&self, name: &str) -> String {
        self.tenant_with_id(name).await.1
    }

    /// Creates tenant `name`; returns its id and token.
    async fn tenant_with_id(&self, name: &str) -> (String, String) {
        let (status, body) = self
            .post("/api/v1/tenants", ADMIN, json!({"name": name}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["id"].as_str().expect("id").to_owned(),
            body["token"].as_str().expect("token").to_owned(),
        )
    }

    async fn deploy(&self, token: &str, guest: &str) -> Value {
        let (status, body) = self
            .call(
                "POST",
                "/api/v1/modules",
                Some(token),
                hatchery_guests::read(guest),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    async fn start_run(&self, token: &str, workflow: &str, body: Value) -> String {
        let (status, body) = self
            .post(&format!("/api/v1/workflows/{workflow}/runs"), token, body)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["run_id"].as_str().expect("run_id").to_owned()
    }

    /// Polls the run until it finished; returns it.
    async fn finished(&self, token: &str, id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, run) = self.get(&format!("/api/v1/runs/{id}"), token).await;
            assert_eq!(status, StatusCode::OK, "{run}");
            if ["succeeded", "failed", "cancelled"].contains(&run["status"].as_str().unwrap_or(""))
            {
                return run;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "run did not finish: {run}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(self) {
        if let Some(node) = self.node {
            node.shutdown().await;
        }
    }
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{body}"
    );
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn health_and_readiness_answer(pool: PgPool) {
    let api = Api::start(pool, false).await;
    let (status, body) = api.call("GET", "/healthz", None, Body::empty()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = api.call("GET", "/readyz", None, Body::empty()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ready"})));
    let (status, body) = api
        .call("GET", "/api/v1/nothing", None, Body::empty())
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = api.call("PUT", "/api/v1/runs", None, Body::empty()).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn tokens_authenticate_tenants_and_can_be_revoked(pool: PgPool) {
    let api = Api::start(pool, false).await;
    // The admin endpoints want the admin token.
    let body = json!({"name": "acme"});
    let (status, error) = api
        .call("POST", "/api/v1/tenants", None, body.to_string())
        .await;
    assert_error(status, &error, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, error) = api.post("/api/v1/tenants", "wrong", body.clone()).await;
    assert_error(status, &error, StatusCode::UNAUTHORIZED, "unauthorized");

    let (status, tenant) = api.post("/api/v1/tenants", ADMIN, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    assert_eq!(tenant["name"], "acme");
    let token = tenant["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("hat_") && token.len() == 68, "{token}");
    let tenant_id = tenant["id"].as_str().expect("id").to_owned();
    // Names are unique; a tenant token is not an admin token.
    let (status, error) = api.post("/api/v1/tenants", ADMIN, body.clone()).await;
    assert_error(status, &error, StatusCode::CONFLICT, "tenant_exists");
    let (status, error) = api
        .post("/api/v1/tenants", &token, json!({"name": "evil"}))
        .await;
    assert_error(status, &error, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, error) = api
        .post("/api/v1/tenants", ADMIN, json!({"name": ""}))
        .await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_name");

    // Tenant endpoints: 401 without a token, with a malformed header, with an unknown token.
    let (status, error) = api
        .call("GET", "/api/v1/workflows", None, Body::empty())
        .await;
    assert_error(status, &error, StatusCode::UNAUTHORIZED, "unauthorized");
    let request = Request::get("/api/v1/workflows")
        .header("authorization", format!("Basic {token}"))
        .body(Body::empty())
        .expect("request");
    let response = api.router.clone().oneshot(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, error) = api.get("/api/v1/workflows", "hat_00").await;
    assert_error(status, &error, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, list) = api.get("/api/v1/workflows", &token).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list, json!({"workflows": [], "next_cursor": null}));

    // A second token (body optional), then revoke it.
    let (status, second) = api
        .call(
            "POST",
            &format!("/api/v1/tenants/{tenant_id}/tokens"),
            Some(ADMIN),
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["tenant_id"], tenant_id.as_str());
    let second_token = second["token"].as_str().expect("token");
    assert_ne!(second_token, token);
    assert_eq!(
        api.get("/api/v1/modules", second_token).await.0,
        StatusCode::OK
    );
    let (status, _) = api
        .post(
            "/api/v1/tenants/00000000-0000-0000-0000-00000000abcd/tokens",
            ADMIN,
            json!({"name": "ci"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let revoke = format!("/api/v1/tokens/{}", second["id"].as_str().expect("id"));
    let (status, error) = api
        .call("DELETE", &revoke, Some(&token), Body::empty())
        .await;
    assert_error(status, &error, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = api
        .call("DELETE", &revoke, Some(ADMIN), Body::empty())
        .await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, error) = api.get("/api/v1/modules", second_token).await;
    assert_error(status, &error, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, error) = api
        .call("DELETE", &revoke, Some(ADMIN), Body::empty())
        .await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "not_found");
    // The first token still works.
    assert_eq!(api.get("/api/v1/modules", &token).await.0, StatusCode::OK);
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn modules_deploy_and_list_with_their_workflows(pool: PgPool) {
    let api = Api::start(pool, false).await;
    let token = api.tenant("acme").await;
    let deployed = api.deploy(&token, hatchery_guests::ETL).await;
    let digest = deployed["digest"].as_str().expect("digest").to_owned();
    assert_eq!(digest.len(), 64);
    assert_eq!(deployed["already_deployed"], false);
    let workflow = &deployed["workflows"][0];
    assert_eq!(
        (workflow["name"].as_str(), workflow["version"].as_i64()),
        (Some("etl"), Some(1))
    );
    assert_eq!(workflow["tasks"][1]["name"], "transform");
    assert_eq!(workflow["tasks"][1]["parents"], json!(["extract"]));
    assert!(workflow["on_events"].is_array() && workflow["on_crons"].is_array());

    let again = api.deploy(&token, hatchery_guests::ETL).await;
    assert_eq!(again["already_deployed"], true);
    assert_eq!(again["workflows"][0]["version"], 1);
    api.deploy(&token, hatchery_guests::HELLO).await;

    let (status, modules) = api.get("/api/v1/modules", &token).await;
    assert_eq!(status, StatusCode::OK, "{modules}");
    let modules = modules["modules"].as_array().expect("modules");
    assert_eq!(modules.len(), 2);
    assert_eq!(modules[1]["digest"], digest.as_str(), "newest first");
    assert_eq!(modules[1]["workflows"], json!(["etl"]));
    assert!(modules[1]["size"].as_i64().expect("size") > 1000);

    let (_, page1) = api.get("/api/v1/workflows?limit=1", &token).await;
    assert_eq!(page1["workflows"][0]["name"], "hello");
    let cursor = page1["next_cursor"].as_str().expect("a second page");
    let (_, page2) = api
        .get(
            &format!("/api/v1/workflows?limit=1&cursor={cursor}"),
            &token,
        )
        .await;
    assert_eq!(page2["workflows"][0]["name"], "etl");
    assert_eq!(page2["next_cursor"], Value::Null);

    let (status, etl) = api.get("/api/v1/workflows/etl", &token).await;
    assert_eq!(status, StatusCode::OK, "{etl}");
    assert_eq!(etl["module"], digest.as_str());
    assert_eq!(etl["versions"][0]["version"], 1);
    let (status, error) = api.get("/api/v1/workflows/nope", &token).await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "unknown_workflow");
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn bad_modules_are_rejected_with_the_reason(pool: PgPool) {
    let api = Api::with_config(
        pool,
        false,
        ApiConfig {
            max_module_bytes: 1 << 20,
            ..ApiConfig::default()
        },
    )
    .await;
    let token = api.tenant("acme").await;
    let upload = |bytes: Vec<u8>| api.call("POST", "/api/v1/modules", Some(&token), bytes);

    let (status, error) = upload(b"hello, not wasm".to_vec()).await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_module");
    assert!(
        error["error"]["message"]
            .as_str()
            .expect("message")
            .contains("not a WebAssembly file")
    );
    let (status, error) = upload(hatchery_guests::read(hatchery_guests::WRONG_WORLD)).await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_module");
    assert!(
        error["error"]["message"]
            .as_str()
            .expect("message")
            .contains("hatchery:task/task-module")
    );
    let (status, error) = upload(hatchery_guests::read(hatchery_guests::CYCLE)).await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_module");
    let (status, error) = upload(vec![]).await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_module");
    let (status, error) = upload(vec![0; 2 << 20]).await;
    assert_error(
        status,
        &error,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    let (_, modules) = api.get("/api/v1/modules", &token).await;
    assert_eq!(modules["modules"], json!([]));
    // The node still deploys a good module.
    api.deploy(&token, hatchery_guests::HELLO).await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_run_started_over_http_runs_and_reads_back(pool: PgPool) {
    let api = Api::start(pool, true).await;
    let token = api.tenant("acme").await;
    let digest = api.deploy(&token, hatchery_guests::HELLO).await["digest"].clone();
    let id = api
        .start_run(
            &token,
            "hello",
            json!({"input": {"name": "Ada"}, "additional_metadata": {"team": "core"}, "priority": 2}),
        )
        .await;
    let run = api.finished(&token, &id).await;
    assert_eq!(run["id"], id.as_str());
    assert_eq!(run["workflow"], "hello");
    assert_eq!(run["version"], 1);
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["input"], json!({"name": "Ada"}));
    assert_eq!(run["output"], json!({"greeting": "Hello, Ada!"}));
    assert_eq!(run["error"], Value::Null);
    assert_eq!(run["additional_metadata"], json!({"team": "core"}));
    assert_eq!(run["priority"], 2);
    assert_eq!(run["parent_run_id"], Value::Null);
    for field in ["created_at", "started_at", "finished_at"] {
        let time = run[field].as_str().expect(field);
        assert!(time.ends_with('Z'), "{field} is RFC 3339 UTC: {time}");
        chrono::DateTime::parse_from_rfc3339(time).expect("RFC 3339");
    }
    let task = &run["tasks"][0];
    assert_eq!(
        (&task["name"], &task["status"], &task["attempt"]),
        (&json!("greet"), &json!("succeeded"), &json!(1))
    );
    assert_eq!(task["output"], json!({"greeting": "Hello, Ada!"}));
    assert!(task["started_at"].is_string() && task["finished_at"].is_string());

    let (status, logs) = api.get(&format!("/api/v1/runs/{id}/logs"), &token).await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    let line = logs["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|line| line["message"] == "greeting Ada")
        .unwrap_or_else(|| panic!("the task's log line: {logs}"));
    assert_eq!(
        (&line["task"], &line["attempt"], &line["level"]),
        (&json!("greet"), &json!(1), &json!("info"))
    );
    assert!(line["time"].is_string());

    let (status, children) = api
        .get(&format!("/api/v1/runs/{id}/children"), &token)
        .await;
    assert_eq!(
        (status, children),
        (StatusCode::OK, json!({"runs": [], "next_cursor": null}))
    );

    let (status, workers) = api.get("/api/v1/workers", &token).await;
    assert_eq!(status, StatusCode::OK, "{workers}");
    let worker = &workers["workers"][0];
    assert_eq!(worker["module"], digest);
    assert_eq!(worker["slots"], 8);
    assert_eq!(worker["in_use"], 0);
    assert_eq!(
        worker["node_id"],
        json!(api.node.as_ref().expect("node").id())
    );

    let (status, error) = api.get("/api/v1/runs/not-a-run", &token).await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "not_found");
    let (status, error) = api
        .get("/api/v1/runs/00000000-0000-0000-0000-000000000009", &token)
        .await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "not_found");
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn run_and_wait_returns_the_finished_run_or_its_id(pool: PgPool) {
    let api = Api::start(pool, true).await;
    let token = api.tenant("acme").await;
    api.deploy(&token, hatchery_guests::HELLO).await;
    api.deploy(&token, hatchery_guests::DURABLE).await;

    let (status, run) = api
        .post(
            "/api/v1/workflows/hello/runs?wait=30",
            &token,
            json!({"input": {"name": "Bo"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["output"], json!({"greeting": "Hello, Bo!"}));
    assert_eq!(run["tasks"][0]["status"], "succeeded");

    // A failed run is finished too.
    let (status, run) = api
        .post(
            "/api/v1/workflows/doomed/runs?wait=30",
            &token,
            json!({"input": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"], "task `second` failed: broken on purpose");

    // Not finished within the wait: 202 with the id.
    let (status, body) = api
        .post(
            "/api/v1/workflows/hold/runs?wait=0.2",
            &token,
            json!({"input": {"ms": 3000}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let held = body["run_id"].as_str().expect("run_id").to_owned();
    assert_eq!(api.finished(&token, &held).await["status"], "succeeded");

    let (status, error) = api
        .post(
            "/api/v1/workflows/hello/runs?wait=61",
            &token,
            json!({"input": {}}),
        )
        .await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_query");
    let (status, error) = api
        .post(
            "/api/v1/workflows/hello/runs?wait=soon",
            &token,
            json!({"input": {}}),
        )
        .await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_query");
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn bad_run_requests_are_rejected_and_other_work_goes_on(pool: PgPool) {
    let api = Api::with_config(
        pool,
        true,
        ApiConfig {
            max_payload_bytes: 4096,
            ..ApiConfig::default()
        },
    )
    .await;
    let token = api.tenant("acme").await;
    api.deploy(&token, hatchery_guests::HELLO).await;
    api.deploy(&token, hatchery_guests::DURABLE).await;
    // Work in flight while the bad requests arrive.
    let held = api
        .start_run(&token, "hold", json!({"input": {"ms": 500}}))
        .await;
    let runs = "/api/v1/workflows/hello/runs";

    let (status, error) = api.call("POST", runs, Some(&token), "{\"input\": ").await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_json");
    assert!(
        error["error"]["message"]
            .as_str()
            .expect("message")
            .contains("EOF"),
        "{error}"
    );
    let (status, error) = api.call("POST", runs, Some(&token), "not json").await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_json");
    let (status, error) = api.post(runs, &token, json!({"inptu": {}})).await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        error["error"]["message"]
            .as_str()
            .expect("message")
            .contains("inptu"),
        "{error}"
    );
    let (status, error) = api
        .post(runs, &token, json!({"input": {}, "priority": 7}))
        .await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_priority");
    let (status, error) = api
        .post(runs, &token, json!({"input": {}, "priority": 700}))
        .await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_request");
    let (status, error) = api
        .post(
            runs,
            &token,
            json!({"input": {}, "additional_metadata": [1]}),
        )
        .await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_metadata");
    // A NUL character cannot be stored by jsonb: refused alone, before it reaches a batch.
    let (status, error) = api
        .post(runs, &token, json!({"input": {"name": "a\u{0}b"}}))
        .await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_input");
    let (status, error) = api
        .post("/api/v1/workflows/nope/runs", &token, json!({"input": {}}))
        .await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "unknown_workflow");
    // Input over the payload limit, whether or not the body is over the body limit.
    let (status, error) = api
        .post(runs, &token, json!({"input": {"name": "x".repeat(5000)}}))
        .await;
    assert_error(
        status,
        &error,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let (status, error) = api
        .post(
            runs,
            &token,
            json!({"input": {"name": "x".repeat(200_000)}}),
        )
        .await;
    assert_error(
        status,
        &error,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    // Nothing was started by the bad requests; the node is healthy and runs go on.
    let (_, list) = api.get("/api/v1/runs", &token).await;
    assert_eq!(list["runs"].as_array().expect("runs").len(), 1);
    assert_eq!(api.finished(&token, &held).await["status"], "succeeded");
    let (status, run) = api
        .post(
            "/api/v1/workflows/hello/runs?wait=30",
            &token,
            json!({"input": {"name": "Cy"}}),
        )
        .await;
    assert_eq!(
        (status, &run["status"]),
        (StatusCode::OK, &json!("succeeded"))
    );
    assert_eq!(
        api.call("GET", "/readyz", None, Body::empty()).await.0,
        StatusCode::OK
    );
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn bulk_starts_all_runs_or_none(pool: PgPool) {
    let api = Api::start(pool, true).await;
    let token = api.tenant("acme").await;
    api.deploy(&token, hatchery_guests::HELLO).await;
    let bulk = "/api/v1/workflows/hello/runs/bulk";
    let names = ["A", "B", "C"];
    let runs: Vec<Value> = names
        .iter()
        .map(|n| json!({"input": {"name": n}}))
        .collect();
    let (status, body) = api.post(bulk, &token, json!({"runs": runs})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids = body["run_ids"].as_array().expect("run_ids").clone();
    assert_eq!(ids.len(), 3);
    for (id, name) in ids.iter().zip(names) {
        let run = api.finished(&token, id.as_str().expect("id")).await;
        assert_eq!(
            run["output"],
            json!({"greeting": format!("Hello, {name}!")})
        );
    }

    // One bad item: nothing is started.
    let runs = json!({"runs": [{"input": {"name": "D"}}, {"input": {}, "priority": 9}]});
    let (status, error) = api.post(bulk, &token, runs).await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_priority");
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"input": {}})).collect();
    let (status, error) = api.post(bulk, &token, json!({"runs": too_many})).await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "too_many_runs");
    let (status, error) = api.post(bulk, &token, json!({"runs": []})).await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_request");
    let (status, error) = api
        .post(
            "/api/v1/workflows/nope/runs/bulk",
            &token,
            json!({"runs": [{"input": {}}]}),
        )
        .await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "unknown_workflow");
    let (_, list) = api.get("/api/v1/runs", &token).await;
    assert_eq!(list["runs"].as_array().expect("runs").len(), 3);
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn runs_list_filters_and_paginates_newest_first(pool: PgPool) {
    // No node: the runs stay queued.
    let api = Api::start(pool, false).await;
    let token = api.tenant("acme").await;
    api.deploy(&token, hatchery_guests::HELLO).await;
    api.deploy(&token, hatchery_guests::DURABLE).await;
    let mut started = Vec::new();
    for i in 0..5 {
        let batch = if i < 3 { "a" } else { "b" };
        let body = json!({"input": {"i": i}, "additional_metadata": {"batch": batch}});
        started.push(api.start_run(&token, "hello", body).await);
    }
    started.push(api.start_run(&token, "noop", json!({"input": {}})).await);

    let mut listed = Vec::new();
    let mut uri = "/api/v1/runs?limit=2".to_owned();
    loop {
        let (status, page) = api.get(&uri, &token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let runs = page["runs"].as_array().expect("runs");
        assert!(runs.len() <= 2);
        listed.extend(
            runs.iter()
                .map(|r| r["id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/api/v1/runs?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    started.reverse();
    assert_eq!(listed, started, "every run once, newest first");

    let count = |uri: String| {
        let api = &api;
        let token = &token;
        async move {
            let (status, page) = api.get(&uri, token).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            page["runs"].as_array().expect("runs").len()
        }
    };
    assert_eq!(count("/api/v1/runs?workflow=hello".into()).await, 5);
    assert_eq!(count("/api/v1/runs?workflow=noop".into()).await, 1);
    assert_eq!(count("/api/v1/runs?metadata=batch:a".into()).await, 3);
    assert_eq!(
        count("/api/v1/runs?metadata=batch:b&workflow=hello".into()).await,
        2
    );
    assert_eq!(count("/api/v1/runs?status=queued".into()).await, 6);
    assert_eq!(count("/api/v1/runs?status=succeeded".into()).await, 0);

    for (uri, code) in [
        ("/api/v1/runs?status=done", "invalid_query"),
        ("/api/v1/runs?metadata=batch", "invalid_query"),
        ("/api/v1/runs?limit=0", "invalid_query"),
        ("/api/v1/runs?limit=many", "invalid_query"),
        ("/api/v1/runs?cursor=nonsense", "invalid_cursor"),
    ] {
        let (status, error) = api.get(uri, &token).await;
        assert_error(status, &error, StatusCode::BAD_REQUEST, code);
    }
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn runs_cancel_and_replay_over_http(pool: PgPool) {
    let api = Api::start(pool, true).await;
    let token = api.tenant("acme").await;
    api.deploy(&token, hatchery_guests::DURABLE).await;
    let id = api
        .start_run(&token, "hold", json!({"input": {"ms": 30000}}))
        .await;
    eventually(30, || async {
        api.get(&format!("/api/v1/runs/{id}"), &token).await.1["status"] == "running"
    })
    .await;
    let (status, run) = api
        .call(
            "POST",
            &format!("/api/v1/runs/{id}/cancel"),
            Some(&token),
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "cancelled");
    assert_eq!(
        api.finished(&token, &id).await["tasks"][0]["status"],
        "cancelled"
    );

    let done = api.start_run(&token, "noop", json!({"input": {}})).await;
    assert_eq!(api.finished(&token, &done).await["status"], "succeeded");
    let (status, error) = api
        .call(
            "POST",
            &format!("/api/v1/runs/{done}/replay"),
            Some(&token),
            Body::empty(),
        )
        .await;
    assert_error(status, &error, StatusCode::CONFLICT, "not_replayable");

    // Replay the cancelled run, shorter this time: it runs again and succeeds... with its
    // original input, so cancel it again once it runs and check the life cycle instead.
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/v1/runs/{id}/replay"),
            Some(&token),
            Body::empty(),
        )
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::ACCEPTED, json!({"run_id": id}))
    );
    eventually(30, || async {
        api.get(&format!("/api/v1/runs/{id}"), &token).await.1["status"] != "cancelled"
    })
    .await;
    let (status, run) = api
        .call(
            "POST",
            &format!("/api/v1/runs/{id}/cancel"),
            Some(&token),
            Body::empty(),
        )
        .await;
    assert_eq!(
        (status, &run["status"]),
        (StatusCode::OK, &json!("cancelled"))
    );

    let missing = "00000000-0000-0000-0000-000000000009";
    for action in ["cancel", "replay"] {
        let (status, error) = api
            .call(
                "POST",
                &format!("/api/v1/runs/{missing}/{action}"),
                Some(&token),
                Body::empty(),
            )
            .await;
        assert_error(status, &error, StatusCode::NOT_FOUND, "not_found");
    }
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn children_name_their_parent_run(pool: PgPool) {
    let api = Api::start(pool, true).await;
    let token = api.tenant("acme").await;
    api.deploy(&token, hatchery_guests::FANOUT).await;
    let (status, parent) = api
        .post(
            "/api/v1/workflows/fanout/runs?wait=60",
            &token,
            json!({"input": {"count": 3}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{parent}");
    assert_eq!(parent["output"], json!({"sum": 14, "children": 3}));
    let id = parent["id"].as_str().expect("id");
    let (status, children) = api
        .get(&format!("/api/v1/runs/{id}/children?limit=2"), &token)
        .await;
    assert_eq!(status, StatusCode::OK, "{children}");
    let first = children["runs"].as_array().expect("runs").clone();
    assert_eq!(first.len(), 2);
    let cursor = children["next_cursor"].as_str().expect("next page");
    let (_, rest) = api
        .get(
            &format!("/api/v1/runs/{id}/children?limit=2&cursor={cursor}"),
            &token,
        )
        .await;
    assert_eq!(rest["runs"].as_array().expect("runs").len(), 1);
    for child in first.iter().chain(rest["runs"].as_array().expect("runs")) {
        assert_eq!(child["workflow"], "square");
        assert_eq!(child["parent_run_id"], id);
        let (_, run) = api
            .get(
                &format!("/api/v1/runs/{}", child["id"].as_str().expect("id")),
                &token,
            )
            .await;
        assert_eq!(run["parent_run_id"], id);
    }
    let (_, all) = api.get("/api/v1/runs", &token).await;
    assert_eq!(all["runs"].as_array().expect("runs").len(), 4, "{all}");
    let (_, top) = api.get("/api/v1/runs?top_level=true", &token).await;
    let top = top["runs"].as_array().expect("runs");
    assert_eq!(top.len(), 1, "only the parent: {top:?}");
    assert_eq!(top[0]["id"], id);
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn another_tenants_objects_are_not_found(pool: PgPool) {
    let api = Api::start(pool, true).await;
    let alice = api.tenant("alice").await;
    let bob = api.tenant("bob").await;
    api.deploy(&alice, hatchery_guests::HELLO).await;
    let (status, run) = api
        .post(
            "/api/v1/workflows/hello/runs?wait=30",
            &alice,
            json!({"input": {"name": "A"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let id = run["id"].as_str().expect("id");

    for uri in [
        format!("/api/v1/runs/{id}"),
        format!("/api/v1/runs/{id}/logs"),
        format!("/api/v1/runs/{id}/children"),
    ] {
        let (status, error) = api.get(&uri, &bob).await;
        assert_error(status, &error, StatusCode::NOT_FOUND, "not_found");
    }
    for action in ["cancel", "replay"] {
        let (status, error) = api
            .call(
                "POST",
                &format!("/api/v1/runs/{id}/{action}"),
                Some(&bob),
                Body::empty(),
            )
            .await;
        assert_error(status, &error, StatusCode::NOT_FOUND, "not_found");
    }
    let (status, error) = api.get("/api/v1/workflows/hello", &bob).await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "unknown_workflow");
    let (status, error) = api
        .post("/api/v1/workflows/hello/runs", &bob, json!({"input": {}}))
        .await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "unknown_workflow");
    assert_eq!(api.get("/api/v1/runs", &bob).await.1["runs"], json!([]));
    assert_eq!(
        api.get("/api/v1/modules", &bob).await.1["modules"],
        json!([])
    );
    assert_eq!(
        api.get("/api/v1/workflows", &bob).await.1["workflows"],
        json!([])
    );
    assert_eq!(
        api.get("/api/v1/workers", &bob).await.1["workers"],
        json!([])
    );
    // Alice still sees hers.
    assert_eq!(
        api.get(&format!("/api/v1/runs/{id}"), &alice).await.0,
        StatusCode::OK
    );
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn the_api_serves_over_a_real_socket(pool: PgPool) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let api = Api::start(pool, true).await;
    let token = api.tenant("acme").await;
    api.deploy(&token, hatchery_guests::HELLO).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(
        axum::serve(listener, api.router.clone())
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    let body = json!({"input": {"name": "Net"}}).to_string();
    let request = format!(
        "POST /api/v1/workflows/hello/runs?wait=30 HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").expect("body");
    let run: Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(run["output"], json!({"greeting": "Hello, Net!"}));
    stop.cancel();
    server.await.expect("joins").expect("serves");
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn rate_limits_are_set_listed_and_enforced_over_http(pool: PgPool) {
    let api = Api::start(pool, true).await;
    let token = api.tenant("acme").await;
    let other = api.tenant("other").await;
    api.deploy(&token, hatchery_guests::FLOW_EXAMPLE).await;
    // The manifest declares crm-api at 5 per second.
    let (status, body) = api.get("/api/v1/rate-limits", &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["rate_limits"][0],
        json!({"key": "crm-api", "limit": 5, "duration": "second", "source": "manifest",
               "used": 0, "updated_at": body["rate_limits"][0]["updated_at"]})
    );
    let put = |body: Value| {
        let api = &api;
        let token = token.clone();
        async move {
            api.call(
                "PUT",
                "/api/v1/rate-limits/crm-api",
                Some(&token),
                body.to_string(),
            )
            .await
        }
    };
    let (status, body) = put(json!({"limit": 2, "duration": "minute"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["limit"].clone(), body["duration"].clone()),
        (json!(2), json!("minute"))
    );
    assert_eq!(body["source"], "api");
    for (bad, code) in [
        (json!({"limit": 0, "duration": "minute"}), "invalid_limit"),
        (json!({"limit": 5, "duration": "week"}), "invalid_request"),
        (json!({"limit": 5}), "invalid_request"),
    ] {
        let (status, body) = put(bad).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, code);
    }
    let (status, body) = api
        .call(
            "PUT",
            "/api/v1/rate-limits/crm-api",
            Some(&token),
            "{not json",
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_json");
    // Two runs of different users: the second waits for the limit, and says so.
    let first = api
        .start_run(&token, "sync-user", json!({"input": {"user_id": "ada"}}))
        .await;
    let first = api.finished(&token, &first).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["output"], json!({"user_id": "ada", "stored": 3}));
    let second = api
        .start_run(&token, "sync-user", json!({"input": {"user_id": "bob"}}))
        .await;
    let third = api
        .start_run(&token, "sync-user", json!({"input": {"user_id": "cy"}}))
        .await;
    // One of them starts (2 units used in the window), the other waits a minute.
    eventually(10, || async {
        let (_, body) = api.get("/api/v1/rate-limits", &token).await;
        body["rate_limits"][0]["used"] == 2
    })
    .await;
    let mut waits = Vec::new();
    for id in [&second, &third] {
        let (_, run) = api.get(&format!("/api/v1/runs/{id}"), &token).await;
        waits.push(run["tasks"][0]["waiting_for"].clone());
    }
    assert!(
        waits.contains(&json!({"kind": "rate_limit", "key": "crm-api"})),
        "one of them waits for crm-api: {waits:?}"
    );
    // Another tenant has its own limits.
    let (_, body) = api.get("/api/v1/rate-limits", &other).await;
    assert_eq!(body["rate_limits"], json!([]));
    // A key expression that fails for the input: 400, nothing started.
    let (status, body) = api
        .post(
            "/api/v1/workflows/sync-user/runs",
            &token,
            json!({"input": {"name": "no user id"}}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_key");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("input.user_id"),
        "{body}"
    );
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn runs_are_scheduled_listed_moved_and_refused_over_http(pool: PgPool) {
    let api = Api::start(pool, true).await;
    let token = api.tenant("acme").await;
    api.deploy(&token, hatchery_guests::HELLO).await;
    let start = |body: Value| {
        let api = &api;
        let token = token.clone();
        async move { api.post("/api/v1/workflows/hello/runs", &token, body).await }
    };
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, body) = start(json!({"input": {"name": "Ada"}, "run_at": later})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let scheduled = body["run_id"].as_str().expect("id").to_owned();
    let (status, body) = start(json!({"input": {"name": "Bo"}, "delay_seconds": 0.5})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let soon = body["run_id"].as_str().expect("id").to_owned();

    let (_, run) = api.get(&format!("/api/v1/runs/{scheduled}"), &token).await;
    assert_eq!(run["status"], "scheduled");
    assert_eq!(run["triggered_by"], json!({"kind": "schedule", "id": null}));
    assert_eq!(run["tasks"][0]["waiting_for"]["kind"], "schedule");
    let (_, listed) = api.get("/api/v1/runs?status=scheduled", &token).await;
    let ids: Vec<&str> = listed["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(ids.contains(&scheduled.as_str()), "{listed}");
    let soon = api.finished(&token, &soon).await;
    assert_eq!(soon["status"], "succeeded");
    assert_eq!(soon["triggered_by"]["kind"], "schedule");
    let (_, by_trigger) = api.get("/api/v1/runs?triggered_by=schedule", &token).await;
    assert_eq!(by_trigger["runs"].as_array().map(Vec::len), Some(2));

    // Moved closer, it runs; a finished run cannot be moved.
    let closer = (chrono::Utc::now() + chrono::Duration::milliseconds(300)).to_rfc3339();
    let uri = format!("/api/v1/runs/{scheduled}/reschedule");
    let (status, body) = api.post(&uri, &token, json!({"run_at": closer})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        api.finished(&token, &scheduled).await["status"],
        "succeeded"
    );
    let (status, body) = api.post(&uri, &token, json!({"run_at": later})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "not_scheduled");

    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    for (bad, code) in [
        (json!({"run_at": past}), "invalid_run_at"),
        (json!({"run_at": "tomorrow"}), "invalid_request"),
        (
            json!({"run_at": later, "delay_seconds": 5}),
            "invalid_run_at",
        ),
        (json!({"delay_seconds": -1}), "invalid_run_at"),
        (json!({"delay_seconds": 1e12}), "invalid_run_at"),
    ] {
        let (status, body) = start(bad).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, code);
    }
    let (status, body) = api.post(&uri, &token, json!({"run_at": past})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_run_at");
    let (status, body) = api.get("/api/v1/runs?triggered_by=magic", &token).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    let (status, body) = api
        .post(
            &format!("/api/v1/runs/{}/reschedule", uuid::Uuid::now_v7()),
            &token,
            json!({"run_at": later}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn crons_are_created_listed_deleted_and_refused_over_http(pool: PgPool) {
    let api = Api::start(pool, false).await;
    let token = api.tenant("acme").await;
    api.deploy(&token, hatchery_guests::DURABLE).await;
    let (status, created) = api
        .post(
            "/api/v1/workflows/noop/crons",
            &token,
            json!({"expression": "0 9 * * 1-5", "name": "weekday mornings",
                   "timezone": "Europe/Paris", "input": {"n": 1}, "catch_up": "latest"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["source"], "api");
    assert_eq!(created["timezone"], "Europe/Paris");
    let next = created["next_tick"].as_str().expect("next tick");
    let next = chrono::DateTime::parse_from_rfc3339(next).expect("RFC 3339");
    let paris = next.with_timezone(&chrono_tz::Europe::Paris);
    assert_eq!(paris.format("%H:%M").to_string(), "09:00");

    let (status, listed) = api.get("/api/v1/crons", &token).await;
    assert_eq!(status, StatusCode::OK);
    let sources: Vec<(&str, &str)> = listed["crons"]
        .as_array()
        .expect("crons")
        .iter()
        .map(|c| {
            (
                c["workflow"].as_str().unwrap_or(""),
                c["source"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(sources.contains(&("noop", "api")), "{listed}");
    assert!(sources.contains(&("ticker", "manifest")), "{listed}");

    for (body, code) in [
        (json!({"expression": "61 * * * *"}), "invalid_cron"),
        (json!({"expression": "* * *"}), "invalid_cron"),
        (
            json!({"expression": "* * * * *", "timezone": "Mars/Olympus"}),
            "invalid_cron",
        ),
        (
            json!({"expression": "* * * * *", "catch_up": "all"}),
            "invalid_cron",
        ),
        (
            json!({"expression": "* * * * *", "every": "day"}),
            "invalid_request",
        ),
    ] {
        let (status, body) = api.post("/api/v1/workflows/noop/crons", &token, body).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, code);
    }
    let (status, body) = api
        .post(
            "/api/v1/workflows/nope/crons",
            &token,
            json!({"expression": "* * * * *"}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_workflow");

    let id = created["id"].as_str().expect("id");
    let uri = format!("/api/v1/crons/{id}");
    let (status, _) = api.call("DELETE", &uri, Some(&token), Body::empty()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.call("DELETE", &uri, Some(&token), Body::empty()).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn events_start_subscribed_filtered_workflows_once(pool: PgPool) {
    let api = Api::start(pool, true).await;
    let token = api.tenant("acme").await;
    api.deploy(&token, hatchery_guests::FLOW).await;
    let push = |body: Value| {
        let api = &api;
        let token = token.clone();
        async move { api.post("/api/v1/events", &token, body).await }
    };
    let started = |body: &Value| body["run_ids"].as_array().map_or(0, Vec::len);

    // Wildcard subscriptions.
    let (status, body) = push(json!({"key": "user:signed-up", "payload": {"plan": "free"}})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(started(&body), 1, "on-user: {body}");
    let run = body["run_ids"][0].as_str().expect("run").to_owned();
    let event_id = body["event_id"].as_str().expect("event").to_owned();
    let run = api.finished(&token, &run).await;
    assert_eq!(run["workflow"], "on-user");
    assert_eq!(
        run["triggered_by"],
        json!({"kind": "event", "id": event_id})
    );
    assert_eq!(run["additional_metadata"]["event_key"], "user:signed-up");
    let (_, body) = push(json!({"key": "order:created"})).await;
    assert_eq!(started(&body), 1, "on-order: {body}");
    let (_, body) = push(json!({"key": "order:shipped"})).await;
    assert_eq!(started(&body), 0, "nobody listens: {body}");

    // Filters: a workflow with filters starts only when one that applies is true.
    let filter = |body: Value| {
        let api = &api;
        let token = token.clone();
        async move {
            api.post("/api/v1/workflows/on-user/event-filters", &token, body)
                .await
        }
    };
    let (status, body) = filter(json!({"expression": "payload.plan == 'pro'"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = filter(json!({"expression": "payload.vip == true", "scope": "eu"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, body) = push(json!({"key": "user:x", "payload": {"plan": "free"}})).await;
    assert_eq!(started(&body), 0, "{body}");
    let (_, body) = push(json!({"key": "user:x", "payload": {"plan": "pro"}})).await;
    assert_eq!(started(&body), 1, "{body}");
    let (_, body) = push(json!({"key": "user:x", "payload": {"vip": true}, "scope": "eu"})).await;
    assert_eq!(started(&body), 1, "the scoped filter applies: {body}");
    let (_, body) = push(json!({"key": "user:x", "payload": {"vip": true}})).await;
    assert_eq!(
        started(&body),
        0,
        "the scoped filter does not apply: {body}"
    );
    for (bad, code) in [
        (json!({"expression": "payload.plan =="}), "invalid_filter"),
        (json!({"expression": ""}), "invalid_filter"),
    ] {
        let (status, body) = filter(bad).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, code);
    }

    // Idempotency: the same key starts its runs once.
    let once = json!({"key": "order:created", "idempotency_key": "order-7"});
    let (_, first) = push(once.clone()).await;
    let (status, again) = push(once).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(first, again);
    assert_eq!(started(&first), 1);

    // Bulk: all or nothing.
    let (_, before) = api.get("/api/v1/events?limit=1000", &token).await;
    let before = before["events"].as_array().map_or(0, Vec::len);
    let (status, body) = api
        .post(
            "/api/v1/events/bulk",
            &token,
            json!({"events": [{"key": "order:created"}, {"key": "bad key"}]}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_event");
    let (_, after) = api.get("/api/v1/events?limit=1000", &token).await;
    assert_eq!(after["events"].as_array().map_or(0, Vec::len), before);
    let (status, body) = api
        .post(
            "/api/v1/events/bulk",
            &token,
            json!({"events": [{"key": "order:created"}, {"key": "user:y", "payload": {"plan": "pro"}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["events"].as_array().map(Vec::len), Some(2));

    // Reading events back, with their runs.
    let (_, listed) = api.get("/api/v1/events?key=order:created", &token).await;
    let listed = listed["events"].as_array().expect("events");
    assert!(listed.iter().all(|e| e["key"] == "order:created"));
    assert_eq!(listed.len(), 3);
    let (status, event) = api.get(&format!("/api/v1/events/{event_id}"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["run_ids"].as_array().map(Vec::len), Some(1));
    let (status, body) = api
        .get(&format!("/api/v1/events/{}", uuid::Uuid::now_v7()), &token)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    for (bad, code) in [
        (json!({"payload": {}}), "invalid_request"),
        (json!({"key": ""}), "invalid_event"),
        (
            json!({"key": "k", "additional_metadata": [1]}),
            "invalid_metadata",
        ),
    ] {
        let (status, body) = push(bad).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, code);
    }
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_tasks_fuel_budget_is_set_over_http_and_applies_to_new_runs(pool: PgPool) {
    let api = Api::start(pool, true).await;
    let token = api.tenant("acme").await;
    api.deploy(&token, hatchery_guests::BENCH).await;
    let put = |path: &'static str, body: Value| {
        let (api, token) = (&api, token.clone());
        async move { api.call("PUT", path, Some(&token), body.to_string()).await }
    };
    // Counting the primes below 100,000 takes ~5 × 10⁷ instructions: a million is too few.
    let (status, body) = put(
        "/api/v1/workflows/compute/tasks/compute/fuel",
        json!({"fuel": 1_000_000}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"workflow": "compute", "task": "compute", "fuel": 1_000_000})
    );
    let (_, workflow) = api.get("/api/v1/workflows/compute", &token).await;
    assert_eq!(workflow["task_fuel"], json!({"compute": 1_000_000}));
    let starved = api
        .start_run(&token, "compute", json!({"input": {"n": 100_000}}))
        .await;
    let run = api.finished(&token, &starved).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["tasks"][0]["error_code"], "out_of_fuel", "{run}");
    assert!(
        run["tasks"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("1000000 instructions")),
        "{run}"
    );
    // Back to the node's budget: the same run succeeds.
    let (status, body) = put(
        "/api/v1/workflows/compute/tasks/compute/fuel",
        json!({"fuel": null}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fed = api
        .start_run(&token, "compute", json!({"input": {"n": 100_000}}))
        .await;
    let run = api.finished(&token, &fed).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], json!({"primes": 9592}));
    for (path, body, status, code) in [
        (
            "/api/v1/workflows/compute/tasks/compute/fuel",
            json!({"fuel": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_fuel",
        ),
        (
            "/api/v1/workflows/compute/tasks/nope/fuel",
            json!({"fuel": 5}),
            StatusCode::NOT_FOUND,
            "unknown_task",
        ),
        (
            "/api/v1/workflows/nope/tasks/compute/fuel",
            json!({"fuel": 5}),
            StatusCode::NOT_FOUND,
            "unknown_workflow",
        ),
        (
            "/api/v1/workflows/compute/tasks/compute/fuel",
            json!({"fuel": -3}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ] {
        let (got, body) = put(path, body).await;
        assert_error(got, &body, status, code);
    }
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn egress_is_set_by_admin_and_tenant_and_applied_by_the_node(pool: PgPool) {
    let port = crate::egress::server().await;
    let api = Api::start(pool, true).await;
    let (id, token) = api.tenant_with_id("acme").await;
    let other = api.tenant("other").await;
    for token in [&token, &other] {
        api.deploy(token, hatchery_guests::JS_RAW).await;
    }
    let fetch = |token: String| {
        let api = &api;
        async move {
            let input = json!({"url": format!("http://127.0.0.1:{port}/hello"), "method": "GET"});
            let id = api
                .start_run(&token, "js-fetch", json!({"input": input}))
                .await;
            let run = api.finished(&token, &id).await;
            assert_eq!(run["status"], "succeeded", "{run}");
            run["tasks"]
                .as_array()
                .and_then(|tasks| tasks.iter().find(|t| t["name"] == "fetch"))
                .map(|t| t["output"].clone())
                .expect("the fetch task")
        }
    };
    let put = |path: String, token: String, body: Value| {
        let api = &api;
        async move { api.call("PUT", &path, Some(&token), body.to_string()).await }
    };
    let here = format!("127.0.0.1:{port}");

    // Nothing allowed by default.
    assert!(fetch(token.clone()).await.get("refused").is_some());
    let (status, body) = put(
        format!("/api/v1/tenants/{id}/egress"),
        ADMIN.into(),
        json!({"allow": [here]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.get("/api/v1/egress", &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"allow": [], "ceiling": [{"host": "127.0.0.1", "ports": [port]}]})
    );
    // The ceiling alone allows nothing; the tenant's list must stay within it.
    assert!(fetch(token.clone()).await.get("refused").is_some());
    let (status, body) = put(
        "/api/v1/egress".into(),
        token.clone(),
        json!({"allow": [format!("127.0.0.2:{port}")]}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "outside_ceiling");
    let (status, body) = put(
        "/api/v1/egress".into(),
        token.clone(),
        json!({"allow": [here]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fetch(token.clone()).await["status"], 200);
    // Another tenant has its own (empty) policy.
    assert!(fetch(other.clone()).await.get("refused").is_some());
    // A lowered ceiling applies at once, on the node too.
    let (status, _) = put(
        format!("/api/v1/tenants/{id}/egress"),
        ADMIN.into(),
        json!({"allow": []}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    eventually(10, || {
        let fetch = fetch(token.clone());
        async move { fetch.await.get("refused").is_some() }
    })
    .await;
    // Bad input and the wrong caller.
    for (path, caller, body, expected, code) in [
        (
            "/api/v1/egress".to_owned(),
            token.clone(),
            json!({"allow": ["exa mple.com"]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/api/v1/egress".to_owned(),
            token.clone(),
            json!({"allow": "x"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            format!("/api/v1/tenants/{id}/egress"),
            token.clone(),
            json!({"allow": []}),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            format!("/api/v1/tenants/{}/egress", uuid::Uuid::new_v4()),
            ADMIN.into(),
            json!({"allow": []}),
            StatusCode::NOT_FOUND,
            "unknown_tenant",
        ),
    ] {
        let (status, body) = put(path, caller, body).await;
        assert_error(status, &body, expected, code);
    }
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn secrets_are_write_only_and_reach_only_permitted_workflows_redacted(pool: PgPool) {
    const VALUE: &str = "s3cret-value-123";
    let port = crate::egress::server().await;
    let api = Api::with_config(
        pool.clone(),
        true,
        ApiConfig {
            secrets: Some(hatchery::secrets::SecretBox::derive(
                "the test fleet's secret key!!",
            )),
            ..ApiConfig::default()
        },
    )
    .await;
    let (id, token) = api.tenant_with_id("acme").await;
    api.deploy(&token, hatchery_guests::SECRETS).await;
    let put = |path: String, token: String, body: Value| {
        let api = &api;
        async move { api.call("PUT", &path, Some(&token), body.to_string()).await }
    };
    let here = format!("127.0.0.1:{port}");
    let (status, _) = put(
        format!("/api/v1/tenants/{id}/egress"),
        ADMIN.into(),
        json!({"allow": [here]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = put(
        "/api/v1/egress".into(),
        token.clone(),
        json!({"allow": [here]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = put(
        "/api/v1/secrets/API_KEY".into(),
        token.clone(),
        json!({"value": VALUE, "workflows": ["secret-reader"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["name"].clone(), body["workflows"].clone()),
        (json!("API_KEY"), json!(["secret-reader"]))
    );
    let (status, listed) = api.get("/api/v1/secrets", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["secrets"][0]["name"], "API_KEY");
    assert!(!listed.to_string().contains(VALUE) && !body.to_string().contains(VALUE));
    // Unreadable in the database without the key.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT ciphertext FROM secrets")
        .fetch_one(&pool)
        .await
        .expect("stored");
    assert!(!stored.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()));

    let input = json!({"input": {"name": "API_KEY", "url": format!("http://{here}/auth")}});
    // The permitted workflow reads it (redacted everywhere it would be shown) and sends it.
    let reader = api.start_run(&token, "secret-reader", input.clone()).await;
    let run = api.finished(&token, &reader).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let task = |run: &Value, name: &str| {
        run["tasks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == name).cloned())
            .expect("task")
    };
    assert_eq!(
        task(&run, "leak")["output"],
        json!({"value": "[secret API_KEY]"})
    );
    assert_eq!(task(&run, "call")["output"], json!({"status": 200}));
    let (_, logs) = api
        .get(&format!("/api/v1/runs/{reader}/logs"), &token)
        .await;
    let logs = logs.to_string();
    assert!(
        logs.contains("the secret is [secret API_KEY]")
            && logs.contains("logged: [secret API_KEY]"),
        "{logs}"
    );
    assert!(
        !logs.contains(VALUE) && !run.to_string().contains(VALUE),
        "{logs}"
    );
    // Another workflow of the tenant gets neither the variable nor the placeholder.
    let outsider = api.start_run(&token, "secret-outsider", input).await;
    let run = api.finished(&token, &outsider).await;
    assert_eq!(task(&run, "leak")["output"], json!({"value": null}));
    let call = task(&run, "call");
    assert_eq!(call["status"], "failed", "{run}");
    assert!(
        call["error"].as_str().is_some_and(
            |e| e.contains("a header names secret `API_KEY`, which this workflow may not read")
        ),
        "{call}"
    );

    for (name, body, code) in [
        ("1BAD", json!({"value": "x"}), "invalid_name"),
        ("EMPTY", json!({"value": ""}), "invalid_value"),
        (
            "NOBODY",
            json!({"value": "x", "workflows": []}),
            "invalid_workflows",
        ),
        ("NOVALUE", json!({"workflows": ["a"]}), "invalid_request"),
    ] {
        let (status, body) = put(format!("/api/v1/secrets/{name}"), token.clone(), body).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, code);
    }
    let (status, _) = api
        .call(
            "DELETE",
            "/api/v1/secrets/API_KEY",
            Some(&token),
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api
        .call(
            "DELETE",
            "/api/v1/secrets/API_KEY",
            Some(&token),
            Body::empty(),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_secret");
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_node_without_the_key_cannot_store_secrets(pool: PgPool) {
    let api = Api::start(pool, false).await;
    let token = api.tenant("acme").await;
    let (status, body) = api
        .call(
            "PUT",
            "/api/v1/secrets/API_KEY",
            Some(&token),
            json!({"value": "x"}).to_string(),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "no_secret_key");
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn metrics_are_scraped_with_the_admin_or_metrics_token(pool: PgPool) {
    hatchery::metrics::handle().expect("the recorder installs");
    let config = ApiConfig {
        metrics_token: Some("scrape-token".into()),
        ..ApiConfig::default()
    };
    let api = Api::with_config(pool, true, config).await;
    let (id, token) = api.tenant_with_id("acme").await;
    api.deploy(&token, hatchery_guests::HELLO).await;
    let run = api
        .start_run(&token, "hello", json!({"input": {"name": "Ada"}}))
        .await;
    assert_eq!(api.finished(&token, &run).await["status"], "succeeded");
    api.start_run(
        &token,
        "hello",
        json!({"input": {"name": "Later"}, "delay_seconds": 3600}),
    )
    .await;

    let (status, _) = api
        .call("GET", "/metrics", Some(&token), Body::empty())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "tenants do not scrape");
    let scrape = |token: &'static str| {
        let request = Request::builder()
            .uri("/metrics")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request");
        api.router.clone().oneshot(request)
    };
    let response = scrape("scrape-token").await.expect("infallible");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the metrics token scrapes"
    );
    let (status, _) = api
        .post("/api/v1/tenants", "scrape-token", json!({"name": "sneaky"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "and does nothing else");
    let request = Request::builder()
        .uri("/metrics")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .expect("request");
    let response = api
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body")
            .to_vec(),
    )
    .expect("utf-8");
    for expected in [
        "hatchery_task_attempts_total{outcome=\"succeeded\"}",
        "hatchery_task_execution_seconds_bucket",
        "hatchery_claim_batch_size_bucket",
        "hatchery_claim_seconds_count",
        "hatchery_fuel_consumed_total",
        "hatchery_db_connections{pool=\"durable\",state=\"idle\"}",
        "hatchery_slots{module=",
        "hatchery_compiles_total",
        "hatchery_task_queue_wait_seconds_bucket",
        "hatchery_runs_started_total{trigger=\"api\"}",
        "hatchery_runs_finished_total{status=\"succeeded\"}",
        &format!("hatchery_runs_scheduled{{tenant=\"{id}\"}} 1"),
    ] {
        assert!(text.contains(expected), "{expected} is missing:\n{text}");
    }
    assert!(!text.contains(&run), "no run ids in labels");
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn the_status_filter_finds_runs_in_each_status(pool: PgPool) {
    let api = Api::start(pool, true).await;
    let token = api.tenant("acme").await;
    api.deploy(&token, hatchery_guests::DURABLE).await;
    let succeeded = api.start_run(&token, "noop", json!({"input": {}})).await;
    let failed = api.start_run(&token, "fatal", json!({"input": {}})).await;
    let cancelled = api.start_run(&token, "spin", json!({"input": {}})).await;
    let scheduled = api
        .start_run(&token, "noop", json!({"input": {}, "delay_seconds": 3600}))
        .await;
    assert_eq!(
        api.finished(&token, &succeeded).await["status"],
        "succeeded"
    );
    assert_eq!(api.finished(&token, &failed).await["status"], "failed");
    let running = api.start_run(&token, "spin", json!({"input": {}})).await;
    for id in [&running, &cancelled] {
        eventually(30, || async {
            let (_, run) = api.get(&format!("/api/v1/runs/{id}"), &token).await;
            run["status"] == "running"
        })
        .await;
    }
    let (status, run) = api
        .post(
            &format!("/api/v1/runs/{cancelled}/cancel"),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["status"], "cancelled");
    assert!(
        run["started_at"].is_string(),
        "a run cancelled while running keeps when it started: {run}"
    );

    for (status, expected) in [
        ("succeeded", &succeeded),
        ("failed", &failed),
        ("cancelled", &cancelled),
        ("scheduled", &scheduled),
        ("running", &running),
    ] {
        let (code, page) = api
            .get(&format!("/api/v1/runs?status={status}"), &token)
            .await;
        assert_eq!(code, StatusCode::OK, "{page}");
        let ids: Vec<&str> = page["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| r["id"].as_str().expect("id"))
            .collect();
        assert_eq!(ids, [expected.as_str()], "status={status}");
    }
    let (_, page) = api.get("/api/v1/runs?status=queued", &token).await;
    assert_eq!(page["runs"], json!([]), "nothing waits: {page}");
    let (_, page) = api
        .get("/api/v1/runs?status=failed&workflow=noop", &token)
        .await;
    assert_eq!(page["runs"], json!([]), "filters combine: {page}");
    api.post(&format!("/api/v1/runs/{running}/cancel"), &token, json!({}))
        .await;
    api.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn nul_characters_anywhere_are_a_400_not_a_500(pool: PgPool) {
    let api = Api::start(pool, false).await;
    let token = api.tenant("acme").await;
    api.deploy(&token, hatchery_guests::HELLO).await;
    // Found by schemathesis: an event key with a NUL reached the database.
    let (status, body) = api
        .post("/api/v1/events", &token, json!({"key": "a\u{0}b"}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_event");
    for (method, uri, body) in [
        ("POST", "/api/v1/tenants", json!({"name": "nul\u{0}name"})),
        (
            "POST",
            "/api/v1/workflows/hello/crons",
            json!({"expression": "0 * * * *", "name": "a\u{0}"}),
        ),
        ("GET", "/api/v1/workflows/a%00b", Value::Null),
        ("GET", "/api/v1/runs?workflow=a%00b", Value::Null),
        ("GET", "/api/v1/events?key=a%00b", Value::Null),
    ] {
        let token = if uri == "/api/v1/tenants" {
            ADMIN
        } else {
            token.as_str()
        };
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        let (status, answer) = api.call(method, uri, Some(token), body).await;
        assert!(
            status.is_client_error(),
            "{method} {uri}: {status} {answer}"
        );
    }
}

#[test]
fn the_grafana_dashboard_names_only_metrics_that_exist() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    );
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("readable")).expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut named = std::collections::BTreeSet::new();
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (start, _) in expr.match_indices("hatchery_") {
                let name: String = expr[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name)
                    .to_owned();
                assert!(
                    hatchery::metrics::ALL.contains(&base.as_str()),
                    "panel `{}` uses `{name}`, which the node does not export",
                    panel["title"]
                );
                named.insert(base);
            }
        }
    }
    for metric in hatchery::metrics::ALL {
        assert!(named.contains(*metric), "no panel shows `{metric}`");
    }
}
