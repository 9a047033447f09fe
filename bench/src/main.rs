//! Hatchery's benchmarks: each compares configurations side by side in one run and prints
//! ratios, because this machine's absolute speed swings with its neighbours.
//!
//! Run with: `cargo run --release -p hatchery-bench -- runtime`

mod runtime;

use clap::{Parser, Subcommand};

/// Benchmarks of Hatchery.
#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Instantiate + run of a no-op task, and fuel metering on vs off on a compute-heavy task.
    Runtime(runtime::RuntimeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().bench {
        Bench::Runtime(args) => runtime::run(args).await,
    }
}
