-- Erasure (?purge=true) removes a memory's history rows with the memory itself.
-- What stays is only that an erasure happened: when, for which tenant, how many
-- memories, and whether by id or by scope. No content, metadata or ids.
CREATE TABLE erasure_audit (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind      text NOT NULL CHECK (kind IN ('memory', 'scope')),
    memories  integer NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX erasure_audit_tenant ON erasure_audit (tenant_id, at);
