//! The statuses of workflow runs and task runs, one type each from SQL to the CLI.
//!
//! The database stores them as the lowercase words of the `status` check constraints
//! (migrations `0001` and `0008`), the API and the CLI speak the same words in JSON, and every
//! comparison in Rust goes through these enums, so a misspelt status is a compile error and a new
//! one is a match the compiler points at. `db::tests::statuses_match_the_schema` proves the
//! words agree with the constraints.

use std::fmt;
use std::str::FromStr;

/// A word that names no status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {word:?}: expected one of {expected}")]
pub struct UnknownStatus {
    /// What was given.
    pub word: String,
    /// The words that would have been accepted, comma-separated.
    pub expected: String,
}

macro_rules! status_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $word:literal, finished = $finished:literal;)+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every status, in the order of a run's life.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The word stored in SQL and spoken in JSON.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                }
            }

            /// Whether nothing more will happen to a run in this status.
            pub const fn is_finished(self) -> bool {
                match self {
                    $(Self::$variant => $finished,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(word: &str) -> Result<Self, UnknownStatus> {
                match word {
                    $($word => Ok(Self::$variant),)+
                    _ => Err(UnknownStatus {
                        word: word.to_owned(),
                        expected: [$($word),+].join(", "),
                    }),
                }
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let word = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
                Ok(word.parse()?)
            }
        }
    };
}

status_enum! {
    /// Where a workflow run is: the status of the run as a whole.
    RunStatus {
        /// Waiting for its `run_at`.
        Scheduled = "scheduled", finished = false;
        /// Due, with no task started yet.
        Queued = "queued", finished = false;
        /// At least one task has started.
        Running = "running", finished = false;
        /// Every task succeeded.
        Succeeded = "succeeded", finished = true;
        /// A task failed for good.
        Failed = "failed", finished = true;
        /// Cancelled by a user, a timeout or a concurrency strategy.
        Cancelled = "cancelled", finished = true;
    }
}

status_enum! {
    /// Where one task of a run is.
    TaskStatus {
        /// Waiting for its parents (or for its run's `run_at`).
        Pending = "pending", finished = false;
        /// Ready to be claimed.
        Queued = "queued", finished = false;
        /// Leased to a node, executing.
        Running = "running", finished = false;
        /// Returned an output.
        Succeeded = "succeeded", finished = true;
        /// Failed with no retry left.
        Failed = "failed", finished = true;
        /// Cancelled, or skipped because a parent failed.
        Cancelled = "cancelled", finished = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_through_text_and_json() {
        for &status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
            let json = serde_json::to_string(&status).expect("serialises");
            assert_eq!(json, format!("\"{status}\""));
            assert_eq!(
                serde_json::from_str::<RunStatus>(&json).expect("parses"),
                status
            );
        }
        for &status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
            let json = serde_json::to_string(&status).expect("serialises");
            assert_eq!(
                serde_json::from_str::<TaskStatus>(&json).expect("parses"),
                status
            );
        }
    }

    #[test]
    fn an_unknown_word_names_the_accepted_ones() {
        let err = "finished".parse::<RunStatus>().expect_err("no such status");
        assert_eq!(err.word, "finished");
        assert_eq!(
            err.to_string(),
            "unknown status \"finished\": expected one of scheduled, queued, running, succeeded, \
             failed, cancelled"
        );
        assert!(serde_json::from_str::<TaskStatus>("\"Queued\"").is_err());
    }

    #[test]
    fn only_the_last_three_are_finished() {
        let finished: Vec<_> = RunStatus::ALL.iter().filter(|s| s.is_finished()).collect();
        assert_eq!(
            finished,
            [
                &RunStatus::Succeeded,
                &RunStatus::Failed,
                &RunStatus::Cancelled
            ]
        );
        assert!(!TaskStatus::Pending.is_finished());
        assert!(TaskStatus::Cancelled.is_finished());
    }
}
