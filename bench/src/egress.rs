//! The cost of a task's outbound HTTP: a local server on loopback, one allowed GET made by the
//! bench process itself (the request alone) and by a task (`examples/http-fetch`, through the
//! sandbox's `wasi:http`, the allowlist check, the host's own resolution and connection),
//! interleaved; p50/p99 of each and their difference.

use std::sync::Arc;
use std::time::Instant;

use hatchery::egress::EgressPolicy;
use hatchery::runtime::Attempt;

use crate::scratch::{self, percentile};

/// Options of the egress benchmark.
#[derive(Debug, clap::Args)]
pub struct EgressArgs {
    /// Requests of each kind.
    #[arg(long, default_value_t = 500)]
    requests: usize,
}

/// Runs the benchmark and prints its table.
pub async fn run(args: EgressArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new().route(
        "/rates",
        axum::routing::get(|| async { r#"{"eur":1.08,"gbp":0.86}"# }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let url = format!("http://127.0.0.1:{port}/rates");

    let runtime = scratch::runtime()?;
    let module = runtime
        .load(&hatchery_guests::read(hatchery_guests::HTTP_FETCH))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pattern = serde_json::from_value(serde_json::json!(format!("127.0.0.1:{port}")))?;
    let policy = Arc::new(EgressPolicy {
        allow: vec![pattern],
        ceiling: vec![serde_json::from_value(serde_json::json!(format!(
            "127.0.0.1:{port}"
        )))?],
    });
    let input = serde_json::json!({ "url": url }).to_string();
    // A new connection per request, as the task makes one: the comparison is like for like.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;

    let (mut alone, mut task) = (Vec::new(), Vec::new());
    for i in 0..args.requests + 20 {
        let started = Instant::now();
        let body = client.get(&url).send().await?.text().await?;
        let request = started.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(body.contains("eur"), "unexpected body {body}");

        let attempt = Attempt {
            egress: policy.clone(),
            ..Attempt::new("http-fetch", "fetch", input.clone())
        };
        let started = Instant::now();
        let report = runtime.execute(&module, attempt).await;
        let attempt_ms = started.elapsed().as_secs_f64() * 1e3;
        let output = report.outcome.map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            output.contains("\"status\":200"),
            "unexpected output {output}"
        );
        if i >= 20 {
            alone.push(request);
            task.push(attempt_ms);
        }
    }
    alone.sort_by(f64::total_cmp);
    task.sort_by(f64::total_cmp);
    println!(
        "egress benchmark: {} GETs of a local JSON endpoint, each on a new connection, interleaved",
        args.requests
    );
    println!("| measure | p50 (ms) | p99 (ms) |\n| --- | --- | --- |");
    println!(
        "| the request alone (reqwest in the bench process) | {:.3} | {:.3} |",
        percentile(&alone, 0.5),
        percentile(&alone, 0.99)
    );
    println!(
        "| a task making it (`http-fetch`: instantiate, wasi:http, allowlist, resolve, connect) | {:.3} | {:.3} |",
        percentile(&task, 0.5),
        percentile(&task, 0.99)
    );
    println!(
        "| overhead of the sandbox's HTTP path (p50 difference) | {:.3} | |",
        percentile(&task, 0.5) - percentile(&alone, 0.5)
    );
    Ok(())
}
