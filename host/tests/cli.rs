//! The `hatchery` binary as a task author uses it: `exec` and `inspect` on real components;
//! the client commands (`deploy`, `run`, `runs …`, `tenants`, `tokens`) driving a real
//! `hatchery serve`; and `hatchery dev` starting from nothing.

#![allow(
    clippy::expect_used,
    reason = "in a test, a failed expectation is the failure to report"
)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};

fn hatchery(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().expect("temporary directory");
    Command::new(env!("CARGO_BIN_EXE_hatchery"))
        .args(args)
        .env("HATCHERY_CACHE_DIR", cache.path())
        .output()
        .expect("the binary runs")
}

fn stdout_json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

#[test]
fn exec_prints_the_output_of_hello() {
    let output = hatchery(&[
        "exec",
        hatchery_guests::HELLO,
        "hello",
        "--input",
        r#"{"name":"Ada"}"#,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout_json(&output),
        serde_json::json!({"greeting": "Hello, Ada!"})
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("greeting Ada"),
        "logs go to stderr"
    );
}

#[test]
fn exec_runs_a_dag_and_children_in_process() {
    let etl = hatchery(&["exec", hatchery_guests::ETL, "etl"]);
    assert!(
        etl.status.success(),
        "{}",
        String::from_utf8_lossy(&etl.stderr)
    );
    assert_eq!(
        stdout_json(&etl),
        serde_json::json!({"loaded": 3, "total": 10})
    );
    let fanout = hatchery(&[
        "exec",
        hatchery_guests::FANOUT,
        "fanout",
        "--input",
        r#"{"count":10}"#,
    ]);
    assert!(
        fanout.status.success(),
        "{}",
        String::from_utf8_lossy(&fanout.stderr)
    );
    assert_eq!(
        stdout_json(&fanout),
        serde_json::json!({"sum": 385, "children": 10})
    );
}

#[test]
fn exec_reports_a_failure_with_its_reason_and_exit_code() {
    let output = hatchery(&["exec", hatchery_guests::HOSTILE, "panic"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("guest panicked: boom: the guest panicked on purpose"),
        "{stderr}"
    );
}

#[test]
fn exec_rejects_bad_input_and_unknown_workflows() {
    let bad_json = hatchery(&["exec", hatchery_guests::HELLO, "hello", "--input", "{nope"]);
    assert_eq!(bad_json.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_json.stderr).contains("--input is not valid JSON"));
    let unknown = hatchery(&["exec", hatchery_guests::HELLO, "goodbye"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown workflow `goodbye`"));
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    // `hatchery inspect … | head -0`: the reader is gone before the manifest is printed.
    let cache = tempfile::tempdir().expect("temporary directory");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hatchery"))
        .args(["inspect", "--json", hatchery_guests::ETL])
        .env("HATCHERY_CACHE_DIR", cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hatchery starts");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("hatchery ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn inspect_prints_the_manifest() {
    let output = hatchery(&["inspect", "--json", hatchery_guests::ETL]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest = stdout_json(&output);
    let tasks = &manifest["manifest"]["workflows"][0]["tasks"];
    assert_eq!(tasks[1]["name"], "transform");
    assert_eq!(tasks[1]["parents"], serde_json::json!(["extract"]));
    assert_eq!(manifest["digest"].as_str().map(str::len), Some(64));
}

#[test]
fn inspect_rejects_a_component_of_another_world() {
    let output = hatchery(&["inspect", hatchery_guests::WRONG_WORLD]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("hatchery:task/task-module"));
}

// ---- the client commands against a real node ----

/// The test server's URL (`DATABASE_URL`), as the other end-to-end tests use it.
fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// A database of its own on the `DATABASE_URL` server, dropped with this value.
struct FreshDatabase {
    server: String,
    name: String,
    url: String,
}

impl FreshDatabase {
    fn create() -> Self {
        let server = database_url();
        let name = format!("hatchery_cli_{}", uuid::Uuid::new_v4().simple());
        let base = server
            .split('?')
            .next()
            .and_then(|url| url.rsplit_once('/'))
            .map(|(base, _)| base.to_owned())
            .expect("DATABASE_URL has a database path");
        block_on(async {
            let pool = sqlx::PgPool::connect(&server).await.expect("connect");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .expect("create the test database");
        });
        let url = format!("{base}/{name}");
        Self { server, name, url }
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        block_on(async {
            if let Ok(pool) = sqlx::PgPool::connect(&self.server).await {
                let _ = sqlx::query(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .execute(&pool)
                .await;
            }
        });
    }
}

/// A child process ended when dropped: SIGTERM first (so it cleans up), then SIGKILL.
struct ChildGuard(Child);

impl ChildGuard {
    /// Sends SIGTERM and waits (up to 30 s) for the exit status.
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.0.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.terminate().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Everything the child prints up to and including the line that starts with `prefix`.
fn read_through(stdout: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let read = stdout
            .read_line(&mut line)
            .expect("read the child's stdout");
        assert!(
            read > 0,
            "the process exited before printing `{prefix}`: {seen}"
        );
        seen.push_str(&line);
        if line.starts_with(prefix) {
            return seen;
        }
    }
}

/// Reads `stdout` until a line starting with `prefix`; returns that line.
fn read_until(stdout: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    read_through(stdout, prefix)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The `hatchery` binary with a clean client environment, run in `dir`.
fn cli(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hatchery"));
    command
        .current_dir(dir)
        .env_remove("HATCHERY_URL")
        .env_remove("HATCHERY_TOKEN")
        .env_remove("HATCHERY_ADMIN_TOKEN")
        .env_remove("HATCHERY_SECRET_KEY")
        .env_remove("HATCHERY_LISTEN")
        .env("XDG_CONFIG_HOME", dir.join("config"));
    command
}

fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("the binary runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn the_cli_drives_a_node_as_a_user_would() {
    let database = FreshDatabase::create();
    let work = tempfile::tempdir().expect("temporary directory");
    let admin = "admin-secret-for-the-cli-test";
    let (mut node, url) = serve(&database, work.path(), admin, |_| {});
    let dir = work.path();

    // The admin creates a tenant; the user takes its token.
    let tenant = run_ok(
        cli(dir)
            .args(["tenants", "create", "acme", "--json", "--url", &url])
            .env("HATCHERY_ADMIN_TOKEN", admin),
    );
    let tenant = stdout_json(&tenant);
    let token = tenant["token"].as_str().expect("a token").to_owned();
    let tenant_id = tenant["id"].as_str().expect("an id").to_owned();
    let extra = run_ok(
        cli(dir)
            .args(["tokens", "create", &tenant_id, "--url", &url])
            .env("HATCHERY_ADMIN_TOKEN", admin),
    );
    assert!(String::from_utf8_lossy(&extra.stdout).contains("token:  hat_"));
    let user = |args: &[&str]| {
        let mut command = cli(dir);
        command
            .args(args)
            .env("HATCHERY_URL", &url)
            .env("HATCHERY_TOKEN", &token);
        command
    };

    let deployed = run_ok(&mut user(&["deploy", hatchery_guests::HELLO]));
    let deployed = String::from_utf8_lossy(&deployed.stdout);
    assert!(deployed.contains("deployed"), "{deployed}");
    assert!(deployed.contains("hello"), "{deployed}");

    let waited = run_ok(&mut user(&[
        "run",
        "hello",
        "--input",
        r#"{"name":"Ada"}"#,
        "--metadata",
        r#"{"origin":"cli-test"}"#,
        "--wait",
    ]));
    assert_eq!(
        stdout_json(&waited),
        serde_json::json!({"greeting": "Hello, Ada!"})
    );
    let progress = String::from_utf8_lossy(&waited.stderr);
    assert!(
        progress.contains("succeeded"),
        "progress on stderr: {progress}"
    );

    let started = run_ok(&mut user(&[
        "run",
        "hello",
        "--input",
        r#"{"name":"Grace"}"#,
        "--wait",
        "--json",
    ]));
    let run = stdout_json(&started);
    assert_eq!(run["status"], "succeeded");
    let id = run["id"].as_str().expect("a run id").to_owned();

    let shown = stdout_json(&run_ok(&mut user(&["runs", "show", &id, "--json"])));
    assert_eq!(shown["workflow"], "hello");
    assert_eq!(
        shown["output"],
        serde_json::json!({"greeting": "Hello, Grace!"})
    );
    assert_eq!(shown["tasks"][0]["status"], "succeeded");
    let shown_text = run_ok(&mut user(&["runs", "show", &id]));
    let shown_text = String::from_utf8_lossy(&shown_text.stdout);
    assert!(shown_text.contains("status:   succeeded"), "{shown_text}");
    assert!(shown_text.contains("greet"), "{shown_text}");

    let listed = stdout_json(&run_ok(&mut user(&[
        "runs",
        "list",
        "--workflow",
        "hello",
        "--json",
    ])));
    let runs = listed["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["id"], id.as_str(), "newest first");
    let filtered = stdout_json(&run_ok(&mut user(&[
        "runs",
        "list",
        "--metadata",
        "origin:cli-test",
        "--json",
    ])));
    assert_eq!(filtered["runs"].as_array().map(Vec::len), Some(1));
    let table = run_ok(&mut user(&["runs", "list", "--status", "succeeded"]));
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains(&id), "{table}");

    let logs = run_ok(&mut user(&["runs", "logs", &id]));
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("greeting Grace"), "{logs}");

    // The server's error messages reach the user, with exit code 1.
    let replay = user(&["runs", "replay", &id]).output().expect("runs");
    assert_eq!(replay.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&replay.stderr)
            .contains("only failed or cancelled runs can be replayed"),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    // Under `--json`, the refusal keeps the API's shape, with its status.
    let replay = user(&["runs", "replay", &id, "--json"])
        .output()
        .expect("runs");
    assert_eq!(replay.status.code(), Some(1));
    let refusal: serde_json::Value =
        serde_json::from_slice(&replay.stderr).expect("the error is JSON under --json");
    assert_eq!(refusal["error"]["status"], 409, "{refusal}");
    assert!(
        refusal["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("only failed or cancelled runs can be replayed")),
        "{refusal}"
    );
    let unknown = user(&["run", "goodbye"]).output().expect("runs");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown workflow"));
    let bad_token = cli(dir)
        .args(["runs", "list", "--url", &url, "--token", "hat_nope"])
        .output()
        .expect("runs");
    assert_eq!(bad_token.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_token.stderr).contains("401"));

    // A failed run: `--wait` exits 1 with the reason; it can be replayed.
    run_ok(&mut user(&["deploy", hatchery_guests::HOSTILE]));
    let failed = user(&["run", "panic", "--wait"]).output().expect("runs");
    assert_eq!(failed.status.code(), Some(1));
    let failed_err = String::from_utf8_lossy(&failed.stderr);
    assert!(failed_err.contains("boom"), "{failed_err}");
    let failed_id = stdout_json(&run_ok(&mut user(&[
        "runs", "list", "--status", "failed", "--json",
    ])))["runs"][0]["id"]
        .as_str()
        .expect("the failed run")
        .to_owned();
    let replayed = run_ok(&mut user(&["runs", "replay", &failed_id]));
    assert!(String::from_utf8_lossy(&replayed.stdout).contains("queued again"));
    // Cancelling a finished run leaves it as it is.
    let cancelled = run_ok(&mut user(&["runs", "cancel", &id]));
    let cancelled = String::from_utf8_lossy(&cancelled.stdout);
    assert!(cancelled.contains("is succeeded"), "{cancelled}");

    // The admin's view of the tenant, and the tenant's own usage.
    let admin_cli = |args: &[&str]| {
        let mut command = cli(dir);
        command
            .args(args)
            .args(["--url", &url])
            .env("HATCHERY_ADMIN_TOKEN", admin);
        command
    };
    let weighted = run_ok(&mut admin_cli(&["tenants", "weight", &tenant_id, "5"]));
    assert!(
        String::from_utf8_lossy(&weighted.stdout).contains("weight:    5"),
        "{weighted:?}"
    );
    let kept = run_ok(&mut admin_cli(&["tenants", "retention", &tenant_id, "30"]));
    assert!(
        String::from_utf8_lossy(&kept.stdout).contains("retention: 30 days"),
        "{kept:?}"
    );
    let shown = stdout_json(&run_ok(&mut admin_cli(&[
        "tenants", "show", &tenant_id, "--json",
    ])));
    assert_eq!(shown["weight"], 5, "{shown}");
    assert_eq!(shown["retention_days"], 30, "{shown}");
    let shown = run_ok(&mut admin_cli(&["tenants", "show", &tenant_id]));
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("tenant:    acme"),
        "{shown:?}"
    );
    let usage = stdout_json(&run_ok(&mut user(&["usage", "--json"])));
    assert!(
        usage["totals"]["runs"].as_i64().unwrap_or(0) >= 2,
        "{usage}"
    );
    let usage = run_ok(&mut user(&["usage"]));
    let usage = String::from_utf8_lossy(&usage.stdout);
    assert!(
        usage.contains("total") && usage.contains("hello"),
        "{usage}"
    );

    // Crons, events and fuel, through the API's own types.
    let cron = stdout_json(&run_ok(&mut user(&[
        "crons",
        "create",
        "hello",
        "0 9 * * 1-5",
        "--timezone",
        "Europe/Paris",
        "--input",
        r#"{"name":"team"}"#,
        "--json",
    ])));
    assert_eq!(cron["crons"][0]["timezone"], "Europe/Paris", "{cron}");
    let crons = run_ok(&mut user(&["crons", "list"]));
    assert!(
        String::from_utf8_lossy(&crons.stdout).contains("0 9 * * 1-5 (Europe/Paris)"),
        "{crons:?}"
    );
    let pushed = run_ok(&mut user(&[
        "events",
        "push",
        "nobody:listens",
        "--payload",
        "{}",
    ]));
    assert!(
        String::from_utf8_lossy(&pushed.stdout).contains("started 0 run(s)"),
        "{pushed:?}"
    );
    let fuel = run_ok(&mut user(&["fuel", "hello", "greet", "5_000_000"]));
    assert!(
        String::from_utf8_lossy(&fuel.stdout).contains("5000000 instructions per attempt"),
        "{fuel:?}"
    );

    // A run for later: scheduled, listed as such, moved sooner, then run.
    let later = run_ok(&mut user(&[
        "run",
        "hello",
        "--input",
        r#"{"name":"Later"}"#,
        "--in",
        "1h",
        "--json",
    ]));
    let later = stdout_json(&later)["run_id"]
        .as_str()
        .expect("a run id")
        .to_owned();
    let scheduled = stdout_json(&run_ok(&mut user(&[
        "runs",
        "list",
        "--status",
        "scheduled",
        "--json",
    ])));
    assert_eq!(scheduled["runs"][0]["id"], later.as_str());
    let moved = run_ok(&mut user(&["runs", "reschedule", &later, "1s"]));
    assert!(
        String::from_utf8_lossy(&moved.stdout).contains("is due at"),
        "{}",
        String::from_utf8_lossy(&moved.stdout)
    );
    let bad = user(&["run", "hello", "--in", "soon"])
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a duration"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let run = stdout_json(&run_ok(&mut user(&["runs", "show", &later, "--json"])));
        if run["status"] == "succeeded" {
            assert_eq!(run["triggered_by"]["kind"], "schedule");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{run}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // Flow control: the example's limit, set lower through the CLI, makes a run wait.
    run_ok(&mut user(&["deploy", hatchery_guests::FLOW_EXAMPLE]));
    let set = run_ok(&mut user(&["rate-limits", "set", "crm-api", "1", "hour"]));
    let set = String::from_utf8_lossy(&set.stdout);
    assert!(
        set.contains("crm-api") && set.contains("1 per hour"),
        "{set}"
    );
    let first = run_ok(&mut user(&[
        "run",
        "sync-user",
        "--input",
        r#"{"user_id":"ada"}"#,
        "--wait",
    ]));
    assert_eq!(
        stdout_json(&first),
        serde_json::json!({"user_id": "ada", "stored": 3})
    );
    let second = run_ok(&mut user(&[
        "run",
        "sync-user",
        "--input",
        r#"{"user_id":"bob"}"#,
        "--json",
    ]));
    let second = stdout_json(&second)["run_id"]
        .as_str()
        .expect("a run id")
        .to_owned();
    let shown = run_ok(&mut user(&["runs", "show", &second]));
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("waiting for units of rate limit `crm-api`"),
        "{shown}"
    );
    let listed = stdout_json(&run_ok(&mut user(&["rate-limits", "list", "--json"])));
    assert_eq!(listed["rate_limits"][0]["used"], 1);
    assert_eq!(listed["rate_limits"][0]["source"], "api");
    let bad = user(&["rate-limits", "set", "crm-api", "0", "hour"])
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("between 1 and"));

    assert!(node.terminate().is_some_and(|s| s.success()));
}

/// Waits for `hatchery dev` to be ready, then deploys `hello` and runs it as a user would,
/// with the token and URL `dev` wrote into `dir`.
fn serve_a_run_with_dev(dev: &mut ChildGuard, dir: &Path) {
    let mut stdout = BufReader::new(dev.0.stdout.take().expect("piped stdout"));
    read_until(&mut stdout, "listening on http://");
    let banner = read_through(&mut stdout, "Stop with ctrl-c.");
    // Nothing is deployed yet: the banner says how to deploy, not how to run `hello`.
    assert!(banner.contains("none deployed yet"), "{banner}");
    assert!(!banner.contains("workflows/hello"), "{banner}");
    let token = std::fs::read_to_string(dir.join(".hatchery/token")).expect("the token file");
    assert!(token.starts_with("hat_"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join(".hatchery/token"))
            .expect("token metadata")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    run_ok(cli(dir).args(["deploy", hatchery_guests::HELLO]));
    let waited = run_ok(cli(dir).args(["run", "hello", "--input", r#"{"name":"Dev"}"#, "--wait"]));
    assert_eq!(
        stdout_json(&waited),
        serde_json::json!({"greeting": "Hello, Dev!"})
    );
}

fn start_dev(dir: &Path, extra_env: &[(&str, &str)]) -> ChildGuard {
    let mut command = cli(dir);
    command
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env("HATCHERY_CACHE_DIR", dir.join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in extra_env {
        command.env(key, value);
    }
    ChildGuard(command.spawn().expect("start hatchery dev"))
}

#[test]
fn dev_serves_a_run_from_nothing() {
    let work = tempfile::tempdir().expect("temporary directory");
    let mut dev = start_dev(work.path(), &[]);
    serve_a_run_with_dev(&mut dev, work.path());
    assert!(dev.terminate().is_some_and(|s| s.success()));
}

#[test]
fn dev_starts_and_stops_a_private_cluster_when_no_server_answers() {
    let work = tempfile::tempdir().expect("temporary directory");
    // Let the `postgres` user reach the cluster directory when the test runs as root.
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let nothing = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
        .to_string();
    let mut dev = start_dev(work.path(), &[("HATCHERY_DEV_PG_PORT", &nothing)]);
    serve_a_run_with_dev(&mut dev, work.path());
    let cluster = work.path().join(".hatchery/postgres");
    assert!(cluster.join("PG_VERSION").exists());
    assert!(cluster.join("postmaster.pid").exists(), "running");
    assert!(dev.terminate().is_some_and(|s| s.success()));
    assert!(
        !cluster.join("postmaster.pid").exists(),
        "the cluster is stopped on exit"
    );

    // What scripts/postgres-env asks: the same discovery, the URL on stdout, and the cluster
    // left running for the tests.
    let printed = cli(work.path())
        .args(["dev", "--print-database-url"])
        .env("HATCHERY_DEV_PG_PORT", &nothing)
        .env_remove("DATABASE_URL")
        .output()
        .expect("runs");
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let url = String::from_utf8_lossy(&printed.stdout).trim().to_owned();
    let port: u16 = url
        .strip_prefix("postgres://postgres@127.0.0.1:")
        .and_then(|rest| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("a local PostgreSQL URL, got {url:?}"));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the printed server answers"
    );
    let pid_file = cluster.join("postmaster.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("left running");
    let pid = pid.lines().next().expect("the postmaster's pid").trim();
    // Stopped here, as a script's caller would: SIGTERM, then wait for its pid file to go.
    assert!(
        Command::new("kill")
            .arg(pid)
            .status()
            .expect("kill")
            .success()
    );
    let stopped = (0..300).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        !pid_file.exists()
    });
    assert!(stopped, "the private cluster stopped");
}

/// Starts `hatchery serve` on `database` in `dir` with `admin` as its admin token, after
/// `configure` adds its own arguments and environment; returns the node and its URL.
fn serve(
    database: &FreshDatabase,
    dir: &Path,
    admin: &str,
    configure: impl FnOnce(&mut Command),
) -> (ChildGuard, String) {
    let mut command = cli(dir);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &database.url)
        .env("HATCHERY_ADMIN_TOKEN", admin)
        .env("HATCHERY_CACHE_DIR", dir.join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    configure(&mut command);
    let mut node = ChildGuard(command.spawn().expect("start hatchery serve"));
    let mut stdout = BufReader::new(node.0.stdout.take().expect("piped stdout"));
    let listening = read_until(&mut stdout, "listening on ");
    (node, listening["listening on ".len()..].to_owned())
}

/// Starts `hatchery serve` on `database` (with `key` as HATCHERY_SECRET_KEY, its stderr piped);
/// returns the node and its URL.
fn serve_with_key(database: &FreshDatabase, dir: &Path, key: &str) -> (ChildGuard, String) {
    serve(database, dir, "admin-of-the-secrets-test", |command| {
        command.stderr(Stdio::piped());
        if !key.is_empty() {
            command.env("HATCHERY_SECRET_KEY", key);
        }
    })
}

#[test]
fn secrets_and_egress_from_the_cli_and_a_node_that_lacks_the_key() {
    let database = FreshDatabase::create();
    let work = tempfile::tempdir().expect("temporary directory");
    let dir = work.path();
    let key = "a fleet secret of at least thirty-two characters";
    let (mut node, url) = serve_with_key(&database, dir, key);
    let tenant = stdout_json(&run_ok(
        cli(dir)
            .args(["tenants", "create", "acme", "--json", "--url", &url])
            .env("HATCHERY_ADMIN_TOKEN", "admin-of-the-secrets-test"),
    ));
    let (token, tenant_id) = (
        tenant["token"].as_str().expect("token").to_owned(),
        tenant["id"].as_str().expect("id").to_owned(),
    );
    let user = |args: &[&str]| {
        let mut command = cli(dir);
        command
            .args(args)
            .env("HATCHERY_URL", &url)
            .env("HATCHERY_TOKEN", &token);
        command
    };

    // The value comes from stdin, never from an argument.
    let mut set = user(&["secrets", "set", "API_KEY", "--workflow", "charge"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    std::io::Write::write_all(&mut set.stdin.take().expect("stdin"), b"sk_live_42\n")
        .expect("write the value");
    let set = set.wait_with_output().expect("finishes");
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let listed = run_ok(&mut user(&["secrets", "list"]));
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("API_KEY") && listed.contains("charge"),
        "{listed}"
    );
    assert!(!listed.contains("sk_live_42"), "{listed}");

    run_ok(
        cli(dir)
            .args([
                "egress",
                "ceiling",
                &tenant_id,
                "*.example.com",
                "--url",
                &url,
            ])
            .env("HATCHERY_ADMIN_TOKEN", "admin-of-the-secrets-test"),
    );
    run_ok(&mut user(&["egress", "set", "api.example.com"]));
    let shown = run_ok(&mut user(&["egress", "show"]));
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("allowed: api.example.com") && shown.contains("ceiling: *.example.com"),
        "{shown}"
    );
    let outside = user(&["egress", "set", "evil.org"]).output().expect("runs");
    assert_eq!(outside.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&outside.stderr).contains("outside this tenant's egress ceiling")
    );

    // Secrets exist now: a node without the key refuses to start, saying why.
    node.terminate();
    let refused = cli(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &database.url)
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("HATCHERY_SECRET_KEY is not set"),
        "{stderr}"
    );
    let short = cli(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &database.url)
        .env("HATCHERY_SECRET_KEY", "too short")
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 32 characters"));
}

/// A minimal OTLP/HTTP collector on a real socket: answers every request 200 and keeps the
/// bodies it was sent.
struct Collector {
    addr: std::net::SocketAddr,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Collector {
    fn start() -> Self {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().expect("clone the stream");
                    let mut reader = BufReader::new(stream);
                    loop {
                        let mut request_line = String::new();
                        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut length = 0;
                        loop {
                            let mut header = String::new();
                            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                                return;
                            }
                            let header = header.trim_end();
                            if header.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':')
                                && name.eq_ignore_ascii_case("content-length")
                            {
                                length = value.trim().parse().expect("a length");
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        kept.lock()
                            .expect("not poisoned")
                            .push(String::from_utf8_lossy(&body).into_owned());
                        let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                                      Content-Length: 2\r\n\r\n{}";
                        if writer.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, bodies }
    }

    /// Every span received so far: (name, attributes as key → string value).
    fn spans(&self) -> Vec<(String, std::collections::HashMap<String, String>)> {
        let bodies = self.bodies.lock().expect("not poisoned").clone();
        let mut spans = Vec::new();
        for body in bodies {
            let Ok(body) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            let resource_spans = body["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for resource in resource_spans {
                for scope in resource["scopeSpans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    for span in scope["spans"].as_array().cloned().unwrap_or_default() {
                        let attributes = span["attributes"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .map(|a| {
                                let value = &a["value"];
                                let text = value["stringValue"]
                                    .as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| value.to_string());
                                (a["key"].as_str().unwrap_or_default().to_owned(), text)
                            })
                            .collect();
                        spans.push((
                            span["name"].as_str().unwrap_or_default().to_owned(),
                            attributes,
                        ));
                    }
                }
            }
        }
        spans
    }
}

#[test]
fn serve_exports_traces_of_requests_claims_and_attempts_over_otlp() {
    let database = FreshDatabase::create();
    let collector = Collector::start();
    let work = tempfile::tempdir().expect("temporary directory");
    let admin = "admin-secret-for-the-otlp-test";
    let (node, url) = serve(&database, work.path(), admin, |command| {
        command
            .args(["--otlp-endpoint", &format!("http://{}", collector.addr)])
            .args(["--otlp-protocol", "http/json"])
            // The batch exporter's delay, so the test need not wait its default 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    });
    let dir = work.path();
    let tenant = run_ok(
        cli(dir)
            .args(["tenants", "create", "traced", "--json", "--url", &url])
            .env("HATCHERY_ADMIN_TOKEN", admin),
    );
    let token = stdout_json(&tenant)["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let user = |args: &[&str]| {
        let mut command = cli(dir);
        command
            .args(args)
            .env("HATCHERY_URL", &url)
            .env("HATCHERY_TOKEN", &token);
        command
    };
    run_ok(&mut user(&["deploy", hatchery_guests::HELLO]));
    run_ok(&mut user(&[
        "run",
        "hello",
        "--input",
        r#"{"name":"Ada"}"#,
        "--wait",
    ]));
    let run_id = stdout_json(&run_ok(&mut user(&["runs", "list", "--json"])))["runs"][0]["id"]
        .as_str()
        .expect("the run")
        .to_owned();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (attempt, request, claim) = loop {
        let spans = collector.spans();
        let attempt = spans
            .iter()
            .find(|(name, a)| name == "attempt" && a.get("run_id") == Some(&run_id))
            .cloned();
        let request = spans
            .iter()
            .find(|(name, _)| name == "POST /api/v1/workflows/hello/runs")
            .cloned();
        let claim = spans
            .iter()
            .find(|(name, a)| name == "claim" && a.get("claimed").is_some_and(|c| c != "0"))
            .cloned();
        if let (Some(attempt), Some(request), Some(claim)) = (attempt, request, claim) {
            break (attempt, request, claim);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spans missing after 30 s; received: {:?}",
            spans.iter().map(|s| &s.0).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(attempt.1.get("task").map(String::as_str), Some("greet"));
    assert_eq!(attempt.1.get("workflow").map(String::as_str), Some("hello"));
    assert!(attempt.1.contains_key("task_run_id"), "{attempt:?}");
    assert_eq!(
        request.1.get("http.request.method").map(String::as_str),
        Some("POST"),
        "{request:?}"
    );
    assert!(claim.1.contains_key("limit"), "{claim:?}");
    let bodies = collector.bodies.lock().expect("not poisoned").join("\n");
    assert!(bodies.contains("\"hatchery\""), "the service is named");
    drop(node);
}
