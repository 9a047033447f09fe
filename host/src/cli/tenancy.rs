//! Tenancy commands: `hatchery usage` (a tenant's own, or any tenant's as the admin) and the
//! admin's `hatchery tenants show|weight|retention|quotas`.

use serde_json::{Value, json};

use super::api_client::{Body, Client, encode};
use super::args::{AdminArgs, ClientArgs};
use super::render::{print_json, print_table};
use crate::api::types::{RetentionSet, TenantSettings, UsageReport, UsageRow, WeightSet};

/// Arguments of `hatchery usage`.
#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// Hours back from now to show.
    #[arg(long, default_value_t = 24)]
    pub hours: u32,
    /// Only this workflow.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Another tenant's usage, as the admin (with `--admin-token` or HATCHERY_ADMIN_TOKEN).
    #[arg(long)]
    pub tenant: Option<String>,
    /// The admin token, with `--tenant`.
    #[arg(long, env = "HATCHERY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `hatchery usage`: runs, attempts, wall time, fuel, peak memory and HTTP requests per hour
/// and workflow.
pub async fn usage(args: UsageArgs) -> anyhow::Result<()> {
    let from = chrono::Utc::now() - chrono::TimeDelta::hours(i64::from(args.hours.max(1)));
    let query = [
        (
            "from",
            Some(from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ),
        ("workflow", args.workflow.clone()),
    ];
    let usage: UsageReport = match &args.tenant {
        Some(tenant) => {
            let admin = AdminArgs {
                url: args.client.url.clone(),
                admin_token: args.admin_token.clone(),
                json: args.client.json,
            };
            Client::admin(&admin)?
                .get_as(&format!("/api/v1/tenants/{}/usage", encode(tenant)), &query)
                .await?
        }
        None => {
            Client::tenant(&args.client)?
                .get_as("/api/v1/usage", &query)
                .await?
        }
    };
    if args.client.json {
        return print_json(&usage);
    }
    let row = |hour: String, workflow: String, u: &UsageRow| {
        vec![
            hour,
            workflow,
            u.runs.to_string(),
            u.attempts.to_string(),
            format!("{:.1}", u.wall_ms as f64 / 1e3),
            u.fuel.to_string(),
            mib(u.peak_memory_bytes),
            u.egress_requests.to_string(),
        ]
    };
    let mut rows: Vec<Vec<String>> = usage
        .hours
        .iter()
        .map(|u| row(u.hour.to_rfc3339(), u.workflow.clone(), u))
        .collect();
    if rows.is_empty() {
        println!("no usage in the last {} hours", args.hours.max(1));
        return Ok(());
    }
    let totals = &usage.totals;
    rows.push(row(
        "total".into(),
        String::new(),
        &UsageRow {
            hour: usage.from,
            workflow: String::new(),
            runs: totals.runs,
            attempts: totals.attempts,
            wall_ms: totals.wall_ms,
            fuel: totals.fuel,
            peak_memory_bytes: totals.peak_memory_bytes,
            egress_requests: totals.egress_requests,
        },
    ));
    print_table(
        &[
            "HOUR",
            "WORKFLOW",
            "RUNS",
            "ATTEMPTS",
            "WALL (s)",
            "FUEL",
            "PEAK MEMORY",
            "HTTP REQUESTS",
        ],
        &rows,
    );
    Ok(())
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Arguments of `hatchery tenants show`.
#[derive(Debug, clap::Args)]
pub struct TenantShowArgs {
    /// The tenant's id.
    pub tenant_id: String,
    /// Connection and output options.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Arguments of `hatchery tenants weight`.
#[derive(Debug, clap::Args)]
pub struct TenantWeightArgs {
    /// The tenant's id.
    pub tenant_id: String,
    /// Its share of slots and guest CPU when nodes are saturated (1–1000; default 1).
    pub weight: u32,
    /// Connection and output options.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Arguments of `hatchery tenants retention`.
#[derive(Debug, clap::Args)]
pub struct TenantRetentionArgs {
    /// The tenant's id.
    pub tenant_id: String,
    /// Days its finished runs and events are kept, or `default` for the nodes' default.
    pub days: String,
    /// Connection and output options.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `hatchery tenants show <id>`.
pub async fn show(args: TenantShowArgs) -> anyhow::Result<()> {
    let client = Client::admin(&args.admin)?;
    let tenant: TenantSettings = client
        .get_as(&format!("/api/v1/tenants/{}", encode(&args.tenant_id)), &[])
        .await?;
    if args.admin.json {
        return print_json(&tenant);
    }
    println!("tenant:    {} ({})", tenant.name, tenant.id);
    println!("weight:    {}", tenant.weight);
    print_retention(tenant.retention_days);
    Ok(())
}

fn print_retention(days: Option<i32>) {
    match days {
        Some(days) => println!("retention: {days} days"),
        None => println!("retention: the nodes' default (--retention-days)"),
    }
}

/// `hatchery tenants weight <id> <weight>`.
pub async fn weight(args: TenantWeightArgs) -> anyhow::Result<()> {
    let client = Client::admin(&args.admin)?;
    let path = format!("/api/v1/tenants/{}/weight", encode(&args.tenant_id));
    let set: WeightSet = client
        .put_as(&path, &json!({ "weight": args.weight }))
        .await?;
    if args.admin.json {
        return print_json(&set);
    }
    println!("weight:    {}", set.weight);
    Ok(())
}

/// `hatchery tenants retention <id> <days|default>`.
pub async fn retention(args: TenantRetentionArgs) -> anyhow::Result<()> {
    let days: Value = match args.days.as_str() {
        "default" => Value::Null,
        days => json!(
            days.parse::<u32>()
                .map_err(|_| anyhow::anyhow!("give a number of days or `default`"))?
        ),
    };
    let client = Client::admin(&args.admin)?;
    let path = format!("/api/v1/tenants/{}/retention", encode(&args.tenant_id));
    let set: RetentionSet = client.put_as(&path, &json!({ "days": days })).await?;
    if args.admin.json {
        return print_json(&set);
    }
    print_retention(set.retention_days);
    Ok(())
}

/// Arguments of `hatchery tenants quotas`: each flag a whole number, or `default` for the
/// nodes' default; quotas without a flag keep their value.
#[derive(Debug, clap::Args)]
pub struct TenantQuotasArgs {
    /// The tenant's id.
    pub tenant_id: String,
    /// Most unfinished (queued or running) runs; starts beyond it answer 429.
    #[arg(long)]
    pub max_queued_runs: Option<String>,
    /// Most task runs executing at once across the fleet.
    #[arg(long)]
    pub max_executing: Option<String>,
    /// Most bytes of stored modules.
    #[arg(long)]
    pub max_module_bytes: Option<String>,
    /// API requests a second, per node.
    #[arg(long)]
    pub api_requests_per_second: Option<String>,
    /// Module uploads an hour, per node.
    #[arg(long)]
    pub uploads_per_hour: Option<String>,
    /// Connection and output options.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// The five quotas, in the order they are shown.
const QUOTAS: [&str; 5] = [
    "max_queued_runs",
    "max_executing",
    "max_module_bytes",
    "api_requests_per_second",
    "uploads_per_hour",
];

/// `hatchery tenants quotas <id> [--<quota> N|default …]`.
pub async fn quotas(args: TenantQuotasArgs) -> anyhow::Result<()> {
    let client = Client::admin(&args.admin)?;
    let path = format!("/api/v1/tenants/{}/quotas", encode(&args.tenant_id));
    let mut shown = client.get(&path, &[]).await?;
    let changes = [
        &args.max_queued_runs,
        &args.max_executing,
        &args.max_module_bytes,
        &args.api_requests_per_second,
        &args.uploads_per_hour,
    ];
    if changes.iter().any(|c| c.is_some()) {
        let mut own = shown["own"].clone();
        for (name, change) in QUOTAS.iter().zip(changes) {
            let Some(change) = change else { continue };
            own[*name] = match change.as_str() {
                "default" => Value::Null,
                value => json!(value.parse::<i64>().map_err(|_| anyhow::anyhow!(
                    "--{}: give a whole number or `default`",
                    name.replace('_', "-")
                ))?),
            };
        }
        shown = client.put(&path, Body::Json(own)).await?;
    }
    if args.admin.json {
        return print_json(&shown);
    }
    let used = &shown["used"];
    let in_use = |name: &str| match name {
        "max_queued_runs" => used["unfinished_runs"].to_string(),
        "max_executing" => used["executing"].to_string(),
        "max_module_bytes" => used["module_bytes"].to_string(),
        _ => String::new(),
    };
    let rows: Vec<Vec<String>> = QUOTAS
        .iter()
        .map(|name| {
            let own = &shown["own"][*name];
            let effective = match &shown["effective"][*name] {
                Value::Null => "no limit".to_owned(),
                value => value.to_string(),
            };
            let source = if own.is_null() { "default" } else { "own" };
            vec![
                (*name).to_owned(),
                effective,
                source.to_owned(),
                in_use(name),
            ]
        })
        .collect();
    print_table(&["QUOTA", "LIMIT", "FROM", "IN USE"], &rows);
    Ok(())
}
