-- A purge (DELETE ... ?purge=true) is told apart from a plain delete in the change log
-- that the in-process indexes follow. A plain delete only hides a vector (FAISS keeps
-- it at a dead position, where it still routes graph searches, and snapshots keep it
-- too); a purge must also wipe it from every process's memory and from the snapshot
-- files on disk. The purging transaction turns its own 'delete' rows into 'purge', so
-- every process that follows the log, now or after a restart, learns which vectors to
-- wipe and which snapshots no longer may be loaded.
ALTER TABLE memory_changes DROP CONSTRAINT memory_changes_op_check;
ALTER TABLE memory_changes ADD CONSTRAINT memory_changes_op_check
    CHECK (op IN ('upsert', 'delete', 'purge'));
CREATE INDEX memory_changes_purges ON memory_changes (tenant_id, seq) WHERE op = 'purge';
