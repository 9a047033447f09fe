//! Test fixture: workflow `read` whose task `read` reads `/etc/passwd` with `std::fs`, so the
//! component imports `wasi:filesystem`; the host links it with no preopened directory, so the
//! read must fail inside the guest.

use hatchery_sdk::prelude::*;
use serde_json::{Value, json};

/// Reads `/etc/passwd` and returns its length in bytes.
fn read(_input: Value, _ctx: &Context) -> Result<Value, TaskError> {
    let contents = std::fs::read("/etc/passwd")?;
    Ok(json!({ "length": contents.len() }))
}

/// The module: one workflow, one task.
fn module() -> Module {
    Module::new().workflow(Workflow::new("read").task(Task::new("read", read)))
}

hatchery_sdk::export!(module);
