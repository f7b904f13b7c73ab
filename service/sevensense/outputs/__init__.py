"""Results to files: per-window embeddings (``writers``: Parquet streamed, NumPy .npz) and
species detections (``detections``, in BirdNET-Analyzer's formats).

The package imports nothing itself, so the light ``formats`` loads without pyarrow."""
