-- Flow control: concurrency rules and rate limits (docs/flow_control.md).
--
-- A task run with rules carries them as `gates` (computed from the run's input when it is
-- created) and waits under `gate`, the key admission turns round-robin over. Task runs without
-- rules keep the fast claim and its index, which now leaves gated rows out.

ALTER TABLE task_runs ADD COLUMN gates jsonb;
ALTER TABLE task_runs ADD COLUMN gate text;
-- A run held by a workflow-level rule: its end frees a place, so admission is woken.
ALTER TABLE workflow_runs ADD COLUMN gated boolean NOT NULL DEFAULT false;

DROP INDEX task_runs_ready;
CREATE INDEX task_runs_ready
    ON task_runs (tenant_id, priority DESC, available_at, id) WHERE status = 'queued' AND gate IS NULL;
-- Admission walks the distinct waiting keys in order (round robin), then the oldest of each.
CREATE INDEX task_runs_gated
    ON task_runs (tenant_id, gate, priority DESC, available_at, id)
    WHERE status = 'queued' AND gate IS NOT NULL;

-- One row per concurrency key: admission locks it, so two nodes never admit into one key at
-- once.
CREATE TABLE concurrency_keys (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    key        text NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- Who holds a place under a key. A place counts only while its holder is in progress (a run
-- not finished; a task run still running under `lease_token`), so every way a run or attempt
-- ends — completion, failure, cancellation, a lost node reaped — frees it without a write
-- here; admission deletes the rows that no longer count.
CREATE TABLE concurrency_holders (
    tenant_id    uuid NOT NULL,
    key          text NOT NULL,
    holder       uuid NOT NULL,
    -- The workflow run of the holder (the run to cancel for CANCEL_IN_PROGRESS).
    run_id       uuid NOT NULL,
    -- NULL for a workflow-run place; the claim's token for a task-run place.
    lease_token  bigint,
    since        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key, holder)
);

-- Rate limits: static ones set through the API or declared in a manifest, dynamic ones added
-- as their keys appear.
CREATE TABLE rate_limits (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    key          text NOT NULL,
    limit_units  integer CHECK (limit_units > 0),
    window_ms    bigint CHECK (window_ms > 0),
    source       text NOT NULL CHECK (source IN ('api', 'manifest', 'dynamic')),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

-- Units consumed, in buckets of a hundredth of the window. A bucket counts until the window
-- has passed since its end (`until_ms`), so every unit counts for at least a full window:
-- in any interval of the window's length, consumed units never exceed the limit.
CREATE TABLE rate_limit_usage (
    tenant_id  uuid NOT NULL,
    key        text NOT NULL,
    until_ms   bigint NOT NULL,
    units      bigint NOT NULL,
    PRIMARY KEY (tenant_id, key, until_ms)
);
