//! Triggers, side by side in one run:
//! - events: event-to-start latency over HTTP (`POST /api/v1/events`, one at a time, to the
//!   start of the run it triggers), p50/p99 (target p50 ≤ 5 ms);
//! - scheduled runs: 10,000 runs scheduled for the same second — how long after it the last
//!   one starts (target ≤ 2 s), and that none starts before it;
//! - the claim with 1,000,000 runs scheduled in the future against none: the same drain of
//!   no-op runs in both (target: ratio ≥ 1, within noise).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use hatchery::db::flow::task_run_starts;
use hatchery::db::{CHANNEL_RUN_FINISHED, DEFAULT_TENANT, Db, parse_ids};
use hatchery::scheduler::{Node, NodeConfig, RunRequest, deploy_module, get_run, start_runs};
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection};

use crate::scratch::{self, drop_database, percentile, recreate, with_database};

/// Options of the triggers benchmark.
#[derive(Debug, clap::Args)]
pub struct TriggersArgs {
    /// A database URL of the server to use (databases are created and dropped on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Events pushed one at a time.
    #[arg(long, default_value_t = 300)]
    events: usize,
    /// Runs scheduled for the same second.
    #[arg(long, default_value_t = 10_000)]
    same_second: usize,
    /// Runs scheduled in the future while the claim is measured.
    #[arg(long, default_value_t = 1_000_000)]
    future: usize,
    /// No-op runs drained with and without the future runs.
    #[arg(long, default_value_t = 20_000)]
    drain: usize,
}

async fn fresh_node(url: &str) -> anyhow::Result<(Db, Node)> {
    let runtime = scratch::runtime()?;
    let db = Db::connect(url, 8).await?;
    db.migrate().await?;
    deploy_module(
        &db,
        &runtime,
        DEFAULT_TENANT,
        &hatchery_guests::read(hatchery_guests::BENCH),
    )
    .await?;
    let config = NodeConfig {
        capacity: 64,
        default_slots: 64,
        ..NodeConfig::default()
    };
    let node = Node::start(db.clone(), runtime, config).await?;
    Ok((db, node))
}

/// Event-to-start latencies in ms, sorted.
async fn event_latencies(url: &str, events: usize) -> anyhow::Result<Vec<f64>> {
    let runtime = scratch::runtime()?;
    let server = crate::http::serve(url, &runtime, true).await?;
    let db = Db::connect(url, 4).await?;
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL_RUN_FINISHED).await?;
    let mut sent = Vec::with_capacity(events);
    for _ in 0..events + 10 {
        let at = chrono::Utc::now();
        let pushed: serde_json::Value = server
            .client
            .post(format!("{}/api/v1/events", server.url))
            .bearer_auth(&server.token)
            .json(&serde_json::json!({"key": "ping", "payload": {}}))
            .send()
            .await?
            .json()
            .await?;
        let run: uuid::Uuid = pushed["run_ids"][0]
            .as_str()
            .context("the event started no run")?
            .parse()?;
        loop {
            let notification =
                tokio::time::timeout(Duration::from_secs(30), listener.recv()).await??;
            if parse_ids(notification.payload()).contains(&run) {
                break;
            }
        }
        sent.push((at, run));
    }
    let tenant = hatchery::db::tenant::tenant_ids(&mut *db.pool.acquire().await?)
        .await?
        .into_iter()
        .find(|t| *t != DEFAULT_TENANT)
        .context("the bench tenant")?;
    let mut latencies = Vec::with_capacity(events);
    for (at, run) in sent.into_iter().skip(10) {
        let view = get_run(&db, tenant, run).await?.context("run vanished")?;
        let started = view.tasks[0].started_at.context("never started")?;
        latencies.push((started - at).num_microseconds().unwrap_or(0) as f64 / 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let _ = server.shutdown.send(());
    if let Some(node) = server.node {
        node.shutdown().await;
    }
    Ok(latencies)
}

/// Enqueues `runs` no-op runs in bulk while the node drains them; the seconds it took.
async fn drain(db: &Db, url: &str, runs: usize) -> anyhow::Result<f64> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL_RUN_FINISHED).await?;
    let requests: Vec<RunRequest> = (0..runs.min(1_000))
        .map(|_| RunRequest::new("noop", serde_json::json!({})))
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

/// Schedules `runs` runs of `workflow` at `run_at`, 1,000 a transaction.
async fn schedule(
    db: &Db,
    workflow: &str,
    runs: usize,
    run_at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let requests: Vec<RunRequest> = (0..runs.min(1_000))
        .map(|_| RunRequest {
            run_at: Some(run_at),
            ..RunRequest::new(workflow, serde_json::json!({}))
        })
        .collect();
    for done in (0..runs).step_by(1_000) {
        start_runs(db, DEFAULT_TENANT, &requests[..(runs - done).min(1_000)]).await?;
    }
    Ok(())
}

/// Runs the benchmark and prints its table.
pub async fn run(args: TriggersArgs) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&args.database_url).await?;
    let database = "hatchery_bench_triggers";
    let url = with_database(&args.database_url, database);

    recreate(&mut admin, database).await?;
    let latencies = event_latencies(&url, args.events).await?;
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    eprintln!("event to start: p50 {p50:.2} ms, p99 {p99:.2} ms");

    recreate(&mut admin, database).await?;
    let (db, node) = fresh_node(&url).await?;
    let run_at = chrono::Utc::now() + chrono::Duration::seconds(20);
    let run_at = chrono::DurationRound::duration_trunc(run_at, chrono::Duration::seconds(1))
        .unwrap_or(run_at);
    let enqueue = Instant::now();
    schedule(&db, "noop", args.same_second, run_at).await?;
    eprintln!(
        "{} runs scheduled in {:.1} s",
        args.same_second,
        enqueue.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let starts = loop {
        let mut conn = db.pool.acquire().await?;
        let starts = task_run_starts(&mut conn, DEFAULT_TENANT, "noop").await?;
        if starts.len() >= args.same_second {
            break starts;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the scheduled runs did not all start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let first = starts.first().map(|s| s.1).context("no start")?;
    let last = starts.last().map(|s| s.1).context("no start")?;
    let early_ms = (run_at - first).num_milliseconds();
    let last_ms = (last - run_at).num_milliseconds();
    eprintln!(
        "same second: first {} ms after, last {last_ms} ms after",
        -early_ms
    );
    node.shutdown().await;
    db.pool.close().await;

    recreate(&mut admin, database).await?;
    let (db, node) = fresh_node(&url).await?;
    let empty_seconds = drain(&db, &url, args.drain).await?;
    let fill = Instant::now();
    schedule(
        &db,
        "noop",
        args.future,
        chrono::Utc::now() + chrono::Duration::days(1),
    )
    .await?;
    eprintln!(
        "{} future runs scheduled in {:.0} s",
        args.future,
        fill.elapsed().as_secs_f64()
    );
    let full_seconds = drain(&db, &url, args.drain).await?;
    node.shutdown().await;
    db.pool.close().await;
    drop_database(&mut admin, database).await?;

    let empty_rate = args.drain as f64 / empty_seconds;
    let full_rate = args.drain as f64 / full_seconds;
    println!(
        "triggers: {} events one at a time; {} runs due the same second; {} no-op runs drained beside {} future runs",
        args.events, args.same_second, args.drain, args.future
    );
    println!("| measure | value | target |");
    println!("| --- | --- | --- |");
    println!("| event to start over HTTP, p50 (ms) | {p50:.2} | ≤ 5 |");
    println!("| event to start over HTTP, p99 (ms) | {p99:.2} | |");
    println!(
        "| {} runs due the same second: first start after it (ms) | {} | ≥ 0 |",
        args.same_second, -early_ms
    );
    println!(
        "| {} runs due the same second: last start after it (ms) | {last_ms} | ≤ 2,000 |",
        args.same_second
    );
    println!(
        "| drain with {} future runs ÷ with none (runs/s) | {full_rate:.0} ÷ {empty_rate:.0} = {:.2} | ≥ 1 (noise) |",
        args.future,
        full_rate / empty_rate
    );
    Ok(())
}
