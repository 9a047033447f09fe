//! The `hatchery` binary as a task author uses it: `exec` and `inspect` on real components.

use std::process::{Command, Output};

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
