-- Executions join the change feed: a serializer (the API's shape of an execution)
-- and its triggers, as for every other type (see 0009_change_feed.sql). Appending a
-- step moves head_seq without a new version, and that is a change clients see too:
-- the feed then carries the same version again, with the new head.

CREATE FUNCTION change_feed_execution(x executions) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', x.id, 'task_id', x.task_id, 'environment_id', x.environment_id,
        'agent_id', x.agent_id, 'metadata', x.metadata, 'status', x.status,
        'parent_id', x.parent_id, 'fork_seq', x.fork_seq, 'head_seq', x.head_seq,
        'created_at', change_feed_time(x.created_at),
        'updated_at', change_feed_time(x.updated_at),
        'ended_at', change_feed_time(x.ended_at), 'version', x.version)
$$;

CREATE CONSTRAINT TRIGGER executions_change_feed AFTER INSERT OR DELETE ON executions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION change_feed_record('execution');
CREATE CONSTRAINT TRIGGER executions_change_feed_update AFTER UPDATE ON executions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.version IS DISTINCT FROM NEW.version OR OLD.head_seq IS DISTINCT FROM NEW.head_seq)
    EXECUTE FUNCTION change_feed_record('execution');
