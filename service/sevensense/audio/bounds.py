"""Work bounds that hold whatever a file's header declares.

Bytes do not bound work: a 7-KB WAV may declare an hour at 1 Hz, and resampling it to
48 kHz asks for 48,000 output samples per input sample. These two figures bound the
resampler's output per decoded sample, so the memory and time of a request follow the
samples actually decoded, never the header's claims.

- ``MIN_SAMPLE_RATE_HZ`` = 4 kHz: a 4-kHz recording holds sound up to 2 kHz, the lowest
  band any bird, frog or fish call these models were trained on still overlaps; below it
  nothing the models use survives. Telephone-band (8 kHz) field recorders are above it.
- ``MAX_RESAMPLE_RATIO`` = 24: the furthest a source rate may be from the model's rate,
  either way. Upsampling never exceeds 12 (4 kHz to BirdNET's 48 kHz); downsampling
  accepts 768 kHz for Perch (32 kHz) and 1.152 MHz for BirdNET, above every ultrasonic
  recorder sold (384 or 500 kHz).

A live stream's ``sample_rate`` takes the same minimum (``serving/stream/protocol.py``).
"""

from __future__ import annotations

from sevensense.errors import SampleRateError

MIN_SAMPLE_RATE_HZ = 4_000
MAX_RESAMPLE_RATIO = 24.0


def check_source_rate(rate: int, name: str = "<upload>") -> None:
    if rate < MIN_SAMPLE_RATE_HZ:
        raise SampleRateError(
            f"{name}: sample rate {rate} Hz is below the {MIN_SAMPLE_RATE_HZ} Hz minimum "
            "(nothing the models use survives below it)",
            sample_rate_hz=rate,
            min_sample_rate_hz=MIN_SAMPLE_RATE_HZ,
        )


def check_ratio(in_rate: int, out_rate: int) -> None:
    ratio = max(in_rate / out_rate, out_rate / in_rate) if in_rate > 0 else float("inf")
    if ratio > MAX_RESAMPLE_RATIO:
        raise SampleRateError(
            f"sample rate {in_rate} Hz is {ratio:.1f}x the model's {out_rate} Hz; the most "
            f"the resampler takes is {MAX_RESAMPLE_RATIO:g}x",
            sample_rate_hz=in_rate,
            model_rate_hz=out_rate,
            max_ratio=MAX_RESAMPLE_RATIO,
        )
