//! Test fixture: secrets as tasks see them. Workflows `secret-reader` and `secret-outsider`
//! run the same two tasks (only one of them is let read the secret): `leak` reads env var
//! `name` and prints it, logs it and returns it — the host must redact all three; `call` GETs
//! `url` with `Authorization: Bearer {{secret:<name>}}`, a placeholder the host fills in, and
//! returns the status.

use hatchery_sdk::http::{Client, OrTaskError};
use hatchery_sdk::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

/// The input of both tasks.
#[derive(Deserialize)]
struct Input {
    name: String,
    #[serde(default)]
    url: String,
}

/// Returns, prints and logs the secret's value (or `null` without it).
fn leak(input: Input, ctx: &Context) -> Result<Value, TaskError> {
    let value = std::env::var(&input.name).ok();
    if let Some(value) = &value {
        println!("the secret is {value}");
        ctx.log(format!("logged: {value}"));
    }
    Ok(json!({ "value": value }))
}

/// Sends the secret in a header without reading it.
fn call(input: Input, _ctx: &Context) -> Result<Value, TaskError> {
    let response = Client::new()
        .get(&input.url)
        .header(
            "authorization",
            format!("Bearer {{{{secret:{}}}}}", input.name),
        )
        .send()
        .or_task_error()?;
    Ok(json!({ "status": response.status_code() }))
}

fn workflow(name: &str) -> Workflow {
    Workflow::new(name)
        .task(Task::new("leak", leak))
        .task(Task::new("call", call))
}

/// The module: two workflows with the same tasks.
fn module() -> Module {
    Module::new()
        .workflow(workflow("secret-reader"))
        .workflow(workflow("secret-outsider"))
}

hatchery_sdk::export!(module);
