"""The species filter's defaults, importable without ONNX Runtime (the command line shows
them in ``--help``); :mod:`~sevensense.inference.species_range` applies them."""

from typing import Final

ALL_YEAR: Final = -1
DEFAULT_THRESHOLD: Final = 0.03
