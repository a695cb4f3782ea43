"""Retrieval quality features on top of the memory service.

Keyword (BM25 over full-text search) and hybrid (RRF) search modes, recency and
importance scoring, maximal-marginal-relevance diversity, semantic dedupe on add
and per-tenant retrieval settings. ``search.service.SearchService`` composes
the search steps; ``Runtime.start`` builds them.
"""
