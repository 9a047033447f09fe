//! The web dashboard: its assets and headers through the router, and the whole page in Debian's
//! chromium against a live node (tests/browser/dashboard.mjs, driven by playwright-core).
//!
//! The browser test needs chromium and playwright-core; `scripts/test-tools` installs both
//! (scripts/test runs it first). Without them it fails and says so.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hatchery::api::{ApiConfig, AppState, router};
use hatchery::db::Db;
use hatchery::scheduler::Node;
use serde_json::json;
use sqlx::PgPool;
use tower::ServiceExt as _;

use crate::support::{Served, call_ok, new_runtime, test_node_config};

const ADMIN: &str = "dashboard-admin-token";

async fn get_raw(router: &axum::Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let request = Request::builder()
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        headers,
        String::from_utf8(bytes.to_vec()).expect("UTF-8"),
    )
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn assets_are_served_with_a_strict_policy(pool: PgPool) {
    let state = AppState::new(Db::new(pool), new_runtime(), None, ApiConfig::default());
    let router = router(state);
    let (status, headers, body) = get_raw(&router, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ASCII header")
            .starts_with("text/html")
    );
    let csp = headers["content-security-policy"]
        .to_str()
        .expect("ASCII header");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(body.contains("/dashboard/app.js"), "{body}");
    for (path, kind) in [
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let (status, headers, body) = get_raw(&router, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            headers["content-type"]
                .to_str()
                .expect("ASCII header")
                .starts_with(kind),
            "{path}"
        );
        assert!(!body.is_empty());
    }
    // The page renders every value as text: no HTML sink anywhere in the script.
    let (_, _, script) = get_raw(&router, "/dashboard/app.js").await;
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!script.contains(sink), "app.js uses {sink}");
    }
    let (status, _, _) = get_raw(&router, "/dashboard/nothing.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Where `scripts/test-tools` put playwright-core, and the chromium to drive.
fn browser_tools() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let playwright = root.join("target/browser/node_modules");
    let chromium = std::env::var_os("HATCHERY_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        playwright.join("playwright-core").is_dir() && chromium.exists(),
        "the browser test needs chromium ({}) and playwright-core ({}): run scripts/test-tools",
        chromium.display(),
        playwright.display()
    );
    (playwright, chromium)
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn the_dashboard_works_in_a_real_browser(pool: PgPool) {
    let (playwright, chromium) = browser_tools();
    let db = Db::new(pool);
    let runtime = new_runtime();
    let node = Node::start(db.clone(), runtime.clone(), test_node_config())
        .await
        .expect("node starts");
    let state = AppState::new(
        db,
        runtime,
        Some(node.handle()),
        ApiConfig {
            admin_token: Some(ADMIN.into()),
            ..ApiConfig::default()
        },
    );
    let router = router(state);
    let tenant = call_ok(
        &router,
        "POST",
        "/api/v1/tenants",
        ADMIN,
        Body::from(json!({"name": "browser"}).to_string()),
    )
    .await;
    let token = tenant["token"].as_str().expect("token").to_owned();
    for guest in [hatchery_guests::ETL, hatchery_guests::DURABLE] {
        call_ok(
            &router,
            "POST",
            "/api/v1/modules",
            &token,
            Body::from(hatchery_guests::read(guest)),
        )
        .await;
    }

    let served = Served::start(router).await;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shots = root.join("target/browser/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let mut command = std::process::Command::new("node");
    command
        .arg(root.join("tests/browser/dashboard.mjs"))
        .env("HATCHERY_URL", &served.url)
        .env("HATCHERY_TOKEN", &token)
        .env("PLAYWRIGHT_DIR", &playwright)
        .env("HATCHERY_CHROMIUM", &chromium)
        .env("SCREENSHOT_DIR", &shots);
    // The script bounds each of its waits (30 s), so it ends on its own.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("joins")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed (screenshot in {}):\n{stdout}\n{stderr}",
        shots.display()
    );
    // Every step reported itself: a script that stopped early cannot pass.
    assert_eq!(stdout.matches("ok  ").count(), 11, "{stdout}");
    assert!(shots.join("run.png").exists());

    served.stop().await;
    node.shutdown().await;
}
