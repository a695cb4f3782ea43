-- Events staged in the transaction of the change they describe, moved into events later.
--
-- A workflow transition used to write its progress events straight into events, which
-- takes the tenant's event lock and bumps its event_numbers counter until commit, so
-- every transition of a tenant waited for the one before it to commit. Now it inserts
-- them here (no lock, no counter) in its own transaction, so an event is staged exactly
-- when its change commits, and the outbox mover copies them into events tenant by
-- tenant, in seq order, under that lock, deleting them in the same transaction.
CREATE TABLE IF NOT EXISTS event_outbox (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type         text NOT NULL,
    severity     smallint NOT NULL CHECK (severity BETWEEN 0 AND 3),
    source       text,
    ts           timestamptz NOT NULL,
    trace_id     text,
    execution_id text,
    attributes   jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS event_outbox_tenant ON event_outbox (tenant_id, seq);
