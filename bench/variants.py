"""Reduced-precision variants against fp32 on this CPU, all figures from one run.

    .venv/bin/python -m bench.variants [--quick]

For BirdNET v2.4 and the Perch-contract model: int8 static (``int8-static``; for BirdNET,
whose static variant fails its bar and is never registered, made here in a temporary
directory by the same recipe), int8 dynamic (``quantized``) and fp16, each against the
base on real windows held out from calibration: embedding cosine min/median, top-1 and
top-5 (same set) agreement, and windows/s at 1 and 2 threads, batch 8, interleaved with
the base (base, variant, base, variant, …; best of the rounds), because the machine is
shared. fp16 is a GPU variant: its CPU speed is for completeness only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import onnxruntime as ort

from sevensense.artifacts.registry import ModelRegistry
from sevensense.builders import variants as v
from sevensense.builders.build import build_quantized, build_variant
from sevensense.errors import ModelError
from sevensense.settings import repo_root

MODELS = ("birdnet-v2.4", "perch-contract")


def _variant_paths(registry: ModelRegistry, name: str, tmp: Path) -> dict[str, Path]:
    base = registry.resolve(name)
    ref = str(base.manifest.identity)
    paths = {"int8-dynamic": build_quantized(registry, ref).model_path}
    try:
        paths["int8-static"] = build_variant(registry, ref, "static").model_path
    except ModelError:
        held = v.audio_files(v.default_locations(v.DEFAULT_CALIBRATION))
        cal = v.real_windows(base.manifest, held, v.CALIBRATION_WINDOWS)
        paths["int8-static (not registered)"] = tmp / f"{name}-static.onnx"
        v.quantize_static_model(base.model_path, tmp / f"{name}-static.onnx", base.manifest, cal)
    paths["fp16"] = build_variant(registry, ref, "fp16").model_path
    return paths


def run(quick: bool) -> dict[str, Any]:
    registry = ModelRegistry(repo_root() / "models")
    rounds, speed_windows = (1, 8) if quick else (3, 24)
    out: dict[str, Any] = {
        "machine": "shared 2-core AMD EPYC (AVX512-VNNI); ratios measured in one run",
        "onnxruntime": ort.__version__,
        "batch": v.BATCH,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-variants-") as tmpdir:
        for name in MODELS:
            base = registry.resolve(name)
            m = base.manifest
            held = v.real_windows(
                m, v.audio_files(v.default_locations(v.DEFAULT_HOLDOUT)), v.HOLDOUT_WINDOWS
            )
            rows: dict[str, Any] = {}
            base_out = v.run_outputs(v.cpu_session(base.model_path, 1), m, held)
            for label, path in _variant_paths(registry, name, Path(tmpdir)).items():
                quality = v.compare(base_out, v.run_outputs(v.cpu_session(path, 1), m, held))
                row: dict[str, Any] = {k: round(x, 4) for k, x in quality.items()}
                for threads in (1, 2):
                    b, o = v.cpu_session(base.model_path, threads), v.cpu_session(path, threads)
                    fp32, var, ratio = v.speed_ratio(b, o, m, held[:speed_windows], rounds)
                    row[f"{threads}t"] = {
                        "fp32_windows_s": round(fp32, 1),
                        "variant_windows_s": round(var, 1),
                        "ratio": round(ratio, 2),
                    }
                rows[label] = row
            out["models"][str(m.identity)] = {"holdout_windows": len(held), "variants": rows}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="fewer windows and rounds")
    args = parser.parse_args()
    start = time.perf_counter()
    result = run(args.quick)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
