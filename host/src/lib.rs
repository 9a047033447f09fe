//! Hatchery: a task orchestrator whose tasks are WebAssembly components.
//!
//! The library holds everything a node does; the `hatchery` binary only wires it up.

pub mod api;
pub mod cli;
pub mod cron;
pub mod db;
pub mod egress;
pub mod flow;
pub mod manifest;
pub mod metrics;
pub mod quota;
pub mod runtime;
pub mod scheduler;
pub mod secrets;
pub mod status;
pub mod telemetry;
