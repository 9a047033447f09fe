//! The lease table: every task run a node has claimed, from its claim until its result is
//! committed (or the node gives it up).
//!
//! A lease stays in the table while its result waits for the completer, so the heartbeat keeps
//! renewing it: a slow database delays results but never turns finished work into lost leases
//! and repeated attempts. The table's size is also the node's backpressure: the dispatcher
//! claims only while fewer than `max_held` leases are held, so results waiting to be written
//! count against what the node may claim.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Where a held lease is in its life on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Claimed, waiting here for a free slot.
    Waiting,
    /// Its attempt is executing.
    Executing,
    /// Its result is with the completer, not yet committed.
    Writing,
}

struct Lease {
    tenant_id: Uuid,
    task_run_id: Uuid,
    cancel: CancellationToken,
    handed_back: Arc<AtomicBool>,
    phase: Phase,
}

/// What an attempt needs of its lease: its cancellation and whether the node handed it back.
#[derive(Debug, Clone)]
pub(crate) struct LeaseSignals {
    /// Cancelled when the attempt must stop (cancel, lost lease, shutdown).
    pub(crate) cancel: CancellationToken,
    /// Set when the node's shutdown interrupted it: hand it back, do not fail it.
    pub(crate) handed_back: Arc<AtomicBool>,
}

/// How many leases are in each phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LeaseCounts {
    /// Claimed and waiting for a slot.
    pub(crate) waiting: usize,
    /// Executing.
    pub(crate) executing: usize,
    /// Finished, result not yet committed.
    pub(crate) writing: usize,
}

impl LeaseCounts {
    /// Every lease held.
    pub(crate) fn held(&self) -> usize {
        self.waiting + self.executing + self.writing
    }

    fn of(&mut self, phase: Phase) -> &mut usize {
        match phase {
            Phase::Waiting => &mut self.waiting,
            Phase::Executing => &mut self.executing,
            Phase::Writing => &mut self.writing,
        }
    }
}

/// The leases, with their count per phase kept in step (the dispatcher reads the counts on
/// every wake-up; walking a thousand leases each time would put that walk on the hot path).
#[derive(Default)]
struct Leases {
    by_token: HashMap<i64, Lease>,
    counts: LeaseCounts,
    /// Leases held in any phase, per tenant (no entry for none).
    held_by_tenant: HashMap<Uuid, usize>,
}

/// Adds one to `tenant`'s count in `counts`, or takes one away (dropping a zero).
fn count_in(counts: &mut HashMap<Uuid, usize>, tenant: Uuid, up: bool) {
    let count = counts.entry(tenant).or_default();
    if up {
        *count += 1;
    } else {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(&tenant);
        }
    }
}

impl Leases {
    fn count(&mut self, phase: Phase, up: bool) {
        let count = self.counts.of(phase);
        if up {
            *count += 1;
        } else {
            *count -= 1;
        }
    }

    fn insert(&mut self, token: i64, lease: Lease) {
        self.count(lease.phase, true);
        count_in(&mut self.held_by_tenant, lease.tenant_id, true);
        if let Some(old) = self.by_token.insert(token, lease) {
            self.count(old.phase, false);
            count_in(&mut self.held_by_tenant, old.tenant_id, false);
        }
    }

    fn remove(&mut self, token: i64) -> Option<Lease> {
        let lease = self.by_token.remove(&token)?;
        self.count(lease.phase, false);
        count_in(&mut self.held_by_tenant, lease.tenant_id, false);
        Some(lease)
    }

    fn set_phase(&mut self, token: i64, phase: Phase) -> bool {
        let Some(lease) = self.by_token.get_mut(&token) else {
            return false;
        };
        let old = lease.phase;
        lease.phase = phase;
        self.count(old, false);
        self.count(phase, true);
        true
    }

    fn values(&self) -> impl Iterator<Item = &Lease> {
        self.by_token.values()
    }
}

/// The leases of one node, keyed by fencing token.
#[derive(Default)]
pub(crate) struct LeaseTable {
    leases: Mutex<Leases>,
    /// Signalled whenever a lease leaves `Waiting` or leaves the table: room to claim more.
    changed: Notify,
}

impl LeaseTable {
    fn lock(&self) -> MutexGuard<'_, Leases> {
        self.leases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a fresh claim, waiting for a slot.
    pub(crate) fn claimed(&self, token: i64, tenant_id: Uuid, task_run_id: Uuid) -> LeaseSignals {
        let signals = LeaseSignals {
            cancel: CancellationToken::new(),
            handed_back: Arc::new(AtomicBool::new(false)),
        };
        self.lock().insert(
            token,
            Lease {
                tenant_id,
                task_run_id,
                cancel: signals.cancel.clone(),
                handed_back: signals.handed_back.clone(),
                phase: Phase::Waiting,
            },
        );
        signals
    }

    /// The attempt got its slot. `false` if the lease is no longer held (the node was killed).
    pub(crate) fn executing(&self, token: i64) -> bool {
        let held = self.set_phase(token, Phase::Executing);
        self.changed.notify_one();
        held
    }

    /// The attempt ended and its result goes to the completer; the lease stays held (and
    /// renewed) until `written`. `false` if it is no longer held: then nothing may be written.
    pub(crate) fn finished(&self, token: i64) -> bool {
        let held = self.set_phase(token, Phase::Writing);
        self.changed.notify_one();
        held
    }

    fn set_phase(&self, token: i64, phase: Phase) -> bool {
        self.lock().set_phase(token, phase)
    }

    /// Drops a lease with no result to write (the task was cancelled). `false` if it was not
    /// held.
    pub(crate) fn give_up(&self, token: i64) -> bool {
        let held = self.lock().remove(token).is_some();
        self.changed.notify_one();
        held
    }

    /// The results of these leases are committed (or were refused as stale): they are no
    /// longer held.
    pub(crate) fn written(&self, tokens: impl IntoIterator<Item = i64>) {
        {
            let mut leases = self.lock();
            for token in tokens {
                leases.remove(token);
            }
        }
        self.changed.notify_one();
    }

    /// Every lease held, as `(tenant, task run, token)`, to renew.
    pub(crate) fn held(&self) -> Vec<(Uuid, Uuid, i64)> {
        self.lock()
            .by_token
            .iter()
            .map(|(token, lease)| (lease.tenant_id, lease.task_run_id, *token))
            .collect()
    }

    /// How many leases are in each phase.
    pub(crate) fn counts(&self) -> LeaseCounts {
        self.lock().counts
    }

    /// Tenants holding at least `at_least` leases here (waiting, executing or writing).
    pub(crate) fn tenants_holding(&self, at_least: usize) -> Vec<Uuid> {
        self.lock()
            .held_by_tenant
            .iter()
            .filter(|(_, held)| **held >= at_least)
            .map(|(tenant, _)| *tenant)
            .collect()
    }

    /// Leases `tenant` holds here (waiting, executing or writing).
    pub(crate) fn held_of(&self, tenant: Uuid) -> usize {
        self.lock()
            .held_by_tenant
            .get(&tenant)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until a lease starts executing or leaves the table.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// These leases are lost (reaped, cancelled or taken by another claim): stop their
    /// attempts. A result already with the completer will be refused as stale when written.
    pub(crate) fn lost(&self, tokens: &[i64]) {
        let leases = self.lock();
        for token in tokens {
            if let Some(lease) = leases.by_token.get(token)
                && lease.phase != Phase::Writing
            {
                lease.cancel.cancel();
            }
        }
    }

    /// Interrupts the attempts of these task runs (they were cancelled in the database).
    pub(crate) fn cancel_task_runs(&self, ids: &[Uuid]) {
        for lease in self.lock().values() {
            if ids.contains(&lease.task_run_id) {
                lease.cancel.cancel();
            }
        }
    }

    /// Shutdown past its grace period: interrupt every attempt and hand it back.
    pub(crate) fn hand_back_all(&self) {
        for lease in self.lock().values() {
            if lease.phase != Phase::Writing {
                lease.handed_back.store(true, Ordering::SeqCst);
                lease.cancel.cancel();
            }
        }
    }

    /// A crash: stop every attempt and forget every lease, so nothing more is written.
    pub(crate) fn abandon_all(&self) {
        let mut leases = self.lock();
        for lease in leases.values() {
            lease.cancel.cancel();
        }
        *leases = Leases::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_lease_is_held_until_written() {
        let table = LeaseTable::default();
        let (tenant, run) = (Uuid::from_u128(1), Uuid::from_u128(2));
        table.claimed(7, tenant, run);
        assert!(table.executing(7));
        assert!(table.finished(7));
        assert_eq!(table.held(), vec![(tenant, run, 7)]);
        assert_eq!(table.counts().writing, 1);
        table.written([7]);
        assert!(table.held().is_empty());
        assert!(
            !table.finished(7),
            "a lease no longer held cannot be written"
        );
    }

    #[test]
    fn leases_are_counted_per_tenant() {
        let table = LeaseTable::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for token in 0..3 {
            table.claimed(token, a, Uuid::from_u128(10 + token as u128));
        }
        table.claimed(3, b, Uuid::from_u128(20));
        assert_eq!(table.tenants_holding(3), vec![a]);
        table.executing(0);
        table.finished(0);
        assert_eq!(table.counts().waiting, 3);
        assert_eq!(table.held_of(a), 3, "a lease being written is still held");
        table.give_up(3);
        assert_eq!((table.counts().waiting, table.held_of(b)), (2, 0));
        table.written([0, 1, 2]);
        assert_eq!((table.counts().waiting, table.held_of(a)), (0, 0));
        assert!(table.tenants_holding(1).is_empty());
        assert_eq!(table.counts().held(), 0);
    }

    #[test]
    fn a_lost_lease_stops_its_attempt_but_not_a_result_being_written() {
        let table = LeaseTable::default();
        let executing = table.claimed(1, Uuid::nil(), Uuid::from_u128(1));
        let writing = table.claimed(2, Uuid::nil(), Uuid::from_u128(2));
        table.executing(1);
        table.finished(2);
        table.lost(&[1, 2]);
        assert!(executing.cancel.is_cancelled());
        assert!(!writing.cancel.is_cancelled());
    }

    #[test]
    fn counts_follow_every_transition() {
        let table = LeaseTable::default();
        for token in 0..4 {
            table.claimed(token, Uuid::nil(), Uuid::from_u128(token as u128));
        }
        table.executing(0);
        table.executing(1);
        table.finished(1);
        table.give_up(2);
        let counts = table.counts();
        assert_eq!(
            (counts.waiting, counts.executing, counts.writing),
            (1, 1, 1)
        );
        table.written([1]);
        assert_eq!(table.counts().held(), 2);
        assert_eq!(table.held().len(), 2);
    }

    #[test]
    fn abandoning_forgets_every_lease() {
        let table = LeaseTable::default();
        let signals = table.claimed(1, Uuid::nil(), Uuid::nil());
        table.abandon_all();
        assert!(signals.cancel.is_cancelled());
        assert_eq!(table.counts().held(), 0);
        assert!(!table.finished(1));
    }
}
