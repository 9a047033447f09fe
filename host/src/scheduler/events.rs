//! Events: a pushed event starts one run of every workflow subscribed to its key.

use serde_json::Value;
use uuid::Uuid;

use super::runs::{RunError, RunRequest, start_runs};
use crate::db::Db;
use crate::db::module::workflows_with_event_triggers;
use crate::manifest::event_matches;

/// Starts a run of each workflow (newest version) whose `on_events` matches `key`, with the
/// payload as input and the key in the metadata; returns the run ids.
pub async fn push_event(
    db: &Db,
    tenant_id: Uuid,
    key: &str,
    payload: &Value,
) -> Result<Vec<Uuid>, RunError> {
    let workflows = {
        let mut conn = db.pool.acquire().await?;
        workflows_with_event_triggers(&mut conn, tenant_id).await?
    };
    let requests: Vec<RunRequest> = workflows
        .iter()
        .filter(|w| {
            w.definition
                .on_events
                .iter()
                .any(|pattern| event_matches(pattern, key))
        })
        .map(|w| RunRequest {
            additional_metadata: serde_json::json!({ "event_key": key }),
            ..RunRequest::new(w.name.clone(), payload.clone())
        })
        .collect();
    if requests.is_empty() {
        return Ok(vec![]);
    }
    start_runs(db, tenant_id, &requests).await
}
