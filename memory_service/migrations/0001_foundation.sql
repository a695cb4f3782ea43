-- Tenants, API keys, memories with embeddings, and memory history.
-- __EMBEDDING_DIM__ is replaced by the model's dimension (a validated integer).

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE service_state (
    name  text PRIMARY KEY,
    value text NOT NULL
);
-- the key that signs pagination cursors, shared by every process on this database
INSERT INTO service_state (name, value)
VALUES ('cursor_key', replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
INSERT INTO service_state (name, value) VALUES ('embedding_dim', '__EMBEDDING_DIM__');

CREATE TABLE tenants (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    prefix     text PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash   bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE memories (
    seq          bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    content      text NOT NULL,
    content_hash bytea NOT NULL,
    user_id      text,
    agent_id     text,
    run_id       text,
    namespace    text,
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    importance   real NOT NULL DEFAULT 0.5 CHECK (importance >= 0 AND importance <= 1),
    embedding    vector(__EMBEDDING_DIM__) NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    version      integer NOT NULL DEFAULT 1
);

-- one live copy of a content per tenant and scope (exact-duplicate detection)
CREATE UNIQUE INDEX memories_dedupe
    ON memories (tenant_id, content_hash, user_id, agent_id, run_id, namespace) NULLS NOT DISTINCT;
-- keyset pagination and scope filters
CREATE INDEX memories_tenant_seq ON memories (tenant_id, seq);
CREATE INDEX memories_tenant_user ON memories (tenant_id, user_id, seq);
CREATE INDEX memories_tenant_agent ON memories (tenant_id, agent_id, seq);
CREATE INDEX memories_tenant_run ON memories (tenant_id, run_id, seq);
CREATE INDEX memories_tenant_namespace ON memories (tenant_id, namespace, seq);
CREATE INDEX memories_metadata ON memories USING gin (metadata jsonb_path_ops);
CREATE INDEX memories_expires ON memories (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX memories_embedding_hnsw
    ON memories USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);

CREATE TABLE memory_history (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    memory_id    uuid NOT NULL,
    event        text NOT NULL CHECK (event IN ('ADD', 'UPDATE', 'DELETE')),
    old_content  text,
    new_content  text,
    old_metadata jsonb,
    new_metadata jsonb,
    version      integer NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX memory_history_memory ON memory_history (tenant_id, memory_id, id);

-- History is written by a trigger so that every writer (single, batch, scope delete)
-- records it in the same transaction as the change itself.
CREATE FUNCTION memory_history_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO memory_history (tenant_id, memory_id, event, new_content, new_metadata, version)
        VALUES (NEW.tenant_id, NEW.id, 'ADD', NEW.content, NEW.metadata, NEW.version);
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NEW.version <> OLD.version THEN
            INSERT INTO memory_history
                (tenant_id, memory_id, event, old_content, new_content, old_metadata, new_metadata, version)
            VALUES (NEW.tenant_id, NEW.id, 'UPDATE', OLD.content, NEW.content, OLD.metadata,
                    NEW.metadata, NEW.version);
        END IF;
        RETURN NEW;
    ELSE
        INSERT INTO memory_history (tenant_id, memory_id, event, old_content, old_metadata, version)
        VALUES (OLD.tenant_id, OLD.id, 'DELETE', OLD.content, OLD.metadata, OLD.version + 1);
        RETURN OLD;
    END IF;
END;
$$;

CREATE TRIGGER memories_history
    AFTER INSERT OR UPDATE OR DELETE ON memories
    FOR EACH ROW EXECUTE FUNCTION memory_history_record();
