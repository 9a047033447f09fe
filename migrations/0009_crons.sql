-- Crons: from manifests (`on_crons`, replaced by each new version of a workflow) and from the
-- API. Each tick of each cron starts one run, recorded in `cron_ticks`: the unique record, not
-- a lock held by one node, is what makes a tick fire once however many nodes see it due.

CREATE TABLE crons (
    tenant_id            uuid NOT NULL REFERENCES tenants (id),
    id                   uuid NOT NULL,
    workflow             text NOT NULL,
    name                 text,
    expression           text NOT NULL,
    timezone             text NOT NULL DEFAULT 'UTC',
    input                jsonb NOT NULL DEFAULT '{}',
    additional_metadata  jsonb NOT NULL DEFAULT '{}',
    source               text NOT NULL CHECK (source IN ('manifest', 'api')),
    -- After downtime: 'none' skips missed ticks; 'latest' runs once for the last one missed.
    catch_up             text NOT NULL DEFAULT 'none' CHECK (catch_up IN ('none', 'latest')),
    next_tick            timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE INDEX crons_due ON crons (next_tick) WHERE next_tick IS NOT NULL;
CREATE INDEX crons_of_workflow ON crons (tenant_id, workflow);

CREATE TABLE cron_ticks (
    tenant_id  uuid NOT NULL,
    cron_id    uuid NOT NULL,
    tick       timestamptz NOT NULL,
    run_id     uuid,
    PRIMARY KEY (tenant_id, cron_id, tick)
);
