//! The slot lender: a node's execution slots, lent to claimed task runs fairly between
//! tenants instead of first come, first served.
//!
//! Claimed task runs wait here for a slot. A freed slot goes to the waiting tenant that holds
//! the fewest slots for its weight (ties: the one served longest ago), and within a tenant to
//! its oldest waiter, so a tenant with one run is served next however many runs another tenant
//! has claimed. No tenant holds more than `tenant_max` slots: the rest stay free for the
//! others, so a tenant's long tasks never take every slot of a node.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use uuid::Uuid;

/// A node's execution slots.
pub(crate) struct SlotLender {
    tenant_max: usize,
    state: Mutex<LenderState>,
}

#[derive(Default)]
struct LenderState {
    free: usize,
    waiting: usize,
    /// Grants made so far: the clock of "served longest ago".
    turn: u64,
    tenants: HashMap<Uuid, TenantSlots>,
}

struct TenantSlots {
    in_use: usize,
    weight: u32,
    last_served: u64,
    waiters: VecDeque<oneshot::Sender<()>>,
}

/// A lent slot; dropping it gives it back.
pub(crate) struct Slot {
    lender: Arc<SlotLender>,
    tenant: Uuid,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.lender.give_back(self.tenant);
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl LenderState {
    fn grant(&mut self, tenant_max: usize) {
        while self.free > 0 && self.waiting > 0 {
            // Fewest slots per weight first: a.in_use / a.weight < b.in_use / b.weight.
            let Some((&id, _)) = self
                .tenants
                .iter()
                .filter(|(_, t)| !t.waiters.is_empty() && t.in_use < tenant_max)
                .min_by(|(_, a), (_, b)| {
                    (a.in_use as u64 * u64::from(b.weight))
                        .cmp(&(b.in_use as u64 * u64::from(a.weight)))
                        .then(a.last_served.cmp(&b.last_served))
                })
            else {
                // Every waiting tenant is at its maximum.
                return;
            };
            self.turn += 1;
            let turn = self.turn;
            let Some(tenant) = self.tenants.get_mut(&id) else {
                return;
            };
            let Some(waiter) = tenant.waiters.pop_front() else {
                return;
            };
            self.waiting -= 1;
            // A waiter that gave up (cancelled, node stopping) is skipped.
            if waiter.send(()).is_ok() {
                tenant.in_use += 1;
                tenant.last_served = turn;
                self.free -= 1;
            }
        }
    }

    fn forget_idle(&mut self) {
        self.tenants
            .retain(|_, t| t.in_use > 0 || !t.waiters.is_empty());
    }
}

impl SlotLender {
    /// `capacity` slots, at most `tenant_max` of them to one tenant.
    pub(crate) fn new(capacity: usize, tenant_max: usize) -> Arc<Self> {
        Arc::new(Self {
            tenant_max: tenant_max.clamp(1, capacity.max(1)),
            state: Mutex::new(LenderState {
                free: capacity.max(1),
                ..LenderState::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LenderState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn give_back(&self, tenant: Uuid) {
        let mut state = self.lock();
        state.free += 1;
        if let Some(slots) = state.tenants.get_mut(&tenant) {
            slots.in_use = slots.in_use.saturating_sub(1);
        }
        state.grant(self.tenant_max);
        state.forget_idle();
    }

    /// Waits for a slot for `tenant` (of `weight`). Cancel-safe: a slot granted to a caller
    /// that stopped waiting goes back to the lender.
    pub(crate) async fn acquire(self: &Arc<Self>, tenant: Uuid, weight: u32) -> Slot {
        let receiver = {
            let mut state = self.lock();
            let tenant_max = self.tenant_max;
            let nobody_waits = state.waiting == 0;
            let has_free = state.free > 0;
            let entry = state.tenants.entry(tenant).or_insert_with(|| TenantSlots {
                in_use: 0,
                weight: 1,
                last_served: 0,
                waiters: VecDeque::new(),
            });
            entry.weight = weight.max(1);
            if nobody_waits && has_free && entry.in_use < tenant_max {
                entry.in_use += 1;
                state.turn += 1;
                let turn = state.turn;
                if let Some(entry) = state.tenants.get_mut(&tenant) {
                    entry.last_served = turn;
                }
                state.free -= 1;
                None
            } else {
                let (sender, receiver) = oneshot::channel();
                entry.waiters.push_back(sender);
                state.waiting += 1;
                state.grant(tenant_max);
                Some(receiver)
            }
        };
        if let Some(receiver) = receiver {
            let mut pending = Pending {
                lender: self,
                tenant,
                receiver: Some(receiver),
            };
            if let Some(receiver) = pending.receiver.as_mut() {
                // The lender never drops a live waiter's sender.
                let _ = receiver.await;
            }
            pending.receiver = None;
        }
        Slot {
            lender: self.clone(),
            tenant,
        }
    }

    /// Tenants whose slots are all taken (at `tenant_max`): claiming more of their runs now
    /// would only make them wait here.
    pub(crate) fn tenants_at_max(&self) -> Vec<Uuid> {
        self.lock()
            .tenants
            .iter()
            .filter(|(_, t)| t.in_use >= self.tenant_max)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Slots lent now.
    #[cfg(test)]
    fn in_use(&self, tenant: Uuid) -> usize {
        self.lock().tenants.get(&tenant).map_or(0, |t| t.in_use)
    }
}

/// A queued request; dropped before its grant was received, the slot goes back.
struct Pending<'a> {
    lender: &'a SlotLender,
    tenant: Uuid,
    receiver: Option<oneshot::Receiver<()>>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(mut receiver) = self.receiver.take() {
            receiver.close();
            if receiver.try_recv().is_ok() {
                self.lender.give_back(self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const A: Uuid = Uuid::from_u128(1);
    const B: Uuid = Uuid::from_u128(2);

    /// Queues a request and lets it register with the lender.
    async fn queue(
        lender: &Arc<SlotLender>,
        tenant: Uuid,
        weight: u32,
    ) -> tokio::task::JoinHandle<Slot> {
        let lender = lender.clone();
        let handle = tokio::spawn(async move { lender.acquire(tenant, weight).await });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        handle
    }

    async fn granted(handle: tokio::task::JoinHandle<Slot>) -> Slot {
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("granted")
            .expect("the waiter did not panic")
    }

    #[tokio::test]
    async fn a_quiet_tenant_is_served_before_a_flooding_ones_backlog() {
        let lender = SlotLender::new(1, 1);
        let held = lender.acquire(A, 1).await;
        let mut flood = Vec::new();
        for _ in 0..5 {
            flood.push(queue(&lender, A, 1).await);
        }
        let quiet = queue(&lender, B, 1).await;
        drop(held);
        let slot = granted(quiet).await;
        assert_eq!(slot.tenant, B, "B queued last but holds no slot");
        assert!(flood.iter().all(|h| !h.is_finished()));
        drop(slot);
        let next = granted(flood.remove(0)).await;
        assert_eq!(next.tenant, A);
        for handle in flood {
            handle.abort();
        }
    }

    #[tokio::test]
    async fn no_tenant_takes_more_than_its_maximum() {
        let lender = SlotLender::new(4, 3);
        let mut slots = Vec::new();
        for _ in 0..3 {
            slots.push(lender.acquire(A, 1).await);
        }
        let fourth = queue(&lender, A, 1).await;
        assert!(
            !fourth.is_finished(),
            "a slot is free but A is at its maximum"
        );
        assert_eq!(lender.tenants_at_max(), vec![A]);
        // The free slot is B's at once.
        let b = tokio::time::timeout(Duration::from_secs(5), lender.acquire(B, 1))
            .await
            .expect("B gets the free slot");
        drop(slots.pop());
        let a = granted(fourth).await;
        assert_eq!(lender.in_use(A), 3);
        drop((a, b, slots));
        assert!(lender.lock().tenants.is_empty());
    }

    #[tokio::test]
    async fn weight_sets_the_share_of_slots() {
        const C: Uuid = Uuid::from_u128(3);
        let lender = SlotLender::new(4, 4);
        let a = [lender.acquire(A, 3).await, lender.acquire(A, 3).await];
        let b = lender.acquire(B, 1).await;
        let c = lender.acquire(C, 1).await;
        let b_next = queue(&lender, B, 1).await;
        let a_next = queue(&lender, A, 3).await;
        // A holds 2 slots for weight 3, B 1 for weight 1: A has less per weight and goes
        // first, though it holds more and queued later.
        drop(c);
        let first = granted(a_next).await;
        assert_eq!(first.tenant, A);
        assert!(!b_next.is_finished());
        drop(first);
        assert_eq!(granted(b_next).await.tenant, B);
        drop((a, b));
    }

    #[tokio::test]
    async fn a_waiter_that_stops_waiting_loses_no_slot() {
        let lender = SlotLender::new(1, 1);
        let held = lender.acquire(A, 1).await;
        let waiter = queue(&lender, B, 1).await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(5), lender.acquire(A, 1)).await;
        assert!(again.is_ok(), "the slot came back");
    }
}
