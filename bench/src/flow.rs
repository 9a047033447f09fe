//! Flow control against no flow control, side by side in one run:
//! - round robin: 20,000 no-op runs over 100 keys with `max_runs = 1`, drained against the same
//!   20,000 runs with no rule (target: at least half the speed);
//! - rate limit: 20,000 queued runs under a static limit of 2,000 units a second — the rate it
//!   delivers (target: within 3 %) and the most starts in any 1 s window (never above 2,000);
//! - latency: enqueue-to-start of runs started one at a time, alternately with a rule whose key
//!   has room and with no rule (target: p99 at most 1.5×).

use std::time::Duration;

use anyhow::Context as _;
use hatchery::db::flow::{rate_limit_set, task_run_starts};
use hatchery::db::{CHANNEL_RUN_FINISHED, DEFAULT_TENANT, Db, parse_ids};
use hatchery::scheduler::{Node, NodeConfig, RunRequest, deploy_module, start_runs};
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection};

use crate::scratch::{self, drop_database, percentile, recreate, with_database};

/// Options of the flow control benchmark.
#[derive(Debug, clap::Args)]
pub struct FlowArgs {
    /// A database URL of the server to use (databases are created and dropped on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Runs to drain in the throughput and rate limit measures.
    #[arg(long, default_value_t = 20_000)]
    runs: usize,
    /// Distinct keys of the round-robin measure.
    #[arg(long, default_value_t = 100)]
    keys: usize,
    /// The rate limit, units per second.
    #[arg(long, default_value_t = 2_000)]
    limit: u32,
    /// Runs started one at a time in the latency measure.
    #[arg(long, default_value_t = 300)]
    latency_runs: usize,
    /// Task runs executed at once.
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
}

async fn fresh(url: &str, concurrency: u32) -> anyhow::Result<(Db, Node)> {
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
        capacity: concurrency,
        default_slots: concurrency,
        ..NodeConfig::default()
    };
    let node = Node::start(db.clone(), runtime, config).await?;
    Ok((db, node))
}

/// Enqueues the runs in bulk (1,000 a transaction) while the node drains them; returns the
/// seconds until the last one finished.
async fn drain(db: &Db, url: &str, requests: &[RunRequest]) -> anyhow::Result<f64> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL_RUN_FINISHED).await?;
    let started = std::time::Instant::now();
    for chunk in requests.chunks(1_000) {
        start_runs(db, DEFAULT_TENANT, chunk).await?;
    }
    let mut finished = 0;
    while finished < requests.len() {
        let notification = tokio::time::timeout(Duration::from_secs(60), listener.recv())
            .await
            .context("the node stopped finishing runs")??;
        finished += parse_ids(notification.payload()).len();
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Enqueue-to-start latencies (ms, sorted) of `noop` runs and of `keyed` runs whose key has
/// room, started one at a time and alternately, so both see the same machine.
async fn latencies(
    db: &Db,
    url: &str,
    runs: usize,
    keys: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL_RUN_FINISHED).await?;
    for i in 0..2 * (runs + 10) {
        let request = if i % 2 == 0 {
            RunRequest::new("noop", serde_json::json!({}))
        } else {
            RunRequest::new("keyed", serde_json::json!({"k": i % keys}))
        };
        let id = start_runs(db, DEFAULT_TENANT, &[request]).await?[0];
        loop {
            let notification =
                tokio::time::timeout(Duration::from_secs(30), listener.recv()).await??;
            if parse_ids(notification.payload()).contains(&id) {
                break;
            }
        }
    }
    let mut conn = db.pool.acquire().await?;
    let mut measured = Vec::new();
    for workflow in ["noop", "keyed"] {
        let starts = task_run_starts(&mut conn, DEFAULT_TENANT, workflow).await?;
        let mut latencies: Vec<f64> = starts
            .iter()
            .skip(10)
            .map(|(created, started)| {
                (*started - *created).num_microseconds().unwrap_or(0) as f64 / 1e3
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        measured.push(latencies);
    }
    let keyed = measured.pop().unwrap_or_default();
    let free = measured.pop().unwrap_or_default();
    Ok((free, keyed))
}

/// The most starts (µs, sorted) in any half-open window of `window_us`.
fn most_in_any_window(starts: &[i64], window_us: i64) -> usize {
    let mut most = 0;
    let mut first = 0;
    for (last, start) in starts.iter().enumerate() {
        while *start - starts[first] >= window_us {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}

/// Runs the benchmark and prints its table.
pub async fn run(args: FlowArgs) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&args.database_url).await?;
    let database = "hatchery_bench_flow";
    let url = with_database(&args.database_url, database);
    let noop = |_: usize| RunRequest::new("noop", serde_json::json!({}));
    let keyed = |i: usize| RunRequest::new("keyed", serde_json::json!({"k": i % args.keys}));

    recreate(&mut admin, database).await?;
    let (db, node) = fresh(&url, args.concurrency).await?;
    let free: Vec<RunRequest> = (0..args.runs).map(noop).collect();
    let free_seconds = drain(&db, &url, &free).await?;
    node.shutdown().await;
    db.pool.close().await;
    let free_rate = args.runs as f64 / free_seconds;
    eprintln!("no rule: {free_rate:.0} runs/s");

    recreate(&mut admin, database).await?;
    let (db, node) = fresh(&url, args.concurrency).await?;
    let ruled: Vec<RunRequest> = (0..args.runs).map(keyed).collect();
    let ruled_seconds = drain(&db, &url, &ruled).await?;
    node.shutdown().await;
    db.pool.close().await;
    let ruled_rate = args.runs as f64 / ruled_seconds;
    eprintln!("{} keys, max_runs 1: {ruled_rate:.0} runs/s", args.keys);

    recreate(&mut admin, database).await?;
    let (db, node) = fresh(&url, args.concurrency).await?;
    {
        let mut conn = db.pool.acquire().await?;
        rate_limit_set(
            &mut conn,
            DEFAULT_TENANT,
            "bench",
            args.limit,
            Duration::from_secs(1),
        )
        .await?;
    }
    let limited: Vec<RunRequest> = (0..args.runs)
        .map(|_| RunRequest::new("limited", serde_json::json!({})))
        .collect();
    drain(&db, &url, &limited).await?;
    let starts: Vec<i64> = {
        let mut conn = db.pool.acquire().await?;
        task_run_starts(&mut conn, DEFAULT_TENANT, "limited")
            .await?
            .iter()
            .map(|(_, started)| started.timestamp_micros())
            .collect()
    };
    node.shutdown().await;
    db.pool.close().await;
    let most = most_in_any_window(&starts, 1_000_000);
    if std::env::var_os("HATCHERY_BENCH_HISTOGRAM").is_some() {
        let first = starts.first().copied().unwrap_or(0);
        let mut buckets = vec![0usize; 120];
        for start in &starts {
            let i = ((start - first) / 100_000) as usize;
            if i < buckets.len() {
                buckets[i] += 1;
            }
        }
        eprintln!("starts per 100 ms: {buckets:?}");
    }
    // The rate delivered: `limit` units divided by the mean time `limit` consecutive units
    // take (from each start to the start `limit` later). A strict limiter never goes under the
    // window; a perfect one takes exactly the window.
    let spans: Vec<i64> = starts
        .iter()
        .zip(starts.iter().skip(args.limit as usize))
        .map(|(first, later)| later - first)
        .collect();
    let mean_span_us = spans.iter().sum::<i64>() as f64 / spans.len().max(1) as f64;
    let delivered = f64::from(args.limit) * 1e6 / mean_span_us;
    eprintln!(
        "rate limit {}: {delivered:.0} units/s delivered, at most {most} in 1 s",
        args.limit
    );

    recreate(&mut admin, database).await?;
    let (db, node) = fresh(&url, args.concurrency).await?;
    let (free_latency, ruled_latency) = latencies(&db, &url, args.latency_runs, args.keys).await?;
    node.shutdown().await;
    db.pool.close().await;
    drop_database(&mut admin, database).await?;

    let (free_p50, free_p99) = (
        percentile(&free_latency, 0.5),
        percentile(&free_latency, 0.99),
    );
    let (ruled_p50, ruled_p99) = (
        percentile(&ruled_latency, 0.5),
        percentile(&ruled_latency, 0.99),
    );
    println!(
        "flow control: {} runs, {} keys, limit {}/s, {} latency runs, concurrency {}",
        args.runs, args.keys, args.limit, args.latency_runs, args.concurrency
    );
    println!("| measure | with rule | no rule | ratio | target |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| drain, {} keys × max_runs 1 (runs/s) | {ruled_rate:.0} | {free_rate:.0} | {:.2} | ≥ 0.50 |",
        args.keys,
        ruled_rate / free_rate
    );
    println!(
        "| rate limit {}/s: delivered (units/s) | {delivered:.0} | | {:.3} | 0.97–1.00 |",
        args.limit,
        delivered / f64::from(args.limit)
    );
    println!(
        "| rate limit {}/s: most starts in any 1 s | {most} | | | ≤ {} |",
        args.limit, args.limit
    );
    println!(
        "| enqueue-to-start p50 (ms) | {ruled_p50:.2} | {free_p50:.2} | {:.2} | |",
        ruled_p50 / free_p50
    );
    println!(
        "| enqueue-to-start p99 (ms) | {ruled_p99:.2} | {free_p99:.2} | {:.2} | ≤ 1.5 |",
        ruled_p99 / free_p99
    );
    Ok(())
}
