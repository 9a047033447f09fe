//! Benchmark fixture: workflow `noop` (task `noop` returns `{}` at once, whatever the input) and
//! workflow `compute` (task `compute`, input `{"n": u64}`, counts the primes below `n` by trial
//! division and returns `{"primes": count}`: deterministic, CPU-bound, no host calls).

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

/// The module: two one-task workflows.
fn module() -> Module {
    Module::new()
        .workflow(Workflow::new("noop").task(Task::new("noop", noop)))
        .workflow(Workflow::new("compute").task(Task::new("compute", compute)))
}

hatchery_sdk::export!(module);
