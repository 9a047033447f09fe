//! Flow control: workflow `sync-user` copies a user's records from a slow CRM, one run per
//! user at a time (`input.user_id`, round robin between users), and its `fetch` task calls the
//! CRM's API under the static rate limit `crm-api`: 5 calls a second across every node.
//!
//! Run with:
//!
//! ```text
//! hatchery deploy target/wasm32-wasip2/guest/flow.wasm
//! for user in ada ada ada bob; do hatchery run sync-user --input "{\"user_id\":\"$user\"}"; done
//! hatchery runs show <run-id>        # a queued task says what it waits for
//! hatchery rate-limits list          # crm-api: 5 per second, and its use now
//! hatchery rate-limits set crm-api 20 second
//! ```

use hatchery_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The input of a run.
#[derive(Deserialize)]
struct User {
    user_id: String,
}

/// What `fetch` hands to `store`.
#[derive(Serialize, Deserialize)]
struct Records {
    user_id: String,
    records: Vec<String>,
}

/// Calls the CRM (one unit of `crm-api`) for the user's records.
fn fetch(user: User, ctx: &Context) -> Result<Records, TaskError> {
    ctx.log(format!("fetching the records of {}", user.user_id));
    let records = (1..=3).map(|n| format!("{}-{n}", user.user_id)).collect();
    Ok(Records {
        user_id: user.user_id,
        records,
    })
}

/// Stores what `fetch` returned; the run's output.
fn store(_input: Value, ctx: &Context) -> Result<Value, TaskError> {
    let fetched: Records = ctx.parent_output("fetch")?;
    Ok(json!({ "user_id": fetched.user_id, "stored": fetched.records.len() }))
}

/// The module.
fn module() -> Module {
    Module::new().workflow(
        Workflow::new("sync-user")
            .description("Copies one user's records; one run per user at a time")
            .concurrency(Concurrency::new(
                "input.user_id",
                1,
                ConcurrencyStrategy::GroupRoundRobin,
            ))
            .task(Task::new("fetch", fetch).rate_limit(
                RateLimit::static_key("crm-api", 1).limit(5, RateLimitDuration::Second),
            ))
            .task(Task::new("store", store).parent("fetch")),
    )
}

hatchery_sdk::export!(module);
