-- Room on every page for HOT updates: a run's status, output and timestamps change after the
-- row is written, and with full pages each change was a new row version in every index.
ALTER TABLE workflow_runs SET (fillfactor = 70);
ALTER TABLE task_runs SET (fillfactor = 70);
