-- Memories addressable by a client key: (namespace, key) names at most one memory
-- per tenant, so agent stores (which name an item by a namespace path and a key)
-- can upsert, read and delete it by name.
--
-- The exact-duplicate index gains the key, so two keyed memories with the same
-- text in one namespace are two items; unkeyed memories dedupe exactly as before.

ALTER TABLE memories ADD COLUMN key text;

CREATE UNIQUE INDEX memories_key
    ON memories (tenant_id, namespace, key) NULLS NOT DISTINCT
    WHERE key IS NOT NULL;

DROP INDEX memories_dedupe;
CREATE UNIQUE INDEX memories_dedupe
    ON memories (tenant_id, content_hash, user_id, agent_id, run_id, namespace, key)
    NULLS NOT DISTINCT;

-- namespace listings by prefix
CREATE INDEX memories_tenant_namespace_text
    ON memories (tenant_id, namespace text_pattern_ops) WHERE namespace IS NOT NULL;
