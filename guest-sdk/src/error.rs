//! How a task reports failure: retryable [`TaskError::Failed`] or final [`TaskError::Fatal`].
//! Never panics and never hides the message a task gave.

use std::fmt;

/// Why a task attempt failed.
///
/// `Failed` is worth retrying: the task's retry policy ([`Task::retries`](crate::Task::retries))
/// applies. `Fatal` means retrying cannot help: the task run fails at once and its remaining
/// retries are not used.
///
/// Any [`std::error::Error`] converts into `TaskError::Failed`, so `?` works on I/O, parse and
/// serde errors. That is also why `TaskError` does not implement `std::error::Error` itself.
///
/// ```
/// use hatchery_sdk::TaskError;
///
/// fn parse(text: &str) -> Result<u32, TaskError> {
///     if text.is_empty() {
///         return Err(TaskError::fatal("the input is empty"));
///     }
///     Ok(text.parse::<u32>()?) // a ParseIntError becomes TaskError::Failed
/// }
///
/// assert_eq!(parse("42"), Ok(42));
/// assert!(parse("").unwrap_err().is_fatal());
/// assert_eq!(parse("x").unwrap_err().to_string(), "invalid digit found in string");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    /// A failure worth retrying (the task's retry policy applies).
    Failed(String),
    /// A failure that retrying cannot fix: the task run fails at once.
    Fatal(String),
}

impl TaskError {
    /// A retryable failure with `message`.
    pub fn failed(message: impl fmt::Display) -> Self {
        Self::Failed(message.to_string())
    }

    /// A permanent failure with `message`: no retry.
    pub fn fatal(message: impl fmt::Display) -> Self {
        Self::Fatal(message.to_string())
    }

    /// The failure's message.
    pub fn message(&self) -> &str {
        match self {
            Self::Failed(message) | Self::Fatal(message) => message,
        }
    }

    /// Whether this failure is [`TaskError::Fatal`].
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Fatal(_))
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Any error is a retryable failure; its message lists the error's `source()` chain.
impl<E: std::error::Error> From<E> for TaskError {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::Failed(message)
    }
}

impl From<TaskError> for crate::wit::TaskError {
    fn from(error: TaskError) -> Self {
        match error {
            TaskError::Failed(message) => Self::Failed(message),
            TaskError::Fatal(message) => Self::Fatal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot read rows")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn errors_convert_to_failed_with_their_source_chain() {
        let error = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(
            TaskError::from(error),
            TaskError::Failed("cannot read rows: disk on fire".into())
        );
    }

    #[test]
    fn display_is_the_message() {
        assert_eq!(TaskError::fatal("no").to_string(), "no");
        assert!(!TaskError::failed(7).is_fatal());
    }
}
