"""Helpers of the retrieval evaluation: data sets, the embedding cache, a service client."""
