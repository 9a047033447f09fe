//! The completer: writes the results of finished attempts to Postgres in batches, never
//! dropping one, and only then lets their leases go.
//!
//! Whatever arrived while the previous commit was in flight goes into the next one, so commits
//! per task fall as load rises. Results reach it through a channel bounded by the node's
//! `max_held` (each result is a held lease, and the dispatcher claims only below that), so a
//! slow database slows claiming instead of piling results up in memory.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::leases::LeaseTable;
use crate::db::Db;
use crate::db::task_run::{AttemptOutcome, Completion, CompletionEffects, task_runs_complete};
use crate::status::RunStatus;

/// What the node does once a batch of results is committed (wake its dispatcher, announce
/// freed places of capped tenants).
pub(crate) trait AfterWrite: Send + Sync + 'static {
    /// The results of `tenants` were committed with `effects`.
    fn written(
        &self,
        tenants: Vec<Uuid>,
        effects: &CompletionEffects,
    ) -> impl Future<Output = ()> + Send;
}

/// Where attempts send their results. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Results {
    sender: mpsc::Sender<Completion>,
}

impl Results {
    /// Hands a result to the completer. The channel holds at most `max_held` results, one per
    /// held lease, so this never waits long; it fails only once the completer is gone (a kill).
    pub(crate) async fn send(&self, completion: Completion) {
        let _ = self.sender.send(completion).await;
    }
}

/// The completer's end of the `Results` channel, until it starts.
#[derive(Debug)]
pub(crate) struct Inbox(mpsc::Receiver<Completion>);

/// The running completer.
#[derive(Debug)]
pub(crate) struct Completer {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl Completer {
    /// The channel results travel by: at most `bound` wait in it.
    pub(crate) fn channel(bound: usize) -> (Results, Inbox) {
        let (sender, receiver) = mpsc::channel(bound.max(1));
        (Results { sender }, Inbox(receiver))
    }

    /// Starts writing the results that arrive in `inbox`, in batches of at most `batch`.
    pub(crate) fn start<A: AfterWrite>(
        db: Db,
        leases: Arc<LeaseTable>,
        after: Arc<A>,
        inbox: Inbox,
        batch: usize,
    ) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(complete(db, leases, after, inbox.0, batch, stop.clone()));
        Self { task, stop }
    }

    /// Writes what is left and ends. Call it once every attempt has sent its result.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Ends at once, writing nothing more (a crash).
    pub(crate) fn abort(self) {
        self.task.abort();
    }
}

/// Tenants with at most this many results waiting go in the express lane.
const EXPRESS_TENANT_MAX: usize = 16;
/// Most results in one express batch.
const EXPRESS_BATCH: usize = 64;

/// Results waiting for the completer, per tenant, taken round robin.
#[derive(Default)]
struct PendingResults {
    by_tenant: HashMap<Uuid, std::collections::VecDeque<Completion>>,
    /// Tenants with results waiting, in the order they are served.
    turn: std::collections::VecDeque<Uuid>,
    len: usize,
}

impl PendingResults {
    fn push(&mut self, completion: Completion) {
        let queue = self.by_tenant.entry(completion.tenant_id).or_default();
        if queue.is_empty() {
            self.turn.push_back(completion.tenant_id);
        }
        queue.push_back(completion);
        self.len += 1;
    }

    /// Up to `max` results, one tenant at a time round robin, of the tenants `eligible`
    /// accepts (given the tenant and how many results it has waiting).
    fn take(&mut self, max: usize, eligible: impl Fn(&Uuid, usize) -> bool) -> Vec<Completion> {
        let mut batch = Vec::new();
        let mut passes = self.turn.len();
        while batch.len() < max && passes > 0 {
            let Some(tenant) = self.turn.pop_front() else {
                break;
            };
            let Some(queue) = self.by_tenant.get_mut(&tenant) else {
                continue;
            };
            if !eligible(&tenant, queue.len()) {
                self.turn.push_back(tenant);
                passes -= 1;
                continue;
            }
            passes = self.turn.len() + 1;
            if let Some(completion) = queue.pop_front() {
                batch.push(completion);
                self.len -= 1;
            }
            if queue.is_empty() {
                self.by_tenant.remove(&tenant);
            } else {
                self.turn.push_back(tenant);
            }
        }
        batch
    }
}

type Lane = std::pin::Pin<Box<dyn Future<Output = CompletionEffects> + Send>>;

/// Writes completions in batches. Two lanes write at once:
/// the main lane takes up to `max` results, round robin between tenants; the express lane
/// takes the results of tenants with only a few waiting, in small batches, so a quiet
/// tenant's result never waits behind another tenant's flood of them. A lease leaves the table
/// only once its result is committed, so it is renewed while the result waits. On `stop` it
/// writes what is left in the channel and ends.
async fn complete<A: AfterWrite>(
    db: Db,
    leases: Arc<LeaseTable>,
    after: Arc<A>,
    mut receiver: mpsc::Receiver<Completion>,
    max: usize,
    stop: CancellationToken,
) {
    let max = max.max(1);
    let mut pending = PendingResults::default();
    let mut main: Option<Lane> = None;
    // The tenants of each lane's batch in flight. A tenant's results are never in both lanes
    // at once: two transactions completing sibling tasks of one run at the same time would
    // each see the other's task unfinished, and neither would finish the run. (Two nodes can
    // still do that: `FINISH_RUNS` reads the run's tasks without locking the run first. Not
    // fixed yet: locking the run there reverses the lock order `cancel` relies on.) And a
    // flooding tenant in the main lane keeps its large batches there.
    let mut in_main: std::collections::HashSet<Uuid> = Default::default();
    let mut in_express: std::collections::HashSet<Uuid> = Default::default();
    let mut express: Option<Lane> = None;
    let lane = |batch: Vec<Completion>| -> Lane {
        let (db, leases, after) = (db.clone(), leases.clone(), after.clone());
        Box::pin(async move {
            let tokens: Vec<i64> = batch.iter().map(|c| c.lease_token).collect();
            let tenants: Vec<Uuid> = batch.iter().map(|c| c.tenant_id).collect();
            let effects = write_batch(&db, batch).await;
            crate::metrics::runs_finished(RunStatus::Succeeded, effects.runs_succeeded);
            crate::metrics::runs_finished(
                RunStatus::Failed,
                effects.finished_runs.len() - effects.runs_succeeded,
            );
            leases.written(tokens);
            after.written(tenants, &effects).await;
            effects
        })
    };
    let mut closed = false;
    loop {
        while let Ok(completion) = receiver.try_recv() {
            pending.push(completion);
        }
        if express.is_none() {
            let batch = pending.take(EXPRESS_BATCH, |tenant, waiting| {
                waiting <= EXPRESS_TENANT_MAX && !in_main.contains(tenant)
            });
            in_express = batch.iter().map(|c| c.tenant_id).collect();
            if !batch.is_empty() {
                express = Some(lane(batch));
            }
        }
        if main.is_none() {
            let batch = pending.take(max, |tenant, _| !in_express.contains(tenant));
            in_main = batch.iter().map(|c| c.tenant_id).collect();
            if !batch.is_empty() {
                main = Some(lane(batch));
            }
        }
        let idle = main.is_none() && express.is_none();
        // Stopping: every attempt has sent its result (the node stops them first), so once
        // the channel is empty and nothing is in flight, everything is written.
        if idle && (stop.is_cancelled() || closed) {
            return;
        }
        let event = tokio::select! {
            completion = receiver.recv(), if !closed => match completion {
                Some(completion) => CompleterEvent::Received(completion),
                None => CompleterEvent::Closed,
            },
            () = lane_done(&mut main) => CompleterEvent::MainWritten,
            () = lane_done(&mut express) => CompleterEvent::ExpressWritten,
            () = stop.cancelled(), if idle => CompleterEvent::Stopped,
        };
        match event {
            CompleterEvent::Received(completion) => pending.push(completion),
            CompleterEvent::Closed => closed = true,
            CompleterEvent::MainWritten => {
                main = None;
                in_main.clear();
            }
            CompleterEvent::ExpressWritten => {
                express = None;
                in_express.clear();
            }
            CompleterEvent::Stopped => {}
        }
    }
}

enum CompleterEvent {
    Received(Completion),
    Closed,
    MainWritten,
    ExpressWritten,
    Stopped,
}

/// Resolves when `lane`'s write is done; never if there is none.
async fn lane_done(lane: &mut Option<Lane>) {
    match lane {
        Some(write) => {
            write.await;
        }
        None => std::future::pending().await,
    }
}

/// Whether the database refused the data itself (SQLSTATE class 22: e.g. a `\u0000` that
/// `jsonb` cannot hold), so retrying the same write can never succeed.
fn is_data_error(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().is_some_and(|code| code.starts_with("22")))
}

/// Writes a batch, never dropping a result: transient errors are retried until the database
/// is back (if the node dies meanwhile, the lease expires and the task runs elsewhere). A batch
/// refused for its data is split, and the one completion the database cannot store becomes a
/// fatal failure of its task, so one guest's output can never block the node's completions.
async fn write_batch(db: &Db, batch: Vec<Completion>) -> CompletionEffects {
    let mut delay = Duration::from_millis(50);
    let mut batch = batch;
    loop {
        match write_completions(db, &batch).await {
            Ok(effects) => return effects,
            Err(e) if is_data_error(&e) && batch.len() > 1 => {
                let mut effects = CompletionEffects::default();
                for completion in batch {
                    let single = Box::pin(write_batch(db, vec![completion])).await;
                    effects.queued |= single.queued;
                    effects.accepted += single.accepted;
                    effects.rejected += single.rejected;
                    effects.finished_runs.extend(single.finished_runs);
                    effects.runs_succeeded += single.runs_succeeded;
                }
                return effects;
            }
            Err(e) if is_data_error(&e) => {
                tracing::warn!("a completion cannot be stored, failing its task: {e}");
                for completion in &mut batch {
                    completion.logs.clear();
                    completion.outcome = AttemptOutcome::Failed {
                        error: format!("its result cannot be stored: {e}"),
                        code: "invalid_output".into(),
                        retry_after: None,
                    };
                }
            }
            Err(e) => {
                tracing::warn!("writing {} completions failed, retrying: {e}", batch.len());
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn write_completions(
    db: &Db,
    batch: &[Completion],
) -> Result<CompletionEffects, sqlx::Error> {
    let mut tx = db.pool.begin().await?;
    let effects = task_runs_complete(&mut tx, batch).await?;
    tx.commit().await?;
    Ok(effects)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use sqlx::PgPool;

    use super::*;

    fn result(tenant_id: Uuid, lease_token: i64) -> Completion {
        Completion {
            tenant_id,
            task_run_id: Uuid::now_v7(),
            attempt: 1,
            lease_token,
            outcome: AttemptOutcome::Succeeded("null".into()),
            logs: vec![],
            usage: None,
        }
    }

    #[test]
    fn results_are_taken_round_robin_between_tenants() {
        let (flood, quiet) = (Uuid::now_v7(), Uuid::now_v7());
        let mut pending = PendingResults::default();
        for token in 0..10 {
            pending.push(result(flood, token));
        }
        pending.push(result(quiet, 100));
        let batch = pending.take(3, |_, _| true);
        let tenants: Vec<Uuid> = batch.iter().map(|c| c.tenant_id).collect();
        assert_eq!(
            tenants,
            [flood, quiet, flood],
            "the quiet tenant's result is second"
        );
        // Oldest first within a tenant.
        let tokens: Vec<i64> = batch.iter().map(|c| c.lease_token).collect();
        assert_eq!(tokens, [0, 100, 1]);
        // The express lane's rule: only tenants with few results waiting.
        pending.push(result(quiet, 101));
        let express = pending.take(64, |_, waiting| waiting <= 2);
        assert_eq!(express.len(), 1);
        assert_eq!(express.first().map(|c| c.lease_token), Some(101));
        assert_eq!(pending.len, 8, "the flood waits for the main lane");
        assert_eq!(pending.take(100, |_, _| true).len(), 8);
        assert!(pending.take(100, |_, _| true).is_empty());
    }

    /// Records what the completer reports after each commit.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<(Vec<Uuid>, CompletionEffects)>>);

    impl AfterWrite for Recorded {
        async fn written(&self, tenants: Vec<Uuid>, effects: &CompletionEffects) {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((tenants, effects.clone()));
        }
    }

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn stopping_writes_every_result_sent_and_releases_its_lease(pool: PgPool) {
        let leases = Arc::new(LeaseTable::default());
        let recorded = Arc::new(Recorded::default());
        let tenant = Uuid::now_v7();
        let (results, inbox) = Completer::channel(64);
        let completer = Completer::start(Db::new(pool), leases.clone(), recorded.clone(), inbox, 8);
        for token in 1..=50 {
            let _signals = leases.claimed(token, tenant, Uuid::now_v7());
            assert!(leases.finished(token));
            results.send(result(tenant, token)).await;
        }
        completer.stop().await;
        let recorded = recorded
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let written: usize = recorded.iter().map(|(tenants, _)| tenants.len()).sum();
        assert_eq!(written, 50, "no result is dropped on stop");
        assert!(
            recorded.len() > 1
                && recorded
                    .iter()
                    .all(|(tenants, _)| tenants.len() <= 8.max(EXPRESS_BATCH)),
            "several batches, none larger than a lane takes"
        );
        // These task runs do not exist, so the database refuses every result as stale.
        let rejected: usize = recorded.iter().map(|(_, effects)| effects.rejected).sum();
        assert_eq!(rejected, 50);
        assert_eq!(
            leases.counts().held(),
            0,
            "each lease left once its result was written"
        );
    }
}
