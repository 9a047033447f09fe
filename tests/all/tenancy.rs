//! Tenants on one fleet: a quiet tenant is served before another tenant's backlog, on one
//! node and on two, and gets its share of the guest threads while another keeps them busy;
//! no tenant takes every slot; tenants with nothing available take no share of a claim; usage
//! is metered exactly; retention deletes exactly what it should. Fairness is asserted by order
//! (whose work ran first), never by elapsed time.

use std::time::Duration;

use hatchery::db::{DEFAULT_TENANT as A, Db};
use hatchery::runtime::Runtime;
use hatchery::scheduler::{
    Node, NodeConfig, RunRequest, cancel_run, deploy_module, start_run, start_runs,
};
use hatchery::status::RunStatus;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{deployed, new_runtime, test_node_config};

/// A second tenant with `guest` deployed.
async fn tenant_with(db: &Db, runtime: &Runtime, guest: &str) -> Uuid {
    let tenant = Uuid::now_v7();
    let mut conn = db.pool.acquire().await.expect("conn");
    hatchery::db::tenant::tenant_create(&mut conn, tenant, &format!("quiet-{tenant}"))
        .await
        .expect("tenant")
        .expect("new");
    drop(conn);
    deploy_module(db, runtime, tenant, &hatchery_guests::read(guest))
        .await
        .expect("deploys");
    tenant
}

/// A second tenant with the durable guest deployed.
async fn quiet_tenant(db: &Db, runtime: &Runtime) -> Uuid {
    tenant_with(db, runtime, hatchery_guests::DURABLE).await
}

/// Runs of `tenant` that succeeded so far.
async fn succeeded(db: &Db, tenant: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM workflow_runs WHERE tenant_id = $1 AND status = 'succeeded'",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .expect("count")
}

/// Waits for run `id` of `tenant` to succeed (through `node`'s listener).
async fn succeeds(db: &Db, node: &Node, tenant: Uuid, id: Uuid) {
    let view = node
        .handle()
        .wait_for_run(db, tenant, id, Duration::from_secs(60))
        .await
        .expect("db")
        .expect("run");
    assert_eq!(view.run.status, RunStatus::Succeeded, "{view:#?}");
}

/// One slot per node and a batch of 100: every node holds a long local queue of A's runs.
fn one_slot() -> NodeConfig {
    NodeConfig {
        capacity: 1,
        default_slots: 1,
        claim_batch: 100,
        ..test_node_config()
    }
}

/// Tenant A floods `nodes` nodes with runs that each hold the one slot for 30 ms; while
/// every node holds a long local queue of them, B starts one run. Returns how many of A's
/// runs finished between B's start and B's end.
async fn a_runs_finished_while_b_waited(pool: PgPool, nodes: usize) -> i64 {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let b = quiet_tenant(&db, &runtime).await;
    let mut started = vec![
        Node::start(db.clone(), runtime, one_slot())
            .await
            .expect("node"),
    ];
    for _ in 1..nodes {
        started.push(
            Node::start(db.clone(), new_runtime(), one_slot())
                .await
                .expect("node"),
        );
    }
    let flood: Vec<RunRequest> = (0..400)
        .map(|_| RunRequest::new("hold", json!({ "ms": 30 })))
        .collect();
    start_runs(&db, A, &flood).await.expect("flood");
    // Every node has loaded the module and claimed far more of A's runs than it can start.
    for node in &started {
        crate::support::eventually(30, || async {
            node.leases_held() >= 50 && !node.workers().is_empty()
        })
        .await;
    }
    let before = succeeded(&db, A).await;
    let id = start_run(&db, b, &RunRequest::new("noop", json!({})))
        .await
        .expect("starts");
    succeeds(&db, &started[0], b, id).await;
    let during = succeeded(&db, A).await - before;
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM workflow_runs WHERE tenant_id = $1 AND status <> 'succeeded'",
    )
    .bind(A)
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert!(left > 100, "A's flood must outlast B's run ({left} left)");
    for node in started {
        node.kill();
    }
    during
}

#[sqlx::test(migrations = "../migrations")]
async fn a_quiet_tenant_is_served_before_another_tenants_backlog(pool: PgPool) {
    // B's run is claimed at once (not when the node's queue of A's runs runs low) and takes
    // the next free slot (not the one after every A run claimed before it): only the run
    // holding the slot, one whose result was being written, and perhaps one more finish
    // meanwhile. First come, first served, B would wait for the 50 or more of A's runs the
    // node had claimed.
    let during = a_runs_finished_while_b_waited(pool, 1).await;
    assert!(
        during <= 5,
        "{during} of A's runs finished while B's waited"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_quiet_tenant_is_served_before_another_tenants_backlog_on_two_nodes(pool: PgPool) {
    // The other node goes on with A's runs meanwhile (two or three in B's ~60 ms); still far
    // from the 50 or more B would wait behind on the node that claimed it.
    let during = a_runs_finished_while_b_waited(pool, 2).await;
    assert!(
        during <= 10,
        "{during} of A's runs finished while B's waited"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_quiet_tenant_gets_its_share_of_busy_guest_threads(pool: PgPool) {
    let db = Db::new(pool);
    let runtime = new_runtime();
    deploy_module(
        &db,
        &runtime,
        A,
        &hatchery_guests::read(hatchery_guests::BENCH),
    )
    .await
    .expect("deploys");
    let b = tenant_with(&db, &runtime, hatchery_guests::BENCH).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    // A's CPU-bound runs outnumber the guest threads three to one...
    let compute = || RunRequest::new("compute", json!({ "n": 1_500_000 }));
    let threads = hatchery::runtime::default_guest_threads();
    let mut a_runs = Vec::new();
    for _ in 0..threads * 3 {
        a_runs.push(start_run(&db, A, &compute()).await.expect("a"));
    }
    crate::support::eventually(30, || async { node.running() >= threads * 3 }).await;
    // ...and B starts the same work once A's are under way. Shared per attempt, B would get a
    // seventh of the CPU and finish with A's; shared per tenant, it gets half and finishes
    // while every one of A's runs is still far from done.
    let id = start_run(&db, b, &compute()).await.expect("b");
    succeeds(&db, &node, b, id).await;
    assert_eq!(
        succeeded(&db, A).await,
        0,
        "A's runs finished before B's, which started after them"
    );
    for id in a_runs {
        cancel_run(&db, A, id).await.expect("cancel");
    }
    node.shutdown().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn one_tenant_never_holds_every_slot(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let b = quiet_tenant(&db, &runtime).await;
    let config = NodeConfig {
        capacity: 8,
        tenant_slots: Some(6),
        ..test_node_config()
    };
    let node = Node::start(db.clone(), runtime, config)
        .await
        .expect("node");
    // A asks for more long runs than the node has slots.
    let holds: Vec<RunRequest> = (0..10)
        .map(|_| RunRequest::new("hold", json!({ "ms": 60_000 })))
        .collect();
    let holds = start_runs(&db, A, &holds).await.expect("holds");
    crate::support::eventually(30, || async { node.running() >= 6 }).await;
    // B's run gets one of the two slots A may not take, while A's six still hold theirs.
    let id = start_run(&db, b, &RunRequest::new("noop", json!({})))
        .await
        .expect("starts");
    succeeds(&db, &node, b, id).await;
    assert_eq!(node.running(), 6, "A holds exactly its six slots");
    for id in holds {
        cancel_run(&db, A, id).await.expect("cancel");
    }
    node.shutdown().await;
}

/// Moves run `id` (and its tasks) `days` into the past, as if it had been created and had
/// finished then.
async fn age_run(db: &Db, id: Uuid, days: i32) {
    sqlx::query(
        "UPDATE workflow_runs SET created_at = created_at - $2 * interval '1 day',
                finished_at = finished_at - $2 * interval '1 day' WHERE id = $1",
    )
    .bind(id)
    .bind(days)
    .execute(&db.pool)
    .await
    .expect("age run");
}

async fn rows(db: &Db, table: &str, tenant: Uuid) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {table} WHERE tenant_id = $1"
    ))
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .expect("count")
}

async fn exists(db: &Db, id: Uuid) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM workflow_runs WHERE id = $1)")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .expect("exists")
}

#[sqlx::test(migrations = "../migrations")]
async fn retention_deletes_exactly_the_finished_runs_past_their_tenants_retention(pool: PgPool) {
    use hatchery::scheduler::{RetentionConfig, purge_expired};

    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let b = quiet_tenant(&db, &runtime).await;
    // B keeps its history 30 days; A has the default of 7.
    let mut conn = db.pool.acquire().await.expect("conn");
    hatchery::db::tenant::tenant_retention_set(&mut conn, b, Some(30))
        .await
        .expect("set");
    drop(conn);
    let node = Node::start(
        db.clone(),
        runtime,
        NodeConfig {
            retention: None,
            ..test_node_config()
        },
    )
    .await
    .expect("node");
    let noops = |n: usize| -> Vec<RunRequest> {
        (0..n).map(|_| RunRequest::new("noop", json!({}))).collect()
    };
    let a_runs = start_runs(&db, A, &noops(6)).await.expect("a");
    let b_runs = start_runs(&db, b, &noops(2)).await.expect("b");
    let handle = node.handle();
    for (tenant, id) in a_runs
        .iter()
        .map(|id| (A, *id))
        .chain(b_runs.iter().map(|id| (b, *id)))
    {
        let view = handle
            .wait_for_run(&db, tenant, id, Duration::from_secs(60))
            .await
            .expect("db")
            .expect("run");
        assert_eq!(view.run.status, RunStatus::Succeeded);
    }
    node.shutdown().await;
    // A run that never finished, created long ago: a run scheduled far ahead.
    let waiting = start_run(
        &db,
        A,
        &RunRequest {
            run_at: Some(chrono::Utc::now() + chrono::Duration::days(365)),
            ..RunRequest::new("noop", json!({}))
        },
    )
    .await
    .expect("scheduled");
    // Log lines of A's oldest task runs, to see them go with their runs.
    sqlx::query(
        "INSERT INTO task_run_logs (tenant_id, task_run_id, attempt, seq, at, level, message)
         SELECT tenant_id, id, 1, 0, now(), 'info', 'old' FROM task_runs
         WHERE workflow_run_id = ANY($1)",
    )
    .bind(&a_runs[..4])
    .execute(&db.pool)
    .await
    .expect("logs");
    for id in &a_runs[..4] {
        age_run(&db, *id, 8).await; // past A's 7 days
    }
    age_run(&db, a_runs[4], 6).await; // within them
    age_run(&db, waiting, 400).await; // unfinished: never touched
    age_run(&db, b_runs[0], 8).await; // within B's 30 days
    age_run(&db, b_runs[1], 31).await; // past them
    hatchery::scheduler::events::push_event(&db, A, "nobody-listens", &json!({}))
        .await
        .expect("event");
    sqlx::query("UPDATE events SET created_at = created_at - interval '8 days'")
        .execute(&db.pool)
        .await
        .expect("age event");
    hatchery::scheduler::events::push_event(&db, A, "nobody-listens", &json!({}))
        .await
        .expect("fresh event");

    // Small passes, so the sweep has to continue within a tenant and across tenants.
    let config = RetentionConfig {
        default_retention: Duration::from_secs(7 * 86_400),
        tenants_per_pass: 1,
        batch: 3,
        ..RetentionConfig::default()
    };
    let purged = purge_expired(&db, &config).await.expect("sweep");
    assert_eq!(
        (purged.runs, purged.task_runs, purged.logs, purged.events),
        (5, 5, 4, 1)
    );
    for id in &a_runs[..4] {
        assert!(!exists(&db, *id).await, "A's run past retention is gone");
    }
    assert!(exists(&db, a_runs[4]).await);
    assert!(exists(&db, a_runs[5]).await);
    assert!(exists(&db, waiting).await, "an unfinished run is kept");
    assert!(exists(&db, b_runs[0]).await, "B keeps 30 days");
    assert!(!exists(&db, b_runs[1]).await);
    assert_eq!(
        rows(&db, "task_runs", A).await,
        3,
        "two finished, one scheduled"
    );
    assert_eq!(rows(&db, "task_run_logs", A).await, 0);
    assert_eq!(rows(&db, "events", A).await, 1);
    // Nothing more is due: a second sweep deletes nothing.
    let again = purge_expired(&db, &config).await.expect("sweep");
    assert_eq!((again.runs, again.events), (0, 0));
}

#[sqlx::test(migrations = "../migrations")]
async fn usage_counts_exactly_the_runs_and_attempts_that_ran(pool: PgPool) {
    use hatchery::db::usage::usage_list;

    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let b = quiet_tenant(&db, &runtime).await;
    let node = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let handle = node.handle();
    let mut started = Vec::new();
    for (tenant, workflow, n) in [(A, "noop", 5), (A, "flaky", 2), (b, "noop", 3)] {
        let requests: Vec<RunRequest> = (0..n)
            .map(|_| RunRequest::new(workflow, json!({})))
            .collect();
        for id in start_runs(&db, tenant, &requests).await.expect("start") {
            started.push((tenant, id));
        }
    }
    // An idempotent repeat creates no run and is not counted.
    let keyed = RunRequest {
        key: Some("once".into()),
        ..RunRequest::new("noop", json!({}))
    };
    started.push((b, start_run(&db, b, &keyed).await.expect("keyed")));
    start_run(&db, b, &keyed).await.expect("repeat");
    for (tenant, id) in started {
        let view = handle
            .wait_for_run(&db, tenant, id, Duration::from_secs(60))
            .await
            .expect("db")
            .expect("run");
        assert_eq!(view.run.status, RunStatus::Succeeded);
    }
    node.shutdown().await;

    let mut conn = db.pool.acquire().await.expect("conn");
    let from = chrono::Utc::now() - chrono::Duration::hours(2);
    let to = chrono::Utc::now() + chrono::Duration::hours(1);
    for tenant in [A, b] {
        let rows = usage_list(&mut conn, tenant, from, to, None, 100)
            .await
            .expect("usage");
        for workflow in ["noop", "flaky"] {
            let (runs, attempts): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM workflow_runs WHERE tenant_id = $1 AND workflow = $2),
                        (SELECT coalesce(sum(attempt), 0)::bigint FROM task_runs
                         WHERE tenant_id = $1 AND workflow = $2)",
            )
            .bind(tenant)
            .bind(workflow)
            .fetch_one(&mut *conn)
            .await
            .expect("truth");
            let counted = rows
                .iter()
                .filter(|r| r.workflow == workflow)
                .fold((0, 0), |(r, a), row| (r + row.runs, a + row.attempts));
            assert_eq!(counted, (runs, attempts), "{tenant} {workflow}");
            if runs > 0 {
                let row = rows.iter().find(|r| r.workflow == workflow).expect("row");
                assert!(row.fuel > 0 && row.peak_memory_bytes > 0, "{row:?}");
            }
        }
    }
    // Flaky fails before it succeeds: more attempts than runs.
    let flaky = usage_list(&mut conn, A, from, to, Some("flaky"), 10)
        .await
        .expect("usage");
    assert!(flaky.iter().map(|r| r.attempts).sum::<i64>() > 2);
}

#[tokio::test]
async fn guests_may_run_on_the_callers_threads() {
    use hatchery::runtime::{EngineConfig, Limits, RuntimeConfig};

    // `--guest-threads 0`: no guest threads; attempts execute where they are awaited.
    let runtime = Runtime::new(RuntimeConfig {
        engine: EngineConfig {
            max_instances: 16,
            ..EngineConfig::default()
        },
        guest_threads: 0,
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");
    let module = crate::support::load(&runtime, hatchery_guests::DURABLE).await;
    let report = crate::support::run(&runtime, &module, "noop", "{}", Limits::default()).await;
    assert_eq!(report.outcome.expect("succeeds"), "{}");
}

/// Makes `count` tenants, each with the durable guest deployed and `runs` `noop` runs queued.
async fn tenants_with_runs(db: &Db, runtime: &Runtime, count: usize, runs: usize) -> Vec<Uuid> {
    let mut tenants = Vec::with_capacity(count);
    for _ in 0..count {
        let tenant = quiet_tenant(db, runtime).await;
        let requests: Vec<RunRequest> = (0..runs)
            .map(|_| RunRequest::new("noop", json!({})))
            .collect();
        start_runs(db, tenant, &requests).await.expect("starts");
        tenants.push(tenant);
    }
    tenants
}

fn claim_params<'a>() -> hatchery::db::task_run::ClaimParams<'a> {
    hatchery::db::task_run::ClaimParams {
        node: Uuid::new_v4(),
        limit: 100,
        full_modules: &[],
        skip_tenants: &[],
        lease: Duration::from_secs(60),
    }
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn tenants_whose_runs_wait_for_a_backoff_take_no_place_in_a_claim(pool: PgPool) {
    use hatchery::db::task_run::task_run_claim;
    let db = Db::new(pool);
    let runtime = new_runtime();
    let waiting = tenants_with_runs(&db, &runtime, 120, 1).await;
    // Made last, so last in id order: every waiting tenant comes before it.
    let busy = tenants_with_runs(&db, &runtime, 1, 150).await[0];
    sqlx::query(
        "UPDATE task_runs SET available_at = now() + interval '1 hour' WHERE tenant_id = ANY($1)",
    )
    .bind(&waiting)
    .execute(&db.pool)
    .await
    .expect("backoff");
    let mut conn = db.pool.acquire().await.expect("conn");
    let claimed = task_run_claim(&mut conn, &claim_params())
        .await
        .expect("claim");
    // The busy tenant's runs fill the claim: the 120 tenants with nothing available now did
    // not each take a share of it.
    assert_eq!(claimed.len(), 100);
    assert!(claimed.iter().all(|t| t.tenant_id == busy));
}
