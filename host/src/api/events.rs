//! Events: `POST /api/v1/events` (and `/events/bulk`, all or nothing) push events that start
//! the subscribed workflows; `GET /api/v1/events?key=` and `GET /api/v1/events/{id}` show them
//! with the runs they started; `POST /api/v1/workflows/{name}/event-filters` adds a filter.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::extract::{self, Path, Query};
use super::page;
use crate::db::event::{EventRow, event_filter_create, event_get, events_list};
use crate::db::module::workflow_latest;
use crate::manifest::parse_expression;
use crate::scheduler::RunError;
use crate::scheduler::events::{EventRequest, PushedEvent, push_events};

/// Most events in one bulk push.
const MAX_BULK_EVENTS: usize = 1_000;

/// An event, with the runs it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Event id.
    pub id: Uuid,
    /// Its key.
    pub key: String,
    /// Its payload (the input of its runs).
    pub payload: Value,
    /// Its metadata.
    pub additional_metadata: Value,
    /// Its scope.
    pub scope: Option<String>,
    /// Its idempotency key.
    pub idempotency_key: Option<String>,
    /// The runs it started.
    pub run_ids: Vec<Uuid>,
    /// When it was pushed.
    pub created_at: DateTime<Utc>,
}

impl From<&EventRow> for Event {
    fn from(event: &EventRow) -> Self {
        Self {
            id: event.id,
            key: event.key.clone(),
            payload: event.payload.clone(),
            additional_metadata: event.additional_metadata.clone(),
            scope: event.scope.clone(),
            idempotency_key: event.idempotency_key.clone(),
            run_ids: event.run_ids.clone(),
            created_at: event.created_at,
        }
    }
}

/// An event was stored: its id and the runs it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Pushed {
    /// The event (the first one, for a repeated idempotency key).
    pub event_id: Uuid,
    /// The runs it started.
    pub run_ids: Vec<Uuid>,
}

impl From<&PushedEvent> for Pushed {
    fn from(pushed: &PushedEvent) -> Self {
        Self {
            event_id: pushed.event_id,
            run_ids: pushed.run_ids.clone(),
        }
    }
}

/// Events were stored, in the order pushed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PushedList {
    /// One per event.
    pub events: Vec<Pushed>,
}

/// A page of events, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// The events.
    pub events: Vec<Event>,
    /// Give it as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// An event filter of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventFilter {
    /// Filter id.
    pub id: Uuid,
    /// Its workflow.
    pub workflow: String,
    /// The CEL expression an event must satisfy.
    pub expression: String,
    /// The scope it applies to; `null`: every event.
    pub scope: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// `{key, payload, additional_metadata?, scope?, idempotency_key?}` → 202 `{event_id, run_ids}`.
#[utoipa::path(post, path = "/api/v1/events", tag = "triggers", request_body = EventRequest,
    responses((status = 202, description = "Stored; the runs it started", body = Pushed)),
    security(("tenant_token" = [])))]
pub async fn push(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    extract::Json(body): extract::Json<EventRequest>,
) -> Result<(StatusCode, Json<Pushed>), ApiError> {
    let pushed = push_events(&state.db, tenant, std::slice::from_ref(&body)).await?;
    let pushed = pushed
        .first()
        .ok_or_else(|| RunError::NotStored("the event was not stored".into()))?;
    Ok((StatusCode::ACCEPTED, Json(Pushed::from(pushed))))
}

/// Body of `POST /api/v1/events/bulk`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkEvents {
    events: Vec<EventRequest>,
}

/// `{events: [...]}` (at most 1,000, all or nothing) → 202 `{events: [{event_id, run_ids}]}`.
#[utoipa::path(post, path = "/api/v1/events/bulk", tag = "triggers", request_body = BulkEvents,
    responses((status = 202, description = "All stored", body = PushedList)),
    security(("tenant_token" = [])))]
pub async fn push_bulk(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    extract::Json(body): extract::Json<BulkEvents>,
) -> Result<(StatusCode, Json<PushedList>), ApiError> {
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
        Json(PushedList {
            events: pushed.iter().map(Pushed::from).collect(),
        }),
    ))
}

/// `GET /api/v1/events` filters and page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListEvents {
    /// Only events with this key.
    key: Option<String>,
    /// Events per page (1–1000, default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `{events, next_cursor}`, newest first, optionally of one key.
#[utoipa::path(get, path = "/api/v1/events", tag = "triggers", params(ListEvents),
    responses((status = 200, description = "Events, newest first", body = EventPage)),
    security(("tenant_token" = [])))]
pub async fn list(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Query(query): Query<ListEvents>,
) -> Result<Json<EventPage>, ApiError> {
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
    Ok(Json(EventPage {
        events: rows.iter().map(Event::from).collect(),
        next_cursor: next,
    }))
}

/// One event with the runs it started.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "triggers",
    params(("id" = String, Path, description = "The event")),
    responses((status = 200, description = "The event and its runs", body = Event)),
    security(("tenant_token" = [])))]
pub async fn get(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Event>, ApiError> {
    let id = extract::parse_id("event", &id)?;
    let mut conn = state.db.pool.acquire().await?;
    let event = event_get(&mut conn, tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no event `{id}`")))?;
    Ok(Json(Event::from(&event)))
}

/// Body of `POST /api/v1/workflows/{name}/event-filters`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFilter {
    expression: String,
    #[serde(default)]
    scope: Option<String>,
}

/// Adds a filter (CEL over `payload` and `additional_metadata`) → 201 the filter.
#[utoipa::path(post, path = "/api/v1/workflows/{name}/event-filters", tag = "triggers",
    params(("name" = String, Path, description = "The workflow")),
    request_body = CreateFilter,
    responses((status = 201, description = "Created", body = EventFilter)),
    security(("tenant_token" = [])))]
pub async fn create_filter(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(workflow): Path<String>,
    extract::Json(body): extract::Json<CreateFilter>,
) -> Result<(StatusCode, Json<EventFilter>), ApiError> {
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
        Json(EventFilter {
            id: filter.id,
            workflow: filter.workflow,
            expression: filter.expression,
            scope: filter.scope,
            created_at: filter.created_at,
        }),
    ))
}
