-- Agent executions with their step history, named checkpoints, and the versions of
-- memories that answer reads "as of" a past moment.

-- An execution is a run of an agent. A fork names its parent and the parent's step it
-- continues from (fork_seq); it shares the parent's steps up to that seq by reference,
-- so its own step rows start at fork_seq + 1. head_seq is the last step seq (inherited
-- steps included) and keyframe_seq the last step at or before it that holds a full state.
CREATE TABLE executions (
    seq            bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    task_id        uuid,
    environment_id uuid,
    agent_id       text,
    metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
    status         text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    parent_id      uuid,
    fork_seq       integer CHECK (fork_seq >= 0),
    head_seq       integer NOT NULL DEFAULT 0 CHECK (head_seq >= 0),
    keyframe_seq   integer NOT NULL DEFAULT 0 CHECK (keyframe_seq >= 0),
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at       timestamptz,
    version        integer NOT NULL DEFAULT 1,
    UNIQUE (tenant_id, id),
    -- a fork's parent belongs to the same tenant
    FOREIGN KEY (tenant_id, parent_id) REFERENCES executions (tenant_id, id),
    CHECK ((parent_id IS NULL) = (fork_seq IS NULL))
);
CREATE INDEX executions_tenant_created ON executions (tenant_id, created_at, seq);
CREATE INDEX executions_tenant_seq ON executions (tenant_id, seq);
CREATE INDEX executions_tenant_task ON executions (tenant_id, task_id, seq)
    WHERE task_id IS NOT NULL;
CREATE INDEX executions_tenant_agent ON executions (tenant_id, agent_id, seq)
    WHERE agent_id IS NOT NULL;
CREATE INDEX executions_parent ON executions (parent_id) WHERE parent_id IS NOT NULL;

-- Append-only steps. Exactly one of state (a keyframe) and state_patch (RFC 6902
-- against the state of step seq - 1 of the same lineage) is set. state_size is the
-- byte length of the full state as JSON; changed_paths the number of patch operations
-- from the previous state. parent_seq is the step this one continues from (seq - 1
-- unless a client recorded otherwise, as a graph checkpointer does).
CREATE TABLE execution_steps (
    execution_id  uuid NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    seq           integer NOT NULL CHECK (seq >= 1),
    tenant_id     uuid NOT NULL,
    kind          text NOT NULL,
    name          text,
    input         jsonb,
    output        jsonb,
    error         jsonb,
    metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
    parent_seq    integer,
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    state         json,
    state_patch   json,
    state_size    integer NOT NULL,
    changed_paths integer NOT NULL,
    PRIMARY KEY (execution_id, seq),
    CHECK ((state IS NULL) <> (state_patch IS NULL))
);
CREATE INDEX execution_steps_keyframes ON execution_steps (execution_id, seq)
    WHERE state IS NOT NULL;

CREATE TABLE execution_checkpoints (
    execution_id uuid NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    label        text NOT NULL,
    tenant_id    uuid NOT NULL,
    seq          integer NOT NULL CHECK (seq >= 1),
    note         text,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (execution_id, label)
);

-- Every version a memory has had, with its embedding, valid from one change to the next.
-- A write stamps its transaction time (now()), the same clock as the memory's own
-- created_at and updated_at, so "as of updated_at" finds the version that write made.
CREATE TABLE memory_versions (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    memory_id  uuid NOT NULL,
    version    integer NOT NULL,
    memory_seq bigint NOT NULL,
    content    text NOT NULL,
    user_id    text,
    agent_id   text,
    run_id     text,
    namespace  text,
    metadata   jsonb NOT NULL,
    importance real NOT NULL,
    embedding  vector(__EMBEDDING_DIM__) NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    expires_at timestamptz,
    valid_from timestamptz NOT NULL,
    valid_to   timestamptz,
    PRIMARY KEY (memory_id, version)
);
CREATE INDEX memory_versions_tenant_time ON memory_versions (tenant_id, valid_from, memory_seq);

CREATE FUNCTION memory_versions_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE memory_versions SET valid_to = now()
        WHERE memory_id = OLD.id AND version = OLD.version AND valid_to IS NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    INSERT INTO memory_versions
        (tenant_id, memory_id, version, memory_seq, content, user_id, agent_id, run_id,
         namespace, metadata, importance, embedding, created_at, updated_at, expires_at,
         valid_from)
    VALUES (NEW.tenant_id, NEW.id, NEW.version, NEW.seq, NEW.content, NEW.user_id,
            NEW.agent_id, NEW.run_id, NEW.namespace, NEW.metadata, NEW.importance,
            NEW.embedding, NEW.created_at, NEW.updated_at, NEW.expires_at, now())
    ON CONFLICT (memory_id, version) DO UPDATE SET
        content = EXCLUDED.content, metadata = EXCLUDED.metadata,
        importance = EXCLUDED.importance, embedding = EXCLUDED.embedding,
        updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at, valid_to = NULL;
    RETURN NEW;
END;
$$;

-- an update that keeps the version (none today) rewrites that version's row in place
CREATE TRIGGER memories_versions
    AFTER INSERT OR UPDATE OR DELETE ON memories
    FOR EACH ROW EXECUTE FUNCTION memory_versions_record();

-- memories stored before versions were kept start their history now
INSERT INTO memory_versions
    (tenant_id, memory_id, version, memory_seq, content, user_id, agent_id, run_id,
     namespace, metadata, importance, embedding, created_at, updated_at, expires_at, valid_from)
SELECT tenant_id, id, version, seq, content, user_id, agent_id, run_id, namespace, metadata,
       importance, embedding, created_at, updated_at, expires_at, updated_at
FROM memories;
