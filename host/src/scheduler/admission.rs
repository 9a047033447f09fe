//! Admission: the transaction that starts gated task runs (those under concurrency rules or
//! rate limits), on any number of nodes without overshoot.
//!
//! One admission walks the keys that have waiting task runs in key order from where the last one
//! stopped (round robin across keys), reads the first few ready runs of each, locks every key
//! those runs need (`SKIP LOCKED`: a key another node is admitting into waits for the next
//! round), reads the keys' state under the locks, lets `crate::flow::admit` decide, then cancels,
//! fails and leases in the same transaction. Places need no release: a place counts only while
//! its holder is in progress (see `db::flow::concurrency_holders_live`).

use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;

use crate::db::flow::{self as flow_db, NewHolder, NewUsage, TenantKey};
use crate::db::quota as quota_db;
use crate::db::task_run::{ClaimParams, ClaimedTask};
use crate::db::{Db, workflow_run};
use crate::flow::{self, Candidate, Gate, KeyStates, RateState, Scope};

/// Most keys one admission walks.
const MAX_WALK: i64 = 1_000;

/// What one admission did.
#[derive(Debug, Default)]
pub(crate) struct Admitted {
    /// Task runs leased to this node.
    pub claimed: Vec<ClaimedTask>,
    /// Whether more may be admitted right away (the walk or the limit was the bound).
    pub more: bool,
    /// When something waits only for a rate limit window to move: how soon to look again.
    pub retry_in: Option<Duration>,
}

/// Where round robin resumes: the key after the last one served.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cursor(TenantKey);

/// Admits up to `params.limit` gated task runs and leases them to `params.node`.
pub(crate) async fn admit(
    db: &Db,
    cursor: &mut Cursor,
    params: &ClaimParams<'_>,
) -> Result<Admitted, sqlx::Error> {
    // Durable commits: a lost admission could let a started attempt's units go uncounted.
    let mut tx = db.pool.begin().await?;
    let walk = (params.limit * 2).clamp(16, MAX_WALK);
    let limit = params.limit.max(1) as usize;
    let flow_db::GatedWalk {
        keys,
        heads,
        locked_concurrency,
        locked_rates,
    } = flow_db::gated_walk(&mut tx, &cursor.0, walk, limit as i64, params.full_modules).await?;
    if keys.is_empty() {
        tx.rollback().await?;
        return Ok(Admitted::default());
    }

    let mut candidates: Vec<Candidate> = Vec::with_capacity(heads.len());
    let mut key_of: Vec<usize> = Vec::with_capacity(heads.len());
    let walk_index: HashMap<&TenantKey, usize> =
        keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
    for head in &heads {
        let gates: Vec<Gate> = match serde_json::from_str(&head.gates) {
            Ok(gates) => gates,
            Err(e) => {
                tracing::warn!("task run {} has unreadable gates: {e}", head.id);
                continue;
            }
        };
        let Some(&key) = walk_index.get(&(head.tenant_id, head.gate.clone())) else {
            continue;
        };
        key_of.push(key);
        candidates.push(Candidate {
            tenant_id: head.tenant_id,
            task_run_id: head.id,
            run_id: head.workflow_run_id,
            gates,
        });
    }

    // Dynamic rate limits count over their declared window.
    let mut dynamic_windows: HashMap<TenantKey, u64> = HashMap::new();
    for candidate in &candidates {
        for gate in &candidate.gates {
            if let Gate::RateLimit {
                key,
                dynamic: Some((_, window_ms)),
                ..
            } = gate
            {
                dynamic_windows
                    .entry((candidate.tenant_id, key.clone()))
                    .or_insert(*window_ms);
            }
        }
    }

    // The keys' state, read after the locks (a fresh snapshot sees every earlier admission).
    let (now_ms, holders) =
        flow_db::concurrency_holders_live(&mut tx, &locked_concurrency, true).await?;
    let mut states = KeyStates {
        concurrency: holders,
        rate: HashMap::new(),
    };
    let mut windows: Vec<(Uuid, String, i64)> = Vec::new();
    let mut stored: HashMap<TenantKey, Option<(u32, u64)>> = HashMap::new();
    for (tenant, key, limit_units, window_ms) in locked_rates {
        let row = limit_units
            .zip(window_ms)
            .map(|(l, w)| (l.max(0) as u32, w.max(1) as u64));
        let tenant_key = (tenant, key);
        let window = dynamic_windows
            .get(&tenant_key)
            .copied()
            .or(row.map(|r| r.1))
            .unwrap_or(1_000);
        windows.push((tenant_key.0, tenant_key.1.clone(), window as i64));
        stored.insert(tenant_key, row);
    }
    let usage = flow_db::rate_usage(&mut tx, &windows, now_ms, true).await?;
    for (tenant_key, row) in stored {
        let used = usage.get(&tenant_key).map_or(0, |u| u.used);
        states
            .rate
            .insert(tenant_key, RateState { stored: row, used });
    }

    // Round robin: each key's first candidate in walk order, then each key's second, ...
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    let mut turn = vec![0usize; candidates.len()];
    let mut seen: HashMap<usize, usize> = HashMap::new();
    for (index, key) in key_of.iter().enumerate() {
        let n = seen.entry(*key).or_default();
        turn[index] = *n;
        *n += 1;
    }
    order.sort_by_key(|&i| (turn[i], key_of[i]));
    let mut admission = flow::admit(&candidates, &order, &mut states, limit);
    let held_back = hold_back_over_caps(db, &mut tx, &candidates, &mut admission.admitted).await?;

    let mut changed = false;
    for (index, reason) in &admission.cancelled {
        let candidate = &candidates[*index];
        workflow_run::workflow_run_cancel(&mut tx, candidate.tenant_id, candidate.run_id, reason)
            .await?;
        changed = true;
    }
    for (tenant, run, reason) in &admission.victims {
        workflow_run::workflow_run_cancel(&mut tx, *tenant, *run, reason).await?;
        changed = true;
    }
    if !admission.failed.is_empty() {
        let failed: Vec<(Uuid, Uuid, String)> = admission
            .failed
            .iter()
            .map(|(i, reason)| {
                (
                    candidates[*i].tenant_id,
                    candidates[*i].task_run_id,
                    reason.clone(),
                )
            })
            .collect();
        flow_db::task_runs_fail_gated(&mut tx, &failed).await?;
        changed = true;
    }

    // Cancelling a victim may have waited for its completion to commit: the admitted start
    // after that, so their start is stamped now (units checked at an earlier time and counted
    // at a later one only count longer).
    let now_ms = if changed {
        flow_db::clock_ms(&mut tx).await?
    } else {
        now_ms
    };
    let admitted: Vec<(Uuid, Uuid)> = admission
        .admitted
        .iter()
        .map(|&i| (candidates[i].tenant_id, candidates[i].task_run_id))
        .collect();
    let mut holders: Vec<NewHolder> = Vec::new();
    let mut usage: Vec<NewUsage> = Vec::new();
    for &index in &admission.admitted {
        let candidate = &candidates[index];
        for gate in &candidate.gates {
            match gate {
                Gate::Concurrency { key, scope, .. } => holders.push(NewHolder {
                    tenant_id: candidate.tenant_id,
                    task_run_id: candidate.task_run_id,
                    key: key.clone(),
                    run_id: candidate.run_id,
                    task_scope: *scope == Scope::Task,
                }),
                Gate::RateLimit { key, units, .. } => usage.push(NewUsage {
                    tenant_id: candidate.tenant_id,
                    task_run_id: candidate.task_run_id,
                    key: key.clone(),
                    window_ms: windows
                        .iter()
                        .find(|w| w.0 == candidate.tenant_id && &w.1 == key)
                        .map_or(1_000, |w| w.2),
                    units: i64::from(*units),
                }),
            }
        }
    }
    let claimed =
        flow_db::task_runs_claim_admitted(&mut tx, params, now_ms, &admitted, &holders, &usage)
            .await?;
    if changed {
        flow_db::notify_gated(&mut tx).await?;
    }
    tx.commit().await?;

    // Resume after the last key served (or walked, when none was).
    let last = admission
        .admitted
        .iter()
        .map(|&i| key_of[i])
        .max()
        .unwrap_or(keys.len() - 1);
    cursor.0 = keys[last].clone();
    let retry_in = admission.rate_limited.then(|| {
        let shortest = windows.iter().map(|w| w.2).min().unwrap_or(1_000);
        Duration::from_millis((shortest / 100).clamp(5, 1_000) as u64)
    });
    // A full walk that admitted nothing waits for a place to free (a notification) rather
    // than walking on at once: keys at capacity would otherwise be polled in a busy loop.
    Ok(Admitted {
        more: !held_back
            && (claimed.len() >= limit || (keys.len() as i64 >= walk && !claimed.is_empty())),
        claimed,
        retry_in,
    })
}

/// Keeps out of `admitted` the candidates of tenants capped on executing task runs beyond
/// their room (their cap less their task runs leased anywhere, counted after their tenants are
/// locked, as the capped claim does), and those of capped tenants another node is claiming
/// for. They stay queued; their rules' places are not taken. Returns whether any was kept out.
async fn hold_back_over_caps(
    db: &Db,
    tx: &mut sqlx::PgConnection,
    candidates: &[Candidate],
    admitted: &mut Vec<usize>,
) -> Result<bool, sqlx::Error> {
    let mut tenants: Vec<Uuid> = admitted.iter().map(|&i| candidates[i].tenant_id).collect();
    tenants.sort_unstable();
    tenants.dedup();
    let default_cap = db
        .quotas
        .max_executing
        .map(|cap| i32::try_from(cap).unwrap_or(i32::MAX));
    let (capped, locked) = quota_db::capped_among_lock(tx, &tenants, default_cap).await?;
    if capped.is_empty() {
        return Ok(false);
    }
    let executing: HashMap<Uuid, i64> = quota_db::tenants_executing(tx, &locked)
        .await?
        .into_iter()
        .collect();
    let mut room: HashMap<Uuid, i64> = capped
        .iter()
        .map(|(tenant, cap)| {
            let room = if locked.contains(tenant) {
                i64::from(*cap) - executing.get(tenant).copied().unwrap_or(0)
            } else {
                0
            };
            (*tenant, room)
        })
        .collect();
    let before = admitted.len();
    admitted.retain(|&i| match room.get_mut(&candidates[i].tenant_id) {
        None => true,
        Some(left) if *left > 0 => {
            *left -= 1;
            true
        }
        Some(_) => false,
    });
    Ok(admitted.len() < before)
}

/// What each queued task run of a run waits for, by task run id (plain reads, no locks).
pub(crate) async fn waiting_for(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
) -> Result<HashMap<Uuid, flow::WaitingFor>, sqlx::Error> {
    let rows = flow_db::task_run_gates_of_run(conn, tenant_id, run_id).await?;
    let mut gated: Vec<(Uuid, Vec<Gate>)> = Vec::new();
    let mut concurrency_keys: Vec<TenantKey> = Vec::new();
    let mut rate_keys: Vec<TenantKey> = Vec::new();
    let mut windows: Vec<(Uuid, String, i64)> = Vec::new();
    for (id, text) in rows {
        let gates: Vec<Gate> = serde_json::from_str(&text).unwrap_or_default();
        for gate in &gates {
            match gate {
                Gate::Concurrency { key, .. } => concurrency_keys.push((tenant_id, key.clone())),
                Gate::RateLimit { key, dynamic, .. } => {
                    rate_keys.push((tenant_id, key.clone()));
                    if let Some((_, window)) = dynamic {
                        windows.push((tenant_id, key.clone(), *window as i64));
                    }
                }
            }
        }
        gated.push((id, gates));
    }
    let (now_ms, holders) =
        flow_db::concurrency_holders_live(conn, &concurrency_keys, false).await?;
    let mut states = KeyStates {
        concurrency: holders,
        rate: HashMap::new(),
    };
    let stored = flow_db::rate_limits_stored(conn, &rate_keys).await?;
    for (tenant, key, limit, window) in &stored {
        if let (Some(_), Some(window)) = (limit, window)
            && !windows.iter().any(|w| &w.1 == key)
        {
            windows.push((*tenant, key.clone(), *window));
        }
    }
    let usage = flow_db::rate_usage(conn, &windows, now_ms, false).await?;
    for (tenant, key, limit, window) in stored {
        let row = limit
            .zip(window)
            .map(|(l, w)| (l.max(0) as u32, w.max(1) as u64));
        let used = usage.get(&(tenant, key.clone())).map_or(0, |u| u.used);
        states
            .rate
            .insert((tenant, key), RateState { stored: row, used });
    }
    for (tenant, key, _) in &windows {
        if let Some(usage) = usage.get(&(*tenant, key.clone())) {
            states.rate.entry((*tenant, key.clone())).or_default().used = usage.used;
        }
    }
    Ok(gated
        .into_iter()
        .map(|(id, gates)| {
            (
                id,
                flow::waiting_for(tenant_id, run_id, id, &gates, &states),
            )
        })
        .collect())
}
