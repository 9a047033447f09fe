//! The plans benchmark: how the hot statements (and the API's reads of a tenant's runs, as
//! the dashboard pages through them) execute as `task_runs` grows from 10⁴ to 10⁷ rows, with
//! statistics that are stale (last analyzed at the previous size, or never) and fresh. Each
//! statement's cost should stay flat: O(batch), not O(table).

use hatchery::db::DEFAULT_TENANT;
use hatchery::db::plans::{
    Plan, backlog_analyze, backlog_fill, hot_statement_plans, run_list_plans, task_runs_count,
};
use sqlx::{Connection, PgConnection};

use crate::scratch::{drop_database, recreate, with_database};

/// Options of the plans benchmark.
#[derive(Debug, clap::Args)]
pub struct PlansArgs {
    /// A database URL of the server to use (a database is created and dropped on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Table sizes (task runs) to measure at, ascending.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000_i64, 1_000_000, 10_000_000])]
    sizes: Vec<i64>,
    /// Task runs claimed and completed per statement.
    #[arg(long, default_value_t = 100)]
    batch: i64,
    /// Print every plan in full, not only the summary.
    #[arg(long)]
    full: bool,
    /// Keep the database afterwards (for psql).
    #[arg(long)]
    keep: bool,
}

fn top_node(plan: &Plan) -> String {
    // The first node line that scans a table says how rows are found.
    plan.lines
        .iter()
        .find(|line| line.contains(" Scan ") || line.contains(" Scan on "))
        .map(|line| {
            let line = line.trim().trim_start_matches("->").trim();
            line.split("  (").next().unwrap_or(line).to_owned()
        })
        .unwrap_or_default()
}

/// Runs the benchmark and prints its table.
pub async fn run(args: PlansArgs) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&args.database_url).await?;
    let database = "hatchery_bench_plans";
    recreate(&mut admin, database).await?;
    let url = with_database(&args.database_url, database);
    let db = hatchery::db::Db::connect(&url, 2).await?;
    db.migrate().await?;
    let mut conn = db.pool.acquire().await?;
    println!(
        "plans of the hot statements (batch {}); ms and shared buffers per statement",
        args.batch
    );
    println!("| task runs | statistics | statement | ms | buffers | first scan |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut full = String::new();
    for &size in &args.sizes {
        let have = task_runs_count(&mut conn).await?;
        let runs = (size - have).max(0) / 3;
        let started = std::time::Instant::now();
        // In chunks, so one statement's memory stays small.
        let mut left = runs;
        while left > 0 {
            let chunk = left.min(500_000);
            backlog_fill(&mut conn, DEFAULT_TENANT, chunk).await?;
            left -= chunk;
        }
        let rows = task_runs_count(&mut conn).await?;
        eprintln!(
            "filled to {rows} task runs in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        for stats in ["stale", "fresh"] {
            if stats == "fresh" {
                backlog_analyze(&mut conn).await?;
            }
            let mut plans = hot_statement_plans(&mut conn, args.batch).await?;
            plans.extend(run_list_plans(&mut conn, DEFAULT_TENANT, "chain").await?);
            for plan in &plans {
                println!(
                    "| {rows} | {stats} | {} | {:.2} | {} | {} |",
                    plan.statement,
                    plan.execution_ms().unwrap_or(f64::NAN),
                    plan.buffers(),
                    top_node(plan)
                );
                full.push_str(&format!(
                    "\n### {} — {rows} task runs, {stats} statistics\n\n```\n{}\n```\n",
                    plan.statement,
                    plan.lines.join("\n")
                ));
            }
        }
    }
    if args.full {
        println!("{full}");
    }
    drop(conn);
    db.pool.close().await;
    db.lossy.close().await;
    if !args.keep {
        drop_database(&mut admin, database).await?;
    }
    Ok(())
}
