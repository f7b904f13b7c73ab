"""Windows/s and batch latency against batch size, to choose the model services' batching.

    make bench-perch   # or: .venv/bin/python -m bench.batch_curve --model perch-sized
    .venv/bin/python -m bench.batch_curve --model birdnet --threads 2 --batches 1,2,4,8,16
    .venv/bin/python -m bench.batch_curve --provider cuda --batches 1,4,16,64,128

BentoML's adaptive batching groups requests into batches of at most ``max_batch_size``
windows and cancels (503) a request whose predicted latency reaches ``max_latency_ms``
(FACTS.md): those are ``serving.{cpu,gpu}_max_batch_size`` and ``..._max_latency_ms``.
A bigger batch raises throughput only until the device is saturated, while every request
in it waits for the whole batch, so the useful batch is where the curve flattens.

Rules behind the printed recommendation:

* ``max_batch_size``: the smallest batch reaching 95 % of the best windows/s measured;
* ``max_latency_ms``: 2 x the p90 latency of that batch (a request that just missed a
  batch waits for it, then for its own), x 1.25 for queueing jitter, rounded up to 50 ms.

Sessions come from the project's own ``create_session`` with the inference settings of
the active profile (threads, graph optimisation, spinning), so the options match serving.
Batch sizes are measured interleaved, round after round, because these machines are
noisy; each round gives every batch size about the same number of windows, so small
batches get more repetitions and large ones fewer. Windows/s is batch / median latency,
which one noisy neighbour cannot drag down the way a mean would.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from sevensense.artifacts.manifest import OutputRole
from sevensense.artifacts.registry import ModelRegistry
from sevensense.builders import perch_contract as pc
from sevensense.inference.sessions import PROVIDER_NAMES, create_session
from sevensense.settings import load_settings, repo_root

ModelName = Literal["perch-sized", "birdnet", "perch-contract"]
ProviderName = Literal["cpu", "cuda"]
MODELS: Final[tuple[ModelName, ...]] = ("perch-sized", "birdnet", "perch-contract")
REGISTERED: Final[dict[str, str]] = {"birdnet": "birdnet-v2.4", "perch-contract": "perch-contract"}
DEFAULT_BATCHES: Final[dict[str, tuple[int, ...]]] = {
    "cpu": (1, 2, 4, 8, 16),
    "cuda": (1, 2, 4, 8, 16, 32, 64, 128),
}
THROUGHPUT_SHARE: Final = 0.95
LATENCY_BATCHES: Final = 2.0
QUEUE_MARGIN: Final = 1.25
LATENCY_STEP_MS: Final = 50
RULE: Final = (
    f"max_batch_size = smallest batch with >= {THROUGHPUT_SHARE:.0%} of the best windows/s; "
    f"max_latency_ms = {LATENCY_BATCHES:g} x p90(batch at max_batch_size) x {QUEUE_MARGIN:g}, "
    f"rounded up to {LATENCY_STEP_MS} ms"
)


class ProviderUnavailableError(RuntimeError):
    """The requested execution provider cannot run here; measuring CPU instead would mislead."""


@dataclass(frozen=True)
class BenchModel:
    name: str
    path: Path
    input_name: str
    window_samples: int
    sample_rate: int
    outputs: list[str]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Point:
    batch: int
    runs: int
    median_ms: float
    p90_ms: float
    windows_per_s: float
    ms_per_window: float


@dataclass(frozen=True)
class Recommendation:
    max_batch_size: int
    max_latency_ms: int
    best_batch: int
    best_windows_per_s: float
    rule: str = RULE


def resolve_model(name: str) -> BenchModel:
    """The ONNX file and the outputs the engine would request (embedding, logits) per model."""
    if name == "perch-sized":
        from bench.perch_sized import ensure_perch_sized_model

        path, stats = ensure_perch_sized_model()
        return BenchModel(
            name,
            path,
            pc.INPUT_NAME,
            pc.WINDOW_SAMPLES,
            pc.SAMPLE_RATE,
            ["embedding", "label"],
            {"benchmark_artifact": True, **asdict(stats), "macs_total": stats.macs_total},
        )
    if name not in REGISTERED:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    artifact = ModelRegistry(load_settings().models_dir).resolve(REGISTERED[name])
    manifest = artifact.manifest
    if not artifact.present:
        raise FileNotFoundError(f"{manifest.identity}: {artifact.model_path} missing (make setup)")
    roles = (OutputRole.EMBEDDING, OutputRole.LOGITS)
    return BenchModel(
        name,
        artifact.model_path,
        manifest.input.name,
        manifest.window_samples,
        manifest.sample_rate,
        [manifest.outputs[r].name for r in roles if r in manifest.outputs],
        {"identity": str(manifest.identity), "sha256": manifest.sha256},
    )


def open_session(
    path: Path, provider: ProviderName, threads: int | None = None, spinning: bool | None = None
) -> tuple[ort.InferenceSession, dict[str, Any]]:
    """A session built as serving builds it, refusing to report CPU figures as CUDA ones."""
    inference = load_settings().inference
    update: dict[str, Any] = {"providers": [provider]}
    if threads is not None:
        update["intra_threads"] = threads
    if spinning is not None:
        update["allow_spinning"] = spinning
    settings = inference.model_copy(update=update)
    wanted = PROVIDER_NAMES[provider]
    if wanted not in ort.get_available_providers():
        raise ProviderUnavailableError(
            f"{wanted} is not in this onnxruntime build ({ort.__version__}, providers "
            f"{ort.get_available_providers()}); install onnxruntime-gpu for --provider cuda"
        )
    session, used, _ = create_session(path, settings)
    if used[0] != wanted:
        raise ProviderUnavailableError(
            f"--provider {provider} asked for {wanted}, but ONNX Runtime created the session on "
            f"{used[0]}: no usable GPU is visible here, or the CUDA/cuDNN libraries that "
            f"onnxruntime {ort.__version__} needs are missing. Refusing to time CPU as {provider}."
        )
    return session, {
        "provider": used[0],
        "session_providers": used,
        "intra_threads": settings.resolved_intra_threads(),
        "inter_threads": settings.inter_threads,
        "allow_spinning": settings.allow_spinning,
        "graph_optimization": settings.graph_optimization,
    }


def _busy_cpu_s() -> tuple[float, float] | None:
    """Whole-machine busy CPU seconds and this process's own, to tell how much was others'."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields[:8]) - fields[3] - fields[4]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return busy / os.sysconf("SC_CLK_TCK"), usage.ru_utime + usage.ru_stime


def synthetic_batch(batch: int, samples: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Noise at peak 0.25 (the Perch normalisation): content does not change the arithmetic."""
    x = np.random.default_rng(seed).standard_normal((batch, samples)).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    x *= 0.25 / np.abs(x).max(axis=1, keepdims=True)
    return x


def measure_curve(
    session: ort.InferenceSession,
    input_name: str,
    outputs: Sequence[str],
    window_samples: int,
    batches: Sequence[int],
    seconds: float,
    min_runs: int = 5,
    warmup: int = 1,
) -> list[Point]:
    """Interleaved timing of ``session.run`` per batch size for about ``seconds`` in total."""
    sizes = sorted(set(batches))
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch sizes must be >= 1, got {batches}")
    feeds = {b: {input_name: synthetic_batch(b, window_samples, seed=b)} for b in sizes}
    names = list(outputs)
    for b in sizes:
        for _ in range(warmup):
            session.run(names, feeds[b])
    reps = {b: max(1, sizes[-1] // b) for b in sizes}
    times: dict[int, list[float]] = {b: [] for b in sizes}
    start = time.perf_counter()
    while True:
        for b in sizes:
            for _ in range(reps[b]):
                t0 = time.perf_counter()
                session.run(names, feeds[b])
                times[b].append((time.perf_counter() - t0) * 1e3)
        enough = all(len(v) >= min_runs for v in times.values())
        if enough and time.perf_counter() - start >= seconds:
            break
    points = []
    for b in sizes:
        ms = np.asarray(times[b])
        median = float(np.median(ms))
        points.append(
            Point(
                batch=b,
                runs=len(ms),
                median_ms=median,
                p90_ms=float(np.percentile(ms, 90)),
                windows_per_s=b * 1e3 / median,
                ms_per_window=median / b,
            )
        )
    return points


def recommend(points: Sequence[Point]) -> Recommendation:
    best = max(points, key=lambda p: p.windows_per_s)
    chosen = min(
        (p for p in points if p.windows_per_s >= THROUGHPUT_SHARE * best.windows_per_s),
        key=lambda p: p.batch,
    )
    latency = LATENCY_BATCHES * chosen.p90_ms * QUEUE_MARGIN
    return Recommendation(
        max_batch_size=chosen.batch,
        max_latency_ms=max(LATENCY_STEP_MS, math.ceil(latency / LATENCY_STEP_MS) * LATENCY_STEP_MS),
        best_batch=best.batch,
        best_windows_per_s=best.windows_per_s,
    )


def format_table(points: Sequence[Point], rec: Recommendation) -> str:
    best = rec.best_windows_per_s
    lines = [
        "| batch | windows/s | % of best | ms/batch median | ms/batch p90 | ms/window | runs |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        mark = " *" if p.batch == rec.max_batch_size else ""
        lines.append(
            f"| {p.batch}{mark} | {p.windows_per_s:.1f} | {100 * p.windows_per_s / best:.0f} % | "
            f"{p.median_ms:.1f} | {p.p90_ms:.1f} | {p.ms_per_window:.1f} | {p.runs} |"
        )
    return "\n".join(lines)


def _batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,2,4,8: {exc}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be integers >= 1")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=MODELS, default="perch-sized")
    parser.add_argument("--provider", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="default: the profile's")
    parser.add_argument("--no-spin", action="store_true", help="ORT threads do not busy-wait")
    parser.add_argument(
        "--batches", type=_batches, default=None, help="default 1,2,4,8,16 (cuda: up to 128)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="timed budget, all sizes")
    parser.add_argument("--min-runs", type=int, default=5, help="per batch size, at least")
    parser.add_argument("--json", type=Path, default=None, help="default out/bench/...")
    args = parser.parse_args(argv)
    provider: ProviderName = args.provider
    batches: list[int] = args.batches or list(DEFAULT_BATCHES[provider])

    t0 = time.perf_counter()
    model = resolve_model(args.model)
    t_model = time.perf_counter() - t0
    try:
        session, session_info = open_session(
            model.path, provider, args.threads, False if args.no_spin else None
        )
    except ProviderUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t_session = time.perf_counter() - t0 - t_model
    print(
        f"{model.name} ({model.path.name}), {session_info['provider']}, "
        f"{session_info['intra_threads']} intra-op threads, spinning "
        f"{'on' if session_info['allow_spinning'] else 'off'}; batches {batches}, "
        f"~{args.seconds:g} s timed",
        flush=True,
    )
    cpu_before = _busy_cpu_s()
    points = measure_curve(
        session,
        model.input_name,
        model.outputs,
        model.window_samples,
        batches,
        args.seconds,
        min_runs=args.min_runs,
    )
    cpu_after = _busy_cpu_s()
    rec = recommend(points)
    total = time.perf_counter() - t0
    timing_s = total - t_model - t_session
    others = (
        max(0.0, (cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1]))
        if cpu_before and cpu_after
        else None
    )

    serving = load_settings().serving
    current = (
        (serving.cpu_max_batch_size, serving.cpu_max_latency_ms)
        if provider == "cpu"
        else (serving.gpu_max_batch_size, serving.gpu_max_latency_ms)
    )
    window_s = model.window_samples / model.sample_rate
    print()
    print(format_table(points, rec))
    print()
    print(f"rule: {RULE}")
    print(
        f"recommendation ({provider}): max_batch_size = {rec.max_batch_size}, "
        f"max_latency_ms = {rec.max_latency_ms}  (best: batch {rec.best_batch}, "
        f"{rec.best_windows_per_s:.1f} windows/s = "
        f"{rec.best_windows_per_s * window_s:.0f}x real time of {window_s:g}-s windows)"
    )
    print(
        f"current settings: serving.{provider}_max_batch_size = {current[0]}, "
        f"serving.{provider}_max_latency_ms = {current[1]}"
    )
    if rec.max_batch_size < 2:
        print("note: batching does not pay here; the serving settings accept 2 at the least")
    print(
        f"took {total:.0f} s (model {t_model:.1f} s, session {t_session:.1f} s, "
        f"timing {timing_s:.0f} s)"
        + (
            f"; other processes used {others:.1f} CPU-s while timing "
            f"({100 * others / (timing_s * (os.cpu_count() or 1)):.0f} % of the machine)"
            if others is not None
            else ""
        )
    )

    result = {
        "model": model.name,
        "model_path": str(model.path),
        "model_info": model.info,
        "input": {"name": model.input_name, "window_samples": model.window_samples},
        "outputs_requested": model.outputs,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "onnxruntime": ort.__version__,
            "other_processes_cpu_s_while_timing": others,
        },
        "session": session_info,
        "seconds_budget": args.seconds,
        "points": [asdict(p) for p in points],
        "recommendation": asdict(rec),
        "current_settings": {"max_batch_size": current[0], "max_latency_ms": current[1]},
        "elapsed_s": total,
    }
    out = args.json or repo_root() / "out" / "bench" / f"batch_curve_{model.name}_{provider}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
