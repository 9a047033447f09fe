//! The queue with the retention service deleting history beside it: the same drain of no-op
//! runs with a large history of finished runs past their retention, once with the service off
//! and once on, alternating, in one run. What the pruning costs the queue is the ratio.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use hatchery::db::{CHANNEL_RUN_FINISHED, DEFAULT_TENANT, Db, parse_ids};
use hatchery::scheduler::{
    Node, NodeConfig, RetentionConfig, RunRequest, deploy_module, start_runs,
};
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection};

use crate::scratch::{self, drop_database, recreate, with_database};

/// Options of the retention benchmark.
#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// A database URL of the server to use (a database is created and dropped on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Runs drained per round.
    #[arg(long, default_value_t = 100_000)]
    runs: usize,
    /// Finished runs (one task and one log line each) past their retention, there first.
    #[arg(long, default_value_t = 300_000)]
    history: i64,
    /// Rounds of each (off, then on).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Task runs executed at once.
    #[arg(long, default_value_t = 10)]
    concurrency: u32,
}

struct Round {
    per_second: f64,
    purged: i64,
}

/// Runs the benchmark and prints its table.
pub async fn run(args: RetentionArgs) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&args.database_url).await?;
    let database = "hatchery_bench_retention";
    let url = with_database(&args.database_url, database);
    let mut off = Vec::new();
    let mut on = Vec::new();
    for round in 0..args.rounds.max(1) {
        for pruning in [false, true] {
            recreate(&mut admin, database).await?;
            let result = drain(&args, &url, pruning).await?;
            eprintln!(
                "round {}, pruning {}: {:.0} tasks/s, {} runs purged meanwhile",
                round + 1,
                if pruning { "on" } else { "off" },
                result.per_second,
                result.purged
            );
            if pruning { &mut on } else { &mut off }.push(result);
        }
    }
    drop_database(&mut admin, database).await?;
    let median = |rounds: &[Round]| {
        let mut rates: Vec<f64> = rounds.iter().map(|r| r.per_second).collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (off_rate, on_rate) = (median(&off), median(&on));
    println!(
        "retention benchmark: {} no-op runs drained by one node (concurrency {}) beside {} finished runs past their retention; median of {} rounds",
        args.runs,
        args.concurrency,
        args.history,
        args.rounds.max(1)
    );
    println!("| retention service | tasks/s | ÷ off | history runs deleted during the drain |");
    println!("| --- | --- | --- | --- |");
    println!("| off | {off_rate:.0} | 1.00 | 0 |");
    let purged: Vec<String> = on.iter().map(|r| r.purged.to_string()).collect();
    println!(
        "| on | {on_rate:.0} | {:.2} | {} |",
        on_rate / off_rate,
        purged.join(", ")
    );
    Ok(())
}

/// Fills the history and the backlog, then drains the backlog on a node with the retention
/// service on or off.
async fn drain(args: &RetentionArgs, url: &str, pruning: bool) -> anyhow::Result<Round> {
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
    {
        let mut conn = db.pool.acquire().await?;
        hatchery::db::plans::history_fill(&mut conn, DEFAULT_TENANT, "noop", args.history, 30)
            .await?;
    }
    let requests: Vec<RunRequest> = (0..1_000)
        .map(|_| RunRequest::new("noop", serde_json::json!({})))
        .collect();
    for done in (0..args.runs).step_by(1_000) {
        start_runs(
            &db,
            DEFAULT_TENANT,
            &requests[..(args.runs - done).min(1_000)],
        )
        .await?;
    }
    {
        let mut conn = db.pool.acquire().await?;
        hatchery::db::plans::backlog_analyze(&mut conn).await?;
    }
    let before = total_runs(&db).await?;
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL_RUN_FINISHED).await?;
    let config = NodeConfig {
        capacity: args.concurrency,
        default_slots: args.concurrency,
        retention: pruning.then(|| RetentionConfig {
            default_retention: Duration::from_secs(7 * 86_400),
            interval: Duration::from_secs(1),
            ..RetentionConfig::default()
        }),
        ..NodeConfig::default()
    };
    let started = Instant::now();
    let node = Node::start(db.clone(), runtime, config).await?;
    let mut finished = 0;
    while finished < args.runs {
        let notification = tokio::time::timeout(Duration::from_secs(60), listener.recv())
            .await
            .context("the node stopped finishing runs")??;
        finished += parse_ids(notification.payload()).len();
    }
    let per_second = args.runs as f64 / started.elapsed().as_secs_f64();
    node.shutdown().await;
    let purged = before - total_runs(&db).await?;
    db.pool.close().await;
    db.lossy.close().await;
    Ok(Round { per_second, purged })
}

async fn total_runs(db: &Db) -> anyhow::Result<i64> {
    let mut conn = db.pool.acquire().await?;
    Ok(hatchery::db::plans::workflow_runs_count(&mut conn, DEFAULT_TENANT).await?)
}
