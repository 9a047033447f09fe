//! Crons against real Postgres: each tick starts exactly one run across two nodes, on time;
//! a new version's manifest crons replace the old; the API creates, lists and deletes them and
//! refuses bad ones.

use std::time::Duration;

use chrono::Utc;
use hatchery::cron::CronSchedule;
use hatchery::db::DEFAULT_TENANT;
use hatchery::db::cron::{NewCron, cron_create, cron_delete, cron_ticks_of, crons_list};
use hatchery::scheduler::{Node, deploy_module, get_run};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{deployed, test_node_config};

const T: Uuid = DEFAULT_TENANT;

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_per_second_cron_fires_once_per_tick_on_two_nodes(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let first = Node::start(db.clone(), runtime.clone(), test_node_config())
        .await
        .expect("node");
    let second = Node::start(db.clone(), runtime, test_node_config())
        .await
        .expect("node");
    let schedule = CronSchedule::parse("* * * * * *", "UTC").expect("valid");
    let empty = json!({});
    let cron = {
        let mut conn = db.pool.acquire().await.expect("conn");
        cron_create(
            &mut conn,
            T,
            &NewCron {
                workflow: "noop",
                name: Some("every second"),
                expression: "* * * * * *",
                timezone: "UTC",
                input: &empty,
                additional_metadata: &empty,
                catch_up: "none",
                next_tick: schedule.next_after(Utc::now()),
            },
            "api",
        )
        .await
        .expect("creates")
    };
    tokio::time::sleep(Duration::from_millis(10_200)).await;
    let mut conn = db.pool.acquire().await.expect("conn");
    assert!(cron_delete(&mut conn, T, cron.id).await.expect("deletes"));
    let ticks = cron_ticks_of(&mut conn, T, cron.id).await.expect("ticks");
    assert!(ticks.len() >= 9, "{} ticks in 10 s", ticks.len());
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1].0 - pair[0].0,
            chrono::Duration::seconds(1),
            "no tick missing: {ticks:?}"
        );
    }
    let mut runs = Vec::new();
    for (tick, run) in &ticks {
        let run = run.expect("every tick started a run");
        let view = get_run(&db, T, run).await.expect("db").expect("run");
        assert_eq!(view.run.triggered_by, "cron");
        assert_eq!(view.run.trigger_id, Some(cron.id));
        let late = view.run.created_at - *tick;
        assert!(
            late >= chrono::Duration::zero() && late < chrono::Duration::seconds(1),
            "started {late} after its tick"
        );
        runs.push(run);
    }
    runs.sort();
    runs.dedup();
    assert_eq!(runs.len(), ticks.len(), "one run per tick, none doubled");
    let all_cron_runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workflow_runs WHERE trigger_id = $1")
            .bind(cron.id)
            .fetch_one(&mut *conn)
            .await
            .expect("count");
    assert_eq!(all_cron_runs as usize, ticks.len());
    first.shutdown().await;
    second.shutdown().await;
}

#[sqlx::test(migrator = "hatchery::db::MIGRATOR")]
async fn a_new_version_replaces_its_manifest_crons(pool: PgPool) {
    let (db, runtime) = deployed(pool, hatchery_guests::DURABLE).await;
    let expressions = |crons: &[hatchery::db::cron::CronRow], source: &str| {
        let mut found: Vec<String> = crons
            .iter()
            .filter(|c| c.workflow == "ticker" && c.source == source)
            .map(|c| c.expression.clone())
            .collect();
        found.sort();
        found
    };
    let mut conn = db.pool.acquire().await.expect("conn");
    let crons = crons_list(&mut conn, T, 100).await.expect("list");
    assert_eq!(expressions(&crons, "manifest"), vec!["0 0 1 1 *"]);
    let ticker = crons
        .iter()
        .find(|c| c.workflow == "ticker")
        .expect("ticker");
    assert_eq!(
        ticker
            .next_tick
            .map(|t| t.format("%m-%d %H:%M").to_string()),
        Some("01-01 00:00".into())
    );
    let empty = json!({});
    cron_create(
        &mut conn,
        T,
        &NewCron {
            workflow: "ticker",
            name: None,
            expression: "0 8 * * *",
            timezone: "Europe/Paris",
            input: &empty,
            additional_metadata: &empty,
            catch_up: "latest",
            next_tick: None,
        },
        "api",
    )
    .await
    .expect("creates");
    deploy_module(
        &db,
        &runtime,
        T,
        &hatchery_guests::read(hatchery_guests::FLOW),
    )
    .await
    .expect("deploys");
    let crons = crons_list(&mut conn, T, 100).await.expect("list");
    assert_eq!(
        expressions(&crons, "manifest"),
        vec!["0 12 * * *", "30 6 * * 1-5"]
    );
    assert_eq!(
        expressions(&crons, "api"),
        vec!["0 8 * * *"],
        "API crons stay"
    );
}
