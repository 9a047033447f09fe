//! End-to-end tests of Hatchery: the real runtime running real components.
//!
//! One test binary (one link step), one module per topic.

#![allow(
    clippy::expect_used,
    reason = "in a test, a failed expectation is the failure to report"
)]

mod api;
mod crons;
mod dashboard;
mod durable;
mod egress;
mod flow;
mod languages;
mod loading;
mod openapi;
mod quotas;
mod sandbox;
mod scale;
mod schedule;
mod support;
mod tenancy;
mod workflows;
