//! `crons` and `cron_ticks`: the crons of each tenant (from manifests and the API), when each
//! next fires, and the one record per fired tick.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// A cron as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CronRow {
    /// Owner.
    pub tenant_id: Uuid,
    /// Its id.
    pub id: Uuid,
    /// The workflow it starts (its newest version at each tick).
    pub workflow: String,
    /// An optional label.
    pub name: Option<String>,
    /// The cron expression.
    pub expression: String,
    /// IANA time zone of the expression.
    pub timezone: String,
    /// Input of each run.
    pub input: Value,
    /// Additional metadata of each run.
    pub additional_metadata: Value,
    /// "manifest" or "api".
    pub source: String,
    /// "none" or "latest".
    pub catch_up: String,
    /// When it next fires (`None`: never again).
    pub next_tick: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A cron to create.
#[derive(Debug, Clone)]
pub struct NewCron<'a> {
    /// The workflow it starts.
    pub workflow: &'a str,
    /// An optional label.
    pub name: Option<&'a str>,
    /// The cron expression.
    pub expression: &'a str,
    /// IANA time zone.
    pub timezone: &'a str,
    /// Input of each run.
    pub input: &'a Value,
    /// Additional metadata of each run.
    pub additional_metadata: &'a Value,
    /// "none" or "latest".
    pub catch_up: &'a str,
    /// Its first tick.
    pub next_tick: Option<DateTime<Utc>>,
}

/// The columns of a `CronRow`.
macro_rules! cron_columns {
    () => {
        "tenant_id, id, workflow, name, expression, timezone, input,
         additional_metadata, source, catch_up, next_tick, created_at"
    };
}

/// Creates a cron with `source` ("manifest" or "api").
pub async fn cron_create(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    cron: &NewCron<'_>,
    source: &str,
) -> Result<CronRow, sqlx::Error> {
    let row = sqlx::query_as(sql!(
        "INSERT INTO crons (tenant_id, id, workflow, name, expression, timezone, input,
                            additional_metadata, source, catch_up, next_tick)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         RETURNING ",
        cron_columns!()
    ))
    .bind(tenant_id)
    .bind(Uuid::now_v7())
    .bind(cron.workflow)
    .bind(cron.name)
    .bind(cron.expression)
    .bind(cron.timezone)
    .bind(cron.input)
    .bind(cron.additional_metadata)
    .bind(source)
    .bind(cron.catch_up)
    .bind(cron.next_tick)
    .fetch_one(&mut *conn)
    .await?;
    notify_crons(conn).await?;
    Ok(row)
}

/// Replaces the manifest crons of `workflow` with `crons` (a new version was deployed).
pub async fn crons_replace_manifest(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    workflow: &str,
    crons: &[NewCron<'_>],
) -> Result<(), sqlx::Error> {
    sqlx::query(sql!(
        "DELETE FROM crons WHERE tenant_id = $1 AND workflow = $2 AND source = 'manifest'"
    ))
    .bind(tenant_id)
    .bind(workflow)
    .execute(&mut *conn)
    .await?;
    for cron in crons {
        cron_create(conn, tenant_id, cron, "manifest").await?;
    }
    Ok(())
}

/// The tenant's crons, by workflow then creation.
pub async fn crons_list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    limit: i64,
) -> Result<Vec<CronRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT ",
        cron_columns!(),
        " FROM crons WHERE tenant_id = $1
         ORDER BY workflow, created_at, id LIMIT $2"
    ))
    .bind(tenant_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Deletes a cron; `false` if there is none.
pub async fn cron_delete(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query(sql!("DELETE FROM crons WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

/// Up to `limit` crons due at `now`, locked (`SKIP LOCKED`: one node handles each at a time).
pub async fn crons_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<CronRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT ",
        cron_columns!(),
        " FROM crons WHERE next_tick <= $1
         ORDER BY next_tick LIMIT $2 FOR UPDATE SKIP LOCKED"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Records that `tick` of a cron fired; `false` if it had already.
pub async fn cron_tick_record(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    cron_id: Uuid,
    tick: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(sql!(
        "INSERT INTO cron_ticks (tenant_id, cron_id, tick) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING"
    ))
    .bind(tenant_id)
    .bind(cron_id)
    .bind(tick)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

/// Notes the run a fired tick started.
pub async fn cron_tick_run(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    cron_id: Uuid,
    tick: DateTime<Utc>,
    run_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql!(
        "UPDATE cron_ticks SET run_id = $4 WHERE tenant_id = $1 AND cron_id = $2 AND tick = $3"
    ))
    .bind(tenant_id)
    .bind(cron_id)
    .bind(tick)
    .bind(run_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets when a cron next fires.
pub async fn cron_advance(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    next_tick: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql!(
        "UPDATE crons SET next_tick = $3 WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(next_tick)
    .execute(conn)
    .await?;
    Ok(())
}

/// When the next cron fires, if any.
pub async fn crons_next_due(conn: &mut PgConnection) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(sql!("SELECT min(next_tick) FROM crons"))
        .fetch_one(conn)
        .await
}

/// Wakes the schedule service of every node (delivered at commit).
async fn notify_crons(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(sql!("SELECT pg_notify($1, '')"))
        .bind(super::CHANNEL_SCHEDULED)
        .execute(conn)
        .await?;
    Ok(())
}

/// The fired ticks of a cron, oldest first, with the runs they started.
pub async fn cron_ticks_of(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    cron_id: Uuid,
) -> Result<Vec<(DateTime<Utc>, Option<Uuid>)>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT tick, run_id FROM cron_ticks WHERE tenant_id = $1 AND cron_id = $2 ORDER BY tick"
    ))
    .bind(tenant_id)
    .bind(cron_id)
    .fetch_all(conn)
    .await
}
