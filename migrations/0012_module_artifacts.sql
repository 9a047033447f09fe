-- Compiled components shared between nodes: the node that takes an upload compiles it anyway
-- (to read its manifest) and stores the artifact, sealed with the nodes' key, so other nodes
-- load it in milliseconds instead of compiling for seconds. Keyed by the engine fingerprint:
-- a node of another wasmtime build or configuration finds nothing and compiles.

CREATE TABLE module_artifacts (
    tenant_id   uuid NOT NULL,
    digest      text NOT NULL,
    engine      text NOT NULL,
    sealed      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, digest, engine),
    FOREIGN KEY (tenant_id, digest) REFERENCES modules (tenant_id, digest) ON DELETE CASCADE
);

-- Machine code barely compresses: store it out of line without trying.
ALTER TABLE module_artifacts ALTER COLUMN sealed SET STORAGE EXTERNAL;
