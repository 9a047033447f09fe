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
use hatchery::db::task_run::task_runs_repeats;
use hatchery::db::tenant::tenant_ids;
use hatchery::db::{CHANNEL_RUN_FINISHED, Db, parse_ids};
use hatchery::runtime::Runtime;
use hatchery::scheduler::{Node, NodeConfig};
use sqlx::postgres::PgListener;
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
    /// Runs of `hello` (a task that logs a line) bulk-enqueued, 1,000 a request, while a node
    /// drains them: the million-run path through the API (`--bulk-runs 1000000`). 0 skips it.
    #[arg(long, default_value_t = 0)]
    bulk_runs: usize,
    /// Concurrent clients of the bulk phase.
    #[arg(long, default_value_t = 4)]
    bulk_clients: usize,
}

const ADMIN: &str = "bench-admin-token";

pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) client: reqwest::Client,
    pub(crate) token: String,
    pub(crate) tenant: uuid::Uuid,
    pub(crate) shutdown: tokio::sync::oneshot::Sender<()>,
    pub(crate) node: Option<Node>,
}

/// A real API server on loopback over a fresh database at `url`, with a tenant and the bench
/// and hello modules deployed (and a node when `with_node`).
pub(crate) async fn serve(url: &str, runtime: &Runtime, with_node: bool) -> anyhow::Result<Server> {
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
    let tenant = tenant["id"].as_str().context("tenant id")?.parse()?;
    deploy_guests(&client, &base, &token).await?;
    Ok(Server {
        url: base,
        client,
        token,
        tenant,
        shutdown,
        node,
    })
}

/// Deploys the bench and hello modules with `token`.
async fn deploy_guests(client: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<()> {
    for guest in [hatchery_guests::BENCH, hatchery_guests::HELLO] {
        let deployed = client
            .post(format!("{base}/api/v1/modules"))
            .bearer_auth(token)
            .header("content-type", "application/wasm")
            .body(hatchery_guests::read(guest))
            .send()
            .await?;
        if !deployed.status().is_success() {
            bail!("deploy failed: {}", deployed.text().await?);
        }
    }
    Ok(())
}

/// Another tenant on `server`, with the same modules deployed: its token.
pub(crate) async fn second_tenant(server: &Server) -> anyhow::Result<String> {
    let tenant: serde_json::Value = server
        .client
        .post(format!("{}/api/v1/tenants", server.url))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": format!("bench-{}", uuid::Uuid::new_v4())}))
        .send()
        .await?
        .json()
        .await?;
    let token = tenant["token"].as_str().context("tenant token")?.to_owned();
    deploy_guests(&server.client, &server.url, &token).await?;
    Ok(token)
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
    let bulk = if args.bulk_runs > 0 {
        Some(bulk(&args, &url, &runtime).await?)
    } else {
        None
    };
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
    if let Some(bulk) = bulk {
        println!(
            "| bulk: {} `hello` runs enqueued ({} clients × 1,000 a request) | {:.1} s, {:.0} runs/s | |",
            args.bulk_runs,
            args.bulk_clients,
            bulk.enqueue_seconds,
            args.bulk_runs as f64 / bulk.enqueue_seconds
        );
        println!(
            "| bulk: all drained, from the first request | {:.1} s, {:.0} runs/s | finishes |",
            bulk.drain_seconds,
            args.bulk_runs as f64 / bulk.drain_seconds
        );
        println!(
            "| bulk: lost leases / task runs attempted twice | {} / {} | 0 / 0 |",
            bulk.lost_leases, bulk.repeated
        );
        println!(
            "| bulk: peak memory of the process (MiB) | {:.0} | |",
            bulk.peak_rss_mib
        );
    }
    Ok(())
}

struct Bulk {
    enqueue_seconds: f64,
    drain_seconds: f64,
    lost_leases: i64,
    repeated: i64,
    peak_rss_mib: f64,
}

/// Bulk-enqueues `args.bulk_runs` runs of `hello` through the API while the server's node
/// drains them; waits until every one finished.
async fn bulk(args: &HttpArgs, url: &str, runtime: &Runtime) -> anyhow::Result<Bulk> {
    let server = Arc::new(serve(url, runtime, true).await?);
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL_RUN_FINISHED).await?;
    let bulk_url = format!("{}/api/v1/workflows/hello/runs/bulk", server.url);
    let body = serde_json::json!({
        "runs": (0..1_000).map(|_| serde_json::json!({"input": {"name": "Ada"}})).collect::<Vec<_>>()
    });
    let requests = args.bulk_runs.div_ceil(1_000);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.bulk_clients.max(1) {
        let (server, next, url, body) =
            (server.clone(), next.clone(), bulk_url.clone(), body.clone());
        clients.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let response = server
                    .client
                    .post(&url)
                    .bearer_auth(&server.token)
                    .json(&body)
                    .send()
                    .await?;
                if response.status() != reqwest::StatusCode::ACCEPTED {
                    bail!("bulk enqueue failed: {}", response.status());
                }
                response.bytes().await?;
            }
            Ok::<_, anyhow::Error>(started.elapsed().as_secs_f64())
        });
    }
    let total = requests * 1_000;
    let mut finished = 0;
    let mut peak_rss_mib = crate::queue::rss_mib();
    let mut enqueue_seconds = 0.0_f64;
    let mut last_report = Instant::now();
    while finished < total {
        tokio::select! {
            done = clients.join_next(), if !clients.is_empty() => {
                if let Some(done) = done {
                    enqueue_seconds = enqueue_seconds.max(done??);
                }
            }
            notification = tokio::time::timeout(Duration::from_secs(60), listener.recv()) => {
                let notification = notification.context("the node stopped finishing runs")??;
                finished += parse_ids(notification.payload()).len();
            }
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            peak_rss_mib = peak_rss_mib.max(crate::queue::rss_mib());
            eprintln!(
                "bulk: {finished} of {total} finished after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    while let Some(done) = clients.join_next().await {
        enqueue_seconds = enqueue_seconds.max(done??);
    }
    let drain_seconds = started.elapsed().as_secs_f64();
    let server = Arc::into_inner(server).context("a client still holds the server")?;
    let _ = server.shutdown.send(());
    if let Some(node) = server.node {
        node.shutdown().await;
    }
    let db = Db::connect(url, 1).await?;
    let (lost_leases, repeated) = {
        let mut conn = db.pool.acquire().await?;
        // The tenant made by `serve` owns every run; count over all tenants.
        let mut lost = 0;
        let mut repeated = 0;
        for tenant in tenant_ids(&mut conn).await? {
            let (l, r) = task_runs_repeats(&mut conn, tenant).await?;
            lost += l;
            repeated += r;
        }
        (lost, repeated)
    };
    db.pool.close().await;
    Ok(Bulk {
        enqueue_seconds,
        drain_seconds,
        lost_leases,
        repeated,
        peak_rss_mib,
    })
}
