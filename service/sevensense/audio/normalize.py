"""Per-window amplitude normalisation, as each model's contract requires.

Perch 2.0 (perch-hoplite, model card): remove the mean, then scale the peak to 0.25.
BirdNET v2.4: raw samples. ADR-007 §1.3 adds peak/RMS normalisation and a final clip.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

_EPS = 1e-8


class NormalizationSpec(BaseModel):
    method: Literal["peak", "rms", "none"] = "none"
    remove_mean: bool = False
    target_peak: float = Field(0.25, gt=0.0, le=1.0)
    target_rms: float = Field(0.1, gt=0.0, le=1.0)
    clip: bool = False

    @classmethod
    def perch(cls) -> NormalizationSpec:
        return cls(method="peak", remove_mean=True, target_peak=0.25, clip=False)

    @classmethod
    def raw(cls) -> NormalizationSpec:
        return cls(method="none")


def normalize(window: np.ndarray, spec: NormalizationSpec) -> np.ndarray:
    """Return a normalised float32 copy; near-silent windows are left unscaled (no blow-up)."""
    x = window.astype(np.float32, copy=True)
    if spec.remove_mean:
        x -= np.float32(x.mean(dtype=np.float64))
    if spec.method == "peak":
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if peak > _EPS:
            x *= np.float32(spec.target_peak / peak)
    elif spec.method == "rms":
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
        if rms > _EPS:
            x *= np.float32(spec.target_rms / rms)
    if spec.clip:
        np.clip(x, -1.0, 1.0, out=x)
    return x
