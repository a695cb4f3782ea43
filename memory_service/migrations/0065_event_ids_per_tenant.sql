-- An event's id is unique within its tenant.
--
-- An export carries each event's id and an import keeps it, so importing the same
-- export twice finds its events already there instead of adding them again. The
-- importer looks the ids up under the tenant's event lock; this index makes that
-- lookup cheap and turns any duplicate that slipped past it into an error rather
-- than a second copy. Ids are random UUIDs, so existing rows already satisfy it.
CREATE UNIQUE INDEX IF NOT EXISTS events_tenant_id ON events (tenant_id, id);
