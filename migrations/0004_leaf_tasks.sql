-- Whether a task is a leaf of its DAG (no task names it as a parent): the run's output is made
-- of its leaves' outputs, and knowing it per row lets one pass over a run's tasks finish it.
ALTER TABLE task_runs ADD COLUMN is_leaf boolean NOT NULL DEFAULT true;
