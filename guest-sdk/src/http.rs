//! Outbound HTTP from a task (feature `http`), through `wasi:http`, with a blocking client:
//! the maintained [`waki`](https://docs.rs/waki) crate, re-exported.
//!
//! The host sends a request only to hosts the tenant's egress allowlist names (and refuses
//! internal addresses unless a pattern names them); a refused request is an error whose text
//! says why, and every request is written to the task's log.
//!
//! ```no_run
//! use hatchery_sdk::http::{Client, OrTaskError};
//! # fn demo() -> Result<(), hatchery_sdk::TaskError> {
//! let response = Client::new().get("https://api.example.com/v1/rates").send().or_task_error()?;
//! let rates: serde_json::Value = response.json().or_task_error()?;
//! # Ok(()) }
//! ```

pub use waki::{Client, Method, RequestBuilder, Response};

use crate::TaskError;

/// Turns the client's errors into retryable task errors, for `?` in a task.
pub trait OrTaskError<T> {
    /// The value, or a `TaskError::failed` that says what went wrong.
    fn or_task_error(self) -> Result<T, TaskError>;
}

impl<T> OrTaskError<T> for anyhow::Result<T> {
    fn or_task_error(self) -> Result<T, TaskError> {
        self.map_err(|error| TaskError::failed(format!("HTTP request failed: {error:#}")))
    }
}
