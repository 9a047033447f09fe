//! Why a task attempt failed, precisely: every way a guest can fail maps to one variant.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The failure of one task attempt. Its `Display` is the message users see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum TaskFailure {
    /// The task returned a retryable error.
    Failed(String),
    /// The task returned an error that must not be retried.
    Fatal(String),
    /// The guest panicked; the message its panic hook printed.
    Panicked(String),
    /// The attempt executed its whole fuel budget.
    OutOfFuel {
        /// The budget, in instructions.
        budget: u64,
    },
    /// The guest tried to grow its memory past the limit.
    MemoryLimit {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The attempt ran past its wall-clock timeout.
    TimedOut {
        /// The timeout, in milliseconds.
        after_ms: u64,
    },
    /// The attempt was cancelled.
    Cancelled,
    /// The guest trapped.
    Trap(String),
    /// The output is larger than allowed.
    OutputTooLarge {
        /// Bytes returned.
        size: u64,
        /// Bytes allowed.
        limit: u64,
    },
    /// The output is not JSON.
    InvalidOutput(String),
    /// The host could not run the attempt (instantiation, a failing import).
    Host(String),
}

impl TaskFailure {
    /// Whether the task's retry policy applies; fatal errors and cancellation end the task.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Fatal(_) | Self::Cancelled)
    }

    /// A short stable code for storage and the API.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Failed(_) => "failed",
            Self::Fatal(_) => "fatal",
            Self::Panicked(_) => "panicked",
            Self::OutOfFuel { .. } => "out_of_fuel",
            Self::MemoryLimit { .. } => "memory_limit",
            Self::TimedOut { .. } => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Trap(_) => "trap",
            Self::OutputTooLarge { .. } => "output_too_large",
            Self::InvalidOutput(_) => "invalid_output",
            Self::Host(_) => "host",
        }
    }

    /// The same failure with every secret value in its text redacted.
    pub fn redacted(self, secrets: &crate::secrets::TaskSecrets) -> Self {
        match self {
            Self::Failed(m) => Self::Failed(secrets.redact(&m)),
            Self::Fatal(m) => Self::Fatal(secrets.redact(&m)),
            Self::Panicked(m) => Self::Panicked(secrets.redact(&m)),
            Self::Trap(m) => Self::Trap(secrets.redact(&m)),
            Self::InvalidOutput(m) => Self::InvalidOutput(secrets.redact(&m)),
            Self::Host(m) => Self::Host(secrets.redact(&m)),
            other => other,
        }
    }

    /// A timeout failure after `timeout`.
    pub fn timed_out(timeout: Duration) -> Self {
        Self::TimedOut {
            after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// `1500` → `1.5s`, `30000` → `30s`, `20` → `20ms`.
pub fn format_millis(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{}s", ms as f64 / 1_000.0)
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(message) | Self::Fatal(message) => f.write_str(message),
            Self::Panicked(message) => write!(f, "guest panicked: {message}"),
            Self::OutOfFuel { budget } => write!(
                f,
                "out of fuel: used all {budget} instructions of its budget"
            ),
            Self::MemoryLimit { limit } => write!(f, "memory limit of {limit} bytes exceeded"),
            Self::TimedOut { after_ms } => {
                write!(f, "timed out after {}", format_millis(*after_ms))
            }
            Self::Cancelled => f.write_str("cancelled"),
            Self::Trap(message) => write!(f, "wasm trap: {message}"),
            Self::OutputTooLarge { size, limit } => {
                write!(
                    f,
                    "output of {size} bytes exceeds the limit of {limit} bytes"
                )
            }
            Self::InvalidOutput(e) => write!(f, "output is not valid JSON: {e}"),
            Self::Host(message) => write!(f, "host error: {message}"),
        }
    }
}

impl std::error::Error for TaskFailure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_precise() {
        assert_eq!(
            TaskFailure::timed_out(Duration::from_secs(30)).to_string(),
            "timed out after 30s"
        );
        assert_eq!(
            TaskFailure::timed_out(Duration::from_millis(250)).to_string(),
            "timed out after 250ms"
        );
        assert_eq!(
            TaskFailure::MemoryLimit { limit: 1024 }.to_string(),
            "memory limit of 1024 bytes exceeded"
        );
        assert!(!TaskFailure::Fatal("x".into()).is_retryable());
        assert!(TaskFailure::OutOfFuel { budget: 1 }.is_retryable());
    }
}
