"""Similarity search over embeddings: one interface (``base.VectorIndex``), two backends
(``hoplite``: perch-hoplite directories, ``pgvector``: PostgreSQL), one space per model
version and transform.

The package imports nothing itself, so that light modules here (``tenants``) load
without ONNX Runtime; :mod:`~sevensense.index.hoplite` keeps the import order that
usearch needs.
"""
