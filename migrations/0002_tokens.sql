-- API tokens, and the indexes the HTTP API's run lists need.
--
-- A token is shown once when created; only its sha256 is stored. The admin token comes from the
-- node's configuration and is never stored. Looking a token up by hash (to learn its tenant)
-- and revoking one by id are the only statements that do not start from a tenant id.

CREATE TABLE tokens (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    name        text NOT NULL DEFAULT '',
    hash        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE UNIQUE INDEX tokens_hash ON tokens (hash);
CREATE UNIQUE INDEX tokens_id ON tokens (id);

-- `GET /api/v1/runs?workflow=`: newest first within one workflow.
CREATE INDEX workflow_runs_of_workflow
    ON workflow_runs (tenant_id, workflow, created_at DESC, id DESC);
