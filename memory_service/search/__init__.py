"""Hot search: per-tenant FAISS indexes kept in step with PostgreSQL, and the planner.

``accelerator.install`` attaches it to a runtime; ``indexes`` holds and loads
the per-tenant indexes, ``follower`` applies the database's change log,
``planner`` picks the path of each search and ``store`` holds their SQL.
"""
