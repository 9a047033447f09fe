//! Quotas per tenant, against real Postgres, real components and the real router: unfinished
//! runs are capped exactly when starts race on two API nodes (429 with `Retry-After`, bulk
//! all or nothing), executing task runs never pass their cap on two nodes, module storage,
//! API requests and uploads are refused past theirs, and the count of unfinished runs the
//! quota reads always equals the runs themselves.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use hatchery::api::{ApiConfig, AppState, router};
use hatchery::db::quota::{TenantQuotasRow, tenant_quotas_set, tenant_unfinished_runs};
use hatchery::db::{DEFAULT_TENANT as T, Db};
use hatchery::quota::Quotas;
use hatchery::scheduler::{RunRequest, cancel_run, replay_run, start_runs, wait_for_run};
use hatchery::status::RunStatus;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::flow::{guest_interval, max_overlap, two_nodes};
use crate::support::{Answer, call, deployed, new_runtime};

const ADMIN: &str = "quota-admin-token";

async fn post(router: &Router, uri: &str, token: &str, body: Value) -> Answer {
    call(router, "POST", uri, token, Body::from(body.to_string())).await
}

/// A router of its own (an API node) over `db`, without a node executing runs.
fn api(db: &Db) -> Router {
    router(AppState::new(
        db.clone(),
        new_runtime(),
        None,
        ApiConfig {
            admin_token: Some(ADMIN.into()),
            ..ApiConfig::default()
        },
    ))
}

/// Creates tenant `name` through `router`; returns its id and token.
async fn tenant(router: &Router, name: &str) -> (String, String) {
    let answer = post(router, "/api/v1/tenants", ADMIN, json!({"name": name})).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    (
        answer.body["id"].as_str().expect("id").to_owned(),
        answer.body["token"].as_str().expect("token").to_owned(),
    )
}

async fn set_quotas(router: &Router, id: &str, quotas: Value) -> Value {
    let answer = call(
        router,
        "PUT",
        &format!("/api/v1/tenants/{id}/quotas"),
        ADMIN,
        Body::from(quotas.to_string()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}

async fn deploy(router: &Router, token: &str, guest: &str) -> Answer {
    call(
        router,
        "POST",
        "/api/v1/modules",
        token,
        Body::from(hatchery_guests::read(guest)),
    )
    .await
}

async fn unfinished_in_table(db: &Db, tenant: uuid::Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM workflow_runs
         WHERE tenant_id = $1 AND status IN ('queued', 'running')",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .expect("count")
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn unfinished_runs_are_capped_exactly_when_two_api_nodes_race(pool: PgPool) {
    let db = Db::new(pool);
    let (first, second) = (api(&db), api(&db));
    let (id, token) = tenant(&first, "capped").await;
    let tenant_id: uuid::Uuid = id.parse().expect("uuid");
    assert_eq!(
        deploy(&first, &token, hatchery_guests::HELLO).await.status,
        StatusCode::CREATED
    );
    let shown = set_quotas(&first, &id, json!({"max_queued_runs": 10})).await;
    assert_eq!(shown["effective"]["max_queued_runs"], 10);
    assert_eq!(shown["own"]["max_executing"], Value::Null);

    // 30 single starts at once, half on each API node: exactly 10 are accepted.
    let mut starts = tokio::task::JoinSet::new();
    for i in 0..30 {
        let router = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let token = token.clone();
        starts.spawn(async move {
            let uri = "/api/v1/workflows/hello/runs";
            post(
                &router,
                uri,
                &token,
                json!({"input": {"name": i.to_string()}}),
            )
            .await
        });
    }
    let answers: Vec<Answer> = starts.join_all().await;
    let accepted = answers
        .iter()
        .filter(|a| a.status == StatusCode::ACCEPTED)
        .count();
    assert_eq!(accepted, 10, "accepted starts");
    for refused in answers.iter().filter(|a| a.status != StatusCode::ACCEPTED) {
        assert_eq!(
            refused.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            refused.body
        );
        assert_eq!(refused.body["error"]["code"], "quota_exceeded");
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .expect("message")
                .contains("max_queued_runs"),
            "{}",
            refused.body
        );
        assert!(refused.retry_after.is_some_and(|s| s >= 1), "Retry-After");
    }
    assert_eq!(unfinished_in_table(&db, tenant_id).await, 10);

    // Bulk is all or nothing; runs for later do not count until they are due.
    let bulk = "/api/v1/workflows/hello/runs/bulk";
    let two = json!({"runs": [{"input": {}}, {"input": {}}]});
    let refused = post(&second, bulk, &token, two.clone()).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    let later = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let scheduled = post(
        &second,
        "/api/v1/workflows/hello/runs",
        &token,
        json!({"input": {}, "run_at": later}),
    )
    .await;
    assert_eq!(scheduled.status, StatusCode::ACCEPTED, "{}", scheduled.body);
    assert_eq!(unfinished_in_table(&db, tenant_id).await, 10);

    // Finished runs make room: cancel three, then a bulk of three fits and one more does not.
    let ids: Vec<uuid::Uuid> = answers
        .iter()
        .filter_map(|a| a.body["run_id"].as_str())
        .map(|id| id.parse().expect("uuid"))
        .collect();
    for id in &ids[..3] {
        assert!(cancel_run(&db, tenant_id, *id).await.expect("cancel"));
    }
    let three = json!({"runs": [{"input": {}}, {"input": {}}, {"input": {}}]});
    let accepted = post(&first, bulk, &token, three).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let refused = post(&first, bulk, &token, json!({"runs": [{"input": {}}]})).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );

    // A replayed run is unfinished again: it counts, without being refused.
    assert!(replay_run(&db, tenant_id, ids[0]).await.expect("replay"));
    assert_eq!(unfinished_in_table(&db, tenant_id).await, 11);
    let mut conn = db.pool.acquire().await.expect("conn");
    assert_eq!(
        tenant_unfinished_runs(&mut conn, tenant_id)
            .await
            .expect("count"),
        11
    );
    let own = call(&first, "GET", "/api/v1/quotas", &token, Body::empty()).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    assert_eq!(own.body["used"]["unfinished_runs"], 11);

    // Back to the default (none): starts are accepted again.
    set_quotas(&first, &id, json!({"max_queued_runs": null})).await;
    let answer = post(&second, bulk, &token, two).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn bad_quotas_are_refused_and_unknown_tenants_not_found(pool: PgPool) {
    let db = Db::new(pool);
    let router = api(&db);
    let (id, token) = tenant(&router, "acme").await;
    for body in [
        json!({"max_queued_runs": -1}),
        json!({"api_requests_per_second": 0}),
        json!({"max_executing": 1e12}),
        json!({"max_executing": "many"}),
        json!({"max_runs": 3}),
    ] {
        let answer = call(
            &router,
            "PUT",
            &format!("/api/v1/tenants/{id}/quotas"),
            ADMIN,
            Body::from(body.to_string()),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            answer.body
        );
    }
    let unknown = uuid::Uuid::now_v7();
    let answer = call(
        &router,
        "GET",
        &format!("/api/v1/tenants/{unknown}/quotas"),
        ADMIN,
        Body::empty(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    // A tenant cannot set its own.
    let answer = call(
        &router,
        "PUT",
        &format!("/api/v1/tenants/{id}/quotas"),
        &token,
        Body::from("{}"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

/// Starts `requests` (each reports when it held its slot), runs them on two nodes, and returns
/// the most that executed at once (guest clocks).
async fn most_executing_at_once(
    db: &Db,
    runtime: &hatchery::runtime::Runtime,
    requests: &[RunRequest],
) -> usize {
    let ids = start_runs(db, T, requests).await.expect("starts");
    let (first, second) = two_nodes(db, runtime).await;
    let mut intervals = Vec::new();
    for id in ids {
        let view = wait_for_run(db, T, id, Duration::from_secs(120))
            .await
            .expect("db")
            .expect("run");
        assert_eq!(view.run.status, RunStatus::Succeeded, "{view:#?}");
        intervals.push(guest_interval(&view, "hold"));
    }
    first.shutdown().await;
    second.shutdown().await;
    max_overlap(&intervals)
}

/// `count` runs of the flow fixture's `plain` workflow (no rule), holding their slot 40 ms.
fn plain_runs(count: usize) -> Vec<RunRequest> {
    (0..count)
        .map(|_| RunRequest::new("plain", json!({"ms": 40})))
        .collect()
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_tenants_own_executing_cap_holds_on_two_nodes(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let capped = TenantQuotasRow {
        max_executing: Some(2),
        ..TenantQuotasRow::default()
    };
    assert!(tenant_quotas_set(&mut conn, T, &capped).await.expect("set"));
    drop(conn);
    // Two nodes of 8 slots each would run 16 at once without the cap.
    assert_eq!(
        most_executing_at_once(&db, &runtime, &plain_runs(24)).await,
        2
    );
    let mut conn = db.pool.acquire().await.expect("conn");
    assert_eq!(
        tenant_unfinished_runs(&mut conn, T).await.expect("count"),
        0
    );
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn the_executing_cap_holds_for_runs_under_flow_control_rules_too(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let db = db.with_quotas(Quotas {
        max_executing: Some(2),
        ..Quotas::default()
    });
    // Two runs per user at once, three users: six without the tenant's cap.
    let requests: Vec<RunRequest> = (0..18)
        .map(|i| {
            let user = format!("u{}", i % 3);
            RunRequest::new("per-user-2", json!({"user_id": user, "ms": 40}))
        })
        .collect();
    assert_eq!(most_executing_at_once(&db, &runtime, &requests).await, 2);
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn the_default_executing_cap_holds_on_two_nodes(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::FLOW).await;
    let db = db.with_quotas(Quotas {
        max_executing: Some(3),
        ..Quotas::default()
    });
    assert_eq!(
        most_executing_at_once(&db, &runtime, &plain_runs(24)).await,
        3
    );
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn module_storage_api_requests_and_uploads_are_capped(pool: PgPool) {
    let db = Db::new(pool);
    let router = api(&db);
    let (id, token) = tenant(&router, "small").await;
    let (_, other) = tenant(&router, "other").await;
    let hello = hatchery_guests::read(hatchery_guests::HELLO).len() as i64;

    // Storage: room for `hello` and not for another module; `hello` again takes nothing.
    set_quotas(&router, &id, json!({"max_module_bytes": hello + 1_000})).await;
    assert_eq!(
        deploy(&router, &token, hatchery_guests::HELLO).await.status,
        StatusCode::CREATED
    );
    let refused = deploy(&router, &token, hatchery_guests::DURABLE).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "quota_exceeded");
    assert_eq!(refused.retry_after, None);
    let again = deploy(&router, &token, hatchery_guests::HELLO).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.body["already_deployed"], true);

    // Uploads: 10 an hour is a burst of one, then one every six minutes.
    set_quotas(&router, &id, json!({"uploads_per_hour": 10})).await;
    let first = deploy(&router, &token, hatchery_guests::HELLO).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let second = deploy(&router, &token, hatchery_guests::HELLO).await;
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        second.body
    );
    assert!(
        second.retry_after.is_some_and(|s| (300..=360).contains(&s)),
        "{:?}",
        second.retry_after
    );
    // Another tenant uploads as it likes.
    assert_eq!(
        deploy(&router, &other, hatchery_guests::HELLO).await.status,
        StatusCode::CREATED
    );

    // API requests: 5 a second, then 429 until a token is back; the other tenant is not slowed.
    set_quotas(&router, &id, json!({"api_requests_per_second": 5})).await;
    let started = std::time::Instant::now();
    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(call(&router, "GET", "/api/v1/runs", &token, Body::empty()).await);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (ok, limited): (Vec<Answer>, Vec<Answer>) = answers
        .into_iter()
        .partition(|a| a.status == StatusCode::OK);
    // The burst of five, and five a second after it: never more, however slow the requests.
    let allowed = 5 + (elapsed * 5.0).floor() as usize;
    assert!(
        (5..=allowed).contains(&ok.len()),
        "{} of 30 answered in {elapsed:.2} s (at most {allowed} allowed)",
        ok.len()
    );
    assert_eq!(ok.len() + limited.len(), 30);
    for answer in &limited {
        assert_eq!(
            answer.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            answer.body
        );
        assert_eq!(answer.retry_after, Some(1));
    }
    for _ in 0..8 {
        let answer = call(&router, "GET", "/api/v1/runs", &other, Body::empty()).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
}
