//! Fairness between tenants on one node, through the real API: tenant B's run-and-wait round
//! trip alone, under tenant A's flood of queued runs, and while A's CPU-bound tasks keep
//! every guest thread busy; and `/healthz` latency under that guest load. One run, so the
//! ratios to the idle figures are what A costs B. `FAIRNESS_TRACE=1` prints, for each of B's
//! runs, when it was claimed and when its result began to be written, after its creation.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hatchery::db::Db;
use hatchery::scheduler::{RunRequest, start_runs};
use sqlx::{Connection, PgConnection};

use crate::http::{Server, serve};
use crate::scratch::{self, drop_database, percentile, recreate, with_database};

/// Options of the fairness benchmark.
#[derive(Debug, clap::Args)]
pub struct FairnessArgs {
    /// A database URL of the server to use (a database is created and dropped on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// B's run-and-wait calls timed one at a time, per phase.
    #[arg(long, default_value_t = 200)]
    round_trips: usize,
    /// A's queued `noop` runs in the flood phase.
    #[arg(long, default_value_t = 100_000)]
    flood: usize,
    /// A's CPU-bound `compute` runs in the CPU phase (each counts primes below `--prime-n`).
    #[arg(long, default_value_t = 40)]
    cpu_tasks: usize,
    /// The `n` of each CPU-bound run (2,000,000: about a second of one core).
    #[arg(long, default_value_t = 2_000_000)]
    prime_n: u64,
}

/// Latencies of one phase, in milliseconds.
struct Phase {
    name: &'static str,
    round_trips: Vec<f64>,
    healthz: Vec<f64>,
}

/// Runs the benchmark and prints its table.
pub async fn run(args: FairnessArgs) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&args.database_url).await?;
    let database = "hatchery_bench_fairness";
    recreate(&mut admin, database).await?;
    let url = with_database(&args.database_url, database);
    let runtime = scratch::runtime()?;
    let server = serve(&url, &runtime, true).await?;
    let db = Db::connect(&url, 4).await?;
    // B: a second tenant with the same modules.
    let b = crate::http::second_tenant(&server).await?;
    let a = server.tenant;

    let mut phases = Vec::new();
    round_trips(&server, &b, 20).await?; // warm-up
    phases.push(Phase {
        name: "alone",
        round_trips: round_trips(&server, &b, args.round_trips).await?,
        healthz: healthz(&server, args.round_trips).await?,
    });

    let compute: Vec<RunRequest> = (0..args.cpu_tasks)
        .map(|_| RunRequest::new("compute", serde_json::json!({ "n": args.prime_n })))
        .collect();
    let busy = start_runs(&db, a, &compute).await?;
    let node = server.node.as_ref().context("a node")?;
    let wanted = args.cpu_tasks.min(8);
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.running() < wanted {
        if Instant::now() > deadline {
            bail!("A's CPU-bound runs did not start");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = round_trips(&server, &b, args.round_trips).await?;
    let health = healthz(&server, args.round_trips).await?;
    let still = node.running();
    eprintln!("cpu: {still} attempts executing at the end");
    phases.push(Phase {
        name: "A's CPU-bound tasks on every core",
        round_trips: cpu,
        healthz: health,
    });
    let mut conn = db.pool.acquire().await?;
    for id in busy {
        hatchery::db::workflow_run::workflow_run_cancel(&mut conn, a, id, "cancelled").await?;
    }
    drop(conn);

    let requests: Vec<RunRequest> = (0..1_000)
        .map(|_| RunRequest::new("noop", serde_json::json!({})))
        .collect();
    for _ in 0..args.flood / 1_000 {
        start_runs(&db, a, &requests).await?;
    }
    let flooded = round_trips(&server, &b, args.round_trips).await?;
    let left = queued(&db, a).await?;
    if left == 0 {
        bail!("A's flood drained before B's round trips ended: raise --flood");
    }
    eprintln!("flood: {left} of A's task runs still queued at the end");
    phases.push(Phase {
        name: "A's flood queued",
        round_trips: flooded,
        healthz: healthz(&server, args.round_trips).await?,
    });
    cancel_queued(&db, a).await?;

    let _ = server.shutdown.send(());
    if let Some(node) = server.node {
        node.shutdown().await;
    }
    db.pool.close().await;
    drop_database(&mut admin, database).await?;

    println!(
        "fairness benchmark: tenant B's `noop` run-and-wait ({} one at a time per phase) and GET /healthz, on one node (capacity 16, {} guest threads)",
        args.round_trips,
        hatchery::runtime::default_guest_threads()
    );
    println!("| phase | B p50 (ms) | B p99 (ms) | p50 ÷ alone | p99 ÷ alone | /healthz p99 (ms) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let (p50_alone, p99_alone) = (
        percentile(&phases[0].round_trips, 0.5),
        percentile(&phases[0].round_trips, 0.99),
    );
    for phase in &phases {
        let (p50, p99) = (
            percentile(&phase.round_trips, 0.5),
            percentile(&phase.round_trips, 0.99),
        );
        println!(
            "| {} | {p50:.2} | {p99:.2} | {:.2} | {:.2} | {:.2} |",
            phase.name,
            p50 / p50_alone,
            p99 / p99_alone,
            percentile(&phase.healthz, 0.99)
        );
    }
    Ok(())
}

/// `n` run-and-wait round trips of `noop` with `token`, sorted, in milliseconds.
async fn round_trips(server: &Server, token: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    let url = format!("{}/api/v1/workflows/noop/runs?wait=30", server.url);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = server
            .client
            .post(&url)
            .bearer_auth(token)
            .json(&serde_json::json!({"input": {}}))
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        if body["status"] != "succeeded" {
            bail!("B's run did not finish: {status} {body}");
        }
        if std::env::var_os("FAIRNESS_TRACE").is_some() {
            let at = |v: &serde_json::Value| {
                v.as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            };
            let created = at(&body["created_at"]);
            let task = &body["tasks"][0];
            let since = |t: Option<chrono::DateTime<chrono::FixedOffset>>| match (created, t) {
                (Some(c), Some(t)) => (t - c).num_milliseconds(),
                _ => -1,
            };
            eprintln!(
                "claimed +{} finished +{} seen {:.1}",
                since(at(&task["started_at"])),
                since(at(&task["finished_at"])),
                started.elapsed().as_secs_f64() * 1e3
            );
        }
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// `n` calls of `GET /healthz`, 5 ms apart, sorted, in milliseconds.
async fn healthz(server: &Server, n: usize) -> anyhow::Result<Vec<f64>> {
    let url = format!("{}/healthz", server.url);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = server.client.get(&url).send().await?;
        if !response.status().is_success() {
            bail!("/healthz answered {}", response.status());
        }
        response.bytes().await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

async fn queued(db: &Db, tenant: uuid::Uuid) -> anyhow::Result<i64> {
    let mut conn = db.pool.acquire().await?;
    Ok(hatchery::db::plans::queued_task_runs_of(&mut conn, tenant).await?)
}

async fn cancel_queued(db: &Db, tenant: uuid::Uuid) -> anyhow::Result<()> {
    let mut conn = db.pool.acquire().await?;
    hatchery::db::plans::queued_task_runs_cancel(&mut conn, tenant).await?;
    Ok(())
}
