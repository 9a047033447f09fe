//! The durable core: deploying modules, starting and controlling runs, and the node that
//! claims task runs from Postgres and executes them on its workers.
//!
//! All SQL is in `crate::db`; this module decides what to write and when.

mod admission;
mod completer;
pub mod deploy;
pub mod events;
mod host;
mod leases;
pub mod node;
mod reaper;
pub mod retention;
pub mod runs;
mod schedule;
mod slots;
mod spawns;
mod vacuum;
pub mod waiters;
mod workers;

pub use deploy::{DeployError, Deployed, deploy_module};
pub use node::{Node, NodeConfig, NodeHandle};
pub use retention::{RetentionConfig, purge_expired};
pub use runs::{
    Rescheduled, RunError, RunRequest, RunView, cancel_run, get_run, replay_run, reschedule_run,
    start_run, start_runs, wait_for_run,
};
pub use workers::WorkerStats;
