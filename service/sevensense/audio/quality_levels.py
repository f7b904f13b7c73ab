"""The resampling levels by name (see :mod:`.resample` for what each one is), apart from
the resamplers themselves so that a command's ``--help`` can list them without loading
numpy, soxr or resampy."""

from __future__ import annotations

from typing import Final

QUALITY_PRESETS: dict[str, str] = {
    "linear": "QQ",
    "medium": "MQ",
    "high": "HQ",
    "audiophile": "VHQ",
}
BIRDNET_ANALYZER: Final = "kaiser_fast"
QUALITIES: tuple[str, ...] = (*QUALITY_PRESETS, BIRDNET_ANALYZER)


def describe_resampler(quality: str) -> str:
    """What an answer's metadata says about its resampling."""
    if quality == BIRDNET_ANALYZER:
        return "resampy kaiser_fast (BirdNET-Analyzer's)"
    return f"soxr {soxr_preset(quality)}"


def soxr_preset(quality: str) -> str:
    try:
        return QUALITY_PRESETS[quality]
    except KeyError:
        raise ValueError(
            f"unknown resample quality {quality!r}; one of {', '.join(QUALITIES)}"
        ) from None
