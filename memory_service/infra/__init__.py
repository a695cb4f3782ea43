"""The infrastructure every feature stands on: the database pool and its errors
(``db``, ``replicas``, ``resilience``), migrations, background supervision, fair
sharing, metrics and tracing, secrets at rest, cursors and row copies."""
