-- Environments, tasks and the event log.

CREATE TABLE environments (
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    description text,
    config      jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- write-only: the API lists the names, never the values
    secrets     jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_active   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    version     integer NOT NULL DEFAULT 1,
    UNIQUE (tenant_id, name),
    -- lets tasks reference an environment of their own tenant only
    UNIQUE (tenant_id, id)
);

CREATE TABLE tasks (
    seq            bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    title          text NOT NULL,
    description    text,
    status         text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'in_progress', 'completed', 'failed', 'cancelled')),
    priority       text NOT NULL DEFAULT 'medium'
        CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    priority_rank  smallint GENERATED ALWAYS AS (
        CASE priority WHEN 'low' THEN 0 WHEN 'medium' THEN 1 WHEN 'high' THEN 2 ELSE 3 END
    ) STORED,
    environment_id uuid,
    agent_id       text,
    tags           text[] NOT NULL DEFAULT '{}',
    metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at   timestamptz,
    version        integer NOT NULL DEFAULT 1,
    FOREIGN KEY (tenant_id, environment_id) REFERENCES environments (tenant_id, id)
);
CREATE INDEX tasks_tenant_created ON tasks (tenant_id, created_at, seq);
CREATE INDEX tasks_tenant_updated ON tasks (tenant_id, updated_at, seq);
CREATE INDEX tasks_tenant_priority ON tasks (tenant_id, priority_rank, seq);
CREATE INDEX tasks_tenant_status ON tasks (tenant_id, status, seq);
CREATE INDEX tasks_tenant_environment ON tasks (tenant_id, environment_id)
    WHERE environment_id IS NOT NULL;
CREATE INDEX tasks_tags ON tasks USING gin (tags);

-- Event seq is allocated under a per-tenant advisory lock held until commit, so within
-- a tenant seq order is commit order: a reader that has seen seq N never later finds a
-- new row below N (what makes Last-Event-ID resumption and keyset pages exact).
CREATE TABLE events (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type         text NOT NULL,
    severity     smallint NOT NULL CHECK (severity BETWEEN 0 AND 3),
    source       text,
    ts           timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    trace_id     text,
    span_id      text,
    task_id      text,
    execution_id text,
    agent_id     text,
    duration_ms  double precision,
    attributes   jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX events_tenant_seq ON events (tenant_id, seq);
CREATE INDEX events_tenant_type ON events (tenant_id, type text_pattern_ops, seq);
CREATE INDEX events_tenant_task ON events (tenant_id, task_id, seq) WHERE task_id IS NOT NULL;
CREATE INDEX events_tenant_execution ON events (tenant_id, execution_id, seq)
    WHERE execution_id IS NOT NULL;
CREATE INDEX events_tenant_agent ON events (tenant_id, agent_id, seq) WHERE agent_id IS NOT NULL;
CREATE INDEX events_tenant_ts ON events (tenant_id, ts);
-- retention deletes the oldest first, in small batches
CREATE INDEX events_received ON events (received_at);
