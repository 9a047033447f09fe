//! The queue benchmark: Hatchery against graphile-worker, on the same Postgres, in one run.
//!
//! - throughput: N no-op runs enqueued in bulk, then drained by one node; tasks per second and
//!   Postgres commits per task (`pg_stat_database.xact_commit`, read after every connection
//!   closed, since backends flush their counters on exit), `synchronous_commit` on;
//! - latency: runs started one at a time; enqueue-to-start p50/p99, where start is the claim
//!   stamp (`task_runs.started_at`, the same host clock).
//!
//! The peer runs through `bench/peers/graphile-worker/bench.mjs` with its batching options on.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hatchery::db::task_run::task_runs_repeats;
use hatchery::db::{CHANNEL_RUN_FINISHED, DEFAULT_TENANT, Db, parse_ids};
use hatchery::scheduler::{
    Node, NodeConfig, RunRequest, deploy_module, get_run, start_run, start_runs,
};
use serde::Deserialize;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection};

use crate::scratch::{self, drop_database, percentile, recreate, with_database};

/// Options of the queue benchmark.
#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    /// A database URL of the server to use (databases are created and dropped on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Runs to drain in the throughput test; several sizes (`--runs 100000,1000000`) are
    /// measured one after the other and compared.
    #[arg(long, value_delimiter = ',', default_values_t = [200_000_usize])]
    runs: Vec<usize>,
    /// Runs started one at a time in the latency test.
    #[arg(long, default_value_t = 300)]
    latency_runs: usize,
    /// Task runs executed at once (graphile-worker's concurrency).
    #[arg(long, default_value_t = 10)]
    concurrency: u32,
    /// Skip the peer (measure Hatchery alone).
    #[arg(long)]
    no_peer: bool,
    /// Rounds, alternating Hatchery and the peer; the table shows each figure's median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// What the peer prints.
#[derive(Debug, Deserialize)]
pub struct PeerReport {
    version: String,
    /// Jobs per second of the throughput phase.
    pub jobs_per_second: f64,
    commits_per_job: f64,
    /// `null` when no latency runs were asked for.
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
}

struct Measured {
    per_second: f64,
    commits_per_task: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Leases lost during the drain (a healthy database: 0).
    lost_leases: i64,
    /// Task runs that took more than one attempt.
    repeated: i64,
    /// Peak resident memory of the process (node and bench) during the drain, MiB.
    peak_rss_mib: f64,
}

/// Resident memory of this process, MiB.
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `xact_commit` of `database`, once it stops moving (counters are flushed lazily).
async fn commits(admin: &mut PgConnection, database: &str) -> anyhow::Result<i64> {
    let mut last: i64 = -1;
    loop {
        let now: i64 =
            sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
                .bind(database)
                .fetch_one(&mut *admin)
                .await?;
        if now == last {
            return Ok(now);
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn hatchery(
    args: &QueueArgs,
    runs: usize,
    admin: &mut PgConnection,
    database: &str,
) -> anyhow::Result<Measured> {
    recreate(admin, database).await?;
    let url = with_database(&args.database_url, database);
    let runtime = scratch::runtime()?;
    {
        let db = Db::connect(&url, 8).await?;
        db.migrate().await?;
        deploy_module(
            &db,
            &runtime,
            DEFAULT_TENANT,
            &hatchery_guests::read(hatchery_guests::BENCH),
        )
        .await?;
        let requests: Vec<RunRequest> = (0..1_000)
            .map(|_| RunRequest::new("noop", serde_json::json!({})))
            .collect();
        let started = Instant::now();
        for done in (0..runs).step_by(1_000) {
            start_runs(&db, DEFAULT_TENANT, &requests[..(runs - done).min(1_000)]).await?;
        }
        eprintln!(
            "enqueued {runs} runs in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        db.pool.close().await;
        db.lossy.close().await;
    }
    let before = commits(admin, database).await?;

    let mut listener = PgListener::connect(&url).await?;
    listener.listen(CHANNEL_RUN_FINISHED).await?;
    let db = Db::connect(&url, 8).await?;
    let config = NodeConfig {
        capacity: args.concurrency,
        default_slots: args.concurrency,
        ..NodeConfig::default()
    };
    eprintln!("draining {runs} runs");
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn({
        let sampling = sampling.clone();
        async move {
            let mut peak = rss_mib();
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_mib());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            peak
        }
    });
    let started = Instant::now();
    let node = Node::start(db.clone(), runtime.clone(), config.clone()).await?;
    let mut finished = 0;
    while finished < runs {
        let notification = tokio::time::timeout(Duration::from_secs(60), listener.recv())
            .await
            .context("the node stopped finishing runs")??;
        finished += parse_ids(notification.payload()).len();
    }
    let elapsed = started.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak_rss_mib = sampler.await?;
    node.shutdown().await;
    let (lost_leases, repeated) = {
        let mut conn = db.pool.acquire().await?;
        task_runs_repeats(&mut conn, DEFAULT_TENANT).await?
    };
    db.pool.close().await;
    db.lossy.close().await;
    drop(listener);
    // LISTEN itself commits once.
    let after = commits(admin, database).await? - 1;
    let per_second = runs as f64 / elapsed.as_secs_f64();
    let commits_per_task = (after - before) as f64 / runs as f64;

    let db = Db::connect(&url, 8).await?;
    let node = Node::start(db.clone(), runtime, config).await?;
    let mut latencies = Vec::with_capacity(args.latency_runs);
    let mut listener = PgListener::connect(&url).await?;
    listener.listen(CHANNEL_RUN_FINISHED).await?;
    for i in 0..args.latency_runs + 10 {
        let enqueued = chrono::Utc::now();
        let id = start_run(
            &db,
            DEFAULT_TENANT,
            &RunRequest::new("noop", serde_json::json!({})),
        )
        .await?;
        loop {
            let notification =
                tokio::time::timeout(Duration::from_secs(30), listener.recv()).await??;
            if parse_ids(notification.payload()).contains(&id) {
                break;
            }
        }
        let view = get_run(&db, DEFAULT_TENANT, id)
            .await?
            .context("run vanished")?;
        let start = view
            .tasks
            .first()
            .and_then(|task| task.started_at)
            .context("task never started")?;
        if i >= 10 {
            latencies.push((start - enqueued).num_microseconds().unwrap_or(0) as f64 / 1e3);
        }
    }
    latencies.sort_by(f64::total_cmp);
    node.shutdown().await;
    db.pool.close().await;
    Ok(Measured {
        per_second,
        commits_per_task,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        lost_leases,
        repeated,
        peak_rss_mib,
    })
}

fn peer(args: &QueueArgs, runs: usize, database: &str) -> anyhow::Result<PeerReport> {
    run_peer(
        &args.database_url,
        database,
        &[
            "--jobs",
            &runs.to_string(),
            "--concurrency",
            &args.concurrency.to_string(),
            "--latency-runs",
            &args.latency_runs.to_string(),
        ],
    )
}

/// Runs `bench/peers/graphile-worker/bench.mjs` on `database` with `options` (installing its
/// packages on first use) and reads its report.
pub fn run_peer(url: &str, database: &str, options: &[&str]) -> anyhow::Result<PeerReport> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join("graphile-worker");
    if !dir.join("node_modules").exists() {
        let status = Command::new("npm")
            .arg("ci")
            .arg("--silent")
            .current_dir(&dir)
            .status()
            .context("npm ci")?;
        if !status.success() {
            bail!("npm ci failed in {}", dir.display());
        }
    }
    let output = Command::new("node")
        .arg(dir.join("bench.mjs"))
        .args(["--database-url", &with_database(url, database)])
        .args(options)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the graphile-worker peer")?;
    if !output.status.success() {
        bail!("the graphile-worker peer failed");
    }
    let line = String::from_utf8(output.stdout)?;
    Ok(serde_json::from_str(line.trim())?)
}

/// Runs the benchmark and prints its table.
pub async fn run(args: QueueArgs) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&args.database_url).await?;
    let mut rates = Vec::new();
    for &runs in &args.runs {
        rates.push((runs, size(&args, runs, &mut admin).await?));
    }
    if let [(small, small_rate), .., (large, large_rate)] = rates.as_slice() {
        println!(
            "throughput at {large} runs / at {small} runs: {:.2} (target ≥ 0.90)",
            large_rate / small_rate
        );
    }
    Ok(())
}

/// Measures one size; returns Hatchery's median throughput.
async fn size(args: &QueueArgs, runs: usize, admin: &mut PgConnection) -> anyhow::Result<f64> {
    let ours = "hatchery_bench_queue";
    let theirs = "hatchery_bench_graphile";
    let mut ours_rounds = Vec::new();
    let mut peer_rounds = Vec::new();
    for round in 0..args.rounds.max(1) {
        eprintln!("{runs} runs: round {} of {}", round + 1, args.rounds.max(1));
        ours_rounds.push(hatchery(args, runs, admin, ours).await?);
        if !args.no_peer {
            recreate(admin, theirs).await?;
            peer_rounds.push(peer(args, runs, theirs)?);
        }
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let measured = Measured {
        per_second: median(ours_rounds.iter().map(|m| m.per_second).collect()),
        commits_per_task: median(ours_rounds.iter().map(|m| m.commits_per_task).collect()),
        p50_ms: median(ours_rounds.iter().map(|m| m.p50_ms).collect()),
        p99_ms: median(ours_rounds.iter().map(|m| m.p99_ms).collect()),
        lost_leases: ours_rounds.iter().map(|m| m.lost_leases).sum(),
        repeated: ours_rounds.iter().map(|m| m.repeated).sum(),
        peak_rss_mib: ours_rounds
            .iter()
            .map(|m| m.peak_rss_mib)
            .fold(0.0, f64::max),
    };
    let peer = (!peer_rounds.is_empty()).then(|| PeerReport {
        version: peer_rounds[0].version.clone(),
        jobs_per_second: median(peer_rounds.iter().map(|p| p.jobs_per_second).collect()),
        commits_per_job: median(peer_rounds.iter().map(|p| p.commits_per_job).collect()),
        latency_p50_ms: Some(median(
            peer_rounds
                .iter()
                .map(|p| p.latency_p50_ms.unwrap_or(f64::NAN))
                .collect(),
        )),
        latency_p99_ms: Some(median(
            peer_rounds
                .iter()
                .map(|p| p.latency_p99_ms.unwrap_or(f64::NAN))
                .collect(),
        )),
    });
    println!(
        "rounds (Hatchery tasks/s): {}",
        ours_rounds
            .iter()
            .map(|m| format!("{:.0}", m.per_second))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !peer_rounds.is_empty() {
        println!(
            "rounds (graphile-worker jobs/s): {}",
            peer_rounds
                .iter()
                .map(|p| format!("{:.0}", p.jobs_per_second))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for database in [ours, theirs] {
        drop_database(admin, database).await?;
    }

    println!(
        "queue benchmark: {runs} no-op runs drained by one node (concurrency {}), {} runs started one at a time; median of {} rounds",
        args.concurrency,
        args.latency_runs,
        args.rounds.max(1)
    );
    println!("| measure | Hatchery | graphile-worker | Hatchery / peer | target |");
    println!("| --- | --- | --- | --- | --- |");
    let (peer_rate, peer_commits, peer_p50, peer_p99, version) = match &peer {
        Some(p) => (
            p.jobs_per_second,
            p.commits_per_job,
            p.latency_p50_ms.unwrap_or(f64::NAN),
            p.latency_p99_ms.unwrap_or(f64::NAN),
            p.version.clone(),
        ),
        None => (f64::NAN, f64::NAN, f64::NAN, f64::NAN, "skipped".into()),
    };
    println!(
        "| throughput (tasks/s) | {:.0} | {:.0} | {:.2}× | ≥ 2× |",
        measured.per_second,
        peer_rate,
        measured.per_second / peer_rate
    );
    println!(
        "| commits per task | {:.4} | {:.4} | | ≤ 0.1 |",
        measured.commits_per_task, peer_commits
    );
    println!(
        "| enqueue-to-start p50 (ms) | {:.2} | {:.2} | {:.2}× | ≤ 1× |",
        measured.p50_ms,
        peer_p50,
        measured.p50_ms / peer_p50
    );
    println!(
        "| enqueue-to-start p99 (ms) | {:.2} | {:.2} | {:.2}× | ≤ 1× |",
        measured.p99_ms,
        peer_p99,
        measured.p99_ms / peer_p99
    );
    println!(
        "| lost leases, all rounds | {} | | | 0 |",
        measured.lost_leases
    );
    println!(
        "| task runs attempted more than once | {} | | | 0 |",
        measured.repeated
    );
    println!(
        "| peak memory of the process (MiB) | {:.0} | | | |",
        measured.peak_rss_mib
    );
    println!("(graphile-worker {version}, localQueue 100, completeJobBatchDelay 0)");
    Ok(measured.per_second)
}
