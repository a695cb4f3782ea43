-- Durable workflows: versioned definitions, runs, step states, attempts with lease
-- tokens, and signals. Every transition of a run is one transaction over these rows;
-- the ready steps of `workflow_steps` are the queue that workers claim with
-- FOR UPDATE SKIP LOCKED, and durable timers are rows whose available_at lies ahead.

CREATE TABLE workflow_definitions (
    seq        bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL,
    version    integer NOT NULL CHECK (version >= 1),
    digest     text NOT NULL,
    definition jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (tenant_id, name, version)
);

CREATE TABLE workflow_runs (
    seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    definition_id   uuid NOT NULL REFERENCES workflow_definitions (id),
    workflow        text NOT NULL,
    version         integer NOT NULL,
    status          text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    input           jsonb NOT NULL,
    output          jsonb,
    error           text,
    idempotency_key text,
    forked_from     uuid REFERENCES workflow_runs (id) ON DELETE SET NULL,
    fork_step       text,
    -- the run's execution: each completed step is appended to it as one step, in the
    -- order timeline_seq gives (assigned at completion, appended after commit)
    execution_id    uuid,
    timeline_head   integer NOT NULL DEFAULT 0,
    timeline_closed boolean NOT NULL DEFAULT false,
    steps_total     integer NOT NULL,
    steps_completed integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz,
    UNIQUE (tenant_id, workflow, idempotency_key)
);
CREATE INDEX workflow_runs_tenant_seq ON workflow_runs (tenant_id, seq);
CREATE INDEX workflow_runs_tenant_workflow ON workflow_runs (tenant_id, workflow, seq);
CREATE INDEX workflow_runs_timeline_open ON workflow_runs (id)
    WHERE status <> 'running' AND NOT timeline_closed AND execution_id IS NOT NULL;

-- One row per step of a run; a map step's children are rows too (parent_step set).
CREATE TABLE workflow_steps (
    seq              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    run_id           uuid NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step_id          text NOT NULL,
    parent_step      text,
    item_index       integer,
    position         integer NOT NULL,
    kind             text NOT NULL,
    queue            text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'ready', 'running', 'scheduled', 'completed', 'failed',
                          'cancelled')),
    depends_on       text[] NOT NULL DEFAULT '{}',
    pending_deps     integer NOT NULL DEFAULT 0,
    children_left    integer,
    spec             jsonb NOT NULL,
    input            jsonb,
    output           jsonb,
    error            text,
    attempts         integer NOT NULL DEFAULT 0,
    -- attempts made before the run was last retried; the retry budget counts from here
    retry_base       integer NOT NULL DEFAULT 0,
    available_at     timestamptz,
    current_attempt  uuid,
    lease_expires_at timestamptz,
    reused           boolean NOT NULL DEFAULT false,
    timeline_seq     integer,
    appended         boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at     timestamptz,
    UNIQUE (run_id, step_id)
);
-- the queues: a worker claims its tenant's ready steps, the driver the built-in queue
CREATE INDEX workflow_steps_ready_tenant ON workflow_steps (tenant_id, queue, available_at)
    WHERE status = 'ready';
CREATE INDEX workflow_steps_ready_queue ON workflow_steps (queue, available_at)
    WHERE status = 'ready';
CREATE INDEX workflow_steps_timers ON workflow_steps (available_at) WHERE status = 'scheduled';
CREATE INDEX workflow_steps_unappended ON workflow_steps (run_id, timeline_seq)
    WHERE timeline_seq IS NOT NULL AND NOT appended;
CREATE INDEX workflow_steps_leases ON workflow_steps (lease_expires_at) WHERE status = 'running';

CREATE TABLE workflow_attempts (
    seq              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    run_id           uuid NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step_row         uuid NOT NULL REFERENCES workflow_steps (id) ON DELETE CASCADE,
    number           integer NOT NULL,
    worker_id        text NOT NULL,
    lease_token      uuid NOT NULL,
    status           text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'completed', 'failed', 'expired', 'cancelled')),
    error            text,
    available_at     timestamptz NOT NULL,
    claimed_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    deadline_at      timestamptz,
    lease_expires_at timestamptz NOT NULL,
    finished_at      timestamptz,
    UNIQUE (step_row, number)
);
-- the database itself refuses a second recorded output for one step
CREATE UNIQUE INDEX workflow_attempts_one_output ON workflow_attempts (step_row)
    WHERE status = 'completed';
CREATE INDEX workflow_attempts_run ON workflow_attempts (run_id, seq);

CREATE TABLE workflow_signals (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    run_id     uuid NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    name       text NOT NULL,
    payload    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX workflow_signals_run ON workflow_signals (run_id, name, seq);

-- progress events carry the run id in their attributes; streams filter on it
CREATE INDEX events_tenant_workflow_run
    ON events (tenant_id, (attributes ->> 'workflow_run_id'), seq)
    WHERE (attributes ->> 'workflow_run_id') IS NOT NULL;
