"""Data in and out of a tenant: browser-storage migrations, and NDJSON export/import."""
