-- Secrets of tenants' tasks, encrypted (XChaCha20-Poly1305, key from the nodes'
-- HATCHERY_SECRET_KEY, bound to tenant and name): the database never holds a value in clear.
-- `workflows` NULL: every workflow of the tenant may read the secret.

CREATE TABLE secrets (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    name        text NOT NULL,
    nonce       bytea NOT NULL,
    ciphertext  bytea NOT NULL,
    workflows   text[],
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
