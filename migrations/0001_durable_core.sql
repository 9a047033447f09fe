-- The durable core: tenants, modules, versioned workflows, workflow runs and task runs.
--
-- Every row carries tenant_id and every primary key and hot index starts with it, so the
-- tables can be distributed by tenant without redesign. Statuses are text with CHECKs: they
-- read well in psql and cost nothing next to the commit.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Until tokens exist (the API issue), everything belongs to this tenant.
INSERT INTO tenants (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'default');

CREATE TABLE modules (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    digest      text NOT NULL,
    bytes       bytea NOT NULL,
    manifest    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, digest)
);

-- A new upload of a module declaring workflow W adds version max + 1; runs keep the version
-- (and module) they started with.
CREATE TABLE workflows (
    tenant_id      uuid NOT NULL,
    name           text NOT NULL,
    version        integer NOT NULL,
    module_digest  text NOT NULL,
    definition     jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name, version),
    FOREIGN KEY (tenant_id, module_digest) REFERENCES modules (tenant_id, digest)
);

CREATE TABLE workflow_runs (
    tenant_id            uuid NOT NULL REFERENCES tenants (id),
    id                   uuid NOT NULL,
    workflow             text NOT NULL,
    version              integer NOT NULL,
    module_digest        text NOT NULL,
    status               text NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    input                jsonb NOT NULL,
    output               jsonb,
    error                text,
    additional_metadata  jsonb NOT NULL DEFAULT '{}',
    priority             smallint NOT NULL CHECK (priority BETWEEN 1 AND 3),
    idempotency_key      text,
    parent_task_run_id   uuid,
    spawn_key            text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE UNIQUE INDEX workflow_runs_idempotency
    ON workflow_runs (tenant_id, workflow, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX workflow_runs_spawned
    ON workflow_runs (tenant_id, parent_task_run_id, spawn_key) WHERE parent_task_run_id IS NOT NULL;
CREATE INDEX workflow_runs_newest ON workflow_runs (tenant_id, created_at DESC, id DESC);

CREATE TABLE task_runs (
    tenant_id             uuid NOT NULL,
    id                    uuid NOT NULL,
    workflow_run_id       uuid NOT NULL,
    workflow              text NOT NULL,
    task                  text NOT NULL,
    module_digest         text NOT NULL,
    parents               text[] NOT NULL DEFAULT '{}',
    -- Parents not yet succeeded; the task is queued when this reaches 0.
    pending_parents       integer NOT NULL DEFAULT 0,
    -- The workflow's on-failure task: pending until the run fails.
    is_on_failure         boolean NOT NULL DEFAULT false,
    status                text NOT NULL
        CHECK (status IN ('pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority              smallint NOT NULL,
    -- Input of this task when it differs from the run's (the on-failure task's).
    input                 jsonb,
    -- Attempts started; also the attempt number of the current one.
    attempt               integer NOT NULL DEFAULT 0,
    -- Failed attempts, which consume retries. Lost leases and hand-backs do not.
    failures              integer NOT NULL DEFAULT 0,
    lost_leases           integer NOT NULL DEFAULT 0,
    retries               integer NOT NULL DEFAULT 0,
    backoff_factor        double precision,
    backoff_max_seconds   integer,
    execution_timeout_ms  bigint NOT NULL,
    schedule_timeout_ms   bigint NOT NULL,
    available_at          timestamptz NOT NULL DEFAULT now(),
    schedule_deadline     timestamptz,
    lease_owner           uuid,
    lease_token           bigint,
    lease_expires_at      timestamptz,
    output                jsonb,
    error                 text,
    error_code            text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    finished_at           timestamptz,
    PRIMARY KEY (tenant_id, id)
);

-- The hot claim: per tenant, highest priority first, then oldest.
CREATE INDEX task_runs_ready
    ON task_runs (tenant_id, priority DESC, available_at, id) WHERE status = 'queued';
CREATE INDEX task_runs_of_run ON task_runs (tenant_id, workflow_run_id);
CREATE INDEX task_runs_leases ON task_runs (lease_expires_at) WHERE status = 'running';
CREATE INDEX task_runs_schedule ON task_runs (schedule_deadline) WHERE status = 'queued';

-- Fencing tokens: each claim gets a new one; only its holder may complete the attempt.
CREATE SEQUENCE lease_tokens;

CREATE TABLE task_run_logs (
    tenant_id    uuid NOT NULL,
    task_run_id  uuid NOT NULL,
    attempt      integer NOT NULL,
    seq          integer NOT NULL,
    at           timestamptz NOT NULL,
    level        text NOT NULL,
    message      text NOT NULL,
    PRIMARY KEY (tenant_id, task_run_id, attempt, seq)
);
