//! The schedule service: queues each scheduled run when it is due, and fires each cron tick,
//! on whichever node gets to it first. A scheduled run is promoted once (its row is locked with
//! `SKIP LOCKED`); a cron tick fires once (`cron_ticks` holds one record per cron and tick).
//!
//! It sleeps until the next run or tick is due, or until a run is scheduled or rescheduled or a
//! cron created (a notification), and polls at most `poll` apart in case a notification was
//! missed. Nothing is started before its time; the delay after it is a statement or two plus
//! the timer's slack.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::runs::{RunRequest, start_runs_in};
use crate::cron::CronSchedule;
use crate::db::cron::{
    CronRow, cron_advance, cron_tick_record, cron_tick_run, crons_due, crons_next_due,
};
use crate::db::workflow_run::{workflow_runs_next_due, workflow_runs_promote_due};
use crate::db::{Db, transaction_now};

/// Most runs promoted, or crons fired, per transaction.
const BATCH: i64 = 1_000;
/// A tick this late still fires; an older one was missed (the service was down) and only
/// `catch_up: latest` runs it, once.
const GRACE: Duration = Duration::from_secs(5);
/// Most ticks of one cron looked at in one pass (a per-second cron after a day down).
const MAX_TICKS_SCANNED: usize = 100_000;

/// Runs until `stop`; `wake` is notified when a run is scheduled or rescheduled, or a cron made.
pub(crate) async fn run(db: Db, wake: Arc<Notify>, poll: Duration, stop: CancellationToken) {
    loop {
        let next = match pass(&db).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!("the schedule service failed: {e}");
                Some(poll)
            }
        };
        let sleep = next.unwrap_or(poll).min(poll);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = wake.notified() => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Promotes every due run and fires every due cron; returns how long until the next is due.
async fn pass(db: &Db) -> Result<Option<Duration>, sqlx::Error> {
    loop {
        let mut tx = db.pool.begin().await?;
        let now = transaction_now(&mut tx).await?;
        let promoted = workflow_runs_promote_due(&mut tx, now, BATCH).await?;
        tx.commit().await?;
        if promoted.runs < BATCH as usize {
            break;
        }
    }
    loop {
        // The transaction's time decides what is due: the runs it starts are stamped with it.
        let mut tx = db.pool.begin().await?;
        let now = transaction_now(&mut tx).await?;
        let due = crons_due(&mut tx, now, BATCH).await?;
        for cron in &due {
            fire(&mut tx, &db.quotas, cron, now).await?;
        }
        tx.commit().await?;
        if due.len() < BATCH as usize {
            break;
        }
    }
    let mut conn = db.pool.acquire().await?;
    let runs = workflow_runs_next_due(&mut conn).await?;
    let crons = crons_next_due(&mut conn).await?;
    let next = match (runs, crons) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(next.map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)))
}

/// The ticks of `cron` due by `now` that fire, and when it fires next.
pub(crate) fn due_ticks(
    schedule: &CronSchedule,
    first: DateTime<Utc>,
    catch_up_latest: bool,
    now: DateTime<Utc>,
) -> (Vec<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let grace = chrono::Duration::from_std(GRACE).unwrap_or_default();
    let mut fire = Vec::new();
    let mut latest_missed = None;
    let mut tick = Some(first);
    let mut scanned = 0;
    while let Some(at) = tick.filter(|at| *at <= now) {
        if now - at <= grace {
            fire.push(at);
        } else {
            latest_missed = Some(at);
        }
        scanned += 1;
        tick = if scanned < MAX_TICKS_SCANNED {
            schedule.next_after(at)
        } else {
            schedule.next_after(now)
        };
    }
    if catch_up_latest
        && fire.is_empty()
        && let Some(missed) = latest_missed
    {
        fire.push(missed);
    }
    (fire, tick)
}

/// Fires the due ticks of one locked cron and moves it to its next tick.
async fn fire(
    tx: &mut sqlx::PgConnection,
    quotas: &crate::quota::Quotas,
    cron: &CronRow,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let Some(first) = cron.next_tick else {
        return Ok(());
    };
    let schedule = match CronSchedule::parse(&cron.expression, &cron.timezone) {
        Ok(schedule) => schedule,
        Err(e) => {
            tracing::warn!("cron {} cannot fire: {e}", cron.id);
            return cron_advance(tx, cron.tenant_id, cron.id, None).await;
        }
    };
    let (ticks, next) = due_ticks(&schedule, first, cron.catch_up == "latest", now);
    for tick in ticks {
        if !cron_tick_record(tx, cron.tenant_id, cron.id, tick).await? {
            continue;
        }
        let request = RunRequest {
            additional_metadata: cron.additional_metadata.clone(),
            ..RunRequest::new(cron.workflow.clone(), cron.input.clone())
        };
        match start_runs_in(
            tx,
            quotas,
            cron.tenant_id,
            &[request],
            Some(("cron", cron.id)),
        )
        .await
        {
            Ok(ids) => {
                if let Some(&id) = ids.first() {
                    cron_tick_run(tx, cron.tenant_id, cron.id, tick, id).await?;
                }
            }
            Err(super::RunError::Db(e)) => return Err(e),
            Err(e) => tracing::warn!("cron {} could not start a run: {e}", cron.id),
        }
    }
    cron_advance(tx, cron.tenant_id, cron.id, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid time")
            .with_timezone(&Utc)
    }

    #[test]
    fn recent_ticks_fire_and_missed_ones_do_not() {
        let minutely = CronSchedule::parse("* * * * *", "UTC").expect("valid");
        let now = utc("2026-03-01T10:00:02Z");
        let (fire, next) = due_ticks(&minutely, utc("2026-03-01T10:00:00Z"), false, now);
        assert_eq!(fire, vec![utc("2026-03-01T10:00:00Z")]);
        assert_eq!(next, Some(utc("2026-03-01T10:01:00Z")));
        // Down for an hour: nothing is back-filled...
        let (fire, next) = due_ticks(&minutely, utc("2026-03-01T09:00:00Z"), false, now);
        assert_eq!(fire, vec![utc("2026-03-01T10:00:00Z")]);
        assert_eq!(next, Some(utc("2026-03-01T10:01:00Z")));
        let later = utc("2026-03-01T10:00:30Z");
        let (fire, _) = due_ticks(&minutely, utc("2026-03-01T09:00:00Z"), false, later);
        assert!(fire.is_empty());
        // ...unless the cron asks for the latest missed tick, once.
        let (fire, next) = due_ticks(&minutely, utc("2026-03-01T09:00:00Z"), true, later);
        assert_eq!(fire, vec![utc("2026-03-01T10:00:00Z")]);
        assert_eq!(next, Some(utc("2026-03-01T10:01:00Z")));
    }
}
