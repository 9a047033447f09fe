-- Per-task fuel budgets set through the API (`PUT /api/v1/workflows/{name}/tasks/{task}/fuel`).
-- A budget is fixed on each task run when the run is created, like its timeouts, so a change
-- applies to runs started after it and never to one in flight. No row: the node's budget.

CREATE TABLE task_fuel (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    workflow    text NOT NULL,
    task        text NOT NULL,
    fuel        bigint NOT NULL CHECK (fuel > 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, workflow, task)
);

-- Nullable without a default: adding it rewrites nothing.
ALTER TABLE task_runs ADD COLUMN fuel bigint;
