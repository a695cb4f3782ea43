-- The change log that in-process vector indexes follow.
-- Every insert, delete and re-embedding of a memory appends a row in the same
-- transaction and notifies the channel 'memory_changes' (delivered on commit),
-- so a process that did not make a write still learns of it. Readers treat a row
-- as "look at memory_id again": applying one twice is harmless.

CREATE TABLE memory_changes (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  uuid NOT NULL,
    memory_id  uuid NOT NULL,
    memory_seq bigint NOT NULL,
    op         text NOT NULL CHECK (op IN ('upsert', 'delete')),
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX memory_changes_at ON memory_changes (at);

-- the highest change seq pruned away; a snapshot older than this cannot catch up
INSERT INTO service_state (name, value) VALUES ('memory_changes_pruned_through', '0');

CREATE FUNCTION memory_changes_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO memory_changes (tenant_id, memory_id, memory_seq, op)
        VALUES (OLD.tenant_id, OLD.id, OLD.seq, 'delete');
        PERFORM pg_notify('memory_changes', OLD.tenant_id::text);
        RETURN OLD;
    END IF;
    INSERT INTO memory_changes (tenant_id, memory_id, memory_seq, op)
    VALUES (NEW.tenant_id, NEW.id, NEW.seq, 'upsert');
    PERFORM pg_notify('memory_changes', NEW.tenant_id::text);
    RETURN NEW;
END;
$$;

-- only the embedding matters to a vector index; metadata changes are re-checked in SQL
CREATE TRIGGER memories_changes
    AFTER INSERT OR DELETE OR UPDATE OF embedding ON memories
    FOR EACH ROW EXECUTE FUNCTION memory_changes_record();
