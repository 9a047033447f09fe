//! The arguments of the client commands (`deploy`, `run`, `runs …`, `crons …`, …), as clap
//! types: what a user can type, with its help text. Parsing only; `commands` acts on them.

use std::path::PathBuf;

use crate::status::RunStatus;

/// Where a node is and who is asking.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// URL of the API [default: the URL `hatchery dev` wrote to .hatchery/url, else
    /// http://127.0.0.1:8080].
    #[arg(long, env = "HATCHERY_URL")]
    pub url: Option<String>,
    /// The tenant's token [default: .hatchery/token, else ~/.config/hatchery/token].
    #[arg(long, env = "HATCHERY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Where a node is, as the admin.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// URL of the API [default: the URL `hatchery dev` wrote to .hatchery/url, else
    /// http://127.0.0.1:8080].
    #[arg(long, env = "HATCHERY_URL")]
    pub url: Option<String>,
    /// The admin token the node was started with [default: .hatchery/admin-token, written
    /// by `hatchery dev`].
    #[arg(long, env = "HATCHERY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `hatchery deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The component (`.wasm`) to upload.
    pub file: PathBuf,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `hatchery run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The workflow to start.
    pub workflow: String,
    /// JSON input.
    #[arg(long, conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Read the JSON input from this file (`-` for stdin).
    #[arg(long)]
    pub input_file: Option<PathBuf>,
    /// Additional metadata of the run, a JSON object.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Priority, 1 (lowest) to 3 [default: the workflow's].
    #[arg(long)]
    pub priority: Option<u8>,
    /// Concurrency or idempotency key of the run.
    #[arg(long)]
    pub key: Option<String>,
    /// Run it at this time (RFC 3339, e.g. 2026-12-01T09:00:00Z) instead of now.
    #[arg(long, conflicts_with = "in_")]
    pub at: Option<String>,
    /// Run it after this long (e.g. 90s, 15m, 2h, 1d) instead of now.
    #[arg(long = "in", id = "in_", value_name = "DURATION")]
    pub in_: Option<String>,
    /// Wait for the run to finish, showing its progress on stderr, then print its output;
    /// exit code 1 if it failed or was cancelled.
    #[arg(long)]
    pub wait: bool,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `hatchery runs …`.
#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List(RunsListArgs),
    /// Show a run and its tasks.
    Show(RunIdArgs),
    /// Cancel a run (and the runs it spawned).
    Cancel(RunIdArgs),
    /// Run a failed or cancelled run again.
    Replay(RunIdArgs),
    /// Move a scheduled run to another time.
    Reschedule(RescheduleArgs),
    /// Print the log lines of a run's attempts, oldest first.
    Logs(RunIdArgs),
    /// List the runs a run's tasks spawned, newest first.
    Children(RunIdArgs),
}

/// Arguments of `hatchery runs list`.
#[derive(Debug, clap::Args)]
pub struct RunsListArgs {
    /// Only runs of this workflow.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Only runs in this status: scheduled, queued, running, succeeded, failed or cancelled.
    #[arg(long)]
    pub status: Option<RunStatus>,
    /// Only runs whose metadata has `key:value`.
    #[arg(long, value_name = "KEY:VALUE")]
    pub metadata: Option<String>,
    /// Only runs started this way: api, cron, schedule, event, spawn or replay.
    #[arg(long)]
    pub triggered_by: Option<String>,
    /// List the runs tasks spawned too (by default only top-level runs: a fan-out's parent,
    /// not its children; `runs children <id>` lists those).
    #[arg(long)]
    pub children: bool,
    /// At most this many runs.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Continue after a previous page (its `next_cursor`).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `hatchery runs reschedule`.
#[derive(Debug, clap::Args)]
pub struct RescheduleArgs {
    /// The run's id.
    pub id: String,
    /// When: RFC 3339 (2026-12-01T09:00:00Z), or a duration from now (90s, 15m, 2h, 1d).
    pub time: String,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of the `runs` commands that name one run.
#[derive(Debug, clap::Args)]
pub struct RunIdArgs {
    /// The run's id.
    pub id: String,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `hatchery tenants …`.
#[derive(Debug, clap::Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant and its first token (admin).
    Create(TenantCreateArgs),
    /// Show a tenant's settings: weight, retention (admin).
    Show(super::tenancy::TenantShowArgs),
    /// Set a tenant's weight, its share of slots and CPU when nodes are busy (admin).
    Weight(super::tenancy::TenantWeightArgs),
    /// Set how many days a tenant's finished runs are kept, or `default` (admin).
    Retention(super::tenancy::TenantRetentionArgs),
    /// Show a tenant's quotas and what it uses; with flags, change those quotas (admin).
    Quotas(super::tenancy::TenantQuotasArgs),
}

/// Arguments of `hatchery tenants create`.
#[derive(Debug, clap::Args)]
pub struct TenantCreateArgs {
    /// The tenant's unique name.
    pub name: String,
    /// Connection and output options.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `hatchery tokens …`.
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Create another token of a tenant (admin).
    Create(TokenCreateArgs),
}

/// Arguments of `hatchery tokens create`.
#[derive(Debug, clap::Args)]
pub struct TokenCreateArgs {
    /// The tenant's id.
    pub tenant_id: String,
    /// A label for the token.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Connection and output options.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `hatchery events …`.
#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Push an event: every workflow subscribed to its key (and whose filters pass) starts.
    Push(EventPushArgs),
}

/// Arguments of `hatchery events push`.
#[derive(Debug, clap::Args)]
pub struct EventPushArgs {
    /// The event's key, e.g. `user:signed-up`.
    pub key: String,
    /// JSON payload (the input of the runs it starts).
    #[arg(long)]
    pub payload: Option<String>,
    /// Additional metadata, a JSON object.
    #[arg(long)]
    pub metadata: Option<String>,
    /// The event's scope (selects the filters that apply).
    #[arg(long)]
    pub scope: Option<String>,
    /// Pushing again with the same key starts nothing new.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `hatchery crons …`.
#[derive(Debug, clap::Subcommand)]
pub enum CronsCommand {
    /// List the tenant's crons (from manifests and the API) with their next tick.
    List(CronsListArgs),
    /// Create a cron: `hatchery crons create report "0 9 * * 1-5" --timezone Europe/Paris`.
    Create(CronCreateArgs),
    /// Delete a cron.
    Delete(CronDeleteArgs),
}

/// Arguments of `hatchery crons list`.
#[derive(Debug, clap::Args)]
pub struct CronsListArgs {
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `hatchery crons create`.
#[derive(Debug, clap::Args)]
pub struct CronCreateArgs {
    /// The workflow to start.
    pub workflow: String,
    /// The cron expression: 5 fields (minute first) or 6 (seconds first).
    pub expression: String,
    /// IANA time zone of the expression.
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
    /// JSON input of each run.
    #[arg(long)]
    pub input: Option<String>,
    /// A label.
    #[arg(long)]
    pub name: Option<String>,
    /// After downtime, run once for the latest missed tick.
    #[arg(long)]
    pub catch_up: bool,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `hatchery crons delete`.
#[derive(Debug, clap::Args)]
pub struct CronDeleteArgs {
    /// The cron's id.
    pub id: String,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `hatchery rate-limits …`.
#[derive(Debug, clap::Subcommand)]
pub enum RateLimitsCommand {
    /// List the tenant's rate limits with the units used in the window that ends now.
    List(RateLimitsListArgs),
    /// Set a static rate limit: `hatchery rate-limits set crm-api 20 second`.
    Set(RateLimitSetArgs),
}

/// Arguments of `hatchery rate-limits list`.
#[derive(Debug, clap::Args)]
pub struct RateLimitsListArgs {
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `hatchery rate-limits set`.
#[derive(Debug, clap::Args)]
pub struct RateLimitSetArgs {
    /// The static key, as tasks name it.
    pub key: String,
    /// Units allowed per window.
    pub limit: u32,
    /// The window: second, minute, hour or day.
    #[arg(value_parser = ["second", "minute", "hour", "day"])]
    pub duration: String,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `hatchery secrets …`.
#[derive(Debug, clap::Subcommand)]
pub enum SecretsCommand {
    /// Store a secret; its value is read from a prompt (not echoed) or from stdin, never from
    /// an argument: `hatchery secrets set STRIPE_KEY --workflow charge < key.txt`.
    Set(SecretSetArgs),
    /// List the tenant's secrets: names, the workflows that may read them, when set.
    List(SecretsListArgs),
    /// Delete a secret.
    Delete(SecretDeleteArgs),
}

/// Arguments of `hatchery secrets set`.
#[derive(Debug, clap::Args)]
pub struct SecretSetArgs {
    /// Its name: tasks read it as this environment variable.
    pub name: String,
    /// A workflow that may read it (repeatable); none: every workflow of the tenant.
    #[arg(long = "workflow")]
    pub workflows: Vec<String>,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `hatchery secrets list`.
#[derive(Debug, clap::Args)]
pub struct SecretsListArgs {
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `hatchery secrets delete`.
#[derive(Debug, clap::Args)]
pub struct SecretDeleteArgs {
    /// Its name.
    pub name: String,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `hatchery egress …`.
#[derive(Debug, clap::Subcommand)]
pub enum EgressCommand {
    /// Show this tenant's outbound HTTP allowlist and the ceiling the admin set.
    Show(EgressShowArgs),
    /// Replace this tenant's allowlist: `hatchery egress set api.example.com '*.stripe.com:443'`
    /// (no pattern: nothing allowed). A pattern may also be JSON:
    /// `'{"host":"api.example.com","methods":["GET"]}'`.
    Set(EgressSetArgs),
    /// Replace a tenant's ceiling (admin): `hatchery egress ceiling <tenant-id> '*.example.com'`.
    Ceiling(EgressCeilingArgs),
}

/// Arguments of `hatchery egress show`.
#[derive(Debug, clap::Args)]
pub struct EgressShowArgs {
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `hatchery egress set`.
#[derive(Debug, clap::Args)]
pub struct EgressSetArgs {
    /// Patterns: `host[:port]`, `*.domain[:port]`, an IP address, or a JSON object.
    pub patterns: Vec<String>,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `hatchery egress ceiling`.
#[derive(Debug, clap::Args)]
pub struct EgressCeilingArgs {
    /// The tenant's id.
    pub tenant_id: String,
    /// Patterns, as for `egress set`.
    pub patterns: Vec<String>,
    /// Connection and output options.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Arguments of `hatchery fuel`.
#[derive(Debug, clap::Args)]
pub struct FuelArgs {
    /// The workflow.
    pub workflow: String,
    /// Its task.
    pub task: String,
    /// Instructions one attempt of the task may execute, or `default` for the node's budget.
    pub fuel: String,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}
