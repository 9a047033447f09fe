-- Events: each pushed event is stored with the runs it started, in the same transaction, so
-- an acknowledged event never loses its runs; an idempotency key starts them once.

CREATE TABLE events (
    tenant_id            uuid NOT NULL REFERENCES tenants (id),
    id                   uuid NOT NULL,
    key                  text NOT NULL,
    payload              jsonb NOT NULL,
    additional_metadata  jsonb NOT NULL DEFAULT '{}',
    scope                text,
    idempotency_key      text,
    run_ids              uuid[] NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE UNIQUE INDEX events_idempotency
    ON events (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_newest ON events (tenant_id, created_at DESC, id DESC);
CREATE INDEX events_of_key ON events (tenant_id, key, created_at DESC, id DESC);

-- A workflow with filters is started by an event only if one of them (that applies to the
-- event's scope) is true.
CREATE TABLE event_filters (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    workflow    text NOT NULL,
    expression  text NOT NULL,
    scope       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE INDEX event_filters_of_workflow ON event_filters (tenant_id, workflow);
