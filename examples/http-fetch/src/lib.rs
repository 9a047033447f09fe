//! Outbound HTTP: workflow `http-fetch`'s task `fetch` GETs `url` from its input and returns
//! `{"status": <code>, "bytes": <body length>, "body": <the body, if JSON>}`. With `"secret":
//! "NAME"` it sends `Authorization: Bearer <secret NAME>`, a placeholder the host fills in: the
//! task never sees the key. The request goes out only if the tenant's egress allowlist names the
//! host (`hatchery egress set <host>`); a refused request fails the task with the reason, and
//! every request is in the task's log.
//!
//! Run with:
//!
//! ```text
//! cargo build --profile guest --target wasm32-wasip2 -p http-fetch
//! cargo run -p hatchery -- exec target/wasm32-wasip2/guest/http_fetch.wasm http-fetch \
//!     --input '{"url":"http://127.0.0.1:8080/healthz"}' --allow-http 127.0.0.1:8080
//! ```

use hatchery_sdk::http::{Client, OrTaskError};
use hatchery_sdk::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

/// The input of `fetch`.
#[derive(Deserialize)]
struct Input {
    url: String,
    /// A secret to send as a bearer token.
    #[serde(default)]
    secret: Option<String>,
}

/// GETs `url`; a body that is JSON is returned as such.
fn fetch(input: Input, ctx: &Context) -> Result<Value, TaskError> {
    let mut request = Client::new().get(&input.url);
    if let Some(secret) = &input.secret {
        request = request.header("authorization", format!("Bearer {{{{secret:{secret}}}}}"));
    }
    let response = request.send().or_task_error()?;
    let status = response.status_code();
    let body = response.body().or_task_error()?;
    ctx.log(format!(
        "{} answered {status} with {} bytes",
        input.url,
        body.len()
    ));
    Ok(json!({
        "status": status,
        "bytes": body.len(),
        "body": serde_json::from_slice::<Value>(&body).ok(),
    }))
}

/// The module: one workflow, one task, retried twice (a network error is worth retrying).
fn module() -> Module {
    Module::new().workflow(
        Workflow::new("http-fetch")
            .description("GET a URL the tenant's egress allowlist names")
            .task(Task::new("fetch", fetch).retries(2)),
    )
}

hatchery_sdk::export!(module);
