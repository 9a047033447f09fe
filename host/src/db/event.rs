//! `events` and `event_filters`: pushed events with the runs they started, and the CEL filters
//! that decide whether an event starts a workflow.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// An event as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventRow {
    /// Its id.
    pub id: Uuid,
    /// Its key.
    pub key: String,
    /// Its payload (the input of the runs it starts).
    pub payload: Value,
    /// Its additional metadata.
    pub additional_metadata: Value,
    /// Its scope, which selects the filters that apply.
    pub scope: Option<String>,
    /// Its idempotency key.
    pub idempotency_key: Option<String>,
    /// The runs it started.
    pub run_ids: Vec<Uuid>,
    /// When it was pushed.
    pub created_at: DateTime<Utc>,
}

/// The columns of an `EventRow`.
macro_rules! event_columns {
    () => {
        "id, key, payload, additional_metadata, scope, idempotency_key, run_ids, created_at"
    };
}

/// An event to store.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// Its id.
    pub id: Uuid,
    /// Its key.
    pub key: &'a str,
    /// Its payload.
    pub payload: &'a Value,
    /// Its additional metadata.
    pub additional_metadata: &'a Value,
    /// Its scope.
    pub scope: Option<&'a str>,
    /// Its idempotency key.
    pub idempotency_key: Option<&'a str>,
}

/// Stores an event; `Err(existing)` when its idempotency key was used before (nothing stored).
pub async fn event_insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    event: &NewEvent<'_>,
) -> Result<Result<(), EventRow>, sqlx::Error> {
    let inserted = sqlx::query(sql!(
        "INSERT INTO events (tenant_id, id, key, payload, additional_metadata, scope,
                             idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT DO NOTHING"
    ))
    .bind(tenant_id)
    .bind(event.id)
    .bind(event.key)
    .bind(event.payload)
    .bind(event.additional_metadata)
    .bind(event.scope)
    .bind(event.idempotency_key)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() > 0 {
        return Ok(Ok(()));
    }
    let existing: EventRow = sqlx::query_as(sql!(
        "SELECT ",
        event_columns!(),
        " FROM events WHERE tenant_id = $1 AND idempotency_key = $2"
    ))
    .bind(tenant_id)
    .bind(event.idempotency_key)
    .fetch_one(conn)
    .await?;
    Ok(Err(existing))
}

/// Records the runs an event started.
pub async fn event_set_runs(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    run_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query(sql!(
        "UPDATE events SET run_ids = $3 WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(run_ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// One event.
pub async fn event_get(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<EventRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT ",
        event_columns!(),
        " FROM events WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// A page of the tenant's events, newest first, optionally of one key.
pub async fn events_list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    key: Option<&str>,
    page: &super::PageParams<Uuid>,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let (before_at, before_id) = page.before.unzip();
    sqlx::query_as(sql!(
        "SELECT ",
        event_columns!(),
        " FROM events
         WHERE tenant_id = $1 AND ($2::text IS NULL OR key = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
         ORDER BY created_at DESC, id DESC LIMIT $5"
    ))
    .bind(tenant_id)
    .bind(key)
    .bind(before_at)
    .bind(before_id)
    .bind(page.limit)
    .fetch_all(conn)
    .await
}

/// An event filter.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventFilterRow {
    /// Its id.
    pub id: Uuid,
    /// The workflow it filters.
    pub workflow: String,
    /// CEL over `payload` and `additional_metadata`.
    pub expression: String,
    /// Applies only to events with this scope, when set.
    pub scope: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// Adds a filter to a workflow.
pub async fn event_filter_create(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    workflow: &str,
    expression: &str,
    scope: Option<&str>,
) -> Result<EventFilterRow, sqlx::Error> {
    sqlx::query_as(sql!(
        "INSERT INTO event_filters (tenant_id, id, workflow, expression, scope)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, workflow, expression, scope, created_at"
    ))
    .bind(tenant_id)
    .bind(Uuid::now_v7())
    .bind(workflow)
    .bind(expression)
    .bind(scope)
    .fetch_one(conn)
    .await
}

/// The filters of these workflows.
pub async fn event_filters_of(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    workflows: &[&str],
) -> Result<Vec<EventFilterRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT id, workflow, expression, scope, created_at FROM event_filters
         WHERE tenant_id = $1 AND workflow = ANY($2) ORDER BY created_at, id"
    ))
    .bind(tenant_id)
    .bind(workflows)
    .fetch_all(conn)
    .await
}
