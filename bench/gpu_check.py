"""One command for a GPU host: does the CUDA path really run, agree with the CPU, and how fast?

    make gpu-check      # or: .venv/bin/python -m bench.gpu_check [--json out.json] [--quick]

Prints one JSON document:

* ``driver``: what NVML reports (driver version, the highest CUDA it supports) and whether
  this onnxruntime-gpu's CUDA can run on it;
* ``provider``: the provider the CUDA session actually got (ONNX Runtime falls back to CPU
  silently, so this is read back from the session);
* ``parity``: BirdNET v2.4 on real windows from ../shared/audio, CUDA vs CPU: logits max
  absolute difference (bar 1e-3), top-5 identical on every window, embedding cosine min;
* ``batch_curve``: windows/s and ms per batch on CUDA for BirdNET and the Perch-sized model
  (bench/batch_curve.py's measurement);
* ``service``: the service graph at 32 users with the GPU model service ready
  (load_tests/run.py, counters of the GPU path): windows/s, p99.

On a machine where CUDA cannot run (no driver, a driver older than CUDA 13 needs, no CUDA
provider, or a session that lands on the CPU) it prints the reason and exits 2 at once,
before loading anything heavy. Exit 1: a check failed (parity, service not on the GPU).
Budget: under 5 minutes (about 2 with the defaults).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from sevensense.inference.gpu_driver import DriverCheck, probe_driver
from sevensense.inference.sessions import PROVIDER_NAMES, preload_cuda_libraries
from sevensense.settings import repo_root

REPO = repo_root()
AUDIO = REPO.parent / "shared" / "audio"
PARITY_FILES = ("soundscape_birdnet_120s_48k.flac", "xc563936_soundscape_72s_48k.mp3")
LOGITS_BAR = 1e-3
CUDA = PROVIDER_NAMES["cuda"]
NO_GPU = 2


def cuda_blocker(driver: DriverCheck) -> str | None:
    """Why CUDA cannot run here, from what is cheap to learn; None when it may."""
    if CUDA not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no {CUDA} (the CPU wheel is installed?)"
    if not driver.ok:
        return driver.reason or "the NVIDIA driver cannot run this CUDA"
    if not preload_cuda_libraries():
        return "the CUDA/cuDNN libraries of the nvidia-* wheels could not be loaded"
    return None


def real_windows(limit: int) -> np.ndarray:
    from sevensense.audio.pipeline import prepare_windows
    from sevensense.inference.engine import EmbeddingEngine
    from sevensense.settings import load_settings

    settings = load_settings()
    settings.inference.providers = ["cpu"]
    engine = EmbeddingEngine(settings)
    config = engine.preprocess_config(engine.model("birdnet-v2.4"))
    rows = [w.samples for f in PARITY_FILES for w in prepare_windows(AUDIO / f, config)]
    return np.stack(rows[:limit]).astype(np.float32)


def parity(batch: np.ndarray) -> dict[str, Any]:
    """BirdNET on CUDA vs CPU, same windows, same graph optimisation."""
    from bench.batch_curve import open_session, resolve_model

    model = resolve_model("birdnet")
    outs: dict[str, list[np.ndarray]] = {}
    provider = ""
    for name in ("cpu", "cuda"):
        session, info = open_session(model.path, name)
        provider = info["provider"] if name == "cuda" else provider
        got: list[list[np.ndarray]] = [
            session.run(model.outputs, {model.input_name: batch[i : i + 16]})
            for i in range(0, len(batch), 16)
        ]
        outs[name] = [np.concatenate([g[k] for g in got]) for k in range(len(model.outputs))]
    emb_cpu, logits_cpu = outs["cpu"]
    emb_gpu, logits_gpu = outs["cuda"]
    top_cpu = np.argsort(-logits_cpu, axis=1)[:, :5]
    top_gpu = np.argsort(-logits_gpu, axis=1)[:, :5]
    same_top5 = float(np.mean(np.all(top_cpu == top_gpu, axis=1)))
    cos = np.sum(emb_cpu * emb_gpu, axis=1) / (
        np.linalg.norm(emb_cpu, axis=1) * np.linalg.norm(emb_gpu, axis=1)
    )
    max_diff = float(np.max(np.abs(logits_cpu - logits_gpu)))
    return {
        "model": model.info.get("identity", model.name),
        "windows": len(batch),
        "cuda_session_provider": provider,
        "logits_max_abs_diff": max_diff,
        "top5_identical_fraction": same_top5,
        "embedding_cosine_min": float(cos.min()),
        "ok": max_diff <= LOGITS_BAR and same_top5 == 1.0,
    }


def batch_curves(seconds: float) -> dict[str, Any]:
    from bench.batch_curve import measure_curve, open_session, resolve_model

    curves: dict[str, Any] = {}
    for name in ("birdnet", "perch-sized"):
        model = resolve_model(name)
        session, info = open_session(model.path, "cuda")
        points = measure_curve(
            session,
            model.input_name,
            model.outputs,
            model.window_samples,
            [1, 4, 16, 64, 128],
            seconds,
        )
        curves[name] = {
            "provider": info["provider"],
            "points": [
                {
                    "batch": p.batch,
                    "windows_per_s": round(p.windows_per_s, 1),
                    "ms_per_batch": round(p.median_ms, 2),
                }
                for p in points
            ],
        }
    return curves


def service_at_32_users(seconds: float) -> dict[str, Any]:
    """load_tests/run.py against a service it starts, reading the GPU path's counters."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        out = Path(tmp) / "load.json"
        proc = subprocess.run(
            [sys.executable, "-m", "load_tests.run", "--users", "32", "--seconds", str(seconds),
             "--warmup", "5", "--no-engine", "--path", "gpu", "--json", str(out),
             "--env", "SEVENSENSE_SERVING__GPU_REQUIRE_CUDA=true"],
            cwd=REPO, check=False, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        if proc.returncode != 0 or not out.exists():
            return {"ok": False, "error": proc.stderr[-2000:]}
        result = json.loads(out.read_text())
    (step,) = result["steps"]
    gpu = step["cpu_path"]  # the counters of the path asked for (--path gpu)
    return {
        "users": 32,
        "startup_s": result.get("startup_s"),
        "windows_per_s": gpu.get("windows_per_s"),
        "requests_per_s": step["requests_per_s"],
        "p99_ms": step.get("p99_ms"),
        "failures": step["failures"],
        "ok": bool(gpu.get("windows", 0)) and not step["failures"],
    }


def run(quick: bool = False) -> tuple[int, dict[str, Any]]:
    started = time.perf_counter()
    driver = probe_driver()
    result: dict[str, Any] = {"onnxruntime": ort.__version__, "driver": driver.model_dump()}
    blocker = cuda_blocker(driver)
    if blocker:
        result.update(ok=False, reason=blocker)
        return NO_GPU, result
    from bench.batch_curve import ProviderUnavailableError

    batch = real_windows(32 if quick else 80)
    try:
        check = parity(batch)
    except ProviderUnavailableError as exc:
        result.update(ok=False, reason=str(exc))
        return NO_GPU, result
    result["provider"] = check["cuda_session_provider"]
    if result["provider"] != CUDA:
        result.update(ok=False, reason=f"the CUDA session runs on {result['provider']}")
        return NO_GPU, result
    result["parity"] = check
    result["batch_curve"] = batch_curves(5.0 if quick else 15.0)
    result["service"] = service_at_32_users(10.0 if quick else 20.0)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["ok"] = bool(check["ok"] and result["service"]["ok"])
    return (0 if result["ok"] else 1), result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer windows, shorter timings")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    try:
        code, result = run(args.quick)
    except Exception as exc:  # a GPU host surprise: still one JSON document
        code, result = 1, {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
