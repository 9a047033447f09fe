//! Runs workflows in-process with no database: the engine behind `hatchery exec`.
//!
//! Tasks run in DAG order with their parents' outputs, retries follow the task's policy, and
//! `spawn`/`wait` run child workflows of the same module concurrently in this process. Nothing
//! is durable: this is the task author's inner loop, not the scheduler.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    Attempt, AttemptReport, HostCallError, Limits, RunInfo, SpawnRequest, TaskHost, Worker,
};
use crate::manifest::{RetryPolicy, WorkflowDef};

/// Most child runs one local execution may start (a spawn loop must end).
const MAX_LOCAL_RUNS: u64 = 100_000;

/// The finished state of a local run: its output or its error.
type RunResult = Result<String, String>;

/// One task's attempts in a local workflow run.
#[derive(Debug, Clone)]
pub struct TaskReport {
    /// Task name.
    pub task: String,
    /// Every attempt, in order.
    pub attempts: Vec<AttemptReport>,
}

/// A finished local workflow run.
#[derive(Debug, Clone)]
pub struct WorkflowReport {
    /// The workflow output (see `WorkflowDef::output`) or the error that failed it.
    pub outcome: RunResult,
    /// The tasks that ran, in order (the on-failure task last, if it ran).
    pub tasks: Vec<TaskReport>,
}

/// Runs the workflows of one module in-process.
pub struct LocalRunner {
    worker: Worker,
    limits: Limits,
    egress: Arc<crate::egress::EgressPolicy>,
    cancel: CancellationToken,
    next_run: AtomicU64,
    runs: Mutex<HashMap<String, watch::Receiver<Option<RunResult>>>>,
    spawned: Mutex<HashMap<(String, String), String>>,
}

impl LocalRunner {
    /// A runner executing on `worker` with `limits` per attempt and no outbound HTTP.
    pub fn new(worker: Worker, limits: Limits) -> Arc<Self> {
        Self::with_egress(worker, limits, crate::egress::EgressPolicy::default())
    }

    /// A runner whose attempts may send HTTP requests where `egress` allows.
    pub fn with_egress(
        worker: Worker,
        limits: Limits,
        egress: crate::egress::EgressPolicy,
    ) -> Arc<Self> {
        Arc::new(Self {
            worker,
            limits,
            egress: Arc::new(egress),
            cancel: CancellationToken::new(),
            next_run: AtomicU64::new(1),
            runs: Mutex::new(HashMap::new()),
            spawned: Mutex::new(HashMap::new()),
        })
    }

    /// Cancels everything this runner is running.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    fn workflow(&self, name: &str) -> Result<&WorkflowDef, String> {
        self.worker.module().manifest.workflow(name).ok_or_else(|| {
            let known: Vec<&str> = self
                .worker
                .module()
                .manifest
                .workflows
                .iter()
                .map(|w| w.name.as_str())
                .collect();
            format!(
                "unknown workflow `{name}`; this module has: {}",
                known.join(", ")
            )
        })
    }

    /// Runs one task once with the given parents' outputs (no retries).
    pub async fn run_task(
        self: &Arc<Self>,
        workflow: &str,
        task: &str,
        input: String,
        parents: Vec<(String, String)>,
    ) -> Result<AttemptReport, String> {
        let definition = self.workflow(workflow)?;
        if definition.task(task).is_none() {
            return Err(format!("workflow `{workflow}` has no task `{task}`"));
        }
        let run_id = self.new_run_id();
        Ok(self
            .attempt(&run_id, workflow, task, 1, input, "{}".into(), parents)
            .await)
    }

    /// Runs a whole workflow: every task in DAG order, retries, and the on-failure task.
    pub async fn run_workflow(
        self: &Arc<Self>,
        workflow: &str,
        input: String,
        metadata: String,
    ) -> Result<WorkflowReport, String> {
        let run_id = self.new_run_id();
        self.run_workflow_as(&run_id, workflow, input, metadata)
            .await
    }

    async fn run_workflow_as(
        self: &Arc<Self>,
        run_id: &str,
        workflow: &str,
        input: String,
        metadata: String,
    ) -> Result<WorkflowReport, String> {
        let definition = self.workflow(workflow)?.clone();
        let order = definition
            .topological_order()
            .ok_or_else(|| format!("workflow `{workflow}` has a cycle"))?;
        let mut outputs: HashMap<String, String> = HashMap::new();
        let mut reports = Vec::new();
        let mut failure = None;
        for task in order {
            let parents: Vec<(String, String)> = task
                .parents
                .iter()
                .map(|p| {
                    (
                        p.clone(),
                        outputs.get(p).cloned().unwrap_or_else(|| "null".into()),
                    )
                })
                .collect();
            let mut attempts = Vec::new();
            let mut attempt = 1;
            let result = loop {
                let report = self
                    .attempt(
                        run_id,
                        workflow,
                        &task.name,
                        attempt,
                        input.clone(),
                        metadata.clone(),
                        parents.clone(),
                    )
                    .await;
                let outcome = report.outcome.clone();
                attempts.push(report);
                match outcome {
                    Ok(output) => break Ok(output),
                    Err(e) => {
                        // Locally no lease is lost: every attempt before this one failed.
                        let failures = attempt - 1;
                        match RetryPolicy::of(task).after_failure(failures, e.is_retryable()) {
                            Some(delay) => {
                                tokio::time::sleep(delay).await;
                                attempt += 1;
                            }
                            None => break Err(format!("task `{}` failed: {e}", task.name)),
                        }
                    }
                }
            };
            reports.push(TaskReport {
                task: task.name.clone(),
                attempts,
            });
            match result {
                Ok(output) => {
                    outputs.insert(task.name.clone(), output);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let outcome = match failure {
            None => Ok(definition.output(&outputs)),
            Some(error) => {
                if let Some(on_failure) = &definition.on_failure {
                    let input = serde_json::json!({ "error": error, "input": raw_json(&input) })
                        .to_string();
                    let report = self
                        .attempt(
                            run_id,
                            workflow,
                            &on_failure.name,
                            1,
                            input,
                            metadata,
                            vec![],
                        )
                        .await;
                    reports.push(TaskReport {
                        task: on_failure.name.clone(),
                        attempts: vec![report],
                    });
                }
                Err(error)
            }
        };
        Ok(WorkflowReport {
            outcome,
            tasks: reports,
        })
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one attempt, kept flat for clarity"
    )]
    async fn attempt(
        self: &Arc<Self>,
        run_id: &str,
        workflow: &str,
        task: &str,
        attempt: u32,
        input: String,
        metadata: String,
        parents: Vec<(String, String)>,
    ) -> AttemptReport {
        let run = RunInfo {
            workflow_run_id: run_id.into(),
            task_run_id: format!("{run_id}/{task}"),
            workflow: workflow.into(),
            task: task.into(),
            attempt,
            metadata,
            parents,
        };
        let attempt = Attempt {
            run,
            input,
            limits: self.limits,
            cancel: self.cancel.child_token(),
            host: Arc::new(LocalHost(self.clone())),
            egress: self.egress.clone(),
            secrets: Arc::default(),
            share: super::CpuShare {
                workflow: Arc::from(workflow),
                ..super::CpuShare::default()
            },
        };
        self.worker
            .runtime()
            .execute(self.worker.module(), attempt)
            .await
    }

    fn new_run_id(&self) -> String {
        format!("local-{}", self.next_run.fetch_add(1, Ordering::Relaxed))
    }
}

fn raw_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves a local attempt's `spawn` and `wait` by running children in this process.
struct LocalHost(Arc<LocalRunner>);

#[async_trait::async_trait]
impl TaskHost for LocalHost {
    async fn spawn(
        &self,
        parent: &RunInfo,
        request: SpawnRequest,
    ) -> Result<String, HostCallError> {
        let runner = &self.0;
        runner
            .workflow(&request.workflow)
            .map_err(HostCallError::Refused)?;
        let idempotency = (parent.task_run_id.clone(), request.key.clone());
        if let Some(existing) = lock(&runner.spawned).get(&idempotency) {
            return Ok(existing.clone());
        }
        if runner.next_run.load(Ordering::Relaxed) > MAX_LOCAL_RUNS {
            return Err(HostCallError::Refused(format!(
                "more than {MAX_LOCAL_RUNS} local runs started"
            )));
        }
        let run_id = runner.new_run_id();
        let (done, receiver) = watch::channel(None);
        lock(&runner.runs).insert(run_id.clone(), receiver);
        lock(&runner.spawned).insert(idempotency, run_id.clone());
        let metadata = request
            .additional_metadata
            .unwrap_or_else(|| parent.metadata.clone());
        let (child, id) = (runner.clone(), run_id.clone());
        tokio::spawn(async move {
            let result = child
                .run_workflow_as(&id, &request.workflow, request.input, metadata)
                .await
                .and_then(|report| report.outcome);
            done.send_replace(Some(result));
        });
        Ok(run_id)
    }

    async fn wait(&self, _: &RunInfo, run_id: &str) -> Result<String, HostCallError> {
        let receiver = lock(&self.0.runs).get(run_id).cloned();
        let Some(mut receiver) = receiver else {
            return Err(HostCallError::Refused(format!("unknown run `{run_id}`")));
        };
        let finished = receiver
            .wait_for(Option::is_some)
            .await
            .map_err(|_| HostCallError::ChildFailed(format!("run `{run_id}` was abandoned")))?;
        finished
            .clone()
            .unwrap_or_else(|| Err("run vanished".into()))
            .map_err(HostCallError::ChildFailed)
    }

    async fn push_event(
        &self,
        _: &RunInfo,
        key: &str,
        _payload: &str,
    ) -> Result<(), HostCallError> {
        tracing::info!(key, "event pushed (local execution does not route events)");
        Ok(())
    }
}
