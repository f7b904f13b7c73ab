"""Long synthetic recordings written block by block (the writer must not hold them either)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

BLOCK = 1 << 20


def write_long_recording(path: Path, seconds: float, rate: int = 16_000, seed: int = 7) -> Path:
    """Pink-ish noise with a chirp every 7 s: never silent, cheap to generate, PCM-16 WAV."""
    rng = np.random.default_rng(seed)
    total = int(seconds * rate)
    t0 = 0
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        while t0 < total:
            n = min(BLOCK, total - t0)
            t = (np.arange(t0, t0 + n) / rate).astype(np.float64)
            noise = np.cumsum(rng.standard_normal(n)) * 1e-3
            noise -= np.linspace(noise[0], noise[-1], n)
            phase = t % 7.0
            chirp = np.where(
                phase < 1.0, 0.3 * np.sin(2 * np.pi * (1500 + 2000 * phase) * phase), 0.0
            )
            f.write((0.05 * np.tanh(noise) + chirp).astype(np.float32))
            t0 += n
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=7200.0)
    parser.add_argument("--rate", type=int, default=16_000)
    args = parser.parse_args()
    write_long_recording(args.out, args.seconds, args.rate)


if __name__ == "__main__":
    main()
