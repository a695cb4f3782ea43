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

-- Event numbers per tenant. events.seq is global, so a tenant watching its own
-- sequence numbers could read the activity rate of everyone else. Each tenant's
-- events are numbered 1, 2, 3, ... in commit order (inserts of one tenant already
-- serialise on an advisory lock); the API shows only this number.
CREATE TABLE event_numbers (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    last      bigint NOT NULL
);
ALTER TABLE events ADD COLUMN number bigint;
UPDATE events e SET number = n.rn
  FROM (SELECT seq, row_number() OVER (PARTITION BY tenant_id ORDER BY seq) AS rn FROM events) n
 WHERE e.seq = n.seq;
INSERT INTO event_numbers (tenant_id, last)
SELECT tenant_id, max(number) FROM events GROUP BY tenant_id;
ALTER TABLE events ALTER COLUMN number SET NOT NULL;
CREATE UNIQUE INDEX events_tenant_number ON events (tenant_id, number);

-- Exact duplicates compare metadata as well (0008), also with the client keys of
-- 0011: the same text sent under another session id is a new memory.
DROP INDEX IF EXISTS memories_dedupe;
CREATE UNIQUE INDEX memories_dedupe
    ON memories (tenant_id, content_hash, user_id, agent_id, run_id, namespace, key,
                 md5(metadata::text)) NULLS NOT DISTINCT;
