//! The runtime benchmark: what one task attempt costs the host, and what fuel metering costs.
//!
//! - no-op: median and p99 of `Runtime::execute` of a task that returns at once: admission,
//!   a fresh store, pooled instantiation through `InstancePre`, the call, the log and output.
//! - fuel: the same compute-heavy task on an engine with fuel metering and one without,
//!   interleaved so both see the same machine, as a ratio of medians.

use std::time::{Duration, Instant};

use hatchery::runtime::{Attempt, EngineConfig, Limits, LoadedModule, Runtime, RuntimeConfig};

/// Options of the runtime benchmark.
#[derive(Debug, clap::Args)]
pub struct RuntimeArgs {
    /// No-op attempts to time.
    #[arg(long, default_value_t = 5_000)]
    noop_runs: usize,
    /// Rounds of the compute task per engine.
    #[arg(long, default_value_t = 9)]
    compute_rounds: usize,
    /// Work of one compute task (the `n` of its loop).
    #[arg(long, default_value_t = 200_000)]
    compute_n: u64,
}

fn runtime(fuel: bool) -> anyhow::Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig {
        engine: EngineConfig {
            fuel,
            max_instances: 64,
            ..EngineConfig::default()
        },
        ..RuntimeConfig::default()
    })?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let last = sorted.len().saturating_sub(1);
    let index = ((last as f64) * p).round() as usize;
    sorted.get(index.min(last)).copied().unwrap_or_default()
}

async fn time_attempt(
    runtime: &Runtime,
    module: &std::sync::Arc<LoadedModule>,
    workflow: &str,
    input: &str,
) -> anyhow::Result<Duration> {
    let attempt = Attempt {
        limits: Limits {
            fuel: None,
            ..Limits::default()
        },
        ..Attempt::new(workflow, workflow, input)
    };
    let started = Instant::now();
    let report = runtime.execute(module, attempt).await;
    let elapsed = started.elapsed();
    report
        .outcome
        .map_err(|e| anyhow::anyhow!("{workflow} failed: {e}"))?;
    Ok(elapsed)
}

/// Runs the benchmark and prints its table.
pub async fn run(args: RuntimeArgs) -> anyhow::Result<()> {
    let bytes = hatchery_guests::read(hatchery_guests::BENCH);
    let metered = runtime(true)?;
    let unmetered = runtime(false)?;
    let module = metered.load(&bytes).await?;
    let module_unmetered = unmetered.load(&bytes).await?;

    for _ in 0..200 {
        time_attempt(&metered, &module, "noop", "{}").await?;
    }
    let mut noop = Vec::with_capacity(args.noop_runs);
    for _ in 0..args.noop_runs {
        noop.push(time_attempt(&metered, &module, "noop", "{}").await?);
    }
    noop.sort();

    let input = format!(r#"{{"n":{}}}"#, args.compute_n);
    time_attempt(&metered, &module, "compute", &input).await?;
    time_attempt(&unmetered, &module_unmetered, "compute", &input).await?;
    let (mut with_fuel, mut without_fuel) = (Vec::new(), Vec::new());
    for _ in 0..args.compute_rounds {
        with_fuel.push(time_attempt(&metered, &module, "compute", &input).await?);
        without_fuel.push(time_attempt(&unmetered, &module_unmetered, "compute", &input).await?);
    }
    with_fuel.sort();
    without_fuel.sort();
    let (fuel_median, plain_median) = (percentile(&with_fuel, 0.5), percentile(&without_fuel, 0.5));

    println!(
        "runtime benchmark ({} no-op attempts, {} compute rounds of n = {})",
        args.noop_runs, args.compute_rounds, args.compute_n
    );
    println!("| measure | value | target |");
    println!("| --- | --- | --- |");
    println!(
        "| no-op instantiate + run, median | {:.1} µs | ≤ 50 µs |",
        percentile(&noop, 0.5).as_secs_f64() * 1e6
    );
    println!(
        "| no-op instantiate + run, p99 | {:.1} µs | |",
        percentile(&noop, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "| compute, fuel on, median | {:.1} ms | |",
        fuel_median.as_secs_f64() * 1e3
    );
    println!(
        "| compute, fuel off, median | {:.1} ms | |",
        plain_median.as_secs_f64() * 1e3
    );
    println!(
        "| fuel overhead (on / off) | {:.2}× | ≤ 1.3× |",
        fuel_median.as_secs_f64() / plain_median.as_secs_f64()
    );
    Ok(())
}
