-- New memories are recorded once per statement, not once per row.
--
-- Every memory inserted is also written to memory_history ('ADD'), memory_versions
-- (its first version) and memory_changes (the log the in-process indexes follow),
-- and queued for the change feed. Row triggers did the first three with a PL/pgSQL
-- call and an INSERT each per row, and the change feed's trigger looked up its
-- serializer with a dynamic EXECUTE, parsed and planned anew for every row: together
-- more than half of what a batch of 1,000 short memories cost the database.
--
-- An insert now fires one statement-level trigger whose transition table holds the
-- rows really inserted (not those skipped as duplicates): three INSERT ... SELECT and
-- one notification per tenant. Updates and deletes keep their row triggers (a
-- transition table cannot go with a column list or with several events). The change
-- feed's trigger stays a deferred row trigger, which its commit-order guarantee needs
-- (see 0009_change_feed.sql), and calls the serializer of its type directly.

DROP TRIGGER memories_history ON memories;
CREATE TRIGGER memories_history
    AFTER UPDATE OR DELETE ON memories
    FOR EACH ROW EXECUTE FUNCTION memory_history_record();

DROP TRIGGER memories_versions ON memories;
CREATE TRIGGER memories_versions
    AFTER DELETE ON memories
    FOR EACH ROW EXECUTE FUNCTION memory_versions_record();

DROP TRIGGER memories_changes ON memories;
CREATE TRIGGER memories_changes
    AFTER DELETE OR UPDATE OF embedding ON memories
    FOR EACH ROW EXECUTE FUNCTION memory_changes_record();

CREATE FUNCTION memories_record_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO memory_history (tenant_id, memory_id, event, new_content, new_metadata, version)
    SELECT tenant_id, id, 'ADD', content, metadata, version FROM inserted ORDER BY seq;

    INSERT INTO memory_versions
        (tenant_id, memory_id, version, memory_seq, content, user_id, agent_id, run_id,
         namespace, metadata, importance, embedding, created_at, updated_at, expires_at,
         valid_from)
    SELECT tenant_id, id, version, seq, content, user_id, agent_id, run_id, namespace,
           metadata, importance, embedding, created_at, updated_at, expires_at, now()
    FROM inserted ORDER BY seq
    ON CONFLICT (memory_id, version) DO UPDATE SET
        content = EXCLUDED.content, metadata = EXCLUDED.metadata,
        importance = EXCLUDED.importance, embedding = EXCLUDED.embedding,
        updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at, valid_to = NULL;

    INSERT INTO memory_changes (tenant_id, memory_id, memory_seq, op)
    SELECT tenant_id, id, seq, 'upsert' FROM inserted ORDER BY seq;
    PERFORM pg_notify('memory_changes', tenant::text)
    FROM (SELECT DISTINCT tenant_id AS tenant FROM inserted) AS tenants;
    RETURN NULL;
END;
$$;

CREATE TRIGGER memories_record_inserted
    AFTER INSERT ON memories REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION memories_record_inserted();

-- each branch is planned the first time a table's trigger takes it, and only then
CREATE OR REPLACE FUNCTION change_feed_record() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    body jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- a tombstone takes the next version, as memory history does
        PERFORM change_feed_append(OLD.tenant_id, TG_ARGV[0], OLD.id, OLD.version + 1,
                                   'delete', NULL);
        RETURN NULL;
    END IF;
    IF TG_ARGV[0] = 'memory' THEN
        body := change_feed_memory(NEW);
    ELSIF TG_ARGV[0] = 'task' THEN
        body := change_feed_task(NEW);
    ELSIF TG_ARGV[0] = 'environment' THEN
        body := change_feed_environment(NEW);
    ELSIF TG_ARGV[0] = 'execution' THEN
        body := change_feed_execution(NEW);
    ELSE
        EXECUTE format('SELECT %I($1)', 'change_feed_' || TG_ARGV[0]) INTO body USING NEW;
    END IF;
    PERFORM change_feed_append(NEW.tenant_id, TG_ARGV[0], NEW.id, NEW.version, 'upsert', body);
    RETURN NULL;
END;
$$;
