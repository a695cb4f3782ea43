"""Search: the one service that answers every search mode, and its hot path.

``service`` holds ``SearchService`` (validate, compile the filter, rank by mode,
rescore, diversify, cut, notify); ``vector`` answers vector mode through
``accelerator`` (per-tenant FAISS kept in this process) or pgvector;
``indexes`` holds and loads the per-tenant indexes, ``follower`` applies the
database's change log, ``planner`` picks the path of each search and ``store``
holds the change log's SQL.
"""
