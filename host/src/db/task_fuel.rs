//! Statements on `task_fuel`: per-task fuel budgets that override the node's.

use sqlx::PgConnection;
use uuid::Uuid;

/// Sets (or with `None` removes) the fuel budget of `workflow`/`task`.
pub async fn task_fuel_set(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    workflow: &str,
    task: &str,
    fuel: Option<i64>,
) -> Result<(), sqlx::Error> {
    match fuel {
        Some(fuel) => {
            sqlx::query(sql!(
                "INSERT INTO task_fuel (tenant_id, workflow, task, fuel) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant_id, workflow, task)
                 DO UPDATE SET fuel = EXCLUDED.fuel, updated_at = now()"
            ))
            .bind(tenant_id)
            .bind(workflow)
            .bind(task)
            .bind(fuel)
            .execute(conn)
            .await?;
        }
        None => {
            sqlx::query(sql!(
                "DELETE FROM task_fuel WHERE tenant_id = $1 AND workflow = $2 AND task = $3"
            ))
            .bind(tenant_id)
            .bind(workflow)
            .bind(task)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

/// The fuel budgets set for the tasks of `workflow`: (task, fuel), by task name.
pub async fn task_fuel_of_workflow(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    workflow: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(sql!(
        "SELECT task, fuel FROM task_fuel WHERE tenant_id = $1 AND workflow = $2 ORDER BY task"
    ))
    .bind(tenant_id)
    .bind(workflow)
    .fetch_all(conn)
    .await
}
