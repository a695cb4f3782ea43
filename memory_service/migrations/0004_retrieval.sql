-- Keyword search, search context, last-seen times and per-tenant retrieval settings.
--
-- Two generated tsvector columns index the searchable text (content plus the
-- optional context): one with the 'english' configuration (stemming, stop words)
-- and one with 'simple' (lower-cased words, no language rules), so text in any
-- language is still found word for word.

ALTER TABLE memories ADD COLUMN context text;
-- when an add was folded into this memory by semantic dedupe (recency counts from it)
ALTER TABLE memories ADD COLUMN last_seen_at timestamptz;

ALTER TABLE memories ADD COLUMN fts_english tsvector
    GENERATED ALWAYS AS (to_tsvector('english'::regconfig, content || ' ' || coalesce(context, '')))
    STORED;
ALTER TABLE memories ADD COLUMN fts_simple tsvector
    GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, content || ' ' || coalesce(context, '')))
    STORED;
CREATE INDEX memories_fts_english ON memories USING gin (fts_english);
CREATE INDEX memories_fts_simple ON memories USING gin (fts_simple);

CREATE TABLE tenant_retrieval_settings (
    tenant_id        uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    dedupe           boolean NOT NULL DEFAULT false,
    dedupe_threshold real NOT NULL DEFAULT 0.95
        CHECK (dedupe_threshold > 0 AND dedupe_threshold <= 1),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
