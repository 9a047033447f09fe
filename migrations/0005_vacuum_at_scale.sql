-- Autovacuum for queue tables of millions of rows.
--
-- The defaults vacuum a table once a fifth of it is dead (scale factor 0.2): at a million task
-- runs that is 200,000 dead row versions before the first pass, and the claim's index scan
-- walks every dead entry at the head of `task_runs_ready` until then. Each task run leaves
-- three or four dead versions behind, so these tables are vacuumed after a fixed amount of
-- churn instead (threshold + 1 % of the table), analyzed as often (so plans follow the
-- backlog), and vacuumed after inserts too (so bulk-enqueued rows get their visibility bits
-- before the drain rewrites them). The cost limit lets one pass keep up with ~20k tasks/s on
-- this hardware class without a throttle that lets dead rows pile up meanwhile.
ALTER TABLE task_runs SET (
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_threshold = 10000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_limit = 2000
);
ALTER TABLE workflow_runs SET (
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_threshold = 10000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_limit = 2000
);
-- Logs are only inserted (and deleted by retention, later): vacuum for visibility after inserts.
ALTER TABLE task_run_logs SET (
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0.05
);
