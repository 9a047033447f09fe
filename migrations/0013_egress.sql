-- Outbound HTTP allowlists: the admin sets each tenant's ceiling, the tenant its allowlist
-- within it (JSON arrays of patterns, see host/src/egress.rs). Both empty: no outbound HTTP.
-- Constant defaults: adding the columns rewrites nothing.

ALTER TABLE tenants
    ADD COLUMN egress_ceiling jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN egress_allow jsonb NOT NULL DEFAULT '[]';
