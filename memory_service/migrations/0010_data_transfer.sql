-- Migration jobs that bring data in from the platform's browser storage.
--
-- A job is a row that outlives the process running it: its status, counts and
-- errors are what GET /v1/migrations/{id} shows. Every row a job wrote is listed
-- in migration_job_rows, with a copy of the row as it was before when the job
-- overwrote it, so a rollback removes exactly what the job created and restores
-- exactly what it overwrote. migration_sources remembers, per tenant, which
-- browser id became which row, so a second run of the same file creates nothing.

CREATE TABLE migration_jobs (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    status      text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'rolled_back')),
    total       jsonb NOT NULL DEFAULT '{}'::jsonb,
    done        jsonb NOT NULL DEFAULT '{}'::jsonb,
    outcome     jsonb NOT NULL DEFAULT '{}'::jsonb,
    errors      jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
CREATE INDEX migration_jobs_tenant ON migration_jobs (tenant_id, created_at);
CREATE INDEX migration_jobs_unfinished ON migration_jobs (status)
    WHERE status IN ('pending', 'running');

CREATE TABLE migration_job_rows (
    job_id    uuid NOT NULL REFERENCES migration_jobs (id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL,
    entity    text NOT NULL CHECK (entity IN ('environment', 'task', 'memory')),
    row_id    uuid NOT NULL,
    action    text NOT NULL CHECK (action IN ('created', 'overwritten')),
    -- the whole row before the job overwrote it (NULL for a created row)
    backup    jsonb,
    -- the source-id mapping as it was before this job (NULL: there was none)
    source_before jsonb,
    PRIMARY KEY (job_id, entity, row_id)
);

CREATE TABLE migration_sources (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    entity      text NOT NULL CHECK (entity IN ('environment', 'task', 'memory')),
    source_id   text NOT NULL,
    row_id      uuid NOT NULL,
    -- hash of the browser item as last migrated: an unchanged item is skipped
    source_hash bytea NOT NULL,
    job_id      uuid NOT NULL REFERENCES migration_jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (tenant_id, entity, source_id)
);
CREATE INDEX migration_sources_job ON migration_sources (job_id);
