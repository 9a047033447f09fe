//! Events: `POST /api/v1/events` (and `/events/bulk`, all or nothing) push events that start
//! the subscribed workflows; `GET /api/v1/events?key=` and `GET /api/v1/events/{id}` show them
//! with the runs they started; `POST /api/v1/workflows/{name}/event-filters` adds a filter.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::extract::{self, Query};
use super::page;
use crate::db::event::{EventRow, event_filter_create, event_get, events_list};
use crate::db::module::workflow_latest;
use crate::manifest::parse_expression;
use crate::scheduler::events::{EventRequest, PushedEvent, push_events};

/// Most events in one bulk push.
const MAX_BULK_EVENTS: usize = 1_000;

fn event_json(event: &EventRow) -> Value {
    json!({
        "id": event.id,
        "key": event.key,
        "payload": event.payload,
        "additional_metadata": event.additional_metadata,
        "scope": event.scope,
        "idempotency_key": event.idempotency_key,
        "run_ids": event.run_ids,
        "created_at": event.created_at,
    })
}

fn pushed_json(pushed: &PushedEvent) -> Value {
    json!({"event_id": pushed.event_id, "run_ids": pushed.run_ids})
}

/// `{key, payload, additional_metadata?, scope?, idempotency_key?}` → 202 `{event_id, run_ids}`.
pub async fn push(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    extract::Json(body): extract::Json<EventRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let pushed = push_events(&state.db, tenant, std::slice::from_ref(&body)).await?;
    Ok((StatusCode::ACCEPTED, Json(pushed_json(&pushed[0]))))
}

/// Body of `POST /api/v1/events/bulk`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkEvents {
    events: Vec<EventRequest>,
}

/// `{events: [...]}` (at most 1,000, all or nothing) → 202 `{events: [{event_id, run_ids}]}`.
pub async fn push_bulk(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    extract::Json(body): extract::Json<BulkEvents>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if body.events.is_empty() || body.events.len() > MAX_BULK_EVENTS {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "give 1 to {MAX_BULK_EVENTS} events, got {}",
                body.events.len()
            ),
        ));
    }
    let pushed = push_events(&state.db, tenant, &body.events).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"events": pushed.iter().map(pushed_json).collect::<Vec<_>>()})),
    ))
}

/// `GET /api/v1/events` filters and page.
#[derive(Debug, Deserialize)]
pub struct ListEvents {
    key: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `{events, next_cursor}`, newest first, optionally of one key.
pub async fn list(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Query(query): Query<ListEvents>,
) -> Result<Json<Value>, ApiError> {
    let page_query = page::PageQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    };
    let mut conn = state.db.pool.acquire().await?;
    let mut rows = events_list(
        &mut conn,
        tenant,
        query.key.as_deref(),
        &page_query.params()?,
    )
    .await?;
    let next = page::finish(&mut rows, page_query.limit()?, |e| {
        (e.created_at, e.id.to_string())
    });
    Ok(Json(json!({
        "events": rows.iter().map(event_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// One event with the runs it started.
pub async fn get(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = extract::parse_id("event", &id)?;
    let mut conn = state.db.pool.acquire().await?;
    let event = event_get(&mut conn, tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no event `{id}`")))?;
    Ok(Json(event_json(&event)))
}

/// Body of `POST /api/v1/workflows/{name}/event-filters`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateFilter {
    expression: String,
    #[serde(default)]
    scope: Option<String>,
}

/// Adds a filter (CEL over `payload` and `additional_metadata`) → 201 the filter.
pub async fn create_filter(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(workflow): Path<String>,
    extract::Json(body): extract::Json<CreateFilter>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    parse_expression(&body.expression).map_err(|e| {
        ApiError::bad_request(
            "invalid_filter",
            format!("filter `{}` is invalid: {e}", body.expression),
        )
    })?;
    let mut tx = state.db.pool.begin().await?;
    if workflow_latest(&mut tx, tenant, &workflow).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_workflow",
            format!("unknown workflow `{workflow}`"),
        ));
    }
    let filter = event_filter_create(
        &mut tx,
        tenant,
        &workflow,
        &body.expression,
        body.scope.as_deref(),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": filter.id,
            "workflow": filter.workflow,
            "expression": filter.expression,
            "scope": filter.scope,
            "created_at": filter.created_at,
        })),
    ))
}
