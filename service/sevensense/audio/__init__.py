"""Audio in: decode → mono → resample → windows → normalise. Pure, streaming, no model code."""

from __future__ import annotations

from sevensense.audio.decode import AudioInfo, iter_mono_blocks, probe
from sevensense.audio.normalize import NormalizationSpec, normalize
from sevensense.audio.pipeline import PreprocessConfig, prepare_windows
from sevensense.audio.resample import QUALITY_PRESETS, StreamResampler, resample
from sevensense.audio.windowing import SkippedWindow, Window, WindowSpec, iter_windows

__all__ = [
    "QUALITY_PRESETS",
    "AudioInfo",
    "NormalizationSpec",
    "PreprocessConfig",
    "SkippedWindow",
    "StreamResampler",
    "Window",
    "WindowSpec",
    "iter_mono_blocks",
    "iter_windows",
    "normalize",
    "prepare_windows",
    "probe",
    "resample",
]
