"""Shared utilities of alias-label-retriever: paths, data, models, indexes, retrieval and metrics."""
