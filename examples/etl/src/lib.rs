//! A three-task DAG: workflow `etl` runs `extract` → `transform` → `load`. Each task receives the
//! workflow run's input and reads its parent's output with `ctx.parent_output`; `transform`
//! retries twice with exponential backoff. Input: `{"rows": ["3,apple", "5,pear", ...]}` (each
//! row `quantity,item`; a small sample is used when `rows` is missing); output of `load`:
//! `{"loaded": <records kept>, "total": <sum of their quantities>}`.
//!
//! Run with:
//!
//! ```text
//! cargo build --profile guest --target wasm32-wasip2 -p etl
//! cargo run -p hatchery -- exec target/wasm32-wasip2/guest/etl.wasm etl --input '{"rows":["3,apple","5, Pear ","oops","0,fig"]}'
//! ```

use hatchery_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// The workflow run's input.
#[derive(Deserialize)]
struct Input {
    /// CSV-ish lines `quantity,item`.
    #[serde(default = "sample_rows")]
    rows: Vec<String>,
}

/// Rows used when the input has none.
fn sample_rows() -> Vec<String> {
    ["3,apple", "5,Pear", "not a row", "0,fig", "2, apple "]
        .map(String::from)
        .to_vec()
}

/// One parsed row.
#[derive(Serialize, Deserialize)]
struct Record {
    quantity: u64,
    item: String,
}

/// The output of `extract`: the rows that parsed, and how many did not.
#[derive(Serialize, Deserialize)]
struct Extracted {
    records: Vec<Record>,
    rejected: usize,
}

/// The output of `load`.
#[derive(Serialize)]
struct Loaded {
    loaded: usize,
    total: u64,
}

/// Parses each `quantity,item` row; rows that do not parse are counted, not fatal. No input at
/// all (`null`) means the sample rows too.
fn extract(input: Option<Input>, ctx: &Context) -> Result<Extracted, TaskError> {
    let rows = input.map_or_else(sample_rows, |input| input.rows);
    let mut records = Vec::new();
    for row in &rows {
        let parsed = row.split_once(',').and_then(|(quantity, item)| {
            Some(Record {
                quantity: quantity.trim().parse().ok()?,
                item: item.to_string(),
            })
        });
        records.extend(parsed);
    }
    let rejected = rows.len() - records.len();
    ctx.log(format!(
        "extracted {} rows, rejected {rejected}",
        records.len()
    ));
    Ok(Extracted { records, rejected })
}

/// Normalises item names (trimmed, lowercase) and drops empty items and zero quantities.
fn transform(_input: serde::de::IgnoredAny, ctx: &Context) -> Result<Vec<Record>, TaskError> {
    let extracted: Extracted = ctx.parent_output("extract")?;
    Ok(extracted
        .records
        .into_iter()
        .map(|record| Record {
            quantity: record.quantity,
            item: record.item.trim().to_lowercase(),
        })
        .filter(|record| record.quantity > 0 && !record.item.is_empty())
        .collect())
}

/// "Loads" the records: counts them and sums their quantities.
fn load(_input: serde::de::IgnoredAny, ctx: &Context) -> Result<Loaded, TaskError> {
    let records: Vec<Record> = ctx.parent_output("transform")?;
    let total = records.iter().map(|record| record.quantity).sum();
    ctx.log(format!("loaded {} records, {total} units", records.len()));
    Ok(Loaded {
        loaded: records.len(),
        total,
    })
}

/// The module: one workflow of three chained tasks.
fn module() -> Module {
    Module::new().workflow(
        Workflow::new("etl")
            .description("Parses rows, normalises them and loads the totals")
            .task(Task::new("extract", extract))
            .task(
                Task::new("transform", transform)
                    .parent("extract")
                    .retries(2)
                    .backoff(2.0, 30),
            )
            .task(Task::new("load", load).parent("transform")),
    )
}

hatchery_sdk::export!(module);
