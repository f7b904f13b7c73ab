"""Writers for per-window results: Parquet (streamed) and NumPy .npz."""

from __future__ import annotations

from sevensense.outputs.writers import NpzWriter, ParquetWriter, ResultWriter, open_writer

__all__ = ["NpzWriter", "ParquetWriter", "ResultWriter", "open_writer"]
