//! Test fixture: tasks that misbehave on purpose, so the host's limits and error reporting can
//! be tested. One single-task workflow per behaviour, the workflow named like its task.

use std::hint::black_box;

use hatchery_sdk::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

/// Returns its input unchanged.
fn echo(input: Value, _ctx: &Context) -> Result<Value, TaskError> {
    Ok(input)
}

/// Burns CPU forever without calling the host, after one `push_event("spin:started")` that
/// tells a test the guest is running (its result is ignored).
fn spin(_input: Value, ctx: &Context) -> Result<Value, TaskError> {
    let _ = ctx.push_event("spin:started", &json!({}));
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocates and touches 1 MiB chunks forever, keeping all of them alive.
fn membomb(_input: Value, _ctx: &Context) -> Result<Value, TaskError> {
    const CHUNK: usize = 1 << 20;
    let mut chunks = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        for byte in chunk.iter_mut().step_by(4096) {
            *byte = 1;
        }
        chunks.push(black_box(chunk));
    }
}

/// Recurses without bound; the addition after the call keeps it from becoming a loop.
fn depth(n: u64) -> u64 {
    let frame = black_box([n; 8]);
    if black_box(n) == u64::MAX {
        return 0;
    }
    depth(frame[0] + 1) + black_box(frame[7])
}

/// Overflows the stack.
fn recurse(_input: Value, _ctx: &Context) -> Result<Value, TaskError> {
    Ok(json!(depth(0)))
}

/// Panics.
fn panic(_input: Value, _ctx: &Context) -> Result<Value, TaskError> {
    panic!("boom: the guest panicked on purpose")
}

/// Returns a JSON string of 2 MiB.
fn oversize(_input: Value, _ctx: &Context) -> Result<Value, TaskError> {
    Ok(Value::String("x".repeat(2 << 20)))
}

/// Fails in a way worth retrying.
fn fail(_input: Value, _ctx: &Context) -> Result<Value, TaskError> {
    Err(TaskError::failed("transient failure"))
}

/// Fails for good.
fn fatal(_input: Value, _ctx: &Context) -> Result<Value, TaskError> {
    Err(TaskError::fatal("permanent failure"))
}

/// Writes to stdout, stderr and the log import.
fn log(_input: Value, ctx: &Context) -> Result<Value, TaskError> {
    println!("to stdout");
    eprintln!("to stderr");
    ctx.log("via the log import");
    Ok(json!({}))
}

/// The input of `sleep`.
#[derive(Deserialize)]
struct Sleep {
    ms: u64,
}

/// Sleeps `ms` milliseconds (a blocking WASI clock wait).
fn sleep(input: Sleep, _ctx: &Context) -> Result<Value, TaskError> {
    std::thread::sleep(std::time::Duration::from_millis(input.ms));
    Ok(json!({}))
}

/// Spawns an `echo` child and reports the child id, or the error text.
fn spawn(_input: Value, ctx: &Context) -> Result<Value, TaskError> {
    Ok(match ctx.spawn("echo", &json!({})) {
        Ok(child) => json!({ "child": child.id() }),
        Err(error) => json!({ "error": error.to_string() }),
    })
}

/// One workflow per behaviour, each with one task of the same name.
fn module() -> Module {
    type Body = fn(Value, &Context) -> Result<Value, TaskError>;
    let single = |name: &str, task: Task| Workflow::new(name).task(task);
    let tasks: [(&str, Body); 10] = [
        ("echo", echo),
        ("spin", spin),
        ("membomb", membomb),
        ("recurse", recurse),
        ("panic", panic),
        ("oversize", oversize),
        ("fail", fail),
        ("fatal", fatal),
        ("log", log),
        ("spawn", spawn),
    ];
    let module = tasks
        .into_iter()
        .fold(Module::new(), |module, (name, body)| {
            module.workflow(single(name, Task::new(name, body)))
        });
    module.workflow(single("sleep", Task::new("sleep", sleep)))
}

hatchery_sdk::export!(module);
