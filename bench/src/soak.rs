//! The soak benchmark: a steady mix offered for many minutes — every 0.55 s, 1,000 `hello`
//! runs, 200 runs of the three-task `etl` DAG and one `fanout` of 50 children (≈ 3,000 tasks/s)
//! — while it samples throughput, backlog, the process's memory, the database's size and the
//! runs it holds. The node keeps up when the backlog stays flat; with `--retention-minutes`,
//! the retention service deletes finished runs older than that, and the tables stay bounded.

use std::time::{Duration, Instant};

use hatchery::db::plans::workflow_runs_count;
use hatchery::db::task_run::task_run_status_counts;
use hatchery::db::usage::usage_list;
use hatchery::db::{DEFAULT_TENANT, Db, database_size};
use hatchery::scheduler::{RetentionConfig, RunRequest, start_runs};
use hatchery::status::TaskStatus;
use sqlx::{Connection, PgConnection};

use crate::queue::rss_mib;
use crate::scratch::{self, drop_database, recreate, with_database};

/// Options of the soak benchmark.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// A database URL of the server to use (a database is created and dropped on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// How long to offer the mix, in minutes.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 30)]
    sample_seconds: u64,
    /// Task runs executed at once.
    #[arg(long, default_value_t = 10)]
    concurrency: u32,
    /// Keep finished runs this many minutes (the retention service sweeps every 10 s); unset:
    /// keep everything.
    #[arg(long)]
    retention_minutes: Option<f64>,
}

/// Tasks of one offer: 1,000 + 3 × 200 + (1 + 50).
const TASKS_PER_OFFER: f64 = 1_651.0;
const OFFER_EVERY: Duration = Duration::from_millis(550);

struct Sample {
    /// Attempts executed so far (from the usage rows, which retention does not delete).
    finished: i64,
    backlog: i64,
    /// Workflow runs in the table.
    runs: i64,
}

async fn sample(db: &Db) -> anyhow::Result<Sample> {
    let mut conn = db.pool.acquire().await?;
    let counts = task_run_status_counts(&mut conn, DEFAULT_TENANT).await?;
    let of = |status: TaskStatus| counts.get(&status).copied().unwrap_or(0);
    let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    let far = chrono::Utc::now() + chrono::TimeDelta::days(1);
    let usage = usage_list(&mut conn, DEFAULT_TENANT, epoch, far, None, 10_000).await?;
    Ok(Sample {
        finished: usage.iter().map(|row| row.attempts).sum(),
        backlog: of(TaskStatus::Queued) + of(TaskStatus::Pending) + of(TaskStatus::Running),
        runs: workflow_runs_count(&mut conn, DEFAULT_TENANT).await?,
    })
}

/// Runs the benchmark and prints its table.
pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&args.database_url).await?;
    let database = "hatchery_bench_soak";
    recreate(&mut admin, database).await?;
    let url = with_database(&args.database_url, database);
    let runtime = scratch::runtime()?;
    let retention = args.retention_minutes.map(|minutes| RetentionConfig {
        default_retention: Duration::from_secs_f64(minutes * 60.0),
        interval: Duration::from_secs(10),
        ..RetentionConfig::default()
    });
    let (db, node) =
        crate::workloads::fresh_with(&url, &runtime, args.concurrency, retention).await?;

    let offer: Vec<RunRequest> = (0..1_000)
        .map(|_| RunRequest::new("hello", serde_json::json!({"name": "Ada"})))
        .chain((0..200).map(|_| RunRequest::new("etl", serde_json::json!({}))))
        .chain(std::iter::once(RunRequest::new(
            "fanout",
            serde_json::json!({"count": 50}),
        )))
        .collect();
    let offerer = tokio::spawn({
        let db = db.clone();
        let until = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
        async move {
            let mut ticks = tokio::time::interval(OFFER_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut offers = 0_u64;
            while Instant::now() < until {
                ticks.tick().await;
                start_runs(&db, DEFAULT_TENANT, &offer).await?;
                offers += 1;
            }
            anyhow::Ok(offers)
        }
    });

    println!(
        "soak: {:.0} tasks/s offered for {} min (every 0.55 s: 1,000 hello, 200 etl, a fanout of 50), node concurrency {}",
        TASKS_PER_OFFER / OFFER_EVERY.as_secs_f64(),
        args.minutes,
        args.concurrency
    );
    match args.retention_minutes {
        Some(minutes) => println!("retention: finished runs kept {minutes} min"),
        None => println!("retention: off (everything kept)"),
    }
    println!(
        "| minute | served (tasks/s) | backlog (task runs) | runs in the table | process memory (MiB) | database (MiB) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let started = Instant::now();
    let mut last = sample(&db).await?;
    let mut last_at = Instant::now();
    let mut served = Vec::new();
    let mut backlogs = Vec::new();
    while !offerer.is_finished() {
        tokio::time::sleep(Duration::from_secs(args.sample_seconds)).await;
        let now = sample(&db).await?;
        let rate = (now.finished - last.finished) as f64 / last_at.elapsed().as_secs_f64();
        let size = {
            let mut conn = db.pool.acquire().await?;
            database_size(&mut conn).await? as f64 / (1024.0 * 1024.0)
        };
        println!(
            "| {:.1} | {rate:.0} | {} | {} | {:.0} | {size:.0} |",
            started.elapsed().as_secs_f64() / 60.0,
            now.backlog,
            now.runs,
            rss_mib()
        );
        served.push(rate);
        backlogs.push(now.backlog);
        last = now;
        last_at = Instant::now();
    }
    let offers = offerer.await??;
    let offered = offers as f64 * TASKS_PER_OFFER / started.elapsed().as_secs_f64();
    // Past the first sample (warm-up), served against offered, and the backlog's trend.
    let steady: Vec<f64> = served.iter().skip(1).copied().collect();
    let mean = steady.iter().sum::<f64>() / steady.len().max(1) as f64;
    println!(
        "offered {offered:.0} tasks/s; served {mean:.0} tasks/s after the first sample ({:.2} of offered); backlog first {} → last {}",
        mean / offered,
        backlogs.first().copied().unwrap_or(0),
        backlogs.last().copied().unwrap_or(0)
    );
    node.shutdown().await;
    db.pool.close().await;
    db.lossy.close().await;
    drop_database(&mut admin, database).await?;
    Ok(())
}
