-- Runs scheduled for later, and how every run started (docs/state_machine.md).
--
-- A scheduled run waits in status `scheduled` with its task runs `pending`, outside every
-- index the claim reads, so runs far in the future cost the claim nothing; the schedule service
-- of any node promotes it when `run_at` comes (`workflow_runs_due` finds the next one).

ALTER TABLE workflow_runs DROP CONSTRAINT workflow_runs_status_check;
ALTER TABLE workflow_runs ADD CONSTRAINT workflow_runs_status_check
    CHECK (status IN ('scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled'));
ALTER TABLE workflow_runs ADD COLUMN run_at timestamptz;
ALTER TABLE workflow_runs ADD COLUMN triggered_by text NOT NULL DEFAULT 'api'
    CHECK (triggered_by IN ('api', 'cron', 'schedule', 'event', 'spawn', 'replay'));
-- The cron, event or parent run that started it, when there is one.
ALTER TABLE workflow_runs ADD COLUMN trigger_id uuid;
UPDATE workflow_runs SET triggered_by = 'spawn' WHERE parent_task_run_id IS NOT NULL;

CREATE INDEX workflow_runs_due ON workflow_runs (run_at) WHERE status = 'scheduled';
-- `GET /api/v1/runs?triggered_by=`: newest first within one kind.
CREATE INDEX workflow_runs_by_trigger
    ON workflow_runs (tenant_id, triggered_by, created_at DESC, id DESC);
