"""7sense: bioacoustic embeddings from real models, streamed from any recording."""

from __future__ import annotations

__version__ = "0.1.0"
