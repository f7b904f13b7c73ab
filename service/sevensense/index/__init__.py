"""Similarity search over embeddings: one interface (``base.VectorIndex``), two backends
(``hoplite``: perch-hoplite directories, ``pgvector``: PostgreSQL), one space per model
version and transform.

onnxruntime is imported before anything loads usearch: with usearch 2.26.6 loaded first,
importing onnxruntime 1.31.1 in the same process crashes (SIGSEGV, measured here); in this
order both work.
"""

import onnxruntime  # noqa: F401  (import order, see above)
