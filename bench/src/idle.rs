//! The idle benchmark: what a node costs when there is nothing to do, with 100 modules
//! deployed and their workers loaded (each ran once).
//!
//! The modules are `hello` with 100 different custom sections appended (a custom section
//! changes the digest, not the behaviour). CPU is this process's user + system time from
//! `/proc/self/stat` over the idle window; the node's statements are counted from
//! `pg_stat_database.xact_commit`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use hatchery::db::{DEFAULT_TENANT, Db};
use hatchery::scheduler::{Node, NodeConfig, RunRequest, deploy_module, start_run, wait_for_run};
use hatchery::status::RunStatus;
use sqlx::{Connection, PgConnection};

use crate::scratch::{self, drop_database, recreate, with_database};

/// Options of the idle benchmark.
#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// A database URL of the server to use (a database is created and dropped on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Modules to deploy.
    #[arg(long, default_value_t = 100)]
    modules: usize,
    /// Length of the idle window, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

/// `bytes` with a custom section named `name` appended.
fn with_custom_section(bytes: &[u8], name: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// This process's CPU time so far (user + system).
fn cpu_time() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat
        .rsplit_once(')')
        .context("malformed /proc/self/stat")?
        .1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime) are 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

/// Runs the benchmark and prints its table.
pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&args.database_url).await?;
    let database = "hatchery_bench_idle";
    recreate(&mut admin, database).await?;
    let url = with_database(&args.database_url, database);
    let runtime = scratch::runtime()?;
    let db = Db::connect(&url, 8).await?;
    db.migrate().await?;
    let hello = hatchery_guests::read(hatchery_guests::HELLO);
    let node = Node::start(db.clone(), runtime.clone(), NodeConfig::default()).await?;
    for i in 0..args.modules {
        // Each variant declares the same workflow, so each deploy makes it a new version and
        // the run right after goes to that variant: its worker is loaded.
        let variant = with_custom_section(&hello, &format!("variant-{i}"));
        deploy_module(&db, &runtime, DEFAULT_TENANT, &variant).await?;
        let request = RunRequest::new("hello", serde_json::json!({"name": "idle"}));
        let id = start_run(&db, DEFAULT_TENANT, &request).await?;
        let view = wait_for_run(&db, DEFAULT_TENANT, id, Duration::from_secs(30))
            .await?
            .context("run")?;
        if view.run.status != RunStatus::Succeeded {
            bail!("the warm-up run did not succeed: {:?}", view.run.error);
        }
    }
    let loaded = node.workers().len();
    if loaded != args.modules {
        bail!("{loaded} workers loaded, expected {}", args.modules);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let commits_before: i64 =
        sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(database)
            .fetch_one(&mut admin)
            .await?;
    let cpu_before = cpu_time()?;
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let cpu = cpu_time()? - cpu_before;
    node.shutdown().await;
    db.pool.close().await;
    db.lossy.close().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let commits_after: i64 =
        sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(database)
            .fetch_one(&mut admin)
            .await?;
    drop_database(&mut admin, database).await?;

    let share = cpu.as_secs_f64() / args.seconds as f64 * 100.0;
    println!(
        "idle benchmark: a node with {} modules deployed, idle for {} s",
        args.modules, args.seconds
    );
    println!("| measure | value | target |");
    println!("| --- | --- | --- |");
    println!("| node CPU while idle | {share:.2} % of a core | < 2 % |");
    println!(
        "| database transactions while idle | {:.1} /s | |",
        (commits_after - commits_before) as f64 / args.seconds as f64
    );
    Ok(())
}
