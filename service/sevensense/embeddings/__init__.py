"""What happens to embeddings after the model: PCA reduction (ADR-007 §3.2) and the
Poincaré-ball projection (§3.3), applied by one :class:`~.transform.VectorTransform`."""
