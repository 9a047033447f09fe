//! The manifest a module declares through `describe`: host-side types and their validation.
//!
//! The WIT types cross the component boundary; these are what the rest of the host (database,
//! API, scheduler) works with. A manifest is validated once, at load, and rejected with every
//! problem named; nothing downstream re-checks it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest accepted workflow, task or key name.
const MAX_NAME_LEN: usize = 128;
/// Most retries a task may ask for.
const MAX_RETRIES: u32 = 100;
/// Longest accepted execution timeout.
const MAX_EXECUTION_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted schedule timeout.
const MAX_SCHEDULE_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most slots a module may ask for on one node.
pub const MAX_SLOTS: u32 = 1_000;
/// Largest `max_runs` of a concurrency rule.
const MAX_CONCURRENCY_RUNS: u32 = 100_000;
/// Most tasks in one workflow.
const MAX_TASKS: usize = 1_000;

/// Everything a module declares about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The workflows the module provides.
    pub workflows: Vec<WorkflowDef>,
    /// Task runs of this module one node runs at once; `None` = the node's default.
    pub slots: Option<u32>,
}

/// A named DAG of tasks and how it is triggered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDef {
    /// Unique within the module.
    pub name: String,
    /// A human description.
    pub description: String,
    /// Event keys (with `*` wildcards) that start a run.
    pub on_events: Vec<String>,
    /// Cron expressions that start a run.
    pub on_crons: Vec<String>,
    /// Priority 1..=3 of runs that do not ask for one.
    pub default_priority: Option<u8>,
    /// Concurrency rules applied to whole workflow runs.
    pub concurrency: Vec<ConcurrencyRule>,
    /// The tasks of the DAG.
    pub tasks: Vec<TaskDef>,
    /// The task run when a run of this workflow fails.
    pub on_failure: Option<TaskDef>,
}

/// One task of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDef {
    /// Unique within the workflow.
    pub name: String,
    /// Tasks that must succeed first.
    pub parents: Vec<String>,
    /// Retries after a failed attempt.
    pub retries: u32,
    /// Wait between retries.
    pub backoff: Option<Backoff>,
    /// Wall-clock limit of one attempt.
    pub execution_timeout_ms: Option<u64>,
    /// How long the run may wait to start.
    pub schedule_timeout_ms: Option<u64>,
    /// Rate limits consumed before the task starts.
    pub rate_limits: Vec<RateLimit>,
    /// Concurrency rules of the task.
    pub concurrency: Vec<ConcurrencyRule>,
}

/// Exponential backoff between retries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Growth factor per attempt.
    pub factor: f64,
    /// Upper bound of one wait, in seconds.
    pub max_seconds: u32,
}

impl Backoff {
    /// The wait before attempt `next_attempt` (2 for the first retry):
    /// `min(max_seconds, factor ^ (next_attempt - 2))` seconds.
    pub fn delay(&self, next_attempt: u32) -> Duration {
        let exponent = next_attempt.saturating_sub(2).min(64) as i32;
        let seconds = self.factor.powi(exponent).min(f64::from(self.max_seconds));
        Duration::from_secs_f64(seconds.max(0.0))
    }
}

/// What follows a failed attempt: Hatchery's one retry decision. The node takes it for the
/// durable queue (the completion statement only persists it) and `hatchery exec` for a local
/// run, so both retry the same failures after the same waits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after a failed attempt.
    pub retries: u32,
    /// Wait between retries; none: retry at once.
    pub backoff: Option<Backoff>,
}

impl RetryPolicy {
    /// The policy of `task`.
    pub fn of(task: &TaskDef) -> Self {
        Self {
            retries: task.retries,
            backoff: task.backoff,
        }
    }

    /// After a failed attempt that follows `failures` earlier failed attempts: the wait before
    /// the next attempt, or `None` when the task fails for good (the failure is not retryable,
    /// or the retries are spent).
    pub fn after_failure(&self, failures: u32, retryable: bool) -> Option<Duration> {
        (retryable && failures < self.retries).then(|| {
            self.backoff
                .map(|b| b.delay(failures.saturating_add(2)))
                .unwrap_or_default()
        })
    }
}

/// Limits how many runs sharing a key are in progress at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConcurrencyRule {
    /// CEL expression that computes the key.
    pub expression: String,
    /// Most runs per key in progress at once.
    pub max_runs: u32,
    /// What happens to runs beyond `max_runs`.
    pub strategy: ConcurrencyStrategy,
}

/// The strategies of a concurrency rule, named as in Hatchet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConcurrencyStrategy {
    /// Queue, admit round-robin across keys.
    GroupRoundRobin,
    /// Cancel the oldest in progress to make room.
    CancelInProgress,
    /// Cancel the new run.
    CancelNewest,
}

/// A rate limit consumed before a task starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Which limit.
    pub key: RateLimitKey,
    /// Units one run consumes.
    pub units: u32,
    /// Units per window (required for dynamic keys).
    pub limit: Option<u32>,
    /// The window (required when `limit` is given).
    pub duration: Option<RateLimitDuration>,
}

/// The key of a rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    /// A named limit.
    Static(String),
    /// A CEL expression computing the key.
    Dynamic(String),
}

/// The window of a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitDuration {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
}

impl RateLimitDuration {
    /// The window's length.
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(match self {
            Self::Second => 1,
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => 86_400,
        })
    }
}

impl WorkflowDef {
    /// The task named `name`, including the on-failure task.
    pub fn task(&self, name: &str) -> Option<&TaskDef> {
        self.tasks
            .iter()
            .chain(self.on_failure.as_ref())
            .find(|task| task.name == name)
    }

    /// Tasks no other task names as a parent; their outputs form the workflow's output.
    pub fn leaves(&self) -> Vec<&TaskDef> {
        let parents: HashSet<&str> = self
            .tasks
            .iter()
            .flat_map(|task| task.parents.iter().map(String::as_str))
            .collect();
        self.tasks
            .iter()
            .filter(|task| !parents.contains(task.name.as_str()))
            .collect()
    }

    /// The workflow run's output from its tasks' outputs (JSON texts by task name): the single
    /// leaf's output as it is, or with several leaves an object keyed by leaf name.
    pub fn output(&self, outputs: &HashMap<String, String>) -> String {
        let leaves = self.leaves();
        let output_of = |name: &str| outputs.get(name).map_or("null", String::as_str);
        match leaves.as_slice() {
            [single] => output_of(&single.name).to_owned(),
            many => {
                let fields: Vec<String> = many
                    .iter()
                    .map(|leaf| {
                        let key = serde_json::Value::String(leaf.name.clone());
                        format!("{key}:{}", output_of(&leaf.name))
                    })
                    .collect();
                format!("{{{}}}", fields.join(","))
            }
        }
    }

    /// The tasks in an order where every task comes after its parents (Kahn's algorithm,
    /// stable in declaration order). `None` if the graph has a cycle.
    pub fn topological_order(&self) -> Option<Vec<&TaskDef>> {
        let index: HashMap<&str, usize> = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, task)| (task.name.as_str(), i))
            .collect();
        let mut missing_parents: Vec<usize> = self
            .tasks
            .iter()
            .map(|task| {
                task.parents
                    .iter()
                    .filter(|p| index.contains_key(p.as_str()))
                    .count()
            })
            .collect();
        let mut order = Vec::with_capacity(self.tasks.len());
        let mut done = vec![false; self.tasks.len()];
        while order.len() < self.tasks.len() {
            let next = (0..self.tasks.len()).find(|&i| !done[i] && missing_parents[i] == 0)?;
            done[next] = true;
            order.push(&self.tasks[next]);
            for (i, task) in self.tasks.iter().enumerate() {
                if task.parents.iter().any(|p| p == &self.tasks[next].name) {
                    missing_parents[i] -= 1;
                }
            }
        }
        Some(order)
    }
}

/// Every problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// One line per problem, each naming where it is.
    pub problems: Vec<String>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid manifest: {}", self.problems.join("; "))
    }
}

impl std::error::Error for ManifestError {}

/// Parses a cron expression: 5 fields (minute first, as in crontab) or 6 with seconds first.
pub fn parse_cron(expression: &str) -> Result<cron::Schedule, String> {
    let fields = expression.split_whitespace().count();
    let normalised = match fields {
        5 => format!("0 {expression}"),
        6 => expression.to_owned(),
        n => return Err(format!("expected 5 or 6 fields, found {n}")),
    };
    cron::Schedule::from_str(&normalised).map_err(|e| e.to_string())
}

/// Parses a CEL expression over `input` and `additional_metadata`.
pub fn parse_expression(expression: &str) -> Result<cel::Program, String> {
    if expression.trim().is_empty() {
        return Err("expression is empty".into());
    }
    cel::Program::compile(expression).map_err(|e| e.to_string().trim().replace('\n', " "))
}

/// Whether `key` matches the event pattern `pattern`, where `*` matches any run of characters.
pub fn event_matches(pattern: &str, key: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = key.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

impl Manifest {
    /// Checks names, the DAG, triggers, expressions and numbers; names every problem found.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let mut problems = Vec::new();
        if self.workflows.is_empty() {
            problems.push("the module declares no workflow".to_owned());
        }
        if let Some(slots) = self.slots
            && !(1..=MAX_SLOTS).contains(&slots)
        {
            problems.push(format!(
                "slots must be between 1 and {MAX_SLOTS}, got {slots}"
            ));
        }
        if serde_json::to_value(self).is_ok_and(|value| holds_nul(&value)) {
            problems
                .push("the manifest contains a NUL character, which cannot be stored".to_owned());
        }
        let mut seen = HashSet::new();
        for workflow in &self.workflows {
            let at = format!("workflow `{}`", workflow.name);
            check_name(&mut problems, &at, &workflow.name);
            if !seen.insert(workflow.name.as_str()) {
                problems.push(format!("{at}: declared twice"));
            }
            validate_workflow(&mut problems, &at, workflow);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ManifestError { problems })
        }
    }

    /// The workflow named `name`.
    pub fn workflow(&self, name: &str) -> Option<&WorkflowDef> {
        self.workflows.iter().find(|w| w.name == name)
    }
}

/// Whether any string in `value` holds a NUL character (PostgreSQL text and jsonb cannot).
fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(fields) => fields.values().any(holds_nul),
        _ => false,
    }
}

fn check_name(problems: &mut Vec<String>, at: &str, name: &str) {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if name.is_empty() || name.len() > MAX_NAME_LEN || !valid_chars {
        problems.push(format!(
            "{at}: name must be 1 to {MAX_NAME_LEN} characters of letters, digits, `-`, `_`, `.`, `:`"
        ));
    }
}

fn validate_workflow(problems: &mut Vec<String>, at: &str, workflow: &WorkflowDef) {
    if workflow.tasks.is_empty() {
        problems.push(format!("{at}: has no task"));
    }
    if workflow.tasks.len() > MAX_TASKS {
        problems.push(format!("{at}: has more than {MAX_TASKS} tasks"));
    }
    if let Some(priority) = workflow.default_priority
        && !(1..=3).contains(&priority)
    {
        problems.push(format!(
            "{at}: default priority must be 1, 2 or 3, got {priority}"
        ));
    }
    for pattern in &workflow.on_events {
        if pattern.is_empty() || pattern.len() > 256 || pattern.chars().any(char::is_whitespace) {
            problems.push(format!(
                "{at}: event key `{pattern}` must be 1 to 256 characters without spaces"
            ));
        }
    }
    for expression in &workflow.on_crons {
        if let Err(e) = parse_cron(expression) {
            problems.push(format!("{at}: cron `{expression}` is invalid: {e}"));
        }
    }
    for rule in &workflow.concurrency {
        validate_concurrency(problems, at, rule);
    }
    let mut names = HashSet::new();
    for task in workflow.tasks.iter().chain(workflow.on_failure.as_ref()) {
        let task_at = format!("{at}: task `{}`", task.name);
        check_name(problems, &task_at, &task.name);
        if !names.insert(task.name.as_str()) {
            problems.push(format!("{task_at}: declared twice"));
        }
        validate_task(problems, &task_at, task);
    }
    let declared: HashSet<&str> = workflow.tasks.iter().map(|t| t.name.as_str()).collect();
    for task in &workflow.tasks {
        let mut parents = HashSet::new();
        for parent in &task.parents {
            let task_at = format!("{at}: task `{}`", task.name);
            if parent == &task.name {
                problems.push(format!("{task_at}: is its own parent"));
            } else if !declared.contains(parent.as_str()) {
                problems.push(format!("{task_at}: parent `{parent}` does not exist"));
            }
            if !parents.insert(parent.as_str()) {
                problems.push(format!("{task_at}: parent `{parent}` listed twice"));
            }
        }
    }
    if let Some(on_failure) = &workflow.on_failure
        && !on_failure.parents.is_empty()
    {
        problems.push(format!(
            "{at}: on-failure task `{}` cannot have parents",
            on_failure.name
        ));
    }
    if workflow.topological_order().is_none() {
        problems.push(format!("{at}: the tasks' parents form a cycle"));
    }
}

fn validate_task(problems: &mut Vec<String>, at: &str, task: &TaskDef) {
    if task.retries > MAX_RETRIES {
        problems.push(format!("{at}: retries must be at most {MAX_RETRIES}"));
    }
    if let Some(backoff) = task.backoff {
        if !backoff.factor.is_finite() || !(1.0..=100.0).contains(&backoff.factor) {
            problems.push(format!("{at}: backoff factor must be between 1 and 100"));
        }
        if backoff.max_seconds == 0 || backoff.max_seconds > 7 * 86_400 {
            problems.push(format!(
                "{at}: backoff max seconds must be between 1 and 604800"
            ));
        }
    }
    let timeouts = [
        (
            "execution",
            task.execution_timeout_ms,
            MAX_EXECUTION_TIMEOUT,
        ),
        ("schedule", task.schedule_timeout_ms, MAX_SCHEDULE_TIMEOUT),
    ];
    for (kind, timeout, max) in timeouts {
        if let Some(ms) = timeout
            && (ms == 0 || u128::from(ms) > max.as_millis())
        {
            problems.push(format!(
                "{at}: {kind} timeout must be between 1 ms and {} s",
                max.as_secs()
            ));
        }
    }
    for rule in &task.concurrency {
        validate_concurrency(problems, at, rule);
    }
    for limit in &task.rate_limits {
        validate_rate_limit(problems, at, limit);
    }
}

fn validate_concurrency(problems: &mut Vec<String>, at: &str, rule: &ConcurrencyRule) {
    if let Err(e) = parse_expression(&rule.expression) {
        problems.push(format!(
            "{at}: concurrency expression `{}` is invalid: {e}",
            rule.expression
        ));
    }
    if rule.max_runs == 0 || rule.max_runs > MAX_CONCURRENCY_RUNS {
        problems.push(format!(
            "{at}: concurrency max runs must be between 1 and {MAX_CONCURRENCY_RUNS}"
        ));
    }
}

fn validate_rate_limit(problems: &mut Vec<String>, at: &str, limit: &RateLimit) {
    match &limit.key {
        RateLimitKey::Static(key) => check_name(problems, &format!("{at}: rate limit"), key),
        RateLimitKey::Dynamic(expression) => {
            if let Err(e) = parse_expression(expression) {
                problems.push(format!(
                    "{at}: rate limit key expression `{expression}` is invalid: {e}"
                ));
            }
            if limit.limit.is_none() {
                problems.push(format!("{at}: a dynamic rate limit needs a limit"));
            }
        }
    }
    if limit.units == 0 {
        problems.push(format!("{at}: rate limit units must be at least 1"));
    }
    match (limit.limit, limit.duration) {
        (Some(0), _) => problems.push(format!("{at}: rate limit must be at least 1")),
        (Some(max), _) if limit.units > max => problems.push(format!(
            "{at}: rate limit units ({}) exceed the limit ({max}), so no run could ever start",
            limit.units
        )),
        (Some(_), None) => {
            problems.push(format!("{at}: a rate limit with a limit needs a duration"))
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, parents: &[&str]) -> TaskDef {
        TaskDef {
            name: name.into(),
            parents: parents.iter().map(|p| (*p).into()).collect(),
            retries: 0,
            backoff: None,
            execution_timeout_ms: None,
            schedule_timeout_ms: None,
            rate_limits: vec![],
            concurrency: vec![],
        }
    }

    fn workflow(name: &str, tasks: Vec<TaskDef>) -> WorkflowDef {
        WorkflowDef {
            name: name.into(),
            description: String::new(),
            on_events: vec![],
            on_crons: vec![],
            default_priority: None,
            concurrency: vec![],
            tasks,
            on_failure: None,
        }
    }

    fn manifest(workflows: Vec<WorkflowDef>) -> Manifest {
        Manifest {
            workflows,
            slots: None,
        }
    }

    fn problems(m: &Manifest) -> Vec<String> {
        m.validate().err().map(|e| e.problems).unwrap_or_default()
    }

    #[test]
    fn a_diamond_is_valid_and_ordered() {
        let wf = workflow(
            "diamond",
            vec![
                task("d", &["b", "c"]),
                task("b", &["a"]),
                task("c", &["a"]),
                task("a", &[]),
            ],
        );
        let order: Vec<&str> = wf
            .topological_order()
            .expect("acyclic")
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        assert_eq!(wf.leaves().len(), 1);
        assert_eq!(problems(&manifest(vec![wf])), Vec::<String>::new());
    }

    #[test]
    fn cycles_missing_parents_and_duplicates_are_named() {
        let m = manifest(vec![
            workflow(
                "w",
                vec![task("a", &["c"]), task("b", &["a"]), task("c", &["b"])],
            ),
            workflow("w", vec![task("x", &["nope"]), task("x", &[])]),
        ]);
        let found = problems(&m);
        assert!(found.contains(&"workflow `w`: the tasks' parents form a cycle".to_owned()));
        assert!(found.contains(&"workflow `w`: declared twice".to_owned()));
        assert!(found.contains(&"workflow `w`: task `x`: parent `nope` does not exist".to_owned()));
        assert!(found.contains(&"workflow `w`: task `x`: declared twice".to_owned()));
    }

    #[test]
    fn triggers_expressions_and_numbers_are_checked() {
        let mut wf = workflow("w", vec![task("a", &[])]);
        wf.on_crons = vec!["*/5 * * * *".into(), "not a cron".into()];
        wf.default_priority = Some(4);
        wf.concurrency = vec![ConcurrencyRule {
            expression: "input.user_id +".into(),
            max_runs: 0,
            strategy: ConcurrencyStrategy::GroupRoundRobin,
        }];
        wf.tasks[0].rate_limits = vec![RateLimit {
            key: RateLimitKey::Dynamic("input.tenant".into()),
            units: 1,
            limit: None,
            duration: None,
        }];
        let found = problems(&manifest(vec![wf]));
        assert_eq!(found.len(), 5, "{found:#?}");
        for expected in [
            "workflow `w`: cron `not a cron` is invalid: expected 5 or 6 fields, found 3",
            "workflow `w`: default priority must be 1, 2 or 3, got 4",
            "workflow `w`: concurrency expression `input.user_id +` is invalid",
            "workflow `w`: concurrency max runs must be between 1",
            "workflow `w`: task `a`: a dynamic rate limit needs a limit",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "missing {expected:?} in {found:#?}"
            );
        }
    }

    #[test]
    fn a_nul_in_a_description_is_refused() {
        let mut wf = workflow("w", vec![task("a", &[])]);
        wf.description = "bad\0text".into();
        assert_eq!(
            problems(&manifest(vec![wf])),
            ["the manifest contains a NUL character, which cannot be stored"]
        );
    }

    #[test]
    fn five_and_six_field_crons_parse() {
        assert!(parse_cron("0 * * * *").is_ok());
        assert!(parse_cron("30 0 * * * *").is_ok());
        assert!(parse_cron("* * *").is_err());
    }

    #[test]
    fn event_patterns_match_with_wildcards() {
        assert!(event_matches("user:created", "user:created"));
        assert!(!event_matches("user:created", "user:created2"));
        assert!(event_matches("user:*", "user:deleted"));
        assert!(event_matches("*", "anything"));
        assert!(event_matches("a*c*e", "abcde"));
        assert!(!event_matches("a*c*e", "abcd"));
        assert!(!event_matches("order:*", "user:1"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let backoff = Backoff {
            factor: 2.0,
            max_seconds: 10,
        };
        assert_eq!(backoff.delay(2), Duration::from_secs(1));
        assert_eq!(backoff.delay(3), Duration::from_secs(2));
        assert_eq!(backoff.delay(5), Duration::from_secs(8));
        assert_eq!(backoff.delay(6), Duration::from_secs(10));
    }

    #[test]
    fn retries_follow_the_policy_until_spent() {
        let policy = RetryPolicy {
            retries: 2,
            backoff: Some(Backoff {
                factor: 3.0,
                max_seconds: 5,
            }),
        };
        assert_eq!(policy.after_failure(0, true), Some(Duration::from_secs(1)));
        assert_eq!(policy.after_failure(1, true), Some(Duration::from_secs(3)));
        assert_eq!(policy.after_failure(2, true), None, "retries spent");
        assert_eq!(policy.after_failure(0, false), None, "not retryable");
        let at_once = RetryPolicy {
            retries: 1,
            backoff: None,
        };
        assert_eq!(at_once.after_failure(0, true), Some(Duration::ZERO));
    }
}
