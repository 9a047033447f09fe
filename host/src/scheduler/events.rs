//! Events: a pushed event is stored together with the runs it starts — one of every workflow
//! subscribed to its key (`on_events`, `*` matching any run of characters) whose filters let it
//! through — in one transaction, so an acknowledged event never loses its runs, and an
//! idempotency key used again returns the first event and starts nothing.

use serde_json::Value;
use uuid::Uuid;

use super::runs::{RunError, RunRequest, check_storable, start_runs_in};
use crate::db::Db;
use crate::db::event::{EventFilterRow, NewEvent, event_filters_of, event_insert, event_set_runs};
use crate::db::module::workflows_with_event_triggers;
use crate::manifest::{event_matches, parse_expression};

/// Longest event key, scope or idempotency key.
const MAX_KEY_LEN: usize = 256;

/// An event to push.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    /// Its key, matched against the workflows' `on_events` patterns.
    pub key: String,
    /// Its payload: the input of the runs it starts.
    #[serde(default)]
    pub payload: Value,
    /// Additional metadata of the event and its runs (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metadata: Option<Value>,
    /// Selects the filters that apply (those without a scope always do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// A second push with the same key returns the first event and starts nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl EventRequest {
    /// An event with `key` and `payload`.
    pub fn new(key: impl Into<String>, payload: Value) -> Self {
        Self {
            key: key.into(),
            payload,
            additional_metadata: None,
            scope: None,
            idempotency_key: None,
        }
    }
}

/// A pushed event and the runs it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedEvent {
    /// The event (the first one, for a repeated idempotency key).
    pub event_id: Uuid,
    /// The runs it started.
    pub run_ids: Vec<Uuid>,
}

fn check_key(what: &str, key: &str) -> Result<(), RunError> {
    if key.is_empty()
        || key.len() > MAX_KEY_LEN
        || key.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(RunError::InvalidEvent(format!(
            "the {what} must be 1 to {MAX_KEY_LEN} bytes without spaces or control characters, \
             got {key:?}"
        )));
    }
    Ok(())
}

/// Whether `filter` is true for an event (a filter that fails to evaluate, or is not a
/// boolean, is false).
fn filter_passes(filter: &EventFilterRow, payload: &Value, metadata: &Value) -> bool {
    let Ok(program) = parse_expression(&filter.expression) else {
        return false;
    };
    let mut context = cel::Context::default();
    if context.add_variable("payload", payload).is_err()
        || context
            .add_variable("additional_metadata", metadata)
            .is_err()
    {
        return false;
    }
    matches!(program.execute(&context), Ok(cel::Value::Bool(true)))
}

/// Pushes `events` (all or nothing): each is stored with the runs it starts.
pub async fn push_events(
    db: &Db,
    tenant_id: Uuid,
    events: &[EventRequest],
) -> Result<Vec<PushedEvent>, RunError> {
    let empty = serde_json::json!({});
    for event in events {
        check_key("event key", &event.key)?;
        if let Some(scope) = &event.scope {
            check_key("scope", scope)?;
        }
        if let Some(key) = &event.idempotency_key {
            check_key("idempotency key", key)?;
        }
        check_storable(
            &event.payload,
            event.additional_metadata.as_ref().unwrap_or(&empty),
        )?;
    }
    let mut tx = db.pool.begin().await?;
    let workflows = workflows_with_event_triggers(&mut tx, tenant_id).await?;
    let names: Vec<&str> = workflows.iter().map(|w| w.name.as_str()).collect();
    let filters = event_filters_of(&mut tx, tenant_id, &names).await?;
    let mut pushed = Vec::with_capacity(events.len());
    for event in events {
        let metadata = event
            .additional_metadata
            .clone()
            .unwrap_or_else(|| empty.clone());
        let id = Uuid::now_v7();
        let stored = NewEvent {
            id,
            key: &event.key,
            payload: &event.payload,
            additional_metadata: &metadata,
            scope: event.scope.as_deref(),
            idempotency_key: event.idempotency_key.as_deref(),
        };
        if let Err(existing) = event_insert(&mut tx, tenant_id, &stored).await? {
            pushed.push(PushedEvent {
                event_id: existing.id,
                run_ids: existing.run_ids,
            });
            continue;
        }
        let mut run_metadata = metadata.clone();
        if let Value::Object(fields) = &mut run_metadata {
            fields.insert("event_key".into(), Value::String(event.key.clone()));
        }
        let requests: Vec<RunRequest> = workflows
            .iter()
            .filter(|w| {
                w.definition
                    .on_events
                    .iter()
                    .any(|pattern| event_matches(pattern, &event.key))
            })
            .filter(|w| {
                let own: Vec<&EventFilterRow> =
                    filters.iter().filter(|f| f.workflow == w.name).collect();
                own.is_empty()
                    || own.iter().any(|f| {
                        (f.scope.is_none() || f.scope == event.scope)
                            && filter_passes(f, &event.payload, &metadata)
                    })
            })
            .map(|w| RunRequest {
                additional_metadata: run_metadata.clone(),
                ..RunRequest::new(w.name.clone(), event.payload.clone())
            })
            .collect();
        let run_ids = if requests.is_empty() {
            Vec::new()
        } else {
            start_runs_in(
                &mut tx,
                &db.quotas,
                tenant_id,
                &requests,
                Some(("event", id)),
            )
            .await?
        };
        event_set_runs(&mut tx, tenant_id, id, &run_ids).await?;
        pushed.push(PushedEvent {
            event_id: id,
            run_ids,
        });
    }
    tx.commit().await?;
    Ok(pushed)
}

/// Pushes one event with `key` and `payload` (as a task's `push-event` does); returns the runs
/// it started.
pub async fn push_event(
    db: &Db,
    tenant_id: Uuid,
    key: &str,
    payload: &Value,
) -> Result<Vec<Uuid>, RunError> {
    let pushed = push_events(db, tenant_id, &[EventRequest::new(key, payload.clone())]).await?;
    Ok(pushed.into_iter().flat_map(|p| p.run_ids).collect())
}
