//! How the client commands show what the API answered: tables, a run with its tasks, times
//! and durations for people, and `--json` output unchanged for scripts.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::api::types::{RunDetail, RunPage, TaskRun, Waiting};

pub(super) fn print_patterns(label: &str, patterns: &Value) {
    let texts: Vec<String> = patterns
        .as_array()
        .into_iter()
        .flatten()
        .map(
            |p| match (p["host"].as_str(), p.as_object().map(|o| o.len())) {
                (Some(host), Some(1)) => host.to_owned(),
                _ => p.to_string(),
            },
        )
        .collect();
    if texts.is_empty() {
        println!("{label}: nothing");
    } else {
        println!("{label}: {}", texts.join(", "));
    }
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The error of a failed run, or of its first failed task.
pub(super) fn failure_reason(run: &RunDetail) -> String {
    if let Some(error) = run.run.error.as_deref().filter(|e| !e.is_empty()) {
        return error.to_owned();
    }
    run.tasks
        .iter()
        .find_map(|t| t.error.as_deref().map(|e| format!("task {}: {e}", t.name)))
        .unwrap_or_else(|| "no reason given".to_owned())
}

/// `run <id> <status>  task:status task:status …`.
pub(super) fn progress_line(run: &RunDetail) -> String {
    let tasks: Vec<String> = run
        .tasks
        .iter()
        .map(|t| {
            let retry = if t.attempt > 1 {
                format!(" (attempt {})", t.attempt)
            } else {
                String::new()
            };
            format!("{} {}{retry}", t.name, t.status)
        })
        .collect();
    let mut line = format!("{} run {} {}", run.run.workflow, run.run.id, run.run.status);
    if !tasks.is_empty() {
        line.push_str(" · ");
        line.push_str(&tasks.join(", "));
    }
    line
}

/// A page of runs as a table, and how to get the next one.
pub(super) fn print_runs(page: &RunPage) {
    let rows: Vec<Vec<String>> = page
        .runs
        .iter()
        .map(|run| {
            vec![
                run.id.to_string(),
                run.workflow.clone(),
                run.status.to_string(),
                time_of(Some(run.created_at)),
                duration_of(run.started_at, run.finished_at),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no runs");
    } else {
        print_table(&["ID", "WORKFLOW", "STATUS", "CREATED", "DURATION"], &rows);
    }
    if let Some(cursor) = &page.next_cursor {
        eprintln!("more: --cursor {cursor}");
    }
}

/// Prints a run and its tasks as aligned text.
pub(super) fn print_run(detail: &RunDetail) -> anyhow::Result<()> {
    let run = &detail.run;
    let mut fields = vec![
        ("id", run.id.to_string()),
        (
            "workflow",
            format!("{} (version {})", run.workflow, run.version),
        ),
        ("status", run.status.to_string()),
        (
            "trigger",
            match run.triggered_by.id {
                Some(id) => format!("{} ({id})", run.triggered_by.kind),
                None => run.triggered_by.kind.clone(),
            },
        ),
        ("priority", run.priority.to_string()),
        ("created", time_of(Some(run.created_at))),
        ("due", time_of(run.run_at)),
        ("started", time_of(run.started_at)),
        ("finished", time_of(run.finished_at)),
        ("duration", duration_of(run.started_at, run.finished_at)),
    ];
    if let Some(parent) = run.parent_run_id {
        fields.push(("parent", parent.to_string()));
    }
    if run
        .additional_metadata
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        fields.push(("metadata", run.additional_metadata.to_string()));
    }
    fields.push(("input", run.input.to_string()));
    if let Some(output) = &run.output {
        fields.push(("output", output.to_string()));
    }
    if let Some(error) = &run.error {
        fields.push(("error", error.clone()));
    }
    for (name, value) in &fields {
        println!("{:<9} {value}", format!("{name}:"));
    }
    let rows: Vec<Vec<String>> = detail
        .tasks
        .iter()
        .map(|t: &TaskRun| {
            let result = match (&t.error, &t.output) {
                (Some(error), _) => error.clone(),
                (None, Some(output)) => output.to_string(),
                (None, None) => String::new(),
            };
            let result = match &t.waiting_for {
                Some(waiting) if result.is_empty() => waiting_text(waiting),
                _ => result,
            };
            vec![
                t.name.clone(),
                t.status.to_string(),
                t.attempt.to_string(),
                duration_of(t.started_at, t.finished_at),
                result,
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!();
        print_table(&["TASK", "STATUS", "ATTEMPT", "DURATION", "RESULT"], &rows);
    }
    Ok(())
}

/// `{kind, key?}` as "waiting for …".
fn waiting_text(waiting: &Waiting) -> String {
    let what = match waiting.kind.as_str() {
        "concurrency" => "a place under concurrency key",
        "rate_limit" => "units of rate limit",
        "slots" => "a free slot",
        "parents" => "its parents",
        other => other,
    };
    match &waiting.key {
        Some(key) => format!("waiting for {what} `{key}`"),
        None => format!("waiting for {what}"),
    }
}

/// Prints rows under headers, columns padded to their widest cell.
pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        line
    };
    println!("{}", render(headers.to_vec()));
    for row in rows {
        println!("{}", render(row.iter().map(String::as_str).collect()));
    }
}

/// A time as `YYYY-MM-DD HH:MM:SS.mmm`, or `-`.
pub(super) fn time_of(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
    )
}

/// The time from `start` to `end`, or `-`.
pub(super) fn duration_of(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> String {
    let (Some(start), Some(end)) = (start, end) else {
        return "-".to_owned();
    };
    let millis = (end - start).num_milliseconds().max(0);
    if millis < 1_000 {
        format!("{millis}ms")
    } else {
        format!("{:.1}s", millis as f64 / 1_000.0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn duration_is_readable() {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        let start = at("2026-01-01T00:00:00Z");
        assert_eq!(duration_of(start, at("2026-01-01T00:00:00.250Z")), "250ms");
        assert_eq!(duration_of(start, at("2026-01-01T00:00:02.5Z")), "2.5s");
        assert_eq!(duration_of(start, None), "-");
    }

    #[test]
    fn failure_reason_prefers_the_run_error_then_a_task_error() {
        let task = |name: &str, error: Option<&str>| {
            json!({"id": "01a227ae-4daf-7537-81e5-2a85c5cf38a1", "name": name,
                   "status": "failed", "attempt": 1, "failures": 1, "lost_leases": 0,
                   "parents": [], "output": null, "error": error, "error_code": null,
                   "is_on_failure": false, "started_at": null, "finished_at": null})
        };
        let run = |error: Option<&str>, tasks: Vec<Value>| -> RunDetail {
            serde_json::from_value(json!({
                "id": "01a227ae-4daf-7537-81e5-2a85c5cf38a2", "workflow": "w", "version": 1,
                "status": "failed", "input": {}, "output": null, "error": error,
                "additional_metadata": {}, "priority": 1,
                "created_at": "2026-01-01T00:00:00Z", "started_at": null, "finished_at": null,
                "parent_run_id": null, "parent_task_run_id": null, "run_at": null,
                "triggered_by": {"kind": "api", "id": null}, "tasks": tasks}))
            .expect("a run")
        };
        let failed = run(None, vec![task("a", None), task("b", Some("boom"))]);
        assert_eq!(failure_reason(&failed), "task b: boom");
        assert_eq!(failure_reason(&run(Some("bad"), vec![])), "bad");
    }
}
