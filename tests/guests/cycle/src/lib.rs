//! Test fixture: workflow `cyclic` whose tasks depend on each other in a cycle (a ← c, b ← a,
//! c ← b); the host must reject the module at upload.

use hatchery_sdk::prelude::*;
use serde_json::Value;

/// Never runs: no task of the cycle can start.
fn step(input: Value, _ctx: &Context) -> Result<Value, TaskError> {
    Ok(input)
}

/// The module: one workflow whose DAG is not acyclic.
fn module() -> Module {
    Module::new().workflow(
        Workflow::new("cyclic")
            .task(Task::new("a", step).parent("c"))
            .task(Task::new("b", step).parent("a"))
            .task(Task::new("c", step).parent("b")),
    )
}

hatchery_sdk::export!(module);
