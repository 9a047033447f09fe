//! The claim beside many tenants: the same drain of single-task runs of one tenant with 0,
//! 10,000 and 100,000 idle tenants in the table, in one run; the ratio to the first is what
//! the tenants cost.

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
    Ok(())
}
