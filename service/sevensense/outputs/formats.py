"""The detection file formats, named apart from their writers (pyarrow) so the command
line lists them without loading them."""

from typing import Literal

DetectionFormat = Literal["raven", "audacity", "csv", "kaleidoscope", "parquet"]
TEXT_FORMATS: tuple[DetectionFormat, ...] = ("raven", "audacity", "csv", "kaleidoscope")
FORMATS: tuple[DetectionFormat, ...] = (*TEXT_FORMATS, "parquet")
# BirdNET-Analyzer's bounds on its sigmoid sensitivity (its --sensitivity).
MIN_SENSITIVITY, MAX_SENSITIVITY = 0.5, 1.5
