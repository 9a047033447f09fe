//! Real workloads on one node, side by side in one run: single-task `hello` runs against runs
//! of the three-task `etl` DAG (tasks per second of each, and their ratio), and one `fanout`
//! run spawning thousands of children (children per second). The peer is graphile-worker
//! draining chains of three jobs, each adding the next, beside the same number of single jobs.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use hatchery::db::task_run::task_runs_repeats;
use hatchery::db::{CHANNEL_RUN_FINISHED, DEFAULT_TENANT, Db, parse_ids};
use hatchery::runtime::Runtime;
use hatchery::scheduler::{Node, NodeConfig, RunRequest, deploy_module, start_run, start_runs};
use hatchery::status::RunStatus;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection};

use crate::scratch::{self, drop_database, recreate, with_database};

/// Options of the workloads benchmark.
#[derive(Debug, clap::Args)]
pub struct WorkloadsArgs {
    /// A database URL of the server to use (databases are created and dropped on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Runs of `hello` and of `etl` to drain.
    #[arg(long, default_value_t = 20_000)]
    runs: usize,
    /// Children of the `fanout` run.
    #[arg(long, default_value_t = 5_000)]
    children: u32,
    /// Task runs executed at once.
    #[arg(long, default_value_t = 10)]
    concurrency: u32,
    /// Rounds; the table shows each figure's median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Skip the peer.
    #[arg(long)]
    no_peer: bool,
}

struct Round {
    hello_tasks_per_second: f64,
    etl_tasks_per_second: f64,
    fanout_children_per_second: f64,
    repeated: i64,
}

/// Connects to `url` (a fresh database), migrates, deploys the examples and starts a node
/// running `concurrency` task runs at once.
pub(crate) async fn fresh(
    url: &str,
    runtime: &Runtime,
    concurrency: u32,
) -> anyhow::Result<(Db, Node)> {
    fresh_with(url, runtime, concurrency, None).await
}

/// `fresh`, the node running the retention service as `retention` says.
pub(crate) async fn fresh_with(
    url: &str,
    runtime: &Runtime,
    concurrency: u32,
    retention: Option<hatchery::scheduler::RetentionConfig>,
) -> anyhow::Result<(Db, Node)> {
    let db = Db::connect(url, 8).await?;
    db.migrate().await?;
    for guest in [
        hatchery_guests::HELLO,
        hatchery_guests::ETL,
        hatchery_guests::FANOUT,
    ] {
        deploy_module(&db, runtime, DEFAULT_TENANT, &hatchery_guests::read(guest)).await?;
    }
    let config = NodeConfig {
        capacity: concurrency,
        default_slots: concurrency,
        retention,
        ..NodeConfig::default()
    };
    let node = Node::start(db.clone(), runtime.clone(), config).await?;
    Ok((db, node))
}

/// Enqueues `runs` runs of `workflow` in bulk while the node drains them from the first
/// commit on, as a user would; returns the seconds until the last one finished.
pub(crate) async fn drain(
    db: &Db,
    url: &str,
    workflow: &str,
    input: serde_json::Value,
    runs: usize,
) -> anyhow::Result<f64> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL_RUN_FINISHED).await?;
    let requests: Vec<RunRequest> = (0..runs.min(1_000))
        .map(|_| RunRequest::new(workflow, input.clone()))
        .collect();
    let started = Instant::now();
    for done in (0..runs).step_by(1_000) {
        start_runs(db, DEFAULT_TENANT, &requests[..(runs - done).min(1_000)]).await?;
    }
    let mut finished = 0;
    while finished < runs {
        let notification = tokio::time::timeout(Duration::from_secs(60), listener.recv())
            .await
            .context("the node stopped finishing runs")??;
        finished += parse_ids(notification.payload()).len();
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn round(args: &WorkloadsArgs, admin: &mut PgConnection) -> anyhow::Result<Round> {
    let database = "hatchery_bench_workloads";
    let url = with_database(&args.database_url, database);
    let runtime = scratch::runtime()?;
    let empty = serde_json::json!({});

    recreate(admin, database).await?;
    let (db, node) = fresh(&url, &runtime, args.concurrency).await?;
    let seconds = drain(
        &db,
        &url,
        "hello",
        serde_json::json!({"name": "Ada"}),
        args.runs,
    )
    .await?;
    let hello = args.runs as f64 / seconds;
    node.shutdown().await;
    db.pool.close().await;
    eprintln!("hello: {hello:.0} tasks/s");

    recreate(admin, database).await?;
    let (db, node) = fresh(&url, &runtime, args.concurrency).await?;
    let seconds = drain(&db, &url, "etl", empty.clone(), args.runs).await?;
    let etl = (3 * args.runs) as f64 / seconds;
    let (_, mut repeated) = {
        let mut conn = db.pool.acquire().await?;
        task_runs_repeats(&mut conn, DEFAULT_TENANT).await?
    };
    node.shutdown().await;
    db.pool.close().await;
    eprintln!("etl: {etl:.0} tasks/s");

    recreate(admin, database).await?;
    let (db, node) = fresh(&url, &runtime, args.concurrency).await?;
    let started = Instant::now();
    let id = start_run(
        &db,
        DEFAULT_TENANT,
        &RunRequest::new("fanout", serde_json::json!({"count": args.children})),
    )
    .await?;
    let view = hatchery::scheduler::wait_for_run(&db, DEFAULT_TENANT, id, Duration::from_secs(300))
        .await?
        .context("the fanout run vanished")?;
    anyhow::ensure!(
        view.run.status == RunStatus::Succeeded,
        "fanout ended {}: {:?}",
        view.run.status,
        view.run.error
    );
    let fanout = f64::from(args.children) / started.elapsed().as_secs_f64();
    repeated += {
        let mut conn = db.pool.acquire().await?;
        task_runs_repeats(&mut conn, DEFAULT_TENANT).await?.1
    };
    node.shutdown().await;
    db.pool.close().await;
    eprintln!("fanout: {fanout:.0} children/s");
    drop_database(admin, database).await?;
    Ok(Round {
        hello_tasks_per_second: hello,
        etl_tasks_per_second: etl,
        fanout_children_per_second: fanout,
        repeated,
    })
}

/// The peer's jobs per second for `jobs` single jobs, or chains of `chain` jobs.
fn peer(args: &WorkloadsArgs, jobs: usize, chain: usize) -> anyhow::Result<f64> {
    let database = "hatchery_bench_graphile";
    let report = crate::queue::run_peer(
        &args.database_url,
        database,
        &[
            "--jobs",
            &jobs.to_string(),
            "--concurrency",
            &args.concurrency.to_string(),
            "--latency-runs",
            "0",
            "--chain",
            &chain.to_string(),
        ],
    )?;
    Ok(report.jobs_per_second)
}

/// Runs the benchmark and prints its table.
pub async fn run(args: WorkloadsArgs) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&args.database_url).await?;
    let mut rounds = Vec::new();
    let mut peers = Vec::new();
    for i in 0..args.rounds.max(1) {
        eprintln!("round {} of {}", i + 1, args.rounds.max(1));
        rounds.push(round(&args, &mut admin).await?);
        if !args.no_peer {
            recreate(&mut admin, "hatchery_bench_graphile").await?;
            let single = peer(&args, args.runs, 1)?;
            recreate(&mut admin, "hatchery_bench_graphile").await?;
            let chained = peer(&args, 3 * args.runs, 3)?;
            peers.push((single, chained));
        }
    }
    drop_database(&mut admin, "hatchery_bench_graphile").await?;
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let hello = median(rounds.iter().map(|r| r.hello_tasks_per_second).collect());
    let etl = median(rounds.iter().map(|r| r.etl_tasks_per_second).collect());
    let fanout = median(
        rounds
            .iter()
            .map(|r| r.fanout_children_per_second)
            .collect(),
    );
    let single = median(peers.iter().map(|p| p.0).collect());
    let chained = median(peers.iter().map(|p| p.1).collect());
    println!(
        "rounds (hello, etl tasks/s; fanout children/s): {}",
        rounds
            .iter()
            .map(|r| format!(
                "{:.0} / {:.0} / {:.0}",
                r.hello_tasks_per_second, r.etl_tasks_per_second, r.fanout_children_per_second
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "workloads: {} runs each on one node (concurrency {}), a fanout of {} children; median of {} rounds",
        args.runs,
        args.concurrency,
        args.children,
        args.rounds.max(1)
    );
    println!("| measure | Hatchery | graphile-worker | target |");
    println!("| --- | --- | --- | --- |");
    println!("| single-task runs (tasks/s) | {hello:.0} | {single:.0} | |");
    println!("| three-task DAG / chain (tasks/s) | {etl:.0} | {chained:.0} | |");
    println!(
        "| DAG tasks/s ÷ single-task tasks/s | {:.2} | {:.2} | ≥ 0.70 |",
        etl / hello,
        chained / single
    );
    println!("| fanout (children/s) | {fanout:.0} | | ≥ 10,000 |");
    println!(
        "| task runs attempted more than once | {} | | 0 |",
        rounds.iter().map(|r| r.repeated).sum::<i64>()
    );
    Ok(())
}
