-- Quotas per tenant (docs/tenancy.md). NULL: the default of the node that applies it (the
-- `serve` flags); a default of none means no limit.

ALTER TABLE tenants ADD COLUMN max_queued_runs bigint CHECK (max_queued_runs >= 0);
ALTER TABLE tenants ADD COLUMN max_executing integer CHECK (max_executing >= 0);
ALTER TABLE tenants ADD COLUMN max_module_bytes bigint CHECK (max_module_bytes >= 0);
ALTER TABLE tenants ADD COLUMN api_requests_per_second integer
    CHECK (api_requests_per_second > 0);
ALTER TABLE tenants ADD COLUMN uploads_per_hour integer CHECK (uploads_per_hour >= 0);

-- Nodes read the few tenants with their own cap on executing task runs at start and when one
-- changes; this keeps that read from scanning every tenant.
CREATE INDEX tenants_capped ON tenants (id) WHERE max_executing IS NOT NULL;

-- How many workflow runs of each tenant are unfinished (queued or running), kept by the
-- triggers below so a start checks `max_queued_runs` in O(1) whatever the backlog. Changes are
-- appended, never updated in place, so completions on many connections never wait on one
-- another's row lock (nor deadlock); the vacuum service folds each tenant's rows into one.
CREATE TABLE tenant_unfinished_runs (
    tenant_id  uuid NOT NULL,
    runs       bigint NOT NULL
);
CREATE INDEX tenant_unfinished_runs_tenant ON tenant_unfinished_runs (tenant_id);

INSERT INTO tenant_unfinished_runs (tenant_id, runs)
SELECT tenant_id, count(*) FROM workflow_runs
WHERE status IN ('queued', 'running') GROUP BY tenant_id;

-- A row per tenant that a start (or an upload) locks while it checks its quota and adds to
-- what it counts, so two starts of one tenant never both see room for one more run.
CREATE TABLE tenant_quota_locks (
    tenant_id  uuid PRIMARY KEY
);

-- Statement-level triggers with transition tables: one row per statement and tenant, not per
-- run, so a bulk insert of a thousand runs or a completion batch adds one row each.
CREATE FUNCTION tenant_unfinished_runs_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tenant_unfinished_runs (tenant_id, runs)
        SELECT tenant_id, count(*) FROM new_rows
        WHERE status IN ('queued', 'running')
        GROUP BY tenant_id;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO tenant_unfinished_runs (tenant_id, runs)
        SELECT tenant_id, sum(change) FROM (
            SELECT n.tenant_id,
                   (n.status IN ('queued', 'running'))::int
                       - (o.status IN ('queued', 'running'))::int AS change
            FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id
            WHERE n.status <> o.status
        ) changes
        GROUP BY tenant_id HAVING sum(change) <> 0;
    ELSE
        INSERT INTO tenant_unfinished_runs (tenant_id, runs)
        SELECT tenant_id, -count(*) FROM old_rows
        WHERE status IN ('queued', 'running')
        GROUP BY tenant_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER workflow_runs_unfinished_insert AFTER INSERT ON workflow_runs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenant_unfinished_runs_add();
CREATE TRIGGER workflow_runs_unfinished_update AFTER UPDATE ON workflow_runs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenant_unfinished_runs_add();
CREATE TRIGGER workflow_runs_unfinished_delete AFTER DELETE ON workflow_runs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenant_unfinished_runs_add();
