//! The `hatchery` command line: argument parsing and one function per command.
//!
//! Commands print results on stdout and diagnostics on stderr; `--json` gives scripts a stable
//! shape. Errors reach `main` as `anyhow` errors and become exit code 1.

mod api_client;
pub mod args;
mod commands;
pub mod dev;
mod exec;
mod render;
pub mod serve;
mod tenancy;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Hatchery runs background tasks written as WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "hatchery", version, about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every `hatchery` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow (or one task) of a component once, locally, without a server.
    Exec(exec::ExecArgs),
    /// Print the manifest a component declares: workflows, tasks, triggers, flow control.
    Inspect(exec::InspectArgs),
    /// Run a node: the HTTP API, the dispatcher and the workers, against PostgreSQL.
    Serve(serve::ServeArgs),
    /// Apply the database migrations and exit.
    Migrate(serve::MigrateArgs),
    /// Run a node for development with zero configuration: finds or starts PostgreSQL,
    /// creates a `dev` tenant and writes its token to .hatchery/token.
    Dev(dev::DevArgs),
    /// Upload a component to a node (HATCHERY_URL, HATCHERY_TOKEN).
    Deploy(args::DeployArgs),
    /// Start a workflow run on a node, optionally waiting for its output.
    Run(args::RunArgs),
    /// List, show, cancel, replay runs and read their logs.
    #[command(subcommand)]
    Runs(args::RunsCommand),
    /// Push events.
    #[command(subcommand)]
    Events(args::EventsCommand),
    /// List, create and delete crons.
    #[command(subcommand)]
    Crons(args::CronsCommand),
    /// List and set rate limits.
    #[command(subcommand)]
    RateLimits(args::RateLimitsCommand),
    /// Store, list and delete secrets.
    #[command(subcommand)]
    Secrets(args::SecretsCommand),
    /// Show and set where tasks may send HTTP requests.
    #[command(subcommand)]
    Egress(args::EgressCommand),
    /// Set a task's fuel budget for new runs: `hatchery fuel py-etl load 50000000000` (or `default`).
    Fuel(args::FuelArgs),
    /// Show usage per hour and workflow: runs, attempts, time, fuel, memory, HTTP requests.
    Usage(tenancy::UsageArgs),
    /// Create tenants and set their weight and retention (admin).
    #[command(subcommand)]
    Tenants(args::TenantsCommand),
    /// Create tokens of tenants (admin).
    #[command(subcommand)]
    Tokens(args::TokensCommand),
}

/// Options shared by commands that load components locally.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    /// Directory of the compiled-component cache [default: $XDG_CACHE_HOME/hatchery].
    #[arg(long, env = "HATCHERY_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile without reading or writing the cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl CacheArgs {
    /// The cache directory to use, if any.
    pub fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        if let Some(dir) = &self.cache_dir {
            return Some(dir.clone());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(base.join("hatchery"))
    }
}

/// `error` in the API's error shape, `{"error": {"code", "message"}}` (with the HTTP `status`
/// when the API answered), for commands given `--json`: a script reads one shape whether the
/// node or the CLI refused.
pub fn error_json(error: &anyhow::Error) -> serde_json::Value {
    match error.downcast_ref::<api_client::ClientError>() {
        Some(api_client::ClientError::Api {
            status,
            code,
            message,
        }) => serde_json::json!({
            "error": {"status": status.as_u16(), "code": code, "message": message}
        }),
        Some(api_client::ClientError::Unreachable { .. }) => serde_json::json!({
            "error": {"code": "unreachable", "message": format!("{error:#}")}
        }),
        _ => serde_json::json!({"error": {"code": "cli", "message": format!("{error:#}")}}),
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Exec(args) => exec::exec(args).await,
        Command::Inspect(args) => exec::inspect(args).await,
        Command::Serve(args) => serve::serve(args).await,
        Command::Migrate(args) => serve::migrate(args).await,
        Command::Dev(args) => dev::dev(args).await,
        Command::Deploy(args) => commands::deploy(args).await,
        Command::Run(args) => commands::run(args).await,
        Command::Runs(command) => commands::runs(command).await,
        Command::Crons(command) => commands::crons(command).await,
        Command::Events(command) => commands::events(command).await,
        Command::RateLimits(command) => commands::rate_limits(command).await,
        Command::Fuel(args) => commands::fuel(args).await,
        Command::Egress(command) => commands::egress(command).await,
        Command::Secrets(command) => commands::secrets(command).await,
        Command::Usage(args) => tenancy::usage(args).await,
        Command::Tenants(command) => commands::tenants(command).await,
        Command::Tokens(command) => commands::tokens(command).await,
    }
}
