//! Run waiters: the one way anything waits for a run to finish (the API's `wait`, a task's
//! `wait` on a child, `wait_for_run`), woken by the run-finished notifications of one listener,
//! with a slow poll that covers a notification lost while that listener reconnects.
//!
//! The waiters own no connection: whoever owns the listener (the node's, or the short-lived one
//! of `wait_for_run` in a process without a node) calls `finished` with the ids it hears of.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use uuid::Uuid;

/// How often a waiter looks again if no notification came.
pub const WAIT_POLL: Duration = Duration::from_millis(500);

/// The runs someone waits for, each with what wakes its waiters. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RunWaiters {
    waiting: Arc<Mutex<HashMap<Uuid, Arc<Notify>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RunWaiters {
    /// No one waiting yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts waiting for run `id`; the returned waiter stops waiting when dropped, however
    /// its owner ends (an API client that hangs up drops it too).
    pub fn register(&self, id: Uuid) -> Waiter {
        let notify = lock(&self.waiting).entry(id).or_default().clone();
        Waiter {
            waiters: self.clone(),
            id,
            notify,
        }
    }

    /// Runs `ids` finished: wakes their waiters.
    pub fn finished(&self, ids: &[Uuid]) {
        let waiting = lock(&self.waiting);
        for id in ids {
            if let Some(notify) = waiting.get(id) {
                notify.notify_waiters();
            }
        }
    }

    /// Notifications may have been lost: every waiter looks again.
    pub fn wake_all(&self) {
        for notify in lock(&self.waiting).values() {
            notify.notify_waiters();
        }
    }

    /// How many runs are waited for.
    pub fn len(&self) -> usize {
        lock(&self.waiting).len()
    }

    /// Whether no run is waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for run `id`: calls `look` now, each time the run may have finished and at least
    /// every `WAIT_POLL`, until it answers `(value, true)` or `timeout` passes; then returns
    /// the last value.
    pub async fn wait<T, E, F, Fut>(&self, id: Uuid, timeout: Duration, mut look: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(T, bool), E>>,
    {
        let waiter = self.register(id);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Created before the look, so a notification in between is not lost.
            let notified = waiter.notified();
            let (value, done) = look().await?;
            if done || tokio::time::Instant::now() >= deadline {
                return Ok(value);
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(WAIT_POLL) => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// One wait for a run, registered until dropped.
#[derive(Debug)]
pub struct Waiter {
    waiters: RunWaiters,
    id: Uuid,
    notify: Arc<Notify>,
}

impl Waiter {
    /// Completes when the run may have finished. Create it before looking at the run, so a
    /// notification that comes while looking is not lost.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut waiting = lock(&self.waiters.waiting);
        // The map's and this waiter's: no one else waits for this run.
        if waiting
            .get(&self.id)
            .is_some_and(|notify| Arc::strong_count(notify) <= 2)
        {
            waiting.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Waker};

    use super::*;

    /// Whether `future` is still pending when polled once.
    fn pending<F: Future + ?Sized>(future: Pin<&mut F>) -> bool {
        future
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    }

    #[tokio::test]
    async fn a_finished_run_wakes_its_waiters_only() {
        let waiters = RunWaiters::new();
        let (run, other) = (Uuid::now_v7(), Uuid::now_v7());
        let first = waiters.register(run);
        let second = waiters.register(run);
        let bystander = waiters.register(other);
        let (a, b, c) = (first.notified(), second.notified(), bystander.notified());
        waiters.finished(&[run]);
        a.await;
        b.await;
        let mut c = std::pin::pin!(c);
        assert!(pending(c.as_mut()), "another run's waiter sleeps on");
        waiters.wake_all();
        c.await;
    }

    #[tokio::test]
    async fn a_dropped_waiter_is_forgotten() {
        let waiters = RunWaiters::new();
        let run = Uuid::now_v7();
        let first = waiters.register(run);
        let second = waiters.register(run);
        drop(first);
        assert_eq!(waiters.len(), 1, "the other still waits");
        drop(second);
        assert!(waiters.is_empty());
        // A wait abandoned half-way (its future dropped) is forgotten too.
        let abandoned = waiters.wait(run, Duration::from_secs(60), || async {
            Ok::<_, ()>(((), false))
        });
        let mut abandoned = Box::pin(abandoned);
        assert!(pending(abandoned.as_mut()));
        assert_eq!(waiters.len(), 1);
        drop(abandoned);
        assert!(waiters.is_empty());
    }

    #[tokio::test]
    async fn a_wait_ends_when_the_look_says_done_or_at_the_timeout() {
        let waiters = RunWaiters::new();
        let run = Uuid::now_v7();
        let looks = std::sync::atomic::AtomicU32::new(0);
        let done = waiters.clone();
        let waited = tokio::spawn(async move {
            // Wake the waiter once it is registered; the second look says done.
            while done.is_empty() {
                tokio::task::yield_now().await;
            }
            done.finished(&[run]);
        });
        let value = waiters
            .wait(run, Duration::from_secs(60), || async {
                let n = looks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                Ok::<_, ()>((n, n >= 2))
            })
            .await;
        assert_eq!(value, Ok(2));
        waited.await.expect("waker");
        let timed_out = waiters
            .wait(run, Duration::from_millis(50), || async {
                Ok::<_, ()>(("still", false))
            })
            .await;
        assert_eq!(timed_out, Ok("still"));
    }
}
