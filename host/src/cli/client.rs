//! The CLI as a client of a node's HTTP API: `deploy`, `run`, `runs …`, `tenants create`,
//! `tokens create`.
//!
//! It only speaks HTTP (plain `http://` for now) and never touches the database; the runs
//! commands read and write the API's own types (`api::types`). Human-readable
//! output by default; `--json` prints the API's JSON unchanged. An API error prints the
//! server's message.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::types::{
    CreateCron, CreateTenant, CreateToken, Cron, CronList, Deployed, EventRequest, LogLine,
    LogPage, Pushed, RateLimit, RateLimitDuration, RateLimitList, RescheduleBody, RunAccepted,
    RunBody, RunDetail, RunPage, SecretList, SetFuel, SetRateLimit, SetSecret, TaskFuel, TaskRun,
    TenantCreated, TokenCreated, Waiting,
};

/// Default address of the API.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The directory `hatchery dev` keeps its state in, under the current directory.
pub const DEV_DIR: &str = ".hatchery";

/// How often `run --wait` refreshes the run.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

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
    pub status: Option<String>,
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

/// A secret's value: prompted for without echo on a terminal, else all of stdin (one trailing
/// newline dropped, as `echo` adds one).
fn read_secret_value(name: &str) -> anyhow::Result<String> {
    use std::io::{IsTerminal as _, Read as _};
    let value = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("value of {name} (not echoed): "))?
    } else {
        let mut value = String::new();
        std::io::stdin().read_to_string(&mut value)?;
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        value
    };
    anyhow::ensure!(!value.is_empty(), "the value of {name} is empty");
    Ok(value)
}

/// `hatchery secrets set|list|delete`.
pub async fn secrets(command: SecretsCommand) -> anyhow::Result<()> {
    match command {
        SecretsCommand::Set(args) => {
            let value = read_secret_value(&args.name)?;
            let client = Client::tenant(&args.client)?;
            let body = SetSecret {
                value,
                workflows: (!args.workflows.is_empty()).then(|| args.workflows.clone()),
            };
            let path = format!("/api/v1/secrets/{}", encode(&args.name));
            let set: crate::api::types::Secret = client.send_as(Method::PUT, &path, &body).await?;
            if args.client.json {
                return print_json(&set);
            }
            println!("secret {} set", args.name);
        }
        SecretsCommand::List(args) => {
            let client = Client::tenant(&args.client)?;
            let listed: SecretList = client.get_as("/api/v1/secrets", &[]).await?;
            if args.client.json {
                return print_json(&listed);
            }
            let rows: Vec<Vec<String>> = listed
                .secrets
                .iter()
                .map(|s| {
                    let workflows = s
                        .workflows
                        .as_ref()
                        .map_or_else(|| "all".to_owned(), |w| w.join(", "));
                    vec![s.name.clone(), workflows, time_of(Some(s.updated_at))]
                })
                .collect();
            if rows.is_empty() {
                println!("no secrets");
            } else {
                print_table(&["NAME", "WORKFLOWS", "SET AT"], &rows);
            }
        }
        SecretsCommand::Delete(args) => {
            let client = Client::tenant(&args.client)?;
            let path = format!("/api/v1/secrets/{}", encode(&args.name));
            client.call(Method::DELETE, &path, Body::None).await?;
            if !args.client.json {
                println!("secret {} deleted", args.name);
            }
        }
    }
    Ok(())
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

/// Patterns as the API takes them: JSON objects as given, anything else as a string.
fn egress_patterns(patterns: &[String]) -> Value {
    patterns
        .iter()
        .map(|p| match serde_json::from_str::<Value>(p) {
            Ok(object @ Value::Object(_)) => object,
            _ => Value::String(p.clone()),
        })
        .collect()
}

fn print_patterns(label: &str, patterns: &Value) {
    let texts: Vec<String> = patterns
        .as_array()
        .into_iter()
        .flatten()
        .map(
            |p| match (p["host"].as_str(), p.as_object().map(|o| o.len())) {
                (Some(host), Some(1)) => host.to_owned(),
                _ => p.to_string(),
            },
        )
        .collect();
    if texts.is_empty() {
        println!("{label}: nothing");
    } else {
        println!("{label}: {}", texts.join(", "));
    }
}

/// `hatchery egress show|set|ceiling`.
pub async fn egress(command: EgressCommand) -> anyhow::Result<()> {
    let (json_output, result) = match command {
        EgressCommand::Show(args) => {
            let client = Client::tenant(&args.client)?;
            (args.client.json, client.get("/api/v1/egress", &[]).await?)
        }
        EgressCommand::Set(args) => {
            let client = Client::tenant(&args.client)?;
            let body = json!({ "allow": egress_patterns(&args.patterns) });
            (
                args.client.json,
                client.put("/api/v1/egress", Body::Json(body)).await?,
            )
        }
        EgressCommand::Ceiling(args) => {
            let client = Client::admin(&args.admin)?;
            let path = format!("/api/v1/tenants/{}/egress", encode(&args.tenant_id));
            let body = json!({ "allow": egress_patterns(&args.patterns) });
            (args.admin.json, client.put(&path, Body::Json(body)).await?)
        }
    };
    if json_output {
        return print_json(&result);
    }
    if let Some(allow) = result.get("allow") {
        print_patterns("allowed", allow);
    }
    print_patterns("ceiling", &result["ceiling"]);
    Ok(())
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

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message} ({status}, {code})")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The API's machine code.
        code: String,
        /// The API's message.
        message: String,
    },
    /// The server could not be reached or the exchange failed.
    #[error(
        "cannot reach the Hatchery API at {url}: {cause} (is a node running? set HATCHERY_URL or --url)"
    )]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The innermost cause (e.g. `Connection refused`), said once.
        cause: String,
    },
    /// The server answered JSON of another shape than the API's type for it.
    #[error("unexpected answer from {url}: {message}")]
    Shape {
        /// The URL asked.
        url: String,
        /// What did not fit.
        message: String,
    },
    /// The server answered something that is not the API's JSON.
    #[error("unexpected answer from {url} ({status}): {body}")]
    Unexpected {
        /// The URL asked.
        url: String,
        /// HTTP status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
}

/// A bearer token and where it came from (for messages).
#[derive(Debug, Clone)]
struct Credential {
    token: String,
    source: String,
}

/// An HTTP client of one node's API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    credential: Option<Credential>,
}

/// The body of a request.
pub(crate) enum Body {
    None,
    Json(Value),
    Wasm(Vec<u8>),
}

impl Client {
    /// A client of the API at `url` with `token` (if any).
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("hatchery-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        let base = url.trim_end_matches('/').to_owned();
        if base.starts_with("https://") {
            bail!(
                "{base}: this build of the CLI speaks plain http:// only (TLS is not built in yet)"
            );
        }
        if !base.starts_with("http://") {
            bail!("{base}: the API URL must start with http://");
        }
        Ok(Self {
            http,
            base,
            credential: token.map(|token| Credential {
                token,
                source: "the given token".into(),
            }),
        })
    }

    /// A client for a tenant's commands: the URL and token from flags, the environment or the
    /// files `hatchery dev` writes.
    pub(crate) fn tenant(args: &ClientArgs) -> anyhow::Result<Self> {
        let mut client = Self::new(&resolve_url(args.url.as_deref()), None)?;
        client.credential = match args.token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => Some(Credential {
                token: token.trim().to_owned(),
                source: "HATCHERY_TOKEN/--token".into(),
            }),
            None => token_from_files()?,
        };
        if client.credential.is_none() {
            bail!(
                "no token: set HATCHERY_TOKEN or pass --token (or run `hatchery dev`, which writes {DEV_DIR}/token)"
            );
        }
        Ok(client)
    }

    /// A client for the admin's commands.
    pub(crate) fn admin(args: &AdminArgs) -> anyhow::Result<Self> {
        let dev_file = Path::new(DEV_DIR).join("admin-token");
        let token = match args.admin_token.clone().filter(|t| !t.is_empty()) {
            Some(token) => token,
            None => match std::fs::read_to_string(&dev_file) {
                Ok(token) if !token.trim().is_empty() => token.trim().to_owned(),
                _ => bail!("no admin token: set HATCHERY_ADMIN_TOKEN or pass --admin-token"),
            },
        };
        let mut client = Self::new(&resolve_url(args.url.as_deref()), None)?;
        client.credential = Some(Credential {
            token,
            source: "HATCHERY_ADMIN_TOKEN/--admin-token".into(),
        });
        Ok(client)
    }

    async fn call(&self, method: Method, path: &str, body: Body) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(credential) = &self.credential {
            request = request.bearer_auth(&credential.token);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Wasm(bytes) => request
                .header(reqwest::header::CONTENT_TYPE, "application/wasm")
                .body(bytes),
        };
        let unreachable = |error: reqwest::Error| ClientError::Unreachable {
            url: url.clone(),
            cause: root_cause(&error),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success()
            && let Some(value) = parsed
        {
            return Ok(value);
        }
        if let Some(error) = parsed.as_ref().and_then(|v| v.get("error")) {
            let text = |key: &str| {
                error
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let mut message = text("message");
            if status == StatusCode::UNAUTHORIZED
                && let Some(credential) = &self.credential
            {
                message.push_str(&format!(" (token from {})", credential.source));
            }
            return Err(ClientError::Api {
                status,
                code: text("code"),
                message,
            });
        }
        let body = String::from_utf8_lossy(&bytes);
        Err(ClientError::Unexpected {
            url,
            status,
            body: body.chars().take(200).collect(),
        })
    }

    /// `POST /api/v1/modules`.
    pub async fn deploy(&self, wasm: Vec<u8>) -> Result<Deployed, ClientError> {
        self.call_as(Method::POST, "/api/v1/modules", Body::Wasm(wasm))
            .await
    }

    /// `method path` with `body` serialized as JSON, read as `T`.
    async fn send_as<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_value(body).unwrap_or_default();
        self.call_as(method, path, Body::Json(body)).await
    }

    /// `method path` with `body`, read as the API's type `T`.
    async fn call_as<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<T, ClientError> {
        let value = self.call(method, path, body).await?;
        serde_json::from_value(value).map_err(|e| ClientError::Shape {
            url: format!("{}{path}", self.base),
            message: e.to_string(),
        })
    }

    /// `POST /api/v1/workflows/{name}/runs`.
    pub async fn start_run(
        &self,
        workflow: &str,
        body: &RunBody,
    ) -> Result<RunAccepted, ClientError> {
        let path = format!("/api/v1/workflows/{}/runs", encode(workflow));
        let body = serde_json::to_value(body).unwrap_or_default();
        self.call_as(Method::POST, &path, Body::Json(body)).await
    }

    /// `GET /api/v1/runs/{id}`.
    pub async fn run(&self, id: &str) -> Result<RunDetail, ClientError> {
        let path = format!("/api/v1/runs/{}", encode(id));
        self.call_as(Method::GET, &path, Body::None).await
    }

    /// `POST /api/v1/runs/{id}/{action}` (`cancel`, `replay`, `reschedule`).
    async fn run_action<T: DeserializeOwned>(
        &self,
        id: &str,
        action: &str,
        body: Body,
    ) -> Result<T, ClientError> {
        let path = format!("/api/v1/runs/{}/{action}", encode(id));
        self.call_as(Method::POST, &path, body).await
    }

    /// `PUT path` with `body` as JSON, read as `T`.
    pub(crate) async fn put_as<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        self.send_as(Method::PUT, path, body).await
    }

    /// `GET path?query` read as `T`.
    pub(crate) async fn get_as<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, Option<String>)],
    ) -> Result<T, ClientError> {
        let value = self.get(path, query).await?;
        serde_json::from_value(value).map_err(|e| ClientError::Shape {
            url: format!("{}{path}", self.base),
            message: e.to_string(),
        })
    }

    pub(crate) async fn get(
        &self,
        path: &str,
        query: &[(&str, Option<String>)],
    ) -> Result<Value, ClientError> {
        let query: Vec<String> = query
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
            .collect();
        let path = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", query.join("&"))
        };
        self.call(Method::GET, &path, Body::None).await
    }

    pub(crate) async fn put(&self, path: &str, body: Body) -> Result<Value, ClientError> {
        self.call(Method::PUT, path, body).await
    }
}

/// The innermost error of `error`'s chain: what actually failed, without the layers that
/// each repeat it.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// Percent-encodes one path segment or query value.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The API URL: the flag or `HATCHERY_URL`, else the one `hatchery dev` wrote, else the
/// default.
fn resolve_url(given: Option<&str>) -> String {
    if let Some(url) = given.map(str::trim).filter(|u| !u.is_empty()) {
        return url.to_owned();
    }
    std::fs::read_to_string(Path::new(DEV_DIR).join("url"))
        .ok()
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// The user-wide token file: `$XDG_CONFIG_HOME/hatchery/token` or `~/.config/hatchery/token`.
pub fn user_token_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("hatchery").join("token"))
}

/// The token in `.hatchery/token` (of the current directory), else in the user's config.
fn token_from_files() -> anyhow::Result<Option<Credential>> {
    let candidates = std::iter::once(Path::new(DEV_DIR).join("token")).chain(user_token_path());
    for path in candidates {
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                return Ok(Some(Credential {
                    token: text.trim().to_owned(),
                    source: path.display().to_string(),
                }));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    Ok(None)
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Parses a JSON argument, naming the flag when it is not JSON.
fn parse_json_arg(flag: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{flag} is not valid JSON"))
}

/// `hatchery deploy <file.wasm>`.
pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let client = Client::tenant(&args.client)?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    // Said here, before uploading megabytes the node would refuse.
    if !bytes.starts_with(b"\0asm") {
        bail!(
            "{} is not a WebAssembly component (it does not start with the wasm magic bytes): \
             build one with `cargo build --target wasm32-wasip2` (see README: Write a task)",
            args.file.display()
        );
    }
    let deployed = client.deploy(bytes).await?;
    if args.client.json {
        return print_json(&deployed);
    }
    println!(
        "{} {} (sha256 {})",
        if deployed.already_deployed {
            "already deployed"
        } else {
            "deployed"
        },
        args.file.display(),
        deployed.digest,
    );
    let rows: Vec<Vec<String>> = deployed
        .workflows
        .iter()
        .map(|w| {
            let tasks: Vec<&str> = w.tasks.iter().map(|t| t.name.as_str()).collect();
            vec![w.name.clone(), w.version.to_string(), tasks.join(", ")]
        })
        .collect();
    print_table(&["WORKFLOW", "VERSION", "TASKS"], &rows);
    Ok(())
}

/// `hatchery run <workflow>`.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::tenant(&args.client)?;
    let input = match (&args.input, &args.input_file) {
        (Some(text), _) => parse_json_arg("--input", text)?,
        (None, Some(path)) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
            };
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?
        }
        (None, None) => json!({}),
    };
    let body = RunBody {
        input,
        additional_metadata: args
            .metadata
            .as_deref()
            .map(|metadata| parse_json_arg("--metadata", metadata))
            .transpose()?,
        priority: args.priority,
        key: args.key.clone(),
        run_at: args.at.as_deref().map(parse_time_arg).transpose()?,
        delay_seconds: args
            .in_
            .as_deref()
            .map(|after| parse_duration_arg(after).map(|d| d.as_secs_f64()))
            .transpose()?,
    };
    let started = client.start_run(&args.workflow, &body).await?;
    let id = started.run_id.to_string();
    if !args.wait {
        if args.client.json {
            return print_json(&started);
        }
        println!("{id}");
        return Ok(());
    }
    let run = wait_for_run(&client, &id).await?;
    let status = run.run.status.as_str();
    if args.client.json {
        print_json(&run)?;
    } else if status == "succeeded" {
        print_json(&run.run.output)?;
    }
    match status {
        "succeeded" => Ok(()),
        "cancelled" => bail!("run {id} was cancelled"),
        _ => {
            let reason = failure_reason(&run);
            bail!("run {id} {status}: {reason}")
        }
    }
}

/// The error of a failed run, or of its first failed task.
fn failure_reason(run: &RunDetail) -> String {
    if let Some(error) = run.run.error.as_deref().filter(|e| !e.is_empty()) {
        return error.to_owned();
    }
    run.tasks
        .iter()
        .find_map(|t| t.error.as_deref().map(|e| format!("task {}: {e}", t.name)))
        .unwrap_or_else(|| "no reason given".to_owned())
}

fn is_finished(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

/// Polls run `id` until it finishes, showing its progress on stderr: a line redrawn in place
/// on a terminal, a line per change otherwise.
async fn wait_for_run(client: &Client, id: &str) -> anyhow::Result<RunDetail> {
    let start = Instant::now();
    let live = std::io::stderr().is_terminal();
    let mut last = String::new();
    loop {
        let run = client.run(id).await?;
        let status = run.run.status.as_str();
        let line = progress_line(&run);
        let mut stderr = std::io::stderr().lock();
        if live {
            let elapsed = start.elapsed().as_secs_f64();
            let _ = write!(stderr, "\r\x1b[K{line}  {elapsed:.1}s");
            if is_finished(status) {
                let _ = writeln!(stderr);
            }
        } else if line != last {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
        drop(stderr);
        last = line;
        if is_finished(status) {
            return Ok(run);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `run <id> <status>  task:status task:status …`.
fn progress_line(run: &RunDetail) -> String {
    let tasks: Vec<String> = run
        .tasks
        .iter()
        .map(|t| {
            let retry = if t.attempt > 1 {
                format!(" (attempt {})", t.attempt)
            } else {
                String::new()
            };
            format!("{} {}{retry}", t.name, t.status)
        })
        .collect();
    let mut line = format!("{} run {} {}", run.run.workflow, run.run.id, run.run.status);
    if !tasks.is_empty() {
        line.push_str(" · ");
        line.push_str(&tasks.join(", "));
    }
    line
}

/// `hatchery runs …`.
pub async fn runs(command: RunsCommand) -> anyhow::Result<()> {
    match command {
        RunsCommand::List(args) => runs_list(args).await,
        RunsCommand::Show(args) => {
            let client = Client::tenant(&args.client)?;
            let run = client.run(&args.id).await?;
            if args.client.json {
                return print_json(&run);
            }
            print_run(&run)?;
            let children = children_of(&client, &args.id).await?;
            if !children.runs.is_empty() {
                let mut by_status = std::collections::BTreeMap::<&str, usize>::new();
                for child in &children.runs {
                    *by_status.entry(child.status.as_str()).or_default() += 1;
                }
                let counts: Vec<String> = by_status
                    .iter()
                    .map(|(status, count)| format!("{count} {status}"))
                    .collect();
                let more = if children.next_cursor.is_some() {
                    " (first 1,000)"
                } else {
                    ""
                };
                println!(
                    "\nchildren: {}{more}: {} (hatchery runs children {})",
                    children.runs.len(),
                    counts.join(", "),
                    args.id
                );
            }
            Ok(())
        }
        RunsCommand::Cancel(args) => {
            let client = Client::tenant(&args.client)?;
            let run: RunDetail = client.run_action(&args.id, "cancel", Body::None).await?;
            if args.client.json {
                return print_json(&run);
            }
            println!("run {} is {}", run.run.id, run.run.status);
            Ok(())
        }
        RunsCommand::Replay(args) => {
            let client = Client::tenant(&args.client)?;
            let replayed: RunAccepted = client.run_action(&args.id, "replay", Body::None).await?;
            if args.client.json {
                return print_json(&replayed);
            }
            println!("run {} queued again", replayed.run_id);
            Ok(())
        }
        RunsCommand::Reschedule(args) => {
            let client = Client::tenant(&args.client)?;
            let run_at = match parse_duration_arg(&args.time) {
                Ok(after) => Utc::now() + chrono::Duration::from_std(after)?,
                Err(_) => parse_time_arg(&args.time)?,
            };
            let body = serde_json::to_value(RescheduleBody { run_at })?;
            let run: RunDetail = client
                .run_action(&args.id, "reschedule", Body::Json(body))
                .await?;
            if args.client.json {
                return print_json(&run);
            }
            println!("run {} is due at {}", run.run.id, time_of(run.run.run_at));
            Ok(())
        }
        RunsCommand::Logs(args) => runs_logs(args).await,
        RunsCommand::Children(args) => {
            let client = Client::tenant(&args.client)?;
            let page = children_of(&client, &args.id).await?;
            if args.client.json {
                return print_json(&page);
            }
            print_runs(&page);
            Ok(())
        }
    }
}

/// An RFC 3339 time from the command line.
fn parse_time_arg(text: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            anyhow::anyhow!("`{text}` is not an RFC 3339 time (2026-12-01T09:00:00Z): {e}")
        })
}

/// A duration such as `90s`, `15m`, `2h` or `1d` (a bare number is seconds).
fn parse_duration_arg(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("`{text}` is not a duration such as 90s, 15m, 2h or 1d"))?;
    let seconds = match unit {
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3_600.0,
        "d" => number * 86_400.0,
        _ => anyhow::bail!("`{text}` is not a duration such as 90s, 15m, 2h or 1d"),
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        anyhow::bail!("`{text}` must be a duration above zero");
    }
    Ok(Duration::from_secs_f64(seconds))
}

async fn runs_list(args: RunsListArgs) -> anyhow::Result<()> {
    let client = Client::tenant(&args.client)?;
    let page: RunPage = client
        .get_as(
            "/api/v1/runs",
            &[
                ("workflow", args.workflow.clone()),
                ("status", args.status.clone()),
                ("triggered_by", args.triggered_by.clone()),
                ("metadata", args.metadata.clone()),
                ("top_level", (!args.children).then(|| "true".to_owned())),
                ("limit", Some(args.limit.to_string())),
                ("cursor", args.cursor.clone()),
            ],
        )
        .await?;
    if args.client.json {
        return print_json(&page);
    }
    print_runs(&page);
    Ok(())
}

/// A page of runs as a table, and how to get the next one.
fn print_runs(page: &RunPage) {
    let rows: Vec<Vec<String>> = page
        .runs
        .iter()
        .map(|run| {
            vec![
                run.id.to_string(),
                run.workflow.clone(),
                run.status.clone(),
                time_of(Some(run.created_at)),
                duration_of(run.started_at, run.finished_at),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no runs");
    } else {
        print_table(&["ID", "WORKFLOW", "STATUS", "CREATED", "DURATION"], &rows);
    }
    if let Some(cursor) = &page.next_cursor {
        eprintln!("more: --cursor {cursor}");
    }
}

/// The first page (up to 1,000) of the runs `id`'s tasks spawned.
async fn children_of(client: &Client, id: &str) -> Result<RunPage, ClientError> {
    let path = format!("/api/v1/runs/{}/children", encode(id));
    client
        .get_as(&path, &[("limit", Some("1000".into()))])
        .await
}

async fn runs_logs(args: RunIdArgs) -> anyhow::Result<()> {
    let client = Client::tenant(&args.client)?;
    let path = format!("/api/v1/runs/{}/logs", encode(&args.id));
    let mut lines: Vec<LogLine> = Vec::new();
    let mut cursor = None;
    loop {
        let page: LogPage = client
            .get_as(&path, &[("limit", Some("500".into())), ("cursor", cursor)])
            .await?;
        lines.extend(page.lines);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    if args.client.json {
        return print_json(&LogPage {
            lines,
            next_cursor: None,
        });
    }
    let mut stdout = std::io::stdout().lock();
    for line in &lines {
        writeln!(
            stdout,
            "{} {:<5} {}#{} {}",
            time_of(Some(line.time)),
            line.level,
            line.task,
            line.attempt,
            line.message
        )?;
    }
    Ok(())
}

/// Prints a run and its tasks as aligned text.
fn print_run(detail: &RunDetail) -> anyhow::Result<()> {
    let run = &detail.run;
    let mut fields = vec![
        ("id", run.id.to_string()),
        (
            "workflow",
            format!("{} (version {})", run.workflow, run.version),
        ),
        ("status", run.status.clone()),
        (
            "trigger",
            match run.triggered_by.id {
                Some(id) => format!("{} ({id})", run.triggered_by.kind),
                None => run.triggered_by.kind.clone(),
            },
        ),
        ("priority", run.priority.to_string()),
        ("created", time_of(Some(run.created_at))),
        ("due", time_of(run.run_at)),
        ("started", time_of(run.started_at)),
        ("finished", time_of(run.finished_at)),
        ("duration", duration_of(run.started_at, run.finished_at)),
    ];
    if let Some(parent) = run.parent_run_id {
        fields.push(("parent", parent.to_string()));
    }
    if run
        .additional_metadata
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        fields.push(("metadata", run.additional_metadata.to_string()));
    }
    fields.push(("input", run.input.to_string()));
    if let Some(output) = &run.output {
        fields.push(("output", output.to_string()));
    }
    if let Some(error) = &run.error {
        fields.push(("error", error.clone()));
    }
    for (name, value) in &fields {
        println!("{:<9} {value}", format!("{name}:"));
    }
    let rows: Vec<Vec<String>> = detail
        .tasks
        .iter()
        .map(|t: &TaskRun| {
            let result = match (&t.error, &t.output) {
                (Some(error), _) => error.clone(),
                (None, Some(output)) => output.to_string(),
                (None, None) => String::new(),
            };
            let result = match &t.waiting_for {
                Some(waiting) if result.is_empty() => waiting_text(waiting),
                _ => result,
            };
            vec![
                t.name.clone(),
                t.status.clone(),
                t.attempt.to_string(),
                duration_of(t.started_at, t.finished_at),
                result,
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!();
        print_table(&["TASK", "STATUS", "ATTEMPT", "DURATION", "RESULT"], &rows);
    }
    Ok(())
}

/// `{kind, key?}` as "waiting for …".
fn waiting_text(waiting: &Waiting) -> String {
    let what = match waiting.kind.as_str() {
        "concurrency" => "a place under concurrency key",
        "rate_limit" => "units of rate limit",
        "slots" => "a free slot",
        "parents" => "its parents",
        other => other,
    };
    match &waiting.key {
        Some(key) => format!("waiting for {what} `{key}`"),
        None => format!("waiting for {what}"),
    }
}

/// `hatchery events push <key>`.
pub async fn events(command: EventsCommand) -> anyhow::Result<()> {
    let EventsCommand::Push(args) = command;
    let client = Client::tenant(&args.client)?;
    let body = EventRequest {
        key: args.key.clone(),
        payload: args
            .payload
            .as_deref()
            .map(|payload| parse_json_arg("--payload", payload))
            .transpose()?
            .unwrap_or(Value::Null),
        additional_metadata: args
            .metadata
            .as_deref()
            .map(|metadata| parse_json_arg("--metadata", metadata))
            .transpose()?,
        scope: args.scope.clone(),
        idempotency_key: args.idempotency_key.clone(),
    };
    let pushed: Pushed = client
        .send_as(Method::POST, "/api/v1/events", &body)
        .await?;
    if args.client.json {
        return print_json(&pushed);
    }
    let runs: Vec<String> = pushed.run_ids.iter().map(ToString::to_string).collect();
    println!(
        "event {} started {} run(s){}",
        pushed.event_id,
        runs.len(),
        if runs.is_empty() {
            String::new()
        } else {
            format!(": {}", runs.join(", "))
        }
    );
    Ok(())
}

/// `hatchery crons list|create|delete`.
pub async fn crons(command: CronsCommand) -> anyhow::Result<()> {
    let (client_args, result) = match command {
        CronsCommand::List(args) => {
            let client = Client::tenant(&args.client)?;
            let listed: CronList = client.get_as("/api/v1/crons", &[]).await?;
            (args.client, listed)
        }
        CronsCommand::Create(args) => {
            let client = Client::tenant(&args.client)?;
            let body = CreateCron {
                expression: args.expression.clone(),
                name: args.name.clone(),
                timezone: Some(args.timezone.clone()),
                input: args
                    .input
                    .as_deref()
                    .map(|input| parse_json_arg("--input", input))
                    .transpose()?,
                additional_metadata: None,
                catch_up: Some(if args.catch_up { "latest" } else { "none" }.to_owned()),
            };
            let path = format!("/api/v1/workflows/{}/crons", encode(&args.workflow));
            let created: Cron = client.send_as(Method::POST, &path, &body).await?;
            (
                args.client,
                CronList {
                    crons: vec![created],
                },
            )
        }
        CronsCommand::Delete(args) => {
            let client = Client::tenant(&args.client)?;
            let path = format!("/api/v1/crons/{}", encode(&args.id));
            client.call(Method::DELETE, &path, Body::None).await?;
            if !args.client.json {
                println!("cron {} deleted", args.id);
            }
            return Ok(());
        }
    };
    if client_args.json {
        return print_json(&result);
    }
    let rows: Vec<Vec<String>> = result
        .crons
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.workflow.clone(),
                format!("{} ({})", c.expression, c.timezone),
                time_of(c.next_tick),
                c.source.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no crons");
        return Ok(());
    }
    print_table(
        &["ID", "WORKFLOW", "SCHEDULE", "NEXT TICK", "SOURCE"],
        &rows,
    );
    Ok(())
}

/// `hatchery rate-limits list|set`.
pub async fn rate_limits(command: RateLimitsCommand) -> anyhow::Result<()> {
    let (client_args, result) = match command {
        RateLimitsCommand::List(args) => {
            let client = Client::tenant(&args.client)?;
            let listed: RateLimitList = client.get_as("/api/v1/rate-limits", &[]).await?;
            (args.client, listed)
        }
        RateLimitsCommand::Set(args) => {
            let client = Client::tenant(&args.client)?;
            let path = format!("/api/v1/rate-limits/{}", encode(&args.key));
            let duration: RateLimitDuration =
                serde_json::from_value(Value::String(args.duration.clone()))?;
            let body = SetRateLimit {
                limit: args.limit,
                duration,
            };
            let set: RateLimit = client.send_as(Method::PUT, &path, &body).await?;
            (
                args.client,
                RateLimitList {
                    rate_limits: vec![set],
                },
            )
        }
    };
    if client_args.json {
        return print_json(&result);
    }
    let rows: Vec<Vec<String>> = result
        .rate_limits
        .iter()
        .map(|r| {
            let limit = match (r.limit, &r.duration) {
                (Some(limit), Some(duration)) => format!("{limit} per {duration}"),
                _ => "not set".to_owned(),
            };
            vec![r.key.clone(), limit, r.used.to_string(), r.source.clone()]
        })
        .collect();
    if rows.is_empty() {
        println!("no rate limits");
        return Ok(());
    }
    print_table(&["KEY", "LIMIT", "USED NOW", "SOURCE"], &rows);
    Ok(())
}

/// `hatchery fuel <workflow> <task> <N|default>`: a task's fuel budget for new runs.
pub async fn fuel(args: FuelArgs) -> anyhow::Result<()> {
    let fuel = match args.fuel.as_str() {
        "default" => None,
        number => Some(number.replace('_', "").parse::<u64>().map_err(|_| {
            anyhow::anyhow!("fuel must be a number of instructions or `default`, not `{number}`")
        })?),
    };
    let client = Client::tenant(&args.client)?;
    let path = format!(
        "/api/v1/workflows/{}/tasks/{}/fuel",
        encode(&args.workflow),
        encode(&args.task)
    );
    let set: TaskFuel = client
        .send_as(Method::PUT, &path, &SetFuel { fuel })
        .await?;
    if args.client.json {
        return print_json(&set);
    }
    match set.fuel {
        Some(fuel) => println!(
            "{}/{}: {fuel} instructions per attempt, for runs started from now on",
            args.workflow, args.task
        ),
        None => println!(
            "{}/{}: the node's fuel budget, for runs started from now on",
            args.workflow, args.task
        ),
    }
    Ok(())
}

/// Prints rows under headers, columns padded to their widest cell.
pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        line
    };
    println!("{}", render(headers.to_vec()));
    for row in rows {
        println!("{}", render(row.iter().map(String::as_str).collect()));
    }
}

/// A time as `YYYY-MM-DD HH:MM:SS.mmm`, or `-`.
fn time_of(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
    )
}

/// The time from `start` to `end`, or `-`.
fn duration_of(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> String {
    let (Some(start), Some(end)) = (start, end) else {
        return "-".to_owned();
    };
    let millis = (end - start).num_milliseconds().max(0);
    if millis < 1_000 {
        format!("{millis}ms")
    } else {
        format!("{:.1}s", millis as f64 / 1_000.0)
    }
}

/// `hatchery tenants create <name>`.
pub async fn tenants(command: TenantsCommand) -> anyhow::Result<()> {
    let args = match command {
        TenantsCommand::Create(args) => args,
        TenantsCommand::Show(args) => return super::tenancy::show(args).await,
        TenantsCommand::Weight(args) => return super::tenancy::weight(args).await,
        TenantsCommand::Retention(args) => return super::tenancy::retention(args).await,
        TenantsCommand::Quotas(args) => return super::tenancy::quotas(args).await,
    };
    let client = Client::admin(&args.admin)?;
    let body = CreateTenant {
        name: args.name.clone(),
    };
    let tenant: TenantCreated = client
        .send_as(Method::POST, "/api/v1/tenants", &body)
        .await?;
    if args.admin.json {
        return print_json(&tenant);
    }
    println!("tenant: {} ({})", tenant.name, tenant.id);
    println!("token:  {}", tenant.token);
    eprintln!("the token is shown once: keep it (export HATCHERY_TOKEN=...)");
    Ok(())
}

/// `hatchery tokens create <tenant-id>`.
pub async fn tokens(command: TokensCommand) -> anyhow::Result<()> {
    let TokensCommand::Create(args) = command;
    let client = Client::admin(&args.admin)?;
    let path = format!("/api/v1/tenants/{}/tokens", encode(&args.tenant_id));
    let body = CreateToken {
        name: args.name.clone(),
    };
    let token: TokenCreated = client.send_as(Method::POST, &path, &body).await?;
    if args.admin.json {
        return print_json(&token);
    }
    println!("token:  {}", token.token);
    println!(
        "id:     {} (revoke: DELETE /api/v1/tokens/{{id}})",
        token.id
    );
    eprintln!("the token is shown once: keep it (export HATCHERY_TOKEN=...)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_escapes_everything_but_unreserved() {
        assert_eq!(encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(encode("a b/c:d"), "a%20b%2Fc%3Ad");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn duration_is_readable() {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        let start = at("2026-01-01T00:00:00Z");
        assert_eq!(duration_of(start, at("2026-01-01T00:00:00.250Z")), "250ms");
        assert_eq!(duration_of(start, at("2026-01-01T00:00:02.5Z")), "2.5s");
        assert_eq!(duration_of(start, None), "-");
    }

    #[test]
    fn failure_reason_prefers_the_run_error_then_a_task_error() {
        let task = |name: &str, error: Option<&str>| {
            json!({"id": "01a227ae-4daf-7537-81e5-2a85c5cf38a1", "name": name,
                   "status": "failed", "attempt": 1, "failures": 1, "lost_leases": 0,
                   "parents": [], "output": null, "error": error, "error_code": null,
                   "is_on_failure": false, "started_at": null, "finished_at": null})
        };
        let run = |error: Option<&str>, tasks: Vec<Value>| -> RunDetail {
            serde_json::from_value(json!({
                "id": "01a227ae-4daf-7537-81e5-2a85c5cf38a2", "workflow": "w", "version": 1,
                "status": "failed", "input": {}, "output": null, "error": error,
                "additional_metadata": {}, "priority": 1,
                "created_at": "2026-01-01T00:00:00Z", "started_at": null, "finished_at": null,
                "parent_run_id": null, "parent_task_run_id": null, "run_at": null,
                "triggered_by": {"kind": "api", "id": null}, "tasks": tasks}))
            .expect("a run")
        };
        let failed = run(None, vec![task("a", None), task("b", Some("boom"))]);
        assert_eq!(failure_reason(&failed), "task b: boom");
        assert_eq!(failure_reason(&run(Some("bad"), vec![])), "bad");
    }
}
