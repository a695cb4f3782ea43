-- The workflow queries, by name; only memory_service/workflows/repository.py reads them.
-- {run_cols} and {step_cols} are the column lists of runs and steps; other {names}
-- are filled per call with psycopg.sql (identifiers and fixed fragments, never data).

-- name: lock_name
SELECT pg_advisory_xact_lock(hashtext(%s));

-- name: get_definition
SELECT id, name, version, definition, created_at, digest FROM workflow_definitions
WHERE tenant_id = %s AND name = %s AND (%s::int IS NULL OR version = %s)
ORDER BY version DESC LIMIT 1;

-- name: insert_definition
INSERT INTO workflow_definitions (tenant_id, name, version, digest, definition)
VALUES (%s, %s, %s, %s, %s) RETURNING id, name, version, definition, created_at, digest;

-- name: definition_by_id
SELECT id, name, version, definition, created_at, digest FROM workflow_definitions
WHERE id = %s;

-- name: list_definitions
SELECT DISTINCT ON (name) id, name, version, definition, created_at, digest
FROM workflow_definitions WHERE tenant_id = %s AND name > %s
ORDER BY name, version DESC LIMIT %s;

-- name: versions
SELECT version, created_at FROM workflow_definitions WHERE tenant_id = %s AND name = %s
ORDER BY version;

-- name: insert_run
INSERT INTO workflow_runs (id, tenant_id, definition_id, workflow, version, input,
    idempotency_key, execution_id, forked_from, fork_step, steps_total)
VALUES (coalesce(%s, gen_random_uuid()), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant_id, workflow, idempotency_key) DO NOTHING RETURNING {run_cols};

-- name: run_by_key
SELECT {run_cols} FROM workflow_runs
WHERE tenant_id = %s AND workflow = %s AND idempotency_key = %s;

-- name: get_run
SELECT {run_cols} FROM workflow_runs WHERE id = %s AND (%s::uuid IS NULL OR tenant_id = %s)
{lock};

-- name: list_runs
SELECT {run_cols} FROM workflow_runs WHERE tenant_id = %s AND seq < %s
AND (%s::text IS NULL OR workflow = %s) AND (%s::text IS NULL OR status = %s)
ORDER BY seq DESC LIMIT %s;

-- name: set_run
UPDATE workflow_runs SET status = %s, output = %s, error = %s, updated_at = clock_timestamp(),
    finished_at = CASE WHEN %s THEN clock_timestamp() END
WHERE id = %s;

-- name: count_completed
UPDATE workflow_runs SET steps_completed = steps_completed + %s,
    updated_at = clock_timestamp()
WHERE id = %s RETURNING steps_completed;

-- name: insert_step
INSERT INTO workflow_steps (tenant_id, run_id, step_id, parent_step, item_index, position,
    kind, queue, status, depends_on, pending_deps, spec, input, output, reused, completed_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
    CASE WHEN %s THEN clock_timestamp() END)
RETURNING {step_cols};

-- name: run_steps
SELECT {step_cols} FROM workflow_steps WHERE run_id = %s
ORDER BY position, item_index NULLS FIRST {lock};

-- name: get_step
SELECT {step_cols} FROM workflow_steps WHERE id = %s {lock};

-- name: update_step
UPDATE workflow_steps SET {sets}, updated_at = clock_timestamp() WHERE id = %s;

-- name: release_dependents
UPDATE workflow_steps SET pending_deps = pending_deps - 1
WHERE run_id = %s AND parent_step IS NULL AND %s = ANY(depends_on)
RETURNING {step_cols};

-- name: outputs
SELECT step_id, output FROM workflow_steps
WHERE run_id = %s AND step_id = ANY(%s) AND status = 'completed';

-- name: sink_outputs
SELECT s.step_id, s.output FROM workflow_steps s
WHERE s.run_id = %s AND s.parent_step IS NULL AND NOT EXISTS (
    SELECT 1 FROM workflow_steps d WHERE d.run_id = s.run_id AND s.step_id = ANY(d.depends_on))
ORDER BY s.position;

-- name: child_outputs
SELECT output FROM workflow_steps WHERE run_id = %s AND parent_step = %s ORDER BY item_index;

-- name: unfinished_children
SELECT count(*) FROM workflow_steps
WHERE run_id = %s AND parent_step = %s AND status <> 'completed';

-- name: step_by_id
SELECT {step_cols} FROM workflow_steps WHERE run_id = %s AND step_id = %s FOR UPDATE;

-- name: claim
WITH picked AS (
    SELECT id FROM workflow_steps
    WHERE status = 'ready' AND {tenant} AND queue = ANY(%(queues)s)
      AND available_at <= clock_timestamp()
    ORDER BY available_at LIMIT %(n)s FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE workflow_steps s SET status = 'running', attempts = s.attempts + 1,
        current_attempt = gen_random_uuid(), updated_at = clock_timestamp(),
        lease_expires_at = least(clock_timestamp() + make_interval(secs => %(lease)s),
            clock_timestamp() + make_interval(secs => (s.spec ->> 'timeout_s')::float8))
    FROM picked WHERE s.id = picked.id
    RETURNING s.*
), attempts AS (
    INSERT INTO workflow_attempts (id, tenant_id, run_id, step_row, number, worker_id,
        lease_token, available_at, deadline_at, lease_expires_at)
    SELECT c.current_attempt, c.tenant_id, c.run_id, c.id, c.attempts, %(worker)s,
        gen_random_uuid(), c.available_at,
        clock_timestamp() + make_interval(secs => (c.spec ->> 'timeout_s')::float8),
        c.lease_expires_at
    FROM claimed c
    RETURNING *
)
SELECT a.id, a.tenant_id, a.run_id, a.step_row, c.step_id, r.workflow, c.kind, c.queue,
    a.number, a.worker_id, a.lease_token, c.input, a.available_at, a.claimed_at,
    a.lease_expires_at, a.deadline_at, r.execution_id
FROM attempts a JOIN claimed c ON c.id = a.step_row JOIN workflow_runs r ON r.id = a.run_id
ORDER BY a.available_at;

-- name: attempt_row
SELECT id, run_id, step_row, status, lease_token, deadline_at, lease_expires_at, worker_id,
    lease_expires_at < clock_timestamp() AS expired
FROM workflow_attempts WHERE id = %s AND (%s::uuid IS NULL OR tenant_id = %s);

-- name: finish_attempt
UPDATE workflow_attempts SET status = %s, error = %s, finished_at = clock_timestamp()
WHERE id = %s AND status = 'running';

-- name: extend_lease
WITH a AS (
    UPDATE workflow_attempts
    SET lease_expires_at = least(clock_timestamp() + make_interval(secs => %s), deadline_at)
    WHERE id = %s RETURNING step_row, lease_expires_at
)
UPDATE workflow_steps s SET lease_expires_at = a.lease_expires_at FROM a
WHERE s.id = a.step_row RETURNING s.lease_expires_at;

-- name: cancel_attempts
UPDATE workflow_attempts SET status = 'cancelled', finished_at = clock_timestamp()
WHERE run_id = %s AND status = 'running';

-- name: due
(SELECT run_id, id, 'timer' FROM workflow_steps
 WHERE status = 'scheduled' AND available_at <= clock_timestamp()
 ORDER BY available_at LIMIT %s)
UNION ALL
(SELECT run_id, id, 'lease' FROM workflow_steps
 WHERE status = 'running' AND lease_expires_at < clock_timestamp()
 ORDER BY lease_expires_at LIMIT %s);

-- name: next_wakeup
SELECT min(t) FROM (
    SELECT min(available_at) FROM workflow_steps WHERE status = 'scheduled'
    UNION ALL SELECT min(lease_expires_at) FROM workflow_steps WHERE status = 'running'
    UNION ALL SELECT min(available_at) FROM workflow_steps
        WHERE status = 'ready' AND queue = '_builtin' AND available_at > clock_timestamp()
) AS w (t);

-- name: lock_timeline
SELECT pg_advisory_xact_lock(hashtext(%s));

-- name: assign_timeline_seq
WITH r AS (
    UPDATE workflow_runs SET timeline_head = timeline_head + 1 WHERE id = %s
    RETURNING timeline_head
)
UPDATE workflow_steps SET timeline_seq = (SELECT timeline_head FROM r) WHERE id = %s
RETURNING timeline_seq;

-- name: unappended
SELECT {step_cols}, timeline_seq FROM workflow_steps
WHERE run_id = %s AND timeline_seq IS NOT NULL AND NOT appended ORDER BY timeline_seq;

-- name: mark_appended
UPDATE workflow_steps SET appended = true WHERE id = ANY(%s::uuid[]);

-- name: close_timeline
UPDATE workflow_runs SET timeline_closed = true WHERE id = %s;

-- name: reopen_timeline
UPDATE workflow_runs SET execution_id = %s, timeline_closed = false WHERE id = %s;

-- name: timelines_behind
(SELECT DISTINCT run_id FROM workflow_steps
 WHERE timeline_seq IS NOT NULL AND NOT appended
   AND (completed_at IS NULL OR completed_at < clock_timestamp() - make_interval(secs => %(grace)s))
 LIMIT %(limit)s)
UNION
(SELECT id FROM workflow_runs
 WHERE status <> 'running' AND NOT timeline_closed AND execution_id IS NOT NULL
   AND (finished_at IS NULL OR finished_at < clock_timestamp() - make_interval(secs => %(grace)s))
 LIMIT %(limit)s);

-- name: insert_signal
INSERT INTO workflow_signals (tenant_id, run_id, name, payload) VALUES (%s, %s, %s, %s);

-- name: first_signal
SELECT payload FROM workflow_signals WHERE run_id = %s AND name = %s ORDER BY seq LIMIT 1;

-- name: waiting_for
SELECT {step_cols} FROM workflow_steps
WHERE run_id = %s AND kind = 'wait_for_signal' AND status = 'scheduled'
  AND input ->> 'signal' = %s
ORDER BY position FOR UPDATE;

-- Completions settled together (memory_service/workflows/completions.py): each
-- statement covers the whole batch, rows named by their primary keys.

-- name: attempt_rows
SELECT w.i, a.id, a.run_id, a.step_row, a.status, a.lease_token, a.worker_id,
    a.lease_expires_at < clock_timestamp() AS expired
FROM unnest(%s::uuid[], %s::uuid[]) WITH ORDINALITY AS w (id, tenant, i)
JOIN workflow_attempts a ON a.id = w.id AND (w.tenant IS NULL OR a.tenant_id = w.tenant);

-- name: lock_runs
SELECT {run_cols} FROM workflow_runs WHERE id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE;

-- name: lock_steps
SELECT {step_cols} FROM workflow_steps WHERE id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE;

-- name: finish_attempts
UPDATE workflow_attempts SET status = 'completed', error = NULL, finished_at = clock_timestamp()
WHERE id = ANY(%s::uuid[]) AND status = 'running';

-- name: complete_steps
UPDATE workflow_steps s SET status = 'completed', output = v.output, error = NULL,
    lease_expires_at = NULL, completed_at = clock_timestamp(), updated_at = clock_timestamp()
FROM unnest(%s::uuid[], %s::jsonb[]) AS v (id, output) WHERE s.id = v.id;

-- name: count_completed_many
UPDATE workflow_runs r SET steps_completed = r.steps_completed + v.n,
    updated_at = clock_timestamp()
FROM unnest(%s::uuid[], %s::int[]) AS v (id, n) WHERE r.id = v.id
RETURNING r.id, r.steps_completed;

-- name: release_dependents_many
WITH done (run_id, step_id) AS (SELECT * FROM unnest(%s::uuid[], %s::text[])),
hits (step_row, n) AS (
    SELECT s.id, count(*) FROM workflow_steps s
    JOIN done d ON s.run_id = d.run_id AND d.step_id = ANY(s.depends_on)
    WHERE s.parent_step IS NULL GROUP BY s.id
)
UPDATE workflow_steps s SET pending_deps = s.pending_deps - hits.n FROM hits
WHERE s.id = hits.step_row RETURNING {step_cols};

-- name: assign_timeline_seqs
WITH v (run_id, step_row, i) AS (
    SELECT * FROM unnest(%s::uuid[], %s::uuid[]) WITH ORDINALITY
), n (run_id, c) AS (
    SELECT run_id, count(*)::int FROM v GROUP BY run_id
), r AS (
    UPDATE workflow_runs w SET timeline_head = w.timeline_head + n.c FROM n
    WHERE w.id = n.run_id RETURNING w.id, w.timeline_head
), seqs (step_row, seq) AS (
    SELECT v.step_row, r.timeline_head - n.c + row_number() OVER (PARTITION BY v.run_id ORDER BY v.i)
    FROM v JOIN r ON r.id = v.run_id JOIN n ON n.run_id = v.run_id
)
UPDATE workflow_steps s SET timeline_seq = seqs.seq FROM seqs WHERE s.id = seqs.step_row
RETURNING s.id, s.timeline_seq;

-- name: outputs_many
SELECT s.run_id, s.step_id, s.output
FROM unnest(%s::uuid[], %s::text[]) AS w (run_id, step_id)
JOIN workflow_steps s ON s.run_id = w.run_id AND s.step_id = w.step_id
WHERE s.status = 'completed';

-- name: make_ready
UPDATE workflow_steps s SET status = 'ready', input = v.input, available_at = clock_timestamp(),
    updated_at = clock_timestamp()
FROM unnest(%s::uuid[], %s::jsonb[]) AS v (id, input) WHERE s.id = v.id;
