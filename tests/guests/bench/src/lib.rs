//! Benchmark fixture: workflow `noop` (task `noop` returns `{}` at once, whatever the input) and
//! workflow `compute` (task `compute`, input `{"n": u64}`, counts the primes below `n` by trial
//! division and returns `{"primes": count}`: deterministic, CPU-bound, no host calls). Two
//! no-op workflows under flow control: `keyed` (one run per `input.k` at a time, round robin)
//! and `limited` (one unit of the static rate limit `bench`, whose limit the benchmark sets);
//! and `on-ping`, started by the event `ping`.

use hatchery_sdk::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

/// Does nothing.
fn noop(_input: serde::de::IgnoredAny, _ctx: &Context) -> Result<Value, TaskError> {
    Ok(json!({}))
}

/// The input of `compute`.
#[derive(Deserialize)]
struct Compute {
    n: u64,
}

/// Whether `k` is prime, by trial division.
fn is_prime(k: u64) -> bool {
    if k < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= k {
        if k.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Counts the primes below `n`.
fn compute(input: Compute, _ctx: &Context) -> Result<Value, TaskError> {
    let primes = (0..input.n).filter(|&k| is_prime(k)).count();
    Ok(json!({ "primes": primes }))
}

/// The module: one-task workflows.
fn module() -> Module {
    Module::new()
        .workflow(Workflow::new("noop").task(Task::new("noop", noop)))
        .workflow(
            Workflow::new("keyed")
                .concurrency(Concurrency::new(
                    "input.k",
                    1,
                    ConcurrencyStrategy::GroupRoundRobin,
                ))
                .task(Task::new("noop", noop)),
        )
        .workflow(
            Workflow::new("on-ping")
                .on_event("ping")
                .task(Task::new("noop", noop)),
        )
        .workflow(
            Workflow::new("limited")
                .task(Task::new("noop", noop).rate_limit(RateLimit::static_key("bench", 1))),
        )
        .workflow(Workflow::new("compute").task(Task::new("compute", compute)))
}

hatchery_sdk::export!(module);
