//! Hatchery's benchmarks: each compares configurations side by side in one run and prints
//! ratios, because this machine's absolute speed swings with its neighbours.
//!
//! Run with: `cargo run --release -p hatchery-bench -- runtime` (or `-- queue`)

mod egress;
mod fairness;
mod flow;
mod http;
mod idle;
mod languages;
mod plans;
mod queue;
mod retention;
mod runtime;
mod scratch;
mod soak;
mod tenants;
mod triggers;
mod workloads;

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
    /// Throughput, commits per task and enqueue-to-start latency, against graphile-worker.
    Queue(queue::QueueArgs),
    /// Run-and-wait round trips and concurrent durable enqueues over the HTTP API.
    Http(http::HttpArgs),
    /// CPU and database load of an idle node with 100 modules loaded.
    Idle(idle::IdleArgs),
    /// Plans of the hot statements at 10⁴ to 10⁷ task runs, statistics stale and fresh.
    Plans(plans::PlansArgs),
    /// Single-task runs against a three-task DAG, and a fan-out of thousands of children.
    Workloads(workloads::WorkloadsArgs),
    /// Event-to-start latency, runs due the same second, claims beside a million future runs.
    Triggers(triggers::TriggersArgs),
    /// Concurrency rules and rate limits against no rule: drain speed, delivered rate, latency.
    Flow(flow::FlowArgs),
    /// One tenant's drain beside 0, 10,000 and 100,000 idle tenants.
    Tenants(tenants::TenantsArgs),
    /// Tenant B's round trip alone, under A's flood and under A's CPU-bound load; /healthz.
    Fairness(fairness::FairnessArgs),
    /// A task's outbound HTTP request against the same request made directly.
    Egress(egress::EgressArgs),
    /// The same tasks in Rust, Python and JavaScript: round trips, instances, first runs.
    Languages(languages::LanguagesArgs),
    /// A steady mix of single tasks, DAGs and fan-outs for many minutes: does the node keep up?
    Soak(soak::SoakArgs),
    /// The queue with the retention service deleting old history beside it, against without.
    Retention(retention::RetentionArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().bench {
        Bench::Runtime(args) => runtime::run(args).await,
        Bench::Queue(args) => queue::run(args).await,
        Bench::Http(args) => http::run(args).await,
        Bench::Idle(args) => idle::run(args).await,
        Bench::Plans(args) => plans::run(args).await,
        Bench::Workloads(args) => workloads::run(args).await,
        Bench::Soak(args) => soak::run(args).await,
        Bench::Retention(args) => retention::run(args).await,
        Bench::Flow(args) => flow::run(args).await,
        Bench::Triggers(args) => triggers::run(args).await,
        Bench::Languages(args) => languages::run(args).await,
        Bench::Egress(args) => egress::run(args).await,
        Bench::Tenants(args) => tenants::run(args).await,
        Bench::Fairness(args) => fairness::run(args).await,
    }
}
