-- Exact duplicates are the same normalised content in the same scope AND with the
-- same metadata: the same text sent under another session id is a new memory.
-- jsonb's text form is canonical (sorted keys, no insignificant whitespace).
DROP INDEX IF EXISTS memories_dedupe;
CREATE UNIQUE INDEX memories_dedupe
    ON memories (tenant_id, content_hash, user_id, agent_id, run_id, namespace,
                 md5(metadata::text)) NULLS NOT DISTINCT;
