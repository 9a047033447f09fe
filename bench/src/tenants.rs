//! The claim beside many tenants: the same drain of single-task runs of one tenant with 0,
//! 10,000 and 100,000 idle tenants in the table; then the same number of runs spread over 20
//! and 500 active tenants. One run; the ratio to the first is what the tenants cost.

use sqlx::{Connection, PgConnection};

use crate::scratch::{self, drop_database, recreate, with_database};
use crate::workloads::{drain, fresh};

/// Options of the tenants benchmark.
#[derive(Debug, clap::Args)]
pub struct TenantsArgs {
    /// A database URL of the server to use (a database is created and dropped on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Runs of `hello` drained per configuration.
    #[arg(long, default_value_t = 20_000)]
    runs: usize,
    /// Idle tenants in the table, per configuration.
    #[arg(long, value_delimiter = ',', default_value = "0,10000,100000")]
    idle: Vec<i64>,
    /// Active tenants the runs are spread over, per configuration (after the idle ones).
    #[arg(long, value_delimiter = ',', default_value = "20,500")]
    active: Vec<usize>,
    /// Task runs the node executes at once.
    #[arg(long, default_value_t = 10)]
    concurrency: u32,
}

/// Runs the benchmark and prints its table.
pub async fn run(args: TenantsArgs) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&args.database_url).await?;
    let database = "hatchery_bench_tenants";
    let url = with_database(&args.database_url, database);
    let runtime = scratch::runtime()?;
    let mut rates = Vec::new();
    for &idle in &args.idle {
        recreate(&mut admin, database).await?;
        let (db, node) = fresh(&url, &runtime, args.concurrency).await?;
        {
            let mut conn = db.pool.acquire().await?;
            hatchery::db::plans::idle_tenants_fill(&mut conn, idle).await?;
        }
        let seconds = drain(
            &db,
            &url,
            "hello",
            serde_json::json!({"name": "Ada"}),
            args.runs,
        )
        .await?;
        node.shutdown().await;
        db.pool.close().await;
        let rate = args.runs as f64 / seconds;
        eprintln!("{idle} idle tenants: {rate:.0} runs/s");
        rates.push((idle, rate));
    }
    let mut spread = Vec::new();
    for &tenants in &args.active {
        recreate(&mut admin, database).await?;
        let (db, node) = fresh(&url, &runtime, args.concurrency).await?;
        let seconds = drain_spread(&db, &url, &runtime, tenants, args.runs).await?;
        node.shutdown().await;
        db.pool.close().await;
        let rate = args.runs as f64 / seconds;
        eprintln!("{tenants} active tenants: {rate:.0} runs/s");
        spread.push((tenants, rate));
    }
    drop_database(&mut admin, database).await?;
    println!(
        "tenants benchmark: {} `hello` runs of one tenant drained by one node (concurrency {}), beside idle tenants",
        args.runs, args.concurrency
    );
    println!("| idle tenants in the table | runs/s | ÷ the first |\n| --- | --- | --- |");
    let first = rates.first().map_or(1.0, |r| r.1);
    for (idle, rate) in rates {
        println!("| {idle} | {rate:.0} | {:.2} |", rate / first);
    }
    println!("\n| runs spread over active tenants | runs/s | ÷ one tenant |\n| --- | --- | --- |");
    for (tenants, rate) in spread {
        println!("| {tenants} | {rate:.0} | {:.2} |", rate / first);
    }
    Ok(())
}

/// `runs` runs of `hello` over `tenants` tenants (each deploys it), enqueued 1,000 at a time
/// round robin while the node drains them; seconds until the last finished.
async fn drain_spread(
    db: &hatchery::db::Db,
    url: &str,
    runtime: &hatchery::runtime::Runtime,
    tenants: usize,
    runs: usize,
) -> anyhow::Result<f64> {
    use hatchery::db::{CHANNEL_RUN_FINISHED, parse_ids};
    use hatchery::scheduler::{RunRequest, deploy_module, start_runs};
    let hello = hatchery_guests::read(hatchery_guests::HELLO);
    let mut ids = Vec::with_capacity(tenants);
    for n in 0..tenants {
        let id = uuid::Uuid::now_v7();
        let mut conn = db.pool.acquire().await?;
        hatchery::db::tenant::tenant_create(&mut conn, id, &format!("active-{n}")).await?;
        drop(conn);
        deploy_module(db, runtime, id, &hello).await?;
        ids.push(id);
    }
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener.listen(CHANNEL_RUN_FINISHED).await?;
    let per_tenant = runs.div_ceil(tenants);
    let started = std::time::Instant::now();
    let mut enqueued = 0;
    // Batches of up to 1,000 runs, each of one tenant, round robin over the tenants.
    let batch = per_tenant.clamp(1, 1_000);
    while enqueued < runs {
        for id in &ids {
            let count = batch.min(runs - enqueued);
            if count == 0 {
                break;
            }
            let requests: Vec<RunRequest> = (0..count)
                .map(|_| RunRequest::new("hello", serde_json::json!({"name": "Ada"})))
                .collect();
            start_runs(db, *id, &requests).await?;
            enqueued += count;
        }
    }
    let mut finished = 0;
    while finished < runs {
        let notification =
            tokio::time::timeout(std::time::Duration::from_secs(60), listener.recv())
                .await
                .map_err(|_| anyhow::anyhow!("the node stopped finishing runs"))??;
        finished += parse_ids(notification.payload()).len();
    }
    Ok(started.elapsed().as_secs_f64())
}
