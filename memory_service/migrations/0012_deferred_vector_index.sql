-- pgvector's HNSW graph is maintained off the write path.
--
-- Inserting a row into an HNSW graph costs milliseconds (a graph search per row),
-- which capped a bulk load at about 200 rows/s. A row now carries ``indexed``: the
-- graph covers only indexed rows (a partial index), bulk writes arrive with
-- ``indexed = false`` and a background worker flips them in small batches, so
-- pgvector catches up after the request has answered. Searches rank the waiting
-- rows exactly beside the graph's answer (see memories.repository.vector_search),
-- so nothing is missed while they wait. Rows stored before stay indexed.

ALTER TABLE memories ADD COLUMN indexed boolean NOT NULL DEFAULT true;

DROP INDEX memories_embedding_hnsw;
CREATE INDEX memories_embedding_hnsw ON memories
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)
    WHERE indexed;
-- the backlog: what a search ranks exactly, per tenant; and its span, for the worker
CREATE INDEX memories_index_backlog ON memories (tenant_id, seq) WHERE NOT indexed;
CREATE INDEX memories_index_backlog_seq ON memories (seq) WHERE NOT indexed;

-- Flipping ``indexed`` is bookkeeping, not a change of the memory: the versions
-- trigger (which rewrote the version's row on any update) now skips an update that
-- only flips it. History and the change feed record an update only when the version
-- changes, the change log only when the embedding does, so they record nothing.
DROP TRIGGER memories_versions ON memories;
CREATE TRIGGER memories_versions
    AFTER INSERT OR DELETE ON memories
    FOR EACH ROW EXECUTE FUNCTION memory_versions_record();
CREATE TRIGGER memories_versions_update
    AFTER UPDATE ON memories
    FOR EACH ROW
    WHEN (OLD.indexed IS NOT DISTINCT FROM NEW.indexed OR OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION memory_versions_record();
