-- `GET /api/v1/runs?status=failed|cancelled|scheduled` (and the dashboard's pages of them): the
-- newest runs in a status that few runs are in. Without it a page walks `workflow_runs_newest`
-- past every succeeded run to find a failed one — a whole tenant's history when none failed.
-- Partial on those statuses, so the hot path does not pay for it: a run enters the index only
-- when it is scheduled, fails or is cancelled, and a run that succeeds never does.
CREATE INDEX workflow_runs_rare_status
    ON workflow_runs (tenant_id, status, created_at DESC, id DESC)
    WHERE status IN ('scheduled', 'failed', 'cancelled');
