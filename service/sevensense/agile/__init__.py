"""Agile modeling: a partner's own classes from a handful of labelled windows (labels on
the index, a linear classifier on one space's embeddings, its review, its ONNX head)."""
