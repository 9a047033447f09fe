//! Housekeeping of the hot tables: how much dead weight they carry, and vacuuming them.
//!
//! Every task run leaves three or four dead row versions behind, and a claim walks past the
//! dead entries at the head of the ready index until a vacuum removes them, so a queue whose
//! tables are never vacuumed gets slower with every task it runs. Autovacuum does this where it
//! is on and keeps up; where it is off or lags, a node does it (see `scheduler::vacuum`).

use sqlx::PgConnection;

/// A table that churns with every task run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HotTable {
    /// `task_runs`: three or four versions per task run.
    TaskRuns,
    /// `workflow_runs`: two versions per run.
    WorkflowRuns,
}

impl HotTable {
    /// Every hot table.
    pub const ALL: [HotTable; 2] = [HotTable::TaskRuns, HotTable::WorkflowRuns];

    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            HotTable::TaskRuns => "task_runs",
            HotTable::WorkflowRuns => "workflow_runs",
        }
    }
}

/// Live and dead row versions of a table, as the statistics collector last saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableHealth {
    /// Live rows.
    pub live: i64,
    /// Dead row versions not yet vacuumed.
    pub dead: i64,
    /// Vacuums of the table so far that autovacuum did not do (a node's or an operator's).
    pub vacuums: i64,
}

/// The health of `table`.
pub async fn table_health(
    conn: &mut PgConnection,
    table: HotTable,
) -> Result<TableHealth, sqlx::Error> {
    let row: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT n_live_tup, n_dead_tup, vacuum_count FROM pg_stat_user_tables
         WHERE relid = to_regclass($1)",
    )
    .bind(table.name())
    .fetch_optional(conn)
    .await?;
    Ok(
        row.map_or_else(TableHealth::default, |(live, dead, vacuums)| TableHealth {
            live,
            dead,
            vacuums,
        }),
    )
}

/// Key of the advisory lock that lets one node at a time vacuum.
const VACUUM_LOCK: i64 = 0x6861_7463_6876_6163; // "hatchvac"

/// Takes the vacuum lock for this session if no other session holds it.
pub async fn vacuum_lock_try(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(VACUUM_LOCK)
        .fetch_one(conn)
        .await
}

/// Releases the vacuum lock of this session.
pub async fn vacuum_unlock(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(VACUUM_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// `VACUUM (ANALYZE)` of `table`: removes dead versions and their index entries, and refreshes
/// the planner's statistics. Must run outside a transaction.
pub async fn table_vacuum(conn: &mut PgConnection, table: HotTable) -> Result<(), sqlx::Error> {
    let statement = match table {
        HotTable::TaskRuns => "VACUUM (ANALYZE) task_runs",
        HotTable::WorkflowRuns => "VACUUM (ANALYZE) workflow_runs",
    };
    sqlx::query(statement).execute(conn).await?;
    Ok(())
}
