//! The client commands: `deploy`, `run`, `runs …`, `events`, `crons`, `rate-limits`,
//! `secrets`, `egress`, `fuel`, `tenants`, `tokens`. Each reads its arguments (`args`), calls
//! the API (`api_client`) and prints the answer (`render`); an API error prints the server's
//! message.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::api::types::{
    CreateCron, CreateTenant, CreateToken, Cron, CronList, EventRequest, LogLine, LogPage, Pushed,
    RateLimit, RateLimitDuration, RateLimitList, RescheduleBody, RunAccepted, RunBody, RunDetail,
    RunPage, SecretList, SetFuel, SetRateLimit, SetSecret, TaskFuel, TenantCreated, TokenCreated,
};
use crate::status::RunStatus;

use super::api_client::{Body, Client, ClientError, encode};
use super::args::{
    CronsCommand, DeployArgs, EgressCommand, EventsCommand, FuelArgs, RateLimitsCommand, RunArgs,
    RunIdArgs, RunsCommand, RunsListArgs, SecretsCommand, TenantsCommand, TokensCommand,
};
use super::render::{
    failure_reason, print_json, print_patterns, print_run, print_runs, print_table, progress_line,
    time_of,
};

/// How often `run --wait` refreshes the run.
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A secret's value: prompted for without echo on a terminal, else all of stdin (one trailing
/// newline dropped, as `echo` adds one).
pub(super) fn read_secret_value(name: &str) -> anyhow::Result<String> {
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

/// Patterns as the API takes them: JSON objects as given, anything else as a string.
pub(super) fn egress_patterns(patterns: &[String]) -> Value {
    patterns
        .iter()
        .map(|p| match serde_json::from_str::<Value>(p) {
            Ok(object @ Value::Object(_)) => object,
            _ => Value::String(p.clone()),
        })
        .collect()
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

/// Parses a JSON argument, naming the flag when it is not JSON.
pub(super) fn parse_json_arg(flag: &str, text: &str) -> anyhow::Result<Value> {
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
    let status = run.run.status;
    if args.client.json {
        print_json(&run)?;
    } else if status == RunStatus::Succeeded {
        print_json(&run.run.output)?;
    }
    match status {
        RunStatus::Succeeded => Ok(()),
        RunStatus::Cancelled => bail!("run {id} was cancelled"),
        _ => {
            let reason = failure_reason(&run);
            bail!("run {id} {status}: {reason}")
        }
    }
}

/// Polls run `id` until it finishes, showing its progress on stderr: a line redrawn in place
/// on a terminal, a line per change otherwise.
pub(super) async fn wait_for_run(client: &Client, id: &str) -> anyhow::Result<RunDetail> {
    let start = Instant::now();
    let live = std::io::stderr().is_terminal();
    let mut last = String::new();
    loop {
        let run = client.run(id).await?;
        let finished = run.run.status.is_finished();
        let line = progress_line(&run);
        let mut stderr = std::io::stderr().lock();
        if live {
            let elapsed = start.elapsed().as_secs_f64();
            let _ = write!(stderr, "\r\x1b[K{line}  {elapsed:.1}s");
            if finished {
                let _ = writeln!(stderr);
            }
        } else if line != last {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
        drop(stderr);
        last = line;
        if finished {
            return Ok(run);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
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
                let mut by_status = std::collections::BTreeMap::<RunStatus, usize>::new();
                for child in &children.runs {
                    *by_status.entry(child.status).or_default() += 1;
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
pub(super) fn parse_time_arg(text: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            anyhow::anyhow!("`{text}` is not an RFC 3339 time (2026-12-01T09:00:00Z): {e}")
        })
}

/// A duration such as `90s`, `15m`, `2h` or `1d` (a bare number is seconds).
pub(super) fn parse_duration_arg(text: &str) -> anyhow::Result<Duration> {
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

pub(super) async fn runs_list(args: RunsListArgs) -> anyhow::Result<()> {
    let client = Client::tenant(&args.client)?;
    let page: RunPage = client
        .get_as(
            "/api/v1/runs",
            &[
                ("workflow", args.workflow.clone()),
                ("status", args.status.map(|s| s.as_str().to_owned())),
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

/// The first page (up to 1,000) of the runs `id`'s tasks spawned.
pub(super) async fn children_of(client: &Client, id: &str) -> Result<RunPage, ClientError> {
    let path = format!("/api/v1/runs/{}/children", encode(id));
    client
        .get_as(&path, &[("limit", Some("1000".into()))])
        .await
}

pub(super) async fn runs_logs(args: RunIdArgs) -> anyhow::Result<()> {
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
