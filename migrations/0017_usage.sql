-- What each tenant consumed, per hour and workflow (db/usage.rs). Written in the transactions
-- that create runs and that record attempts' results, so it is exactly what was run; one row
-- per tenant, hour and workflow, so it is small and is kept past the runs' retention.
CREATE TABLE usage_hourly (
    tenant_id          uuid NOT NULL,
    hour               timestamptz NOT NULL,
    workflow           text NOT NULL,
    -- Workflow runs created (each run once, whatever its tasks).
    runs               bigint NOT NULL DEFAULT 0,
    -- Task attempts that executed, and their wall-clock time in milliseconds.
    attempts           bigint NOT NULL DEFAULT 0,
    wall_ms            bigint NOT NULL DEFAULT 0,
    -- Wasm instructions (fuel) executed.
    fuel               bigint NOT NULL DEFAULT 0,
    -- The largest linear memory one attempt held, in bytes.
    peak_memory_bytes  bigint NOT NULL DEFAULT 0,
    -- Outgoing HTTP requests made.
    egress_requests    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, hour, workflow)
);
