//! Tasks in Rust, Python and JavaScript side by side: the same no-op task's run-and-wait round
//! trip over HTTP, interleaved; the sandbox's cost per instance (instantiate + run, linear
//! memory, fuel of the same prime-counting loop); and how long a freshly uploaded Python module
//! takes to its first run, on the node that took the upload and on another node.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hatchery::runtime::{Attempt, Limits};
use hatchery::scheduler::{Node, NodeConfig};
use sqlx::{Connection, PgConnection};

use crate::http::{Server, serve};
use crate::scratch::{self, drop_database, percentile, recreate, with_database};

/// Options of the languages benchmark.
#[derive(Debug, clap::Args)]
pub struct LanguagesArgs {
    /// A database URL of the server to use (a database is created and dropped on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Run-and-wait calls per language, interleaved.
    #[arg(long, default_value_t = 200)]
    round_trips: usize,
    /// Instantiate + run samples per language.
    #[arg(long, default_value_t = 200)]
    instances: usize,
}

/// (language, component, no-op workflow, compute workflow).
const LANGUAGES: [(&str, &str, &str, &str); 3] = [
    ("Rust", hatchery_guests::BENCH, "noop", "compute"),
    (
        "Python",
        hatchery_guests::PYTHON_BENCH,
        "py-noop",
        "py-compute",
    ),
    (
        "JavaScript",
        hatchery_guests::JS_BENCH,
        "js-noop",
        "js-compute",
    ),
];

struct Sandbox {
    compile_ms: f64,
    instantiate_run_us: f64,
    memory_mib: f64,
    compute_fuel: u64,
    compute_ms: f64,
}

/// Compile time, instantiate + run of the no-op, memory and the prime loop's fuel.
async fn sandbox(
    args: &LanguagesArgs,
    guest: &str,
    noop: &str,
    compute: &str,
) -> anyhow::Result<Sandbox> {
    let runtime = scratch::runtime()?;
    let started = Instant::now();
    let module = runtime
        .load(&hatchery_guests::read(guest))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut samples = Vec::with_capacity(args.instances);
    let mut memory = 0;
    for _ in 0..args.instances + 10 {
        let report = runtime
            .execute(&module, Attempt::new(noop, "noop", "{}"))
            .await;
        report.outcome.map_err(|e| anyhow::anyhow!("{noop}: {e}"))?;
        samples.push(report.elapsed.as_secs_f64() * 1e6);
        memory = report.memory_bytes;
    }
    samples.drain(..10);
    samples.sort_by(f64::total_cmp);
    let attempt = Attempt {
        limits: Limits {
            fuel: Some(u64::MAX / 2),
            ..Limits::default()
        },
        ..Attempt::new(compute, "compute", r#"{"n":100000}"#)
    };
    let report = runtime.execute(&module, attempt).await;
    let output = report
        .outcome
        .map_err(|e| anyhow::anyhow!("{compute}: {e}"))?;
    if !output.contains("9592") {
        bail!("{compute} counted wrong: {output}");
    }
    Ok(Sandbox {
        compile_ms,
        instantiate_run_us: percentile(&samples, 0.5),
        memory_mib: memory as f64 / (1 << 20) as f64,
        compute_fuel: report.fuel_used.unwrap_or(0),
        compute_ms: report.elapsed.as_secs_f64() * 1e3,
    })
}

async fn deploy(server: &Server, guest: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = server
        .client
        .post(format!("{}/api/v1/modules", server.url))
        .bearer_auth(&server.token)
        .header("content-type", "application/wasm")
        .body(hatchery_guests::read(guest))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("deploy failed: {}", response.text().await?);
    }
    Ok(started.elapsed())
}

async fn run_and_wait(server: &Server, workflow: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = server
        .client
        .post(format!(
            "{}/api/v1/workflows/{workflow}/runs?wait=60",
            server.url
        ))
        .bearer_auth(&server.token)
        .json(&serde_json::json!({"input": {}}))
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    if status != reqwest::StatusCode::OK || body["status"] != "succeeded" {
        bail!("{workflow}: run-and-wait did not finish: {status} {body}");
    }
    Ok(started.elapsed())
}

async fn stop(server: Server) {
    let _ = server.shutdown.send(());
    if let Some(node) = server.node {
        node.shutdown().await;
    }
}

/// Runs the benchmark and prints its tables.
pub async fn run(args: LanguagesArgs) -> anyhow::Result<()> {
    let mut sandboxes = Vec::new();
    for (language, guest, noop, compute) in LANGUAGES {
        eprintln!("sandbox: {language}");
        sandboxes.push(sandbox(&args, guest, noop, compute).await?);
    }
    let sandboxes: [Sandbox; 3] = sandboxes.try_into().ok().context("three languages")?;

    let mut admin = PgConnection::connect(&args.database_url).await?;
    let database = "hatchery_bench_languages";

    // Round trips: one node with all three modules, the languages interleaved.
    recreate(&mut admin, database).await?;
    let url = with_database(&args.database_url, database);
    let server = serve(&url, &scratch::runtime()?, true).await?;
    for (_, guest, _, _) in &LANGUAGES[1..] {
        deploy(&server, guest).await?;
    }
    let mut trips: [Vec<f64>; 3] = Default::default();
    for i in 0..args.round_trips + 10 {
        for (n, (_, _, noop, _)) in LANGUAGES.iter().enumerate() {
            let elapsed = run_and_wait(&server, noop).await?;
            if i >= 10 {
                trips[n].push(elapsed.as_secs_f64() * 1e3);
            }
        }
    }
    trips.iter_mut().for_each(|t| t.sort_by(f64::total_cmp));
    stop(server).await;

    // A fresh Python module, on the node that took the upload.
    eprintln!("first run: on the node that took the upload");
    recreate(&mut admin, database).await?;
    let server = serve(&url, &scratch::runtime()?, true).await?;
    let upload_here = deploy(&server, hatchery_guests::PYTHON_BENCH).await?;
    let first_here = run_and_wait(&server, "py-noop").await?;
    stop(server).await;

    // The same, with the upload taken by an API-only server and the run by another node,
    // which hears of the module at commit: without a key it compiles it in the background,
    // with the fleet's key it loads the artifact the uploading node sealed.
    let mut elsewhere = Vec::new();
    for key in [None, Some("the benchmark fleet's secret, long enough")] {
        eprintln!("first run: on another node, key: {}", key.is_some());
        recreate(&mut admin, database).await?;
        let keyed = || -> anyhow::Result<hatchery::runtime::Runtime> {
            Ok(hatchery::runtime::Runtime::new(
                hatchery::runtime::RuntimeConfig {
                    engine: hatchery::runtime::EngineConfig::with_instances(64),
                    artifact_key: key.map(hatchery::runtime::ArtifactKey::derive),
                    ..hatchery::runtime::RuntimeConfig::default()
                },
            )?)
        };
        let server = serve(&url, &keyed()?, false).await?;
        let other_runtime = keyed()?;
        let other = Node::start(
            hatchery::db::Db::connect(&url, 8).await?,
            other_runtime.clone(),
            NodeConfig {
                capacity: 16,
                default_slots: 16,
                ..NodeConfig::default()
            },
        )
        .await?;
        let upload = deploy(&server, hatchery_guests::PYTHON_BENCH).await?;
        let first = run_and_wait(&server, "py-noop").await?;
        let second = run_and_wait(&server, "py-noop").await?;
        let compiles = other_runtime.compile_count();
        stop(server).await;
        other.shutdown().await;
        elsewhere.push((key.is_some(), upload, first, second, compiles));
    }
    drop_database(&mut admin, database).await?;

    println!(
        "languages benchmark: the same tasks in Rust, Python and JavaScript (componentize-py 0.25.1, componentize-js 0.23.0)"
    );
    println!("| measure | Rust | Python | JavaScript |\n| --- | --- | --- | --- |");
    let row = |name: &str, values: [String; 3]| {
        println!("| {name} | {} | {} | {} |", values[0], values[1], values[2]);
    };
    row(
        "compile at upload (ms)",
        sandboxes.each_ref().map(|s| format!("{:.0}", s.compile_ms)),
    );
    row(
        "no-op instantiate + run, median (µs)",
        sandboxes
            .each_ref()
            .map(|s| format!("{:.0}", s.instantiate_run_us)),
    );
    row(
        "linear memory per instance (MiB)",
        sandboxes.each_ref().map(|s| format!("{:.1}", s.memory_mib)),
    );
    row(
        "primes below 100,000: fuel",
        sandboxes
            .each_ref()
            .map(|s| format!("{:.2e}", s.compute_fuel as f64)),
    );
    row(
        "primes below 100,000: time (ms)",
        sandboxes.each_ref().map(|s| format!("{:.0}", s.compute_ms)),
    );
    row(
        "run-and-wait over HTTP, p50 (ms)",
        trips
            .each_ref()
            .map(|t| format!("{:.2}", percentile(t, 0.5))),
    );
    row(
        "run-and-wait over HTTP, p99 (ms)",
        trips
            .each_ref()
            .map(|t| format!("{:.2}", percentile(t, 0.99))),
    );
    println!();
    println!(
        "| fresh Python module | upload (s) | first run-and-wait after it (ms) | second (ms) |"
    );
    println!("| --- | --- | --- | --- |");
    println!(
        "| on the node that took the upload | {:.2} | {:.1} | |",
        upload_here.as_secs_f64(),
        first_here.as_secs_f64() * 1e3
    );
    for (keyed, upload, first, second, compiles) in elsewhere {
        let how = if keyed {
            "with the fleet's key"
        } else {
            "without a key"
        };
        println!(
            "| on another node, {how} (it compiled {compiles} modules) | {:.2} | {:.1} | {:.1} |",
            upload.as_secs_f64(),
            first.as_secs_f64() * 1e3,
            second.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
