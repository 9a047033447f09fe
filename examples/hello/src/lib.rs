//! The smallest task module: workflow `hello` with one typed task, `greet`, that turns
//! `{"name": "Ada"}` into `{"greeting": "Hello, Ada!"}`.
//!
//! Run with:
//!
//! ```text
//! cargo build --profile guest --target wasm32-wasip2 -p hello
//! cargo run -p hatchery -- exec target/wasm32-wasip2/guest/hello.wasm hello --input '{"name":"Ada"}'
//! ```

use hatchery_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// The input of `greet`.
#[derive(Deserialize)]
struct Person {
    name: String,
}

/// The output of `greet`.
#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

/// Greets a person by name.
fn greet(person: Person, ctx: &Context) -> Result<Greeting, TaskError> {
    ctx.log(format!("greeting {}", person.name));
    Ok(Greeting {
        greeting: format!("Hello, {}!", person.name),
    })
}

/// The module: one workflow, one task.
fn module() -> Module {
    Module::new().workflow(
        Workflow::new("hello")
            .description("Greets a person by name")
            .task(Task::new("greet", greet)),
    )
}

hatchery_sdk::export!(module);
