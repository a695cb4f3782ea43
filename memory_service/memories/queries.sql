-- The longer statements of memories.repository, by name. Each is a
-- psycopg.sql template: {braces} are filled with composed SQL (columns, the
-- tenant/scope/filter clause), %s are bind parameters, {{ }} are literal braces.

-- name: insert
-- A live duplicate (same content hash, scope, key and metadata) makes the row come back empty.
INSERT INTO memories AS m (tenant_id, content, content_hash, user_id, agent_id, run_id,
    namespace, metadata, importance, embedding, expires_at, context, key, indexed)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant_id, content_hash, user_id, agent_id, run_id, namespace, key,
    md5(metadata::text)) DO NOTHING
RETURNING {cols}

-- name: insert_staged
-- The staged batch in its order: a live duplicate, or an earlier copy in the same
-- batch, makes the row absent from what comes back (as one insert per row would).
INSERT INTO memories AS m (id, tenant_id, content, content_hash, user_id, agent_id, run_id,
    namespace, metadata, importance, embedding, expires_at, context, key, indexed)
SELECT s.id, %s, s.content, s.content_hash, s.user_id, s.agent_id, s.run_id, s.namespace,
    s.metadata, s.importance, s.embedding, s.expires_at, s.context, s.key, %s
FROM memories_staging s ORDER BY s.ord
ON CONFLICT (tenant_id, content_hash, user_id, agent_id, run_id, namespace, key,
    md5(metadata::text)) DO NOTHING
RETURNING {cols}

-- name: find_duplicate
SELECT {cols} FROM memories m WHERE m.tenant_id = %s AND m.content_hash = %s
  AND m.user_id IS NOT DISTINCT FROM %s AND m.agent_id IS NOT DISTINCT FROM %s
  AND m.run_id IS NOT DISTINCT FROM %s AND m.namespace IS NOT DISTINCT FROM %s
  AND m.key IS NULL AND md5(m.metadata::text) = md5(%s::jsonb::text)

-- name: update
UPDATE memories AS m SET {sets}, version = m.version + 1, updated_at = now()
WHERE m.tenant_id = %s AND m.id = %s RETURNING {cols}

-- name: keyword_bm25
-- Rows matching any query lexeme, ranked by BM25 summed over two fields
-- (1: the language configuration, 2: 'simple'). Every step is materialised:
-- after a bulk load the planner's estimates are stale, and an inlined
-- aggregate can end up rescanned per row.
WITH cand AS MATERIALIZED (
    SELECT m.seq, {field} AS lv, m.fts_simple AS sv FROM memories m
    WHERE {cand_where} AND ({field} @@ %s::tsquery OR m.fts_simple @@ %s::tsquery)
),
stats AS MATERIALIZED (
    SELECT greatest(count(*), 1)::float8 AS n,
           greatest(avg(length(s.lv)), 1)::float8 AS lavg,
           greatest(avg(length(s.sv)), 1)::float8 AS savg
    FROM (SELECT {field} AS lv, m.fts_simple AS sv FROM memories m
          WHERE {stats_where} LIMIT %s) AS s
),
terms AS (
    SELECT c.seq, 1 AS f, t.lexeme, coalesce(array_length(t.positions, 1), 1) AS tf,
           length(c.lv) AS dl
    FROM cand c, unnest(ts_filter(setweight(c.lv, 'A', %s::text[]), '{{a}}')) AS t
    UNION ALL
    SELECT c.seq, 2 AS f, t.lexeme, coalesce(array_length(t.positions, 1), 1) AS tf,
           length(c.sv) AS dl
    FROM cand c, unnest(ts_filter(setweight(c.sv, 'A', %s::text[]), '{{a}}')) AS t
),
df AS MATERIALIZED (SELECT f, lexeme, count(*)::float8 AS df FROM terms GROUP BY f, lexeme),
scored AS (
    SELECT t.seq, sum(
        (CASE WHEN t.f = 1 THEN 1.0 ELSE %s END)
        * ln(1.0 + (greatest(s.n, df.df) - df.df + 0.5) / (df.df + 0.5))
        * t.tf * (%s + 1.0)
        / (t.tf + %s * (1.0 - %s + %s * t.dl / (CASE WHEN t.f = 1 THEN s.lavg ELSE s.savg END)))
    ) AS score
    FROM terms t JOIN df USING (f, lexeme) CROSS JOIN stats s
    GROUP BY t.seq
)
SELECT {cols}, sc.score FROM scored sc JOIN memories m ON m.seq = sc.seq
ORDER BY sc.score DESC, m.seq LIMIT %s

-- name: nearest_in_scope
-- The live memory of exactly this scope (missing fields included) closest to a vector.
WITH c AS MATERIALIZED (
    SELECT m.id, m.embedding FROM memories m
    WHERE m.tenant_id = %s AND m.user_id IS NOT DISTINCT FROM %s
      AND m.agent_id IS NOT DISTINCT FROM %s AND m.run_id IS NOT DISTINCT FROM %s
      AND m.namespace IS NOT DISTINCT FROM %s AND {visible}
)
SELECT c.id, 1.0 - (c.embedding <=> %s) FROM c ORDER BY c.embedding <=> %s LIMIT 1

-- name: merge_into
-- Fold a re-added memory into an existing one: metadata merged (new keys win),
-- the higher importance, the later expiry (none beats any), last seen now.
UPDATE memories AS m SET metadata = m.metadata || %s,
    importance = greatest(m.importance, %s),
    expires_at = CASE WHEN m.expires_at IS NULL OR %s::timestamptz IS NULL THEN NULL
                 ELSE greatest(m.expires_at, %s::timestamptz) END,
    last_seen_at = now(), updated_at = now(), version = m.version + 1
WHERE m.tenant_id = %s AND m.id = %s RETURNING {cols}, m.embedding

-- name: vector_hnsw
-- The HNSW graph ranks the indexed rows; the rows still waiting for it (a bulk
-- load's backlog, which the index worker keeps small) are ranked exactly beside.
WITH graph AS (
    SELECT {cols}, m.embedding <=> %s AS distance FROM memories m
    WHERE {where} AND m.indexed ORDER BY m.embedding <=> %s LIMIT %s
), backlog AS (
    SELECT {cols}, m.embedding <=> %s AS distance FROM memories m
    WHERE {where} AND NOT m.indexed ORDER BY distance LIMIT %s
)
SELECT * FROM (SELECT * FROM graph UNION ALL SELECT * FROM backlog) AS u
ORDER BY u.distance LIMIT %s

-- name: index_backlog
-- Put up to n waiting rows into the HNSW graph, leaving out the tenants named and rows a
-- writer holds.
WITH batch AS (
    SELECT seq FROM memories WHERE NOT indexed AND tenant_id <> ALL(%s::uuid[])
    ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED
)
UPDATE memories m SET indexed = true FROM batch WHERE m.seq = batch.seq

-- name: vector_exact
-- The materialised CTE keeps the planner off the HNSW index: every match is ranked. The
-- embedding leaves the server only when {cols} names it.
WITH c AS MATERIALIZED (
    SELECT {cols}, m.embedding <=> %s AS distance FROM memories m WHERE {where}
)
SELECT * FROM c ORDER BY distance LIMIT %s

-- name: changed_since
-- Rows a tenant's change log names after a position, as they are now (seq NULL: gone).
WITH changed AS (
    SELECT DISTINCT memory_seq FROM memory_changes WHERE tenant_id = %s AND seq > %s
)
SELECT c.memory_seq AS changed_seq, {cols}, m.embedding
FROM changed c LEFT JOIN memories m ON m.seq = c.memory_seq AND m.tenant_id = %s

-- name: rows_by_seq
SELECT {cols}, m.embedding FROM memories m WHERE m.tenant_id = %s AND m.seq = ANY(%s)

-- name: purge_expired_key
-- An expired memory under a key is invisible: an upsert replaces it as if absent.
DELETE FROM memories WHERE tenant_id = %s AND namespace = %s AND key = %s
  AND expires_at IS NOT NULL AND expires_at <= now()

-- name: upsert_by_key
INSERT INTO memories AS m (tenant_id, content, content_hash, user_id, agent_id, run_id,
    namespace, metadata, importance, embedding, expires_at, context, key)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant_id, namespace, key) WHERE key IS NOT NULL DO UPDATE SET
    content = EXCLUDED.content, content_hash = EXCLUDED.content_hash,
    user_id = EXCLUDED.user_id, agent_id = EXCLUDED.agent_id, run_id = EXCLUDED.run_id,
    metadata = EXCLUDED.metadata, importance = EXCLUDED.importance,
    embedding = EXCLUDED.embedding, expires_at = EXCLUDED.expires_at,
    context = EXCLUDED.context, version = m.version + 1, updated_at = now()
RETURNING {cols}, (xmax = 0) AS created

-- name: get_by_key
SELECT {cols} FROM memories m WHERE m.tenant_id = %s AND m.namespace = %s
  AND m.key = %s AND {visible}{lock}

-- name: delete_by_key
DELETE FROM memories m WHERE m.tenant_id = %s AND m.namespace = %s AND m.key = %s
  AND {visible} RETURNING m.id

-- name: list_namespaces
-- Namespaces cut to a depth (labels split by the separator), with live counts, in
-- byte order after a cursor; a prefix or suffix (NULL: none) matches whole labels.
SELECT ns, count(*) FROM (
    SELECT array_to_string((string_to_array(m.namespace, %s))[1:%s], %s) AS ns
    FROM memories m WHERE m.tenant_id = %s AND m.namespace IS NOT NULL AND {visible}
      AND (%s::text IS NULL OR m.namespace = %s OR m.namespace LIKE %s)
      AND (%s::text IS NULL OR m.namespace = %s OR m.namespace LIKE %s)
) AS n
WHERE ns COLLATE "C" > %s GROUP BY ns ORDER BY ns COLLATE "C" LIMIT %s

-- name: purge_expired_duplicates
-- Expired rows are invisible; the ones that would block a re-add go.
DELETE FROM memories WHERE tenant_id = %s AND content_hash = ANY(%s)
  AND expires_at IS NOT NULL AND expires_at <= now()

-- name: delete
DELETE FROM memories m WHERE m.tenant_id = %s AND m.id = %s AND {visible} RETURNING m.id

-- name: last_seen
SELECT id, last_seen_at FROM memories WHERE tenant_id = %s AND id = ANY(%s::uuid[])
  AND last_seen_at IS NOT NULL

-- name: current_versions
SELECT seq, version FROM memories WHERE tenant_id = %s AND seq = ANY(%s)
