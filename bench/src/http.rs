//! The HTTP benchmark: a real API server on loopback, a real client in the same process.
//!
//! - round trip: `POST /api/v1/workflows/noop/runs?wait=10`, one at a time; p50/p99;
//! - enqueue: `POST /api/v1/workflows/noop/runs` from concurrent clients; requests per second,
//!   each answered only after its run is durably committed (concurrent requests share commits).
//!   No dispatcher runs in this phase, so the number is the API's, not the executor's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hatchery::api::{ApiConfig, AppState, router};
use hatchery::db::Db;
use hatchery::runtime::Runtime;
use hatchery::scheduler::{Node, NodeConfig};
use sqlx::{Connection, PgConnection};

use crate::scratch::{self, drop_database, percentile, recreate, with_database};

/// Options of the HTTP benchmark.
#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    /// A database URL of the server to use (a database is created and dropped on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Run-and-wait calls timed one at a time.
    #[arg(long, default_value_t = 300)]
    round_trips: usize,
    /// Concurrent clients of the enqueue test.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Enqueue requests in all.
    #[arg(long, default_value_t = 40_000)]
    enqueues: usize,
}

const ADMIN: &str = "bench-admin-token";

struct Server {
    url: String,
    client: reqwest::Client,
    token: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    node: Option<Node>,
}

async fn serve(url: &str, runtime: &Runtime, with_node: bool) -> anyhow::Result<Server> {
    let db = Db::connect(url, 16).await?;
    db.migrate().await?;
    let node = if with_node {
        let config = NodeConfig {
            capacity: 16,
            default_slots: 16,
            ..NodeConfig::default()
        };
        Some(Node::start(db.clone(), runtime.clone(), config).await?)
    } else {
        None
    };
    let config = ApiConfig {
        admin_token: Some(ADMIN.into()),
        ..ApiConfig::default()
    };
    let state = AppState::new(db, runtime.clone(), node.as_ref().map(Node::handle), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(state))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let base = format!("http://{address}");
    let tenant: serde_json::Value = client
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": format!("bench-{}", uuid::Uuid::new_v4())}))
        .send()
        .await?
        .json()
        .await?;
    let token = tenant["token"].as_str().context("tenant token")?.to_owned();
    let deployed = client
        .post(format!("{base}/api/v1/modules"))
        .bearer_auth(&token)
        .header("content-type", "application/wasm")
        .body(hatchery_guests::read(hatchery_guests::BENCH))
        .send()
        .await?;
    if !deployed.status().is_success() {
        bail!("deploy failed: {}", deployed.text().await?);
    }
    Ok(Server {
        url: base,
        client,
        token,
        shutdown,
        node,
    })
}

/// Runs the benchmark and prints its table.
pub async fn run(args: HttpArgs) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&args.database_url).await?;
    let database = "hatchery_bench_http";
    recreate(&mut admin, database).await?;
    let url = with_database(&args.database_url, database);
    let runtime = scratch::runtime()?;

    let server = serve(&url, &runtime, true).await?;
    let start_url = format!("{}/api/v1/workflows/noop/runs", server.url);
    let mut round_trips = Vec::with_capacity(args.round_trips);
    for i in 0..args.round_trips + 20 {
        let started = Instant::now();
        let response = server
            .client
            .post(format!("{start_url}?wait=10"))
            .bearer_auth(&server.token)
            .json(&serde_json::json!({"input": {}}))
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        let elapsed = started.elapsed();
        if status != reqwest::StatusCode::OK || body["status"] != "succeeded" {
            bail!("run-and-wait did not finish: {status} {body}");
        }
        if i >= 20 {
            round_trips.push(elapsed.as_secs_f64() * 1e3);
        }
    }
    round_trips.sort_by(f64::total_cmp);
    let _ = server.shutdown.send(());
    if let Some(node) = server.node {
        node.shutdown().await;
    }

    let server = Arc::new(serve(&url, &runtime, false).await?);
    let start_url = format!("{}/api/v1/workflows/noop/runs", server.url);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        let (server, next, url, total) = (
            server.clone(),
            next.clone(),
            start_url.clone(),
            args.enqueues,
        );
        clients.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let response = server
                    .client
                    .post(&url)
                    .bearer_auth(&server.token)
                    .json(&serde_json::json!({"input": {}}))
                    .send()
                    .await?;
                if response.status() != reqwest::StatusCode::ACCEPTED {
                    bail!("enqueue failed: {}", response.status());
                }
                response.bytes().await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(result) = clients.join_next().await {
        result??;
    }
    let enqueue_rate = args.enqueues as f64 / started.elapsed().as_secs_f64();
    if let Ok(server) = Arc::try_unwrap(server) {
        let _ = server.shutdown.send(());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop_database(&mut admin, database).await?;

    println!(
        "http benchmark: {} run-and-wait calls one at a time; {} enqueues from {} concurrent clients",
        args.round_trips, args.enqueues, args.clients
    );
    println!("| measure | value | target |");
    println!("| --- | --- | --- |");
    println!(
        "| run-and-wait round trip, p50 | {:.2} ms | ≤ 5 ms |",
        percentile(&round_trips, 0.5)
    );
    println!(
        "| run-and-wait round trip, p99 | {:.2} ms | |",
        percentile(&round_trips, 0.99)
    );
    println!("| durable single-run enqueues | {enqueue_rate:.0} /s | ≥ 8,000 /s |");
    Ok(())
}
