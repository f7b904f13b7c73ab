"""Deferred requests: accepted now (202), embedded later by the worker, fetched by job id."""
