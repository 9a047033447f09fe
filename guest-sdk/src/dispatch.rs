//! The two exports behind [`export!`](crate::export): `describe` turns the author's [`Module`]
//! into the manifest, `run` finds the task a run names and calls it. Neither panics on bad
//! input from the host: an unknown workflow or task is a [`TaskError::Fatal`].

use crate::{Context, Module, TaskError};

/// The manifest of the module `build` returns.
pub fn describe(build: fn() -> Module) -> crate::wit::Manifest {
    build().to_manifest()
}

/// Runs task `ctx.task` of workflow `ctx.workflow` of the module `build` returns on `input`.
pub fn run(
    build: fn() -> Module,
    ctx: crate::wit::RunContext,
    input: String,
) -> Result<String, crate::wit::TaskError> {
    run_task(&build(), Context::from_wit(ctx), &input).map_err(Into::into)
}

fn run_task(module: &Module, ctx: Context, input: &str) -> Result<String, TaskError> {
    let workflow = module.find_workflow(ctx.workflow()).ok_or_else(|| {
        TaskError::Fatal(format!(
            "this module has no workflow named `{}`",
            ctx.workflow()
        ))
    })?;
    let task = workflow.find_task(ctx.task()).ok_or_else(|| {
        TaskError::Fatal(format!(
            "workflow `{}` has no task named `{}`",
            ctx.workflow(),
            ctx.task()
        ))
    })?;
    task.call(input, &ctx)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::wit::hatchery::task::types as wit;
    use crate::{Concurrency, ConcurrencyStrategy, RateLimit, RateLimitDuration, Task, Workflow};

    #[derive(Deserialize)]
    struct Name {
        name: String,
    }

    #[derive(Serialize, Deserialize)]
    struct Greeting {
        greeting: String,
    }

    fn greet(input: Name, _ctx: &Context) -> Result<Greeting, TaskError> {
        Ok(Greeting {
            greeting: format!("Hello, {}!", input.name),
        })
    }

    fn shout(_input: serde_json::Value, ctx: &Context) -> Result<String, TaskError> {
        let greeting: Greeting = ctx.parent_output("greet")?;
        Ok(greeting.greeting.to_uppercase())
    }

    fn give_up(_input: serde_json::Value, _ctx: &Context) -> Result<(), TaskError> {
        Err(TaskError::fatal("no"))
    }

    fn module() -> Module {
        Module::new().slots(4).workflow(
            Workflow::new("hello")
                .description("says hello")
                .on_event("user:*")
                .on_cron("*/5 * * * *")
                .default_priority(2)
                .concurrency(Concurrency::new(
                    "input.name",
                    1,
                    ConcurrencyStrategy::CancelNewest,
                ))
                .task(Task::new("greet", greet))
                .task(
                    Task::new("shout", shout)
                        .parent("greet")
                        .retries(2)
                        .backoff(2.0, 30)
                        .execution_timeout(std::time::Duration::from_millis(1500))
                        .rate_limit(RateLimit::static_key("k", 1).limit(5, RateLimitDuration::Hour))
                        .rate_limit(RateLimit::dynamic(
                            "input.name",
                            2,
                            3,
                            RateLimitDuration::Day,
                        )),
                )
                .on_failure(Task::new("cleanup", give_up)),
        )
    }

    fn context(workflow: &str, task: &str, parents: &[(&str, &str)]) -> wit::RunContext {
        wit::RunContext {
            workflow_run_id: "wr-1".into(),
            task_run_id: "tr-1".into(),
            workflow: workflow.into(),
            task: task.into(),
            attempt: 1,
            metadata: r#"{"tenant":"t"}"#.into(),
            parents: parents
                .iter()
                .map(|(name, output)| ((*name).into(), (*output).into()))
                .collect(),
        }
    }

    fn run_module(ctx: wit::RunContext, input: &str) -> Result<String, TaskError> {
        run(module, ctx, input.into()).map_err(|error| match error {
            wit::TaskError::Failed(message) => TaskError::Failed(message),
            wit::TaskError::Fatal(message) => TaskError::Fatal(message),
        })
    }

    #[test]
    fn describe_reports_every_declaration() {
        let manifest = describe(module);
        assert_eq!(manifest.slots, Some(4));
        let workflow = &manifest.workflows[0];
        assert_eq!(workflow.name, "hello");
        assert_eq!(workflow.on_events, ["user:*"]);
        assert_eq!(workflow.on_crons, ["*/5 * * * *"]);
        assert_eq!(workflow.default_priority, Some(2));
        assert_eq!(workflow.concurrency[0].max_runs, 1);
        let shout = &workflow.tasks[1];
        assert_eq!(shout.parents, ["greet"]);
        assert_eq!(shout.retries, 2);
        assert_eq!(shout.execution_timeout_ms, Some(1500));
        assert_eq!(shout.schedule_timeout_ms, None);
        assert!(matches!(
            shout.backoff,
            Some(wit::Backoff {
                max_seconds: 30,
                ..
            })
        ));
        assert!(matches!(
            &shout.rate_limits[0],
            wit::RateLimit { key: wit::RateLimitKey::StaticKey(key), units: 1, limit: Some(5), duration: Some(wit::RateLimitDuration::Hour) } if key == "k"
        ));
        assert!(matches!(
            &shout.rate_limits[1],
            wit::RateLimit {
                key: wit::RateLimitKey::DynamicKey(_),
                units: 2,
                limit: Some(3),
                duration: Some(wit::RateLimitDuration::Day)
            }
        ));
        assert_eq!(
            workflow.on_failure.as_ref().map(|task| task.name.as_str()),
            Some("cleanup")
        );
    }

    #[test]
    fn run_decodes_input_and_encodes_output() {
        let output = run_module(context("hello", "greet", &[]), r#"{"name":"Ada"}"#);
        assert_eq!(output, Ok(r#"{"greeting":"Hello, Ada!"}"#.into()));
    }

    #[test]
    fn run_passes_parent_outputs() {
        let parents = [("greet", r#"{"greeting":"Hello, Ada!"}"#)];
        let output = run_module(context("hello", "shout", &parents), "{}");
        assert_eq!(output, Ok(r#""HELLO, ADA!""#.into()));
        let missing = run_module(context("hello", "shout", &[]), "{}");
        assert!(missing.is_err_and(|error| error.is_fatal()));
    }

    #[test]
    fn run_finds_the_on_failure_task() {
        let output = run_module(context("hello", "cleanup", &[]), "{}");
        assert_eq!(output, Err(TaskError::Fatal("no".into())));
    }

    #[test]
    fn unknown_names_and_bad_input_are_fatal() {
        let error = run_module(context("nope", "greet", &[]), "{}").expect_err("must fail");
        assert_eq!(
            error,
            TaskError::Fatal("this module has no workflow named `nope`".into())
        );
        let error = run_module(context("hello", "nope", &[]), "{}").expect_err("must fail");
        assert_eq!(
            error,
            TaskError::Fatal("workflow `hello` has no task named `nope`".into())
        );
        let error = run_module(context("hello", "greet", &[]), "{}").expect_err("must fail");
        assert!(error.is_fatal());
        assert!(
            error.message().starts_with(
                "invalid input for task `greet` of workflow `hello`: missing field `name`"
            ),
            "{error}"
        );
    }
}
