//! Test fixture for flow control: workflows under each concurrency strategy, several rules at
//! once, a task-level rule, and static and dynamic rate limits. Every task reports when it ran
//! (`{"start_ms", "end_ms"}`, wall clock), so tests can check overlaps from the guest's side.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hatchery_sdk::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

/// The input every task reads: how long to hold its slot.
#[derive(Deserialize)]
struct Hold {
    #[serde(default)]
    ms: u64,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Sleeps `ms` milliseconds; returns when it started and ended.
fn hold(input: Hold, _ctx: &Context) -> Result<Value, TaskError> {
    let start_ms = now_ms();
    std::thread::sleep(Duration::from_millis(input.ms));
    Ok(json!({ "start_ms": start_ms, "end_ms": now_ms() }))
}

/// Fails its first attempt (a retry follows after a backoff), then holds like `hold`.
fn flaky(input: Hold, ctx: &Context) -> Result<Value, TaskError> {
    if ctx.attempt() == 1 {
        return Err(TaskError::failed("the first attempt fails"));
    }
    hold(input, ctx)
}

fn per_user(max_runs: u32, strategy: ConcurrencyStrategy) -> Concurrency {
    Concurrency::new("input.user_id", max_runs, strategy)
}

/// The module.
fn module() -> Module {
    use ConcurrencyStrategy::{CancelInProgress, CancelNewest, GroupRoundRobin};
    let single = |name: &str, rule: Concurrency| {
        Workflow::new(name)
            .concurrency(rule)
            .task(Task::new("hold", hold))
    };
    Module::new()
        .slots(64)
        // No rule at all: only a tenant's quotas hold it back.
        .workflow(Workflow::new("plain").task(Task::new("hold", hold)))
        .workflow(single("per-user", per_user(1, GroupRoundRobin)))
        .workflow(single("per-user-2", per_user(2, GroupRoundRobin)))
        .workflow(single("newest", per_user(1, CancelNewest)))
        .workflow(single("in-progress", per_user(1, CancelInProgress)))
        .workflow(
            Workflow::new("pair")
                .concurrency(Concurrency::new("input.a", 1, GroupRoundRobin))
                .concurrency(Concurrency::new(
                    "additional_metadata.b",
                    1,
                    GroupRoundRobin,
                ))
                .task(Task::new("hold", hold)),
        )
        .workflow(
            // The run holds its place between its two tasks.
            Workflow::new("two-steps")
                .concurrency(per_user(1, GroupRoundRobin))
                .task(Task::new("first", hold))
                .task(Task::new("second", hold).parent("first")),
        )
        .workflow(
            // Only `call` is limited; `prep` runs freely.
            Workflow::new("staged").task(Task::new("prep", hold)).task(
                Task::new("call", hold)
                    .parent("prep")
                    .concurrency(per_user(1, GroupRoundRobin)),
            ),
        )
        .workflow(
            // The run keeps its place through its task's retry backoff.
            Workflow::new("retry-held")
                .concurrency(per_user(1, GroupRoundRobin))
                .task(Task::new("flaky", flaky).retries(1).backoff(1.0, 1)),
        )
        .workflow(
            Workflow::new("metered")
                .task(Task::new("hold", hold).rate_limit(RateLimit::static_key("api", 1))),
        )
        .workflow(
            Workflow::new("on-user")
                .on_event("user:*")
                .task(Task::new("hold", hold)),
        )
        .workflow(
            Workflow::new("on-order")
                .on_event("order:created")
                .task(Task::new("hold", hold)),
        )
        .workflow(
            // The same workflow as the durable fixture's, with other crons: deploying this
            // module replaces that one's.
            Workflow::new("ticker")
                .on_cron("0 12 * * *")
                .on_cron("30 6 * * 1-5")
                .task(Task::new("hold", hold)),
        )
        .workflow(
            Workflow::new("greedy")
                .task(Task::new("hold", hold).rate_limit(RateLimit::static_key("api", 1_000_000))),
        )
        .workflow(
            Workflow::new("per-tenant").task(Task::new("hold", hold).rate_limit(
                RateLimit::dynamic("input.tenant", 1, 5, RateLimitDuration::Second),
            )),
        )
}

hatchery_sdk::export!(module);
