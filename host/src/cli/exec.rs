//! `hatchery exec` and `hatchery inspect`: the task author's inner loop, with no database.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::CacheArgs;
use crate::manifest::{Manifest, RateLimitKey};
use crate::runtime::local::{LocalRunner, WorkflowReport};
use crate::runtime::{AttemptReport, Limits, LoadedModule, Runtime, RuntimeConfig, Worker};

/// Arguments of `hatchery exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The component (`.wasm`) to run.
    pub file: PathBuf,
    /// The workflow to run.
    pub workflow: String,
    /// Run only this task (once, no retries) instead of the whole workflow.
    #[arg(long)]
    pub task: Option<String>,
    /// JSON input.
    #[arg(long, default_value = "{}", conflicts_with = "input_file")]
    pub input: String,
    /// Read the JSON input from this file.
    #[arg(long)]
    pub input_file: Option<PathBuf>,
    /// Additional metadata of the run, a JSON object.
    #[arg(long, default_value = "{}")]
    pub metadata: String,
    /// With `--task`: a parent's output, as `name=JSON` (repeatable).
    #[arg(long = "parent", value_name = "NAME=JSON")]
    pub parents: Vec<String>,
    /// Memory limit per attempt, in MiB.
    #[arg(long, default_value_t = 64)]
    pub memory_mib: u64,
    /// Fuel (instructions) per attempt; 0 = unlimited.
    #[arg(long, default_value_t = 100_000_000_000)]
    pub fuel: u64,
    /// Wall-clock timeout per attempt, in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Let tasks send HTTP requests matching this pattern (repeatable): `host[:port]`,
    /// `*.domain`, an IP address, or a JSON object (see `hatchery egress set`). Default: none.
    #[arg(long = "allow-http", value_name = "PATTERN")]
    pub allow_http: Vec<String>,
    /// Print a JSON report (output, error, every attempt and its logs) instead of the output.
    #[arg(long)]
    pub json: bool,
    /// Compile cache options.
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Arguments of `hatchery inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The component (`.wasm`) to inspect.
    pub file: PathBuf,
    /// Print the manifest as JSON.
    #[arg(long)]
    pub json: bool,
    /// Compile cache options.
    #[command(flatten)]
    pub cache: CacheArgs,
}

async fn load(
    file: &PathBuf,
    cache: &CacheArgs,
) -> anyhow::Result<(Runtime, std::sync::Arc<LoadedModule>)> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: cache.dir(),
        ..RuntimeConfig::default()
    })?;
    let module = runtime
        .load(&bytes)
        .await
        .with_context(|| format!("cannot load {}", file.display()))?;
    Ok((runtime, module))
}

fn parse_json(what: &str, text: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(text).with_context(|| format!("{what} is not valid JSON"))
}

/// Runs `hatchery exec`.
pub async fn exec(args: ExecArgs) -> anyhow::Result<()> {
    let input = match &args.input_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => args.input.clone(),
    };
    parse_json("--input", &input)?;
    if !parse_json("--metadata", &args.metadata)?.is_object() {
        bail!("--metadata must be a JSON object");
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let limits = Limits {
        memory_bytes: args.memory_mib << 20,
        fuel: (args.fuel > 0).then_some(args.fuel),
        timeout: Duration::from_secs_f64(args.timeout),
        ..Limits::default()
    };
    let mut allow = Vec::new();
    for pattern in &args.allow_http {
        let parsed = match serde_json::from_str::<serde_json::Value>(pattern) {
            Ok(object @ serde_json::Value::Object(_)) => serde_json::from_value(object),
            _ => serde_json::from_value(serde_json::Value::String(pattern.clone())),
        };
        allow.push(parsed.with_context(|| format!("--allow-http `{pattern}`"))?);
    }
    let egress = crate::egress::EgressPolicy {
        ceiling: allow.clone(),
        allow,
    };
    let (runtime, module) = load(&args.file, &args.cache).await?;
    let slots = module.manifest.slots.unwrap_or(crate::manifest::MAX_SLOTS);
    let runner = LocalRunner::with_egress(Worker::new(runtime, module, slots), limits, egress);
    let interrupt = runner.cancel_token().clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupt.cancel();
        }
    });

    let report = match &args.task {
        Some(task) => {
            let mut parents = Vec::new();
            for parent in &args.parents {
                let (name, output) = parent
                    .split_once('=')
                    .with_context(|| format!("--parent `{parent}` is not NAME=JSON"))?;
                parse_json("--parent", output)?;
                parents.push((name.to_owned(), output.to_owned()));
            }
            let attempt = runner
                .run_task(&args.workflow, task, input, parents)
                .await
                .map_err(anyhow::Error::msg)?;
            WorkflowReport {
                outcome: attempt
                    .outcome
                    .clone()
                    .map_err(|e| format!("task `{task}` failed: {e}")),
                tasks: vec![crate::runtime::local::TaskReport {
                    task: task.clone(),
                    attempts: vec![attempt],
                }],
            }
        }
        None => runner
            .run_workflow(&args.workflow, input, args.metadata.clone())
            .await
            .map_err(anyhow::Error::msg)?,
    };

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report_json(&report))?);
    } else {
        print_logs(&report);
    }
    match &report.outcome {
        Ok(output) => {
            if !args.json {
                let value = parse_json("the output", output)?;
                println!("{}", serde_json::to_string_pretty(&value)?);
            }
            Ok(())
        }
        Err(error) => bail!("{error}"),
    }
}

fn print_logs(report: &WorkflowReport) {
    for task in &report.tasks {
        for (number, attempt) in task.attempts.iter().enumerate() {
            for line in &attempt.logs {
                eprintln!(
                    "[{} #{}] {:5} {}",
                    task.task,
                    number + 1,
                    line.level.as_str(),
                    line.message
                );
            }
            if let Err(error) = &attempt.outcome {
                eprintln!("[{} #{}] attempt failed: {error}", task.task, number + 1);
            }
        }
    }
}

fn attempt_json(attempt: &AttemptReport) -> serde_json::Value {
    serde_json::json!({
        "output": attempt.outcome.as_ref().ok().map(|o| serde_json::from_str::<serde_json::Value>(o).unwrap_or_default()),
        "error": attempt.outcome.as_ref().err().map(|e| serde_json::json!({"code": e.code(), "message": e.to_string()})),
        "elapsed_ms": attempt.elapsed.as_secs_f64() * 1e3,
        "fuel_used": attempt.fuel_used,
        "memory_bytes": attempt.memory_bytes,
        "logs": attempt.logs.iter().map(|l| serde_json::json!({"level": l.level, "message": l.message})).collect::<Vec<_>>(),
    })
}

fn report_json(report: &WorkflowReport) -> serde_json::Value {
    serde_json::json!({
        "output": report.outcome.as_ref().ok().map(|o| serde_json::from_str::<serde_json::Value>(o).unwrap_or_default()),
        "error": report.outcome.as_ref().err(),
        "tasks": report.tasks.iter().map(|t| serde_json::json!({
            "task": t.task,
            "attempts": t.attempts.iter().map(attempt_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Runs `hatchery inspect`.
pub async fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let (_runtime, module) = load(&args.file, &args.cache).await?;
    if args.json {
        let value = serde_json::json!({
            "digest": module.digest.to_string(),
            "size": module.size,
            "footprint": {
                "core_instances": module.footprint.core_instances,
                "memories": module.footprint.memories,
                "tables": module.footprint.tables,
            },
            "manifest": module.manifest,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("module {} ({} bytes)", module.digest, module.size);
        let footprint = module.footprint;
        println!(
            "one instance takes {} core instances, {} memories and {} tables of the pool",
            footprint.core_instances, footprint.memories, footprint.tables
        );
        print_manifest(&module.manifest);
    }
    Ok(())
}

fn print_manifest(manifest: &Manifest) {
    if let Some(slots) = manifest.slots {
        println!("slots: {slots}");
    }
    for workflow in &manifest.workflows {
        println!("\nworkflow {}", workflow.name);
        if !workflow.description.is_empty() {
            println!("  {}", workflow.description);
        }
        if !workflow.on_events.is_empty() {
            println!("  on events: {}", workflow.on_events.join(", "));
        }
        if !workflow.on_crons.is_empty() {
            println!("  on crons: {}", workflow.on_crons.join(", "));
        }
        if let Some(priority) = workflow.default_priority {
            println!("  default priority: {priority}");
        }
        for rule in &workflow.concurrency {
            println!(
                "  concurrency: {} ≤ {} ({:?})",
                rule.expression, rule.max_runs, rule.strategy
            );
        }
        for task in workflow.tasks.iter().chain(workflow.on_failure.as_ref()) {
            let on_failure = workflow
                .on_failure
                .as_ref()
                .is_some_and(|f| f.name == task.name);
            let mut line = format!("  task {}", task.name);
            if on_failure {
                line.push_str(" (on failure)");
            }
            if !task.parents.is_empty() {
                line.push_str(&format!(" ← {}", task.parents.join(", ")));
            }
            if task.retries > 0 {
                line.push_str(&format!("; retries {}", task.retries));
            }
            if let Some(ms) = task.execution_timeout_ms {
                line.push_str(&format!("; timeout {}", crate::runtime::format_millis(ms)));
            }
            for limit in &task.rate_limits {
                let key = match &limit.key {
                    RateLimitKey::Static(key) => key.clone(),
                    RateLimitKey::Dynamic(expression) => format!("dynamic({expression})"),
                };
                line.push_str(&format!("; rate limit {key} ×{}", limit.units));
            }
            for rule in &task.concurrency {
                line.push_str(&format!(
                    "; concurrency {} ≤ {}",
                    rule.expression, rule.max_runs
                ));
            }
            println!("{line}");
        }
    }
}
