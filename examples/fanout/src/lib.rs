//! Child runs: workflow `fanout`'s task `fan` spawns `count` runs of workflow `square` (all
//! first, so they run in parallel), then waits for each and returns
//! `{"sum": <sum of the squares of 1..=count>, "children": count}`. Workflow `square` is one
//! task, `square`: `{"n": 7}` → `{"square": 49}`.
//!
//! Run with:
//!
//! ```text
//! cargo build --profile guest --target wasm32-wasip2 -p fanout
//! cargo run -p hatchery -- exec target/wasm32-wasip2/guest/fanout.wasm fanout --input '{"count":10}'
//! ```

use hatchery_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// The input of `fan`.
#[derive(Deserialize)]
struct FanInput {
    count: u32,
}

/// The output of `fan`.
#[derive(Serialize)]
struct FanOutput {
    sum: u64,
    children: u32,
}

/// The input of `square`.
#[derive(Serialize, Deserialize)]
struct SquareInput {
    n: u64,
}

/// The output of `square`.
#[derive(Serialize, Deserialize)]
struct SquareOutput {
    square: u64,
}

/// Spawns one `square` child per number in `1..=count`, then sums their outputs.
fn fan(input: FanInput, ctx: &Context) -> Result<FanOutput, TaskError> {
    let children = (1..=u64::from(input.count))
        .map(|n| ctx.spawn("square", &SquareInput { n }))
        .collect::<Result<Vec<_>, _>>()?;
    ctx.log(format!("spawned {} children", children.len()));
    let mut sum = 0u64;
    for child in &children {
        let output: SquareOutput = child.wait()?;
        sum = sum.saturating_add(output.square);
    }
    Ok(FanOutput {
        sum,
        children: input.count,
    })
}

/// Squares a number (saturating at `u64::MAX`).
fn square(input: SquareInput, _ctx: &Context) -> Result<SquareOutput, TaskError> {
    Ok(SquareOutput {
        square: input.n.saturating_mul(input.n),
    })
}

/// The module: the parent workflow and the child workflow it spawns.
fn module() -> Module {
    Module::new()
        .workflow(
            Workflow::new("fanout")
                .description("Spawns `count` square children and sums their outputs")
                .task(Task::new("fan", fan)),
        )
        .workflow(
            Workflow::new("square")
                .description("Squares a number")
                .task(Task::new("square", square)),
        )
}

hatchery_sdk::export!(module);
