//! Every SQL statement of Hatchery, as named functions over a pool or a transaction.
//!
//! Nothing outside this module writes SQL. One file per table; functions are named
//! noun-first (`task_run_claim`, `workflow_runs_create`). Statements that only cause a re-run if
//! lost (claims, heartbeats) go through the `lossy` pool, whose sessions commit without waiting
//! for the WAL flush; everything a user was told about goes through the durable pool.
//!
//! Every statement is written as `sql!("…")` where it is used, which registers it (text, file,
//! line) in [`statements`]; `tests::every_statement_prepares` has Postgres parse and plan each one
//! against the migrated schema, so a misspelt column or a type mismatch fails CI whether or not a
//! test happens to run that statement, and `tests::every_statement_is_registered` fails on a
//! query written any other way.

/// A statement: the text of its parts (`concat!`ed at compile time), registered for
/// `tests::every_statement_prepares`.
macro_rules! sql {
    ($($part:expr),+ $(,)?) => {{
        const TEXT: &str = concat!($($part),+);
        #[allow(unsafe_code, reason = "inventory registers at load time through a link section")]
        const _: () = {
            ::inventory::submit! {
                $crate::db::Statement { text: TEXT, file: file!(), line: line!() }
            }
        };
        TEXT
    }};
}

/// What the `UPDATE` of every claim returns of the task runs it leased, for `claimed_tasks!`.
macro_rules! claimed_returning {
    () => {
        " RETURNING t.tenant_id, t.id, t.workflow_run_id, t.workflow, t.task, t.module_digest,
                    t.attempt, t.lease_token, t.execution_timeout_ms, t.fuel, t.input, t.parents,
                    t.available_at, t.failures, t.retries, t.backoff_factor, t.backoff_max_seconds"
    };
}

/// The tail of every claim: given the CTE `claimed` (the task runs just leased, with the
/// columns of `claimed_returning!`), the `ClaimedTask` rows with input, metadata and parent
/// outputs.
macro_rules! claimed_tasks {
    () => {
        " SELECT c.tenant_id, c.id, c.workflow_run_id, c.workflow, c.task, c.module_digest,
                c.attempt, c.lease_token, c.execution_timeout_ms, c.fuel,
                c.failures, c.retries, c.backoff_factor, c.backoff_max_seconds,
                extract(epoch FROM now() - c.available_at)::float8 AS queue_wait_seconds,
                coalesce(c.input, w.input)::text AS input,
                w.additional_metadata::text AS metadata,
                CASE WHEN cardinality(c.parents) = 0 THEN '[]' ELSE (
                    SELECT coalesce(jsonb_agg(jsonb_build_array(p.task, p.output)), '[]')::text
                    FROM task_runs p
                    WHERE p.tenant_id = c.tenant_id AND p.workflow_run_id = c.workflow_run_id
                      AND p.task = ANY(c.parents)
                ) END AS parent_outputs
         FROM claimed c
         JOIN workflow_runs w ON w.tenant_id = c.tenant_id AND w.id = c.workflow_run_id"
    };
}

/// `WITH RECURSIVE ready (tenant_id) AS (…)`: the tenants with queued ungated work, one index
/// probe each (a loose index scan of `task_runs_ready`), so a statement costs what the active
/// tenants cost, not what every tenant in the table would. Its last row is NULL.
macro_rules! tenants_with_ready_work {
    () => {
        "WITH RECURSIVE ready (tenant_id) AS (
             (SELECT tenant_id FROM task_runs
              WHERE status = 'queued' AND gate IS NULL
              ORDER BY tenant_id LIMIT 1)
             UNION ALL
             SELECT (SELECT tr.tenant_id FROM task_runs tr
                     WHERE tr.status = 'queued' AND tr.gate IS NULL
                       AND tr.tenant_id > ready.tenant_id
                     ORDER BY tr.tenant_id LIMIT 1)
             FROM ready WHERE ready.tenant_id IS NOT NULL
         )"
    };
}

/// The end of every claim: given the CTE `candidates` (rows locked, each with its tenant's
/// `turn`), takes `$2` of them turn by turn, leases them to node `$1` for `$4` ms, and returns
/// them as `ClaimedTask` rows.
macro_rules! lease_picked {
    () => {
        concat!(
            "    picked AS (
             SELECT tenant_id, id FROM candidates
             ORDER BY turn, priority DESC, available_at, id
             LIMIT $2
         ),
         claimed AS (
             UPDATE task_runs t SET
                 status = 'running', attempt = t.attempt + 1, lease_owner = $1,
                 lease_token = nextval('lease_tokens'),
                 lease_expires_at = now() + $4 * interval '1 millisecond',
                 started_at = coalesce(t.started_at, now())
             FROM picked p
             WHERE t.tenant_id = p.tenant_id AND t.id = p.id",
            claimed_returning!(),
            "
         )
         ",
            claimed_tasks!()
        )
    };
}

pub mod cron;
pub mod event;
pub mod flow;
pub mod maintenance;
pub mod module;
pub mod plans;
pub mod quota;
pub mod secret;
pub mod task_fuel;
pub mod task_run;
pub mod tenant;
pub mod token;
pub mod usage;
pub mod workflow_run;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

/// The tenant everything belongs to until tokens exist.
pub const DEFAULT_TENANT: Uuid = Uuid::from_u128(1);

/// Channel that wakes dispatchers: new work is queued. Payload: the comma-separated ids of
/// the tenants it belongs to, or empty when not known.
pub const CHANNEL_WORK: &str = "hatchery_work";
/// Channel naming task runs to interrupt: payload is comma-separated task run ids.
pub const CHANNEL_CANCEL: &str = "hatchery_cancel";
/// Channel naming finished workflow runs: payload is comma-separated run ids.
pub const CHANNEL_RUN_FINISHED: &str = "hatchery_run_finished";
/// Channel that wakes admission: a gated task run is waiting, or a place under a concurrency
/// key may have been freed.
pub const CHANNEL_GATED: &str = "hatchery_gated";
/// Channel that wakes the schedule service: a run was scheduled or rescheduled.
pub const CHANNEL_SCHEDULED: &str = "hatchery_scheduled";
/// Channel naming tenants whose secrets changed: payload is comma-separated tenant ids.
pub const CHANNEL_SECRETS: &str = "hatchery_secrets";
/// Channel naming tenants whose settings (egress policy, weight) changed: payload is
/// comma-separated tenant ids.
pub const CHANNEL_TENANT: &str = "hatchery_tenant";
/// Channel naming a module just deployed, so every node compiles it before its first run:
/// payload `tenant_id:digest`.
pub const CHANNEL_MODULE_DEPLOYED: &str = "hatchery_module_deployed";

/// One SQL statement of Hatchery, where it is written.
#[derive(Debug)]
pub struct Statement {
    /// Its text.
    pub text: &'static str,
    /// The source file that holds it.
    pub file: &'static str,
    /// Its line there.
    pub line: u32,
}

inventory::collect!(Statement);

/// Every statement written with `sql!`, in no particular order.
pub fn statements() -> impl Iterator<Item = &'static Statement> {
    inventory::iter::<Statement>.into_iter()
}

/// The embedded migrations (`migrations/`), applied by `Db::migrate`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// One page of a list, newest first: at most `limit` rows strictly older than `before`
/// (creation time, then key descending, so rows created in the same instant are not skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageParams<K> {
    /// Most rows returned.
    pub limit: i64,
    /// The (creation time, key) of the last row of the previous page.
    pub before: Option<(DateTime<Utc>, K)>,
}

/// The node's database handles.
#[derive(Debug, Clone)]
pub struct Db {
    /// Durable commits: what users were told about.
    pub pool: PgPool,
    /// `synchronous_commit = off`: claims and heartbeats, whose loss only re-runs a task.
    pub lossy: PgPool,
    /// The quotas of tenants without their own (`serve` flags): every path that writes what a
    /// quota limits reads them here.
    pub quotas: crate::quota::Quotas,
}

impl Db {
    /// Wraps `pool`, opening a second small pool for lossy writes with the same options.
    ///
    /// Its statements (claims, heartbeats) touch a batch of rows by key, so they join by
    /// nested loops over indexes; sequential scans, hash and merge joins are off there. Prepared
    /// statements get a generic plan after a few runs, which cannot see the batch size (`LIMIT
    /// $2`) and guesses a tenth of the rows: measured, the claim's final `UPDATE` then hashed
    /// every task run (a sequential scan of 100,000 rows, 55 ms per claim of 50) and the queue
    /// drained at a sixth of its speed.
    pub fn new(pool: PgPool) -> Self {
        let options: PgConnectOptions = (*pool.connect_options()).clone();
        let lossy = PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy_with(options.options([
                ("synchronous_commit", "off"),
                ("jit", "off"),
                ("enable_seqscan", "off"),
                ("enable_hashjoin", "off"),
                ("enable_mergejoin", "off"),
            ]));
        Self {
            pool,
            lossy,
            quotas: crate::quota::Quotas::default(),
        }
    }

    /// These handles, applying `quotas` to tenants without their own.
    #[must_use]
    pub fn with_quotas(mut self, quotas: crate::quota::Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// Connects to `url`. Sessions run without JIT: every statement here is short, and a JIT
    /// compile (tens of milliseconds) triggered by a row estimate would dwarf it.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options.options([("jit", "off")]))
            .await?;
        Ok(Self::new(pool))
    }

    /// Whether every embedded migration is applied (and none failed half-way).
    pub async fn migrations_applied(&self) -> Result<bool, sqlx::Error> {
        let applied: Vec<(i64, bool)> =
            sqlx::query_as(sql!("SELECT version, success FROM _sqlx_migrations"))
                .fetch_all(&self.pool)
                .await?;
        Ok(MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .all(|m| applied.contains(&(m.version, true))))
    }

    /// Applies the migrations not yet applied.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(&self.pool).await
    }
}

/// Publishes `ids` on `channel` inside `tx` (delivered at commit), in payloads under
/// Postgres's 8000-byte limit.
pub async fn notify_ids(
    tx: &mut sqlx::PgConnection,
    channel: &str,
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    for chunk in ids.chunks(200) {
        let payload = chunk
            .iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query(sql!("SELECT pg_notify($1, $2)"))
            .bind(channel)
            .bind(payload)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Tells every node that `tenant_id` deployed module `digest` (delivered at commit).
pub async fn notify_module_deployed(
    tx: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    digest: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql!("SELECT pg_notify($1, $2)"))
        .bind(CHANNEL_MODULE_DEPLOYED)
        .bind(format!("{tenant_id}:{digest}"))
        .execute(tx)
        .await?;
    Ok(())
}

/// Parses the payload of `CHANNEL_MODULE_DEPLOYED`.
pub fn parse_module_deployed(payload: &str) -> Option<(Uuid, String)> {
    let (tenant, digest) = payload.split_once(':')?;
    let valid = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
    Some((tenant.parse().ok()?, digest.to_owned())).filter(|_| valid)
}

/// Wakes idle dispatchers (delivered at commit when inside a transaction).
pub async fn notify_work(
    conn: &mut sqlx::PgConnection,
    tenants: &[Uuid],
) -> Result<(), sqlx::Error> {
    if tenants.is_empty() {
        sqlx::query(sql!("SELECT pg_notify($1, '')"))
            .bind(CHANNEL_WORK)
            .execute(conn)
            .await?;
        return Ok(());
    }
    let mut tenants = tenants.to_vec();
    tenants.sort_unstable();
    tenants.dedup();
    notify_ids(conn, CHANNEL_WORK, &tenants).await
}

/// Parses a comma-separated id payload, skipping anything malformed.
pub fn parse_ids(payload: &str) -> Vec<Uuid> {
    payload
        .split(',')
        .filter_map(|id| id.parse().ok())
        .collect()
}

/// Creates database `name` on the server of `conn` unless it exists (for `hatchery dev`).
pub async fn database_ensure(conn: &mut sqlx::PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let exists: Option<i32> =
        sqlx::query_scalar(sql!("SELECT 1 FROM pg_database WHERE datname = $1"))
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    if exists.is_none() {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut *conn)
            .await
        {
            // Another process created it meanwhile.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// Size on disk of the current database, in bytes (for the soak benchmark and operators).
pub async fn database_size(conn: &mut sqlx::PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql!("SELECT pg_database_size(current_database())"))
        .fetch_one(conn)
        .await
}

/// The database's `now()`: the start of the current transaction, the time every row it writes
/// is stamped with (`created_at`), so decisions taken at it agree with those stamps.
pub async fn transaction_now(conn: &mut sqlx::PgConnection) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(sql!("SELECT now()"))
        .fetch_one(conn)
        .await
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sqlx::{Executor as _, PgPool};
    use uuid::Uuid;

    use super::workflow_run::{RunListParams, runs_list_query};
    use super::{PageParams, statements};
    use crate::status::{RunStatus, TaskStatus};

    /// The `db/` sources, by file name.
    fn sources() -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/db");
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .expect("src/db")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "rs"))
            .map(|path| {
                let name = path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                (name, std::fs::read_to_string(&path).expect("source"))
            })
            .collect();
        files.sort();
        files
    }

    #[sqlx::test(migrator = "super::MIGRATOR")]
    async fn every_statement_prepares(pool: PgPool) {
        let mut conn = pool.acquire().await.expect("conn");
        let mut failures = Vec::new();
        for statement in statements() {
            if let Err(e) = conn.prepare(statement.text).await {
                failures.push(format!("{}:{}: {e}", statement.file, statement.line));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// The list of runs is built from its filters: each filter alone, each status, and all at
    /// once prepare.
    #[sqlx::test(migrator = "super::MIGRATOR")]
    async fn every_run_list_filter_prepares(pool: PgPool) {
        let metadata = serde_json::json!({ "k": "v" });
        let newest = RunListParams::unfiltered(PageParams {
            limit: 10,
            before: None,
        });
        let mut variants = vec![
            newest.clone(),
            RunListParams {
                workflow: Some("w"),
                ..newest.clone()
            },
            RunListParams {
                metadata: Some(&metadata),
                ..newest.clone()
            },
            RunListParams {
                parent_run_id: Some(Uuid::nil()),
                ..newest.clone()
            },
            RunListParams {
                triggered_by: Some("cron"),
                ..newest.clone()
            },
            RunListParams {
                top_level: true,
                ..newest.clone()
            },
            RunListParams {
                page: PageParams {
                    limit: 10,
                    before: Some((chrono::Utc::now(), Uuid::nil())),
                },
                ..newest.clone()
            },
            RunListParams {
                workflow: Some("w"),
                status: Some(RunStatus::Running),
                metadata: Some(&metadata),
                parent_run_id: Some(Uuid::nil()),
                triggered_by: Some("api"),
                top_level: true,
                page: PageParams {
                    limit: 10,
                    before: Some((chrono::Utc::now(), Uuid::nil())),
                },
            },
        ];
        for &status in RunStatus::ALL {
            variants.push(RunListParams {
                status: Some(status),
                ..newest.clone()
            });
        }
        let mut conn = pool.acquire().await.expect("conn");
        for params in &variants {
            let query = runs_list_query("", Uuid::nil(), params);
            if let Err(e) = conn.prepare(query.sql()).await {
                panic!("{params:?}: {e}");
            }
        }
    }

    /// What the scans look for, spelt so that this file does not contain it.
    const SQL_MACRO: &str = concat!("sql", "!(");
    const QUERIES: [&str; 3] = [
        concat!("sqlx::", "query("),
        concat!("sqlx::", "query_as("),
        concat!("sqlx::", "query_scalar("),
    ];

    /// The lines of `source` that are not comments.
    fn code(source: &str) -> impl Iterator<Item = &str> {
        source.lines().filter(|l| !l.trim_start().starts_with("//"))
    }

    /// Statements written other than with `sql!`, each with why it cannot be.
    const UNREGISTERED: &[(&str, &str)] = &[
        // A database name is an identifier, which no parameter can stand for.
        ("mod.rs", "&format!(\"CREATE DATABASE {quoted}\")"),
        // `EXPLAIN` of a registered statement.
        ("plans.rs", "&text"),
        // One of the `sql!` statements of its `match`.
        ("maintenance.rs", "statement"),
    ];

    #[test]
    fn every_statement_is_registered() {
        let sources = sources();
        let constants: Vec<String> = sources
            .iter()
            .flat_map(|(_, source)| source.lines())
            .filter_map(|line| {
                let (name, value) = line.trim().split_once(": &str = ")?;
                let name = name.rsplit(' ').next()?;
                value.starts_with(SQL_MACRO).then(|| name.to_owned())
            })
            .collect();
        let mut unregistered = Vec::new();
        let mut written = 0;
        for (file, source) in &sources {
            written += code(source)
                .map(|l| l.matches(SQL_MACRO).count())
                .sum::<usize>();
            for call in QUERIES {
                for (at, _) in source.match_indices(call) {
                    let argument = source[at + call.len()..].trim_start();
                    let end = argument.find([')', ',', '\n']).unwrap_or(argument.len());
                    let head = &argument[..end];
                    let registered = argument.starts_with(SQL_MACRO)
                        || constants.iter().any(|c| c == head)
                        || UNREGISTERED
                            .iter()
                            .any(|(f, a)| f == file && argument.starts_with(a));
                    if !registered {
                        let line = source[..at].lines().count();
                        unregistered.push(format!("db/{file}:{line}: {call}{head}"));
                    }
                }
            }
        }
        assert!(
            unregistered.is_empty(),
            "statements not written with sql!:\n{}",
            unregistered.join("\n")
        );
        assert_eq!(
            statements().count(),
            written,
            "every sql! of db/ is registered once"
        );
    }

    #[test]
    fn no_statement_is_written_outside_db() {
        fn visit(dir: &Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    if !path.ends_with("db") {
                        visit(&path, found);
                    }
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let source = std::fs::read_to_string(&path).expect("source");
                    for call in ["sqlx::query", "QueryBuilder", "raw_sql", SQL_MACRO] {
                        if source.contains(call) {
                            found.push(format!("{}: {call}", path.display()));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        visit(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        assert!(found.is_empty(), "SQL outside db/:\n{}", found.join("\n"));
    }

    /// The status words of Rust are those the schema's check constraints allow.
    #[sqlx::test(migrator = "super::MIGRATOR")]
    async fn statuses_match_the_schema(pool: PgPool) {
        let allowed = |constraint: &'static str| {
            let pool = pool.clone();
            async move {
                let definition: String = sqlx::query_scalar(sql!(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1"
                ))
                .bind(constraint)
                .fetch_one(&pool)
                .await
                .expect(constraint);
                let mut words: Vec<String> = definition
                    .split('\'')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect();
                words.sort();
                words
            }
        };
        let sorted = |words: Vec<&str>| {
            let mut words: Vec<String> = words.into_iter().map(str::to_owned).collect();
            words.sort();
            words
        };
        assert_eq!(
            allowed("workflow_runs_status_check").await,
            sorted(RunStatus::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(
            allowed("task_runs_status_check").await,
            sorted(TaskStatus::ALL.iter().map(|s| s.as_str()).collect())
        );
    }
}
