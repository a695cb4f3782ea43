-- The change feed: one log of every change to a tenant's memories, tasks and
-- environments, read by clients that keep a copy (GET /v1/changes, the SSE stream,
-- the client replica).
--
-- Commit order, not insert order. A change row is written by a DEFERRED constraint
-- trigger, so it is inserted at COMMIT time, and ``change_feed_append`` first takes a
-- per-tenant transaction advisory lock that is released only once the commit is
-- visible. Within a tenant the next seq is therefore drawn only after every earlier
-- one has committed: a reader that has seen seq N never later finds a new row below
-- N, and a cursor is just the last seq delivered. The lock is held for the moment of
-- the commit only, never while a writer computes or waits on anything else.
--
-- Adding an entity type is a serializer (``change_feed_<type>(row) -> jsonb``, the
-- API's shape of the entity, used by the triggers and by snapshots) and a trigger.

CREATE TABLE changes (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    entity_type text NOT NULL,
    entity_id   uuid NOT NULL,
    version     integer NOT NULL,
    op          text NOT NULL CHECK (op IN ('upsert', 'delete')),
    body        jsonb,  -- the entity as of this change; NULL for a tombstone
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX changes_tenant_seq ON changes (tenant_id, seq);
CREATE INDEX changes_at ON changes (at);

-- per tenant, the highest seq that retention removed: an older cursor answers 410
CREATE TABLE changes_pruned (
    tenant_id uuid PRIMARY KEY,
    through   bigint NOT NULL
);

CREATE FUNCTION change_feed_append(
    p_tenant uuid, p_type text, p_id uuid, p_version integer, p_op text, p_body jsonb
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(9009, hashtext(p_tenant::text));
    INSERT INTO changes (tenant_id, entity_type, entity_id, version, op, body)
    VALUES (p_tenant, p_type, p_id, p_version, p_op, p_body);
    -- delivered on commit; repeated payloads in one transaction are sent once
    PERFORM pg_notify('change_feed', p_tenant::text);
END;
$$;

-- serializers: the public shape of each entity (never an environment's secret values),
-- with timestamps written as the API writes them

CREATE FUNCTION change_feed_time(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE FUNCTION change_feed_memory(m memories) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', m.id, 'content', m.content, 'user_id', m.user_id, 'agent_id', m.agent_id,
        'run_id', m.run_id, 'namespace', m.namespace, 'metadata', m.metadata,
        'importance', round(m.importance::numeric, 6),
        'created_at', change_feed_time(m.created_at),
        'updated_at', change_feed_time(m.updated_at),
        'expires_at', change_feed_time(m.expires_at), 'version', m.version)
$$;

CREATE FUNCTION change_feed_task(t tasks) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', t.id, 'title', t.title, 'description', t.description, 'status', t.status,
        'priority', t.priority, 'environment_id', t.environment_id, 'agent_id', t.agent_id,
        'tags', to_jsonb(t.tags), 'metadata', t.metadata,
        'created_at', change_feed_time(t.created_at),
        'updated_at', change_feed_time(t.updated_at),
        'completed_at', change_feed_time(t.completed_at), 'version', t.version)
$$;

CREATE FUNCTION change_feed_environment(e environments) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', e.id, 'name', e.name, 'description', e.description, 'config', e.config,
        'secrets', (SELECT coalesce(jsonb_agg(k ORDER BY k), '[]'::jsonb)
                    FROM jsonb_object_keys(e.secrets) AS k),
        'is_active', e.is_active, 'created_at', change_feed_time(e.created_at),
        'updated_at', change_feed_time(e.updated_at),
        'version', e.version)
$$;

-- triggers: TG_ARGV[0] names the type; its serializer is change_feed_<type>

CREATE FUNCTION change_feed_record() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    body jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- a tombstone takes the next version, as memory history does
        PERFORM change_feed_append(OLD.tenant_id, TG_ARGV[0], OLD.id, OLD.version + 1,
                                   'delete', NULL);
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT %I($1)', 'change_feed_' || TG_ARGV[0]) INTO body USING NEW;
    PERFORM change_feed_append(NEW.tenant_id, TG_ARGV[0], NEW.id, NEW.version, 'upsert', body);
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER memories_change_feed AFTER INSERT OR DELETE ON memories
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION change_feed_record('memory');
CREATE CONSTRAINT TRIGGER memories_change_feed_update AFTER UPDATE ON memories
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION change_feed_record('memory');

CREATE CONSTRAINT TRIGGER tasks_change_feed AFTER INSERT OR DELETE ON tasks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION change_feed_record('task');
CREATE CONSTRAINT TRIGGER tasks_change_feed_update AFTER UPDATE ON tasks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION change_feed_record('task');

CREATE CONSTRAINT TRIGGER environments_change_feed AFTER INSERT OR DELETE ON environments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION change_feed_record('environment');
CREATE CONSTRAINT TRIGGER environments_change_feed_update AFTER UPDATE ON environments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION change_feed_record('environment');
