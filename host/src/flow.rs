//! Flow control: the gates a task run passes before it starts (concurrency rules and rate
//! limits), computed once from a run's input when the run is created, and the admission policy
//! that decides, while the keys are locked, which waiting task runs start.
//!
//! Nothing here touches the database: `db::flow` reads and writes the state, and
//! `scheduler::admission` runs one admission transaction with the policy below.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::manifest::{
    ConcurrencyRule, ConcurrencyStrategy, RateLimit, RateLimitKey, TaskDef, WorkflowDef,
    parse_expression,
};

/// Whom a concurrency place belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The whole workflow run: held from its first task's start until the run finishes.
    Run,
    /// One task run: held while an attempt executes.
    Task,
}

/// One condition a task run must meet before it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Gate {
    /// A place under a concurrency rule.
    Concurrency {
        /// The key as stored: the rule's identity and the computed value.
        key: String,
        /// The computed value, as users see it.
        value: String,
        /// The rule's expression.
        rule: String,
        /// Most places of the key at once.
        max_runs: u32,
        /// What happens beyond `max_runs`.
        strategy: ConcurrencyStrategy,
        /// Whose place it is.
        scope: Scope,
    },
    /// Units of a rate limit.
    RateLimit {
        /// The limit's key (a static name, or the computed value of a dynamic key).
        key: String,
        /// Units one start consumes.
        units: u32,
        /// A dynamic key's limit and window in milliseconds (a static key's are stored).
        dynamic: Option<(u32, u64)>,
    },
}

impl Gate {
    /// The key that admission turns round-robin over when this gate comes first.
    fn round_robin_key(&self) -> String {
        match self {
            Gate::Concurrency { key, .. } => format!("c:{key}"),
            Gate::RateLimit { key, .. } => format!("r:{key}"),
        }
    }
}

/// A key expression that cannot be computed for a run's input: the run is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{expression}` cannot be computed for this run: {reason}")]
pub struct KeyError {
    /// "concurrency key" or "rate limit key".
    pub what: &'static str,
    /// The expression.
    pub expression: String,
    /// Why.
    pub reason: String,
}

/// The gates of one new workflow run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunGates {
    /// The workflow's concurrency rules; its first tasks pass them.
    pub run: Vec<Gate>,
    /// Each task's own rules and rate limits, by task name.
    pub tasks: HashMap<String, Vec<Gate>>,
}

impl RunGates {
    /// The gates of task `task` (a first task, without parents, when `root`), as stored with it,
    /// and the key it waits under; `None` when it has none.
    pub fn of_task(&self, task: &TaskDef, root: bool) -> Option<(String, String)> {
        let mut gates: Vec<&Gate> = Vec::new();
        if root {
            gates.extend(&self.run);
        }
        gates.extend(self.tasks.get(&task.name).into_iter().flatten());
        let first = gates.first()?.round_robin_key();
        let json = serde_json::to_string(&gates).unwrap_or_else(|_| "[]".into());
        Some((json, first))
    }

    /// Whether the run is held by a workflow-level rule.
    pub fn is_run_gated(&self) -> bool {
        !self.run.is_empty()
    }
}

/// Computes the gates of a run of `workflow` with `input` and `additional_metadata`; `None`
/// when the workflow declares no rule at all (the common case costs nothing).
pub fn run_gates(
    workflow: &WorkflowDef,
    input: &Value,
    additional_metadata: &Value,
) -> Result<Option<RunGates>, KeyError> {
    let tasks: Vec<&TaskDef> = workflow
        .tasks
        .iter()
        .filter(|t| !t.concurrency.is_empty() || !t.rate_limits.is_empty())
        .collect();
    if workflow.concurrency.is_empty() && tasks.is_empty() {
        return Ok(None);
    }
    let scope_name = |task: Option<&str>| match task {
        Some(task) => format!("{}.{task}", workflow.name),
        None => workflow.name.clone(),
    };
    let mut gates = RunGates::default();
    for (index, rule) in workflow.concurrency.iter().enumerate() {
        let name = scope_name(None);
        gates.run.push(concurrency_gate(
            &name,
            index,
            rule,
            Scope::Run,
            input,
            additional_metadata,
        )?);
    }
    for task in tasks {
        let name = scope_name(Some(&task.name));
        let mut own = Vec::new();
        for (index, rule) in task.concurrency.iter().enumerate() {
            own.push(concurrency_gate(
                &name,
                index,
                rule,
                Scope::Task,
                input,
                additional_metadata,
            )?);
        }
        for limit in &task.rate_limits {
            own.push(rate_gate(limit, input, additional_metadata)?);
        }
        gates.tasks.insert(task.name.clone(), own);
    }
    Ok(Some(gates))
}

fn concurrency_gate(
    scope_name: &str,
    index: usize,
    rule: &ConcurrencyRule,
    scope: Scope,
    input: &Value,
    metadata: &Value,
) -> Result<Gate, KeyError> {
    let value = evaluate_key("concurrency key", &rule.expression, input, metadata)?;
    Ok(Gate::Concurrency {
        key: format!("{scope_name}#{index}={value}"),
        value,
        rule: rule.expression.clone(),
        max_runs: rule.max_runs,
        strategy: rule.strategy,
        scope,
    })
}

fn rate_gate(limit: &RateLimit, input: &Value, metadata: &Value) -> Result<Gate, KeyError> {
    Ok(match &limit.key {
        RateLimitKey::Static(name) => Gate::RateLimit {
            key: name.clone(),
            units: limit.units,
            dynamic: None,
        },
        RateLimitKey::Dynamic(expression) => Gate::RateLimit {
            key: evaluate_key("rate limit key", expression, input, metadata)?,
            units: limit.units,
            dynamic: Some((
                limit.limit.unwrap_or(0),
                limit
                    .duration
                    .map_or(1_000, |d| d.as_duration().as_millis() as u64),
            )),
        },
    })
}

/// Longest computed key.
const MAX_KEY_LEN: usize = 256;

/// Evaluates a key expression over `input` and `additional_metadata`: a string, an integer or
/// a boolean, as text.
pub fn evaluate_key(
    what: &'static str,
    expression: &str,
    input: &Value,
    metadata: &Value,
) -> Result<String, KeyError> {
    let error = |reason: String| KeyError {
        what,
        expression: expression.to_owned(),
        reason,
    };
    let program = parse_expression(expression).map_err(error)?;
    let mut context = cel::Context::default();
    context
        .add_variable("input", input)
        .map_err(|e| error(e.to_string()))?;
    context
        .add_variable("additional_metadata", metadata)
        .map_err(|e| error(e.to_string()))?;
    let value = match program
        .execute(&context)
        .map_err(|e| error(e.to_string()))?
    {
        cel::Value::String(text) => text.to_string(),
        cel::Value::Int(n) => n.to_string(),
        cel::Value::UInt(n) => n.to_string(),
        cel::Value::Bool(b) => b.to_string(),
        other => {
            return Err(error(format!(
                "it must give a string, an integer or a boolean, not {:?}",
                other.type_of()
            )));
        }
    };
    if value.is_empty() || value.len() > MAX_KEY_LEN {
        return Err(error(format!(
            "the key must be 1 to {MAX_KEY_LEN} bytes, got {}",
            value.len()
        )));
    }
    Ok(value)
}

/// A task run waiting to be admitted.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Owner.
    pub tenant_id: Uuid,
    /// The task run.
    pub task_run_id: Uuid,
    /// Its workflow run.
    pub run_id: Uuid,
    /// Its gates.
    pub gates: Vec<Gate>,
}

/// A place under a concurrency key, held by a run or task run in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The workflow run (scope run) or task run (scope task) holding it.
    pub holder: Uuid,
    /// The workflow run to cancel to free it.
    pub run_id: Uuid,
    /// The candidate admitted in this round that holds it, if any.
    pub candidate: Option<usize>,
}

/// The state of a rate limit key, as locked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateState {
    /// The stored limit and window of a static key (none: declared nowhere yet).
    pub stored: Option<(u32, u64)>,
    /// Units consumed in the window that ends now.
    pub used: u64,
}

/// What admission sees: the keys it locked, with their holders (oldest first) and usage.
/// A key missing from these maps is being admitted by someone else: its candidates wait.
#[derive(Debug, Clone, Default)]
pub struct KeyStates {
    /// Live holders of each locked concurrency key.
    pub concurrency: HashMap<(Uuid, String), Vec<Holder>>,
    /// Each locked rate limit key.
    pub rate: HashMap<(Uuid, String), RateState>,
}

/// What one admission round decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Candidates that start now, in order.
    pub admitted: Vec<usize>,
    /// Candidates whose run is cancelled (`CANCEL_NEWEST`, or pushed out by a newer run in the
    /// same round), with the reason.
    pub cancelled: Vec<(usize, String)>,
    /// Runs in progress cancelled to make room (`CANCEL_IN_PROGRESS`), with the reason.
    pub victims: Vec<(Uuid, Uuid, String)>,
    /// Candidates that ask more units than their limit allows in any window: they fail.
    pub failed: Vec<(usize, String)>,
    /// Whether a candidate waits for a rate limit window (time, not a completion, frees it).
    pub rate_limited: bool,
}

/// The effective limit and window of a rate gate.
fn rate_limit_of(dynamic: Option<(u32, u64)>, state: &RateState) -> Option<(u32, u64)> {
    dynamic.or(state.stored)
}

/// Admits candidates in `order` (round robin across keys, oldest first within one) until
/// `limit` are admitted. A candidate starts only when every gate admits it.
pub fn admit(
    candidates: &[Candidate],
    order: &[usize],
    states: &mut KeyStates,
    limit: usize,
) -> Admission {
    let mut admission = Admission::default();
    for &index in order {
        if admission.admitted.len() >= limit {
            break;
        }
        let candidate = &candidates[index];
        let tenant = candidate.tenant_id;
        let mut verdict = Verdict::Admit;
        for gate in &candidate.gates {
            let gate_verdict = match gate {
                Gate::Concurrency {
                    key,
                    value,
                    rule,
                    max_runs,
                    strategy,
                    scope,
                } => match states.concurrency.get(&(tenant, key.clone())) {
                    None => Verdict::Wait,
                    Some(holders) => {
                        let holder = holder_of(candidate, *scope);
                        let held = holders.iter().any(|h| h.holder == holder);
                        if held || holders.len() < *max_runs as usize {
                            Verdict::Admit
                        } else {
                            match strategy {
                                ConcurrencyStrategy::GroupRoundRobin
                                | ConcurrencyStrategy::CancelInProgress => {
                                    if *strategy == ConcurrencyStrategy::GroupRoundRobin {
                                        Verdict::Wait
                                    } else {
                                        Verdict::Admit
                                    }
                                }
                                ConcurrencyStrategy::CancelNewest => Verdict::Cancel(format!(
                                    "cancelled by concurrency rule `{rule}` (CANCEL_NEWEST): key \
                                     `{value}` already has {max_runs} run(s) in progress"
                                )),
                            }
                        }
                    }
                },
                Gate::RateLimit {
                    key,
                    units,
                    dynamic,
                } => match states.rate.get(&(tenant, key.clone())) {
                    None => Verdict::Wait,
                    Some(state) => match rate_limit_of(*dynamic, state) {
                        None => Verdict::Wait,
                        Some((max, _)) if *units > max => Verdict::Fail(format!(
                            "asks {units} units of rate limit `{key}`, whose limit is {max}"
                        )),
                        Some((max, _)) if state.used + u64::from(*units) > u64::from(max) => {
                            admission.rate_limited = true;
                            Verdict::Wait
                        }
                        Some(_) => Verdict::Admit,
                    },
                },
            };
            verdict = verdict.and(gate_verdict);
        }
        match verdict {
            Verdict::Wait => {}
            Verdict::Cancel(reason) => admission.cancelled.push((index, reason)),
            Verdict::Fail(reason) => admission.failed.push((index, reason)),
            Verdict::Admit => take_places(candidates, index, states, &mut admission),
        }
    }
    admission
}

fn holder_of(candidate: &Candidate, scope: Scope) -> Uuid {
    match scope {
        Scope::Run => candidate.run_id,
        Scope::Task => candidate.task_run_id,
    }
}

/// Records an admitted candidate's places and units, pushing out the oldest holders of its
/// `CANCEL_IN_PROGRESS` keys beyond `max_runs`.
fn take_places(
    candidates: &[Candidate],
    index: usize,
    states: &mut KeyStates,
    admission: &mut Admission,
) {
    let candidate = &candidates[index];
    admission.admitted.push(index);
    for gate in &candidate.gates {
        match gate {
            Gate::Concurrency {
                key,
                value,
                rule,
                max_runs,
                strategy,
                scope,
            } => {
                let Some(holders) = states
                    .concurrency
                    .get_mut(&(candidate.tenant_id, key.clone()))
                else {
                    continue;
                };
                let holder = holder_of(candidate, *scope);
                if !holders.iter().any(|h| h.holder == holder) {
                    holders.push(Holder {
                        holder,
                        run_id: candidate.run_id,
                        candidate: Some(index),
                    });
                }
                while *strategy == ConcurrencyStrategy::CancelInProgress
                    && holders.len() > *max_runs as usize
                {
                    let oldest = holders.remove(0);
                    let reason = format!(
                        "cancelled by concurrency rule `{rule}` (CANCEL_IN_PROGRESS): a newer \
                         run with key `{value}` took its place"
                    );
                    match oldest.candidate {
                        Some(pushed) => {
                            admission.admitted.retain(|&a| a != pushed);
                            admission.cancelled.push((pushed, reason));
                        }
                        None => {
                            admission
                                .victims
                                .push((candidate.tenant_id, oldest.run_id, reason));
                        }
                    }
                }
            }
            Gate::RateLimit { key, units, .. } => {
                if let Some(state) = states.rate.get_mut(&(candidate.tenant_id, key.clone())) {
                    state.used += u64::from(*units);
                }
            }
        }
    }
}

/// One gate's answer, combined over a candidate's gates: cancel beats fail beats wait.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Admit,
    Wait,
    Fail(String),
    Cancel(String),
}

impl Verdict {
    fn and(self, other: Verdict) -> Verdict {
        fn rank(verdict: &Verdict) -> u8 {
            match verdict {
                Verdict::Admit => 0,
                Verdict::Wait => 1,
                Verdict::Fail(_) => 2,
                Verdict::Cancel(_) => 3,
            }
        }
        if rank(&other) > rank(&self) {
            other
        } else {
            self
        }
    }
}

/// What a queued task run waits for, as `GET /api/v1/runs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingFor {
    /// "concurrency", "rate_limit", "slots", "parents" or "schedule".
    pub kind: &'static str,
    /// The key, for concurrency and rate limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl WaitingFor {
    /// Waiting for a free slot on some node.
    pub fn slots() -> Self {
        Self {
            kind: "slots",
            key: None,
        }
    }

    /// Waiting for its run's scheduled time.
    pub fn schedule() -> Self {
        Self {
            kind: "schedule",
            key: None,
        }
    }

    /// Waiting for its parents to succeed.
    pub fn parents() -> Self {
        Self {
            kind: "parents",
            key: None,
        }
    }
}

/// The first of `gates` that does not admit a task run of run `run_id` (task run
/// `task_run_id`) now, given the keys' state; `slots` when all admit it.
pub fn waiting_for(
    tenant_id: Uuid,
    run_id: Uuid,
    task_run_id: Uuid,
    gates: &[Gate],
    states: &KeyStates,
) -> WaitingFor {
    let candidate = Candidate {
        tenant_id,
        task_run_id,
        run_id,
        gates: Vec::new(),
    };
    for gate in gates {
        match gate {
            Gate::Concurrency {
                key,
                value,
                max_runs,
                scope,
                ..
            } => {
                let holders = states
                    .concurrency
                    .get(&(tenant_id, key.clone()))
                    .map_or(&[][..], Vec::as_slice);
                let holder = holder_of(&candidate, *scope);
                if !holders.iter().any(|h| h.holder == holder)
                    && holders.len() >= *max_runs as usize
                {
                    return WaitingFor {
                        kind: "concurrency",
                        key: Some(value.clone()),
                    };
                }
            }
            Gate::RateLimit {
                key,
                units,
                dynamic,
            } => {
                let state = states
                    .rate
                    .get(&(tenant_id, key.clone()))
                    .cloned()
                    .unwrap_or_default();
                let blocked = match rate_limit_of(*dynamic, &state) {
                    None => true,
                    Some((max, _)) => state.used + u64::from(*units) > u64::from(max),
                };
                if blocked {
                    return WaitingFor {
                        kind: "rate_limit",
                        key: Some(key.clone()),
                    };
                }
            }
        }
    }
    WaitingFor::slots()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concurrency(key: &str, max_runs: u32, strategy: ConcurrencyStrategy) -> Gate {
        Gate::Concurrency {
            key: key.into(),
            value: key.into(),
            rule: "input.k".into(),
            max_runs,
            strategy,
            scope: Scope::Run,
        }
    }

    fn candidate(run: u128, gates: Vec<Gate>) -> Candidate {
        Candidate {
            tenant_id: Uuid::nil(),
            task_run_id: Uuid::from_u128(run + 1_000),
            run_id: Uuid::from_u128(run),
            gates,
        }
    }

    fn states(keys: &[&str], rate: &[(&str, u32, u64)]) -> KeyStates {
        KeyStates {
            concurrency: keys
                .iter()
                .map(|k| ((Uuid::nil(), (*k).to_owned()), Vec::new()))
                .collect(),
            rate: rate
                .iter()
                .map(|(k, limit, used)| {
                    (
                        (Uuid::nil(), (*k).to_owned()),
                        RateState {
                            stored: Some((*limit, 1_000)),
                            used: *used,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn round_robin_waits_beyond_max_runs() {
        let gate = concurrency("a", 2, ConcurrencyStrategy::GroupRoundRobin);
        let candidates: Vec<Candidate> = (0..4).map(|i| candidate(i, vec![gate.clone()])).collect();
        let mut states = states(&["a"], &[]);
        let admission = admit(&candidates, &[0, 1, 2, 3], &mut states, 100);
        assert_eq!(admission.admitted, vec![0, 1]);
        assert!(admission.cancelled.is_empty() && admission.victims.is_empty());
    }

    #[test]
    fn a_run_holding_its_place_passes_again() {
        let gate = concurrency("a", 1, ConcurrencyStrategy::GroupRoundRobin);
        let mut states = states(&["a"], &[]);
        states
            .concurrency
            .get_mut(&(Uuid::nil(), "a".into()))
            .expect("locked")
            .push(Holder {
                holder: Uuid::from_u128(7),
                run_id: Uuid::from_u128(7),
                candidate: None,
            });
        let candidates = vec![candidate(7, vec![gate.clone()]), candidate(8, vec![gate])];
        let admission = admit(&candidates, &[0, 1], &mut states, 100);
        assert_eq!(admission.admitted, vec![0]);
    }

    #[test]
    fn cancel_newest_cancels_beyond_max_runs() {
        let gate = concurrency("a", 1, ConcurrencyStrategy::CancelNewest);
        let candidates: Vec<Candidate> = (0..3).map(|i| candidate(i, vec![gate.clone()])).collect();
        let admission = admit(&candidates, &[0, 1, 2], &mut states(&["a"], &[]), 100);
        assert_eq!(admission.admitted, vec![0]);
        assert_eq!(
            admission.cancelled.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(admission.cancelled[0].1.contains("CANCEL_NEWEST"));
    }

    #[test]
    fn cancel_in_progress_keeps_the_newest() {
        let gate = concurrency("a", 1, ConcurrencyStrategy::CancelInProgress);
        let mut states = states(&["a"], &[]);
        states
            .concurrency
            .get_mut(&(Uuid::nil(), "a".into()))
            .expect("locked")
            .push(Holder {
                holder: Uuid::from_u128(9),
                run_id: Uuid::from_u128(9),
                candidate: None,
            });
        let candidates: Vec<Candidate> = (0..3).map(|i| candidate(i, vec![gate.clone()])).collect();
        let admission = admit(&candidates, &[0, 1, 2], &mut states, 100);
        assert_eq!(admission.admitted, vec![2]);
        assert_eq!(admission.victims.len(), 1);
        assert_eq!(admission.victims[0].1, Uuid::from_u128(9));
        assert_eq!(
            admission.cancelled.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![0, 1]
        );
    }

    #[test]
    fn every_rule_must_admit() {
        let a = concurrency("a", 1, ConcurrencyStrategy::GroupRoundRobin);
        let b = concurrency("b", 1, ConcurrencyStrategy::GroupRoundRobin);
        let candidates = vec![
            candidate(0, vec![a.clone(), b.clone()]),
            candidate(1, vec![a]),
            candidate(2, vec![b]),
        ];
        let admission = admit(&candidates, &[0, 1, 2], &mut states(&["a", "b"], &[]), 100);
        assert_eq!(admission.admitted, vec![0]);
    }

    #[test]
    fn a_key_locked_elsewhere_waits() {
        let gate = concurrency("a", 5, ConcurrencyStrategy::GroupRoundRobin);
        let admission = admit(
            &[candidate(0, vec![gate])],
            &[0],
            &mut KeyStates::default(),
            100,
        );
        assert!(admission.admitted.is_empty());
    }

    #[test]
    fn rate_limits_count_units_and_refuse_impossible_asks() {
        let one = Gate::RateLimit {
            key: "api".into(),
            units: 3,
            dynamic: None,
        };
        let huge = Gate::RateLimit {
            key: "api".into(),
            units: 11,
            dynamic: None,
        };
        let candidates = vec![
            candidate(0, vec![one.clone()]),
            candidate(1, vec![one.clone()]),
            candidate(2, vec![huge]),
            candidate(3, vec![one]),
        ];
        let admission = admit(
            &candidates,
            &[0, 1, 2, 3],
            &mut states(&[], &[("api", 10, 2)]),
            100,
        );
        assert_eq!(admission.admitted, vec![0, 1]);
        assert_eq!(admission.failed.len(), 1);
        assert!(admission.rate_limited);
    }

    #[test]
    fn keys_come_from_input_and_metadata() {
        let input = serde_json::json!({"user_id": "u1", "n": 7});
        let metadata = serde_json::json!({"team": "red"});
        assert_eq!(
            evaluate_key("k", "input.user_id", &input, &metadata).as_deref(),
            Ok("u1")
        );
        assert_eq!(
            evaluate_key("k", "input.n", &input, &metadata).as_deref(),
            Ok("7")
        );
        assert_eq!(
            evaluate_key("k", "additional_metadata.team + '-x'", &input, &metadata).as_deref(),
            Ok("red-x")
        );
        let missing = evaluate_key("concurrency key", "input.nope", &input, &metadata)
            .expect_err("no such field");
        assert!(
            missing
                .to_string()
                .contains("`input.nope` cannot be computed")
        );
        assert!(evaluate_key("k", "input", &input, &metadata).is_err());
    }
}
