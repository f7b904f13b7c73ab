"""End to end against the peers, in one run: whole processes on a 20-minute recording, quiet
and with a busy neighbour, then the engine against raw runtimes and the machine's fp32 limit.

    make bench-e2e          # or: .venv/bin/python -m bench.e2e [--quick] [--json out.json]

Whole process (start-up, model load, decode, inference, output), each command timed as a
user sees it: ``sevensense embed`` and ``detect`` (ONNX Runtime, and ``embed`` with spinning
forced on and off, and on OpenVINO where the extra is installed), the ``birdnet`` package
(its own ``.venv-birdnet``, LiteRT; first a sweep of its worker/batch settings on 4 minutes
of the recording, then the fastest one), and BirdNET-Analyzer 2.4.0 where its
virtualenv (``bench.peers.ANALYZER_VENV``) exists ("not run" otherwise). Commands are
interleaved round by round (quiet, then with a ``nice -n 10`` busy loop pinned to the last
CPU) and summarised by the median (``--rounds``, default 2), so drift on a shared machine
hits all alike.

The engine: windows/s of ``EmbeddingEngine.embed_windows`` on decoded windows (batch 8) vs
``session.run`` alone on the same batches (ONNX Runtime, OpenVINO), vs the fp32 limit: the
model's multiply-accumulates per window (from the ONNX graph) at the GFLOP/s numpy's matmul
reaches on 2 threads. ``--quick``: a 4-minute recording, 1 round, no sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import peers
from bench.threads import CLI, CONFIGS, SOUNDSCAPE, busy_neighbour, tiled_recording
from sevensense.artifacts.manifest import OutputRole
from sevensense.audio.pipeline import prepare_windows
from sevensense.builders.birdnet import cached_birdnet_files
from sevensense.inference.engine import EmbeddingEngine
from sevensense.inference.openvino_runtime import available as openvino_available
from sevensense.settings import load_settings, repo_root

REPO = repo_root()
CACHE = REPO / ".cache"
BIRDNET_RUNNER = REPO / "tests" / "peers" / "birdnet_detect.py"
BIRDNET_SWEEP = ((1, 8), (2, 8), (2, 16), (2, 32))
GEMM_PROBE = (
    "import time, numpy as np\n"
    "a = np.random.rand(1024, 1024).astype(np.float32); b = a.copy(); best = 0.0\n"
    "for _ in range(12):\n"
    "    t = time.perf_counter(); a @ b\n"
    "    best = max(best, 2 * 1024**3 / (time.perf_counter() - t))\n"
    "print(best / 1e9)\n"
)

Command = tuple[list[str], dict[str, str]]


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEVENSENSE_INFERENCE__")}
    env.update(extra)
    return env


def seconds(command: Command) -> float | str:
    """Wall time of one whole process; the error's last line where it failed."""
    argv, env = command
    start = time.perf_counter()
    proc = subprocess.run(
        argv, env=_clean_env(env), capture_output=True, text=True, timeout=1800, check=False
    )
    if proc.returncode != 0:
        return f"failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
    return time.perf_counter() - start


def birdnet_command(python: Path, recording: Path, out: Path, workers: int, batch: int) -> Command:
    files = cached_birdnet_files(CACHE)
    argv = [str(python), str(BIRDNET_RUNNER), str(files.tflite_path), str(files.labels_path)]
    argv += [str(recording), "0.1", str(out), str(workers), str(batch)]
    return argv, {}


def analyzer_command(python: Path, recording: Path, out: Path) -> Command:
    argv = [str(python), "-m", "birdnet_analyzer.analyze", str(recording), "-o", str(out)]
    return [*argv, "--threads", str(len(os.sched_getaffinity(0)))], {}


def commands(recording: Path, tmp: Path, quick: bool) -> tuple[dict[str, Command], dict[str, Any]]:
    ours = [str(CLI)]
    found: dict[str, Command] = {
        "sevensense embed": (
            [*ours, "embed", str(recording), "--out", str(tmp / "e.parquet"), "--quiet"],
            {},
        ),
        "sevensense detect": (
            [
                *ours,
                "detect",
                str(recording),
                "--out",
                str(tmp / "d.csv"),
                "--format",
                "csv",
                "--quiet",
            ],
            {},
        ),
    }
    for spin in ("spin", "no_spin"):  # spinning always / never, beside the default (auto)
        found[f"sevensense embed ({spin})"] = (found["sevensense embed"][0], CONFIGS[spin])
    if openvino_available():
        found["sevensense embed (OpenVINO)"] = (
            found["sevensense embed"][0],
            {"SEVENSENSE_INFERENCE__RUNTIME": "openvino"},
        )
    notes: dict[str, Any] = {}
    python = peers.birdnet_python()
    sweep = ((2, 8),) if quick else BIRDNET_SWEEP
    # The sweep runs on a 4-minute recording (the ranking, not the time, is what it is for).
    short = tmp / "sweep.flac"
    tiled_recording(short, 2)
    tried = {
        f"workers {w}, batch {b}": seconds(birdnet_command(python, short, tmp / "b.json", w, b))
        for w, b in sweep
    }
    notes["birdnet_sweep_s_on_4_min"] = {
        k: round(v, 2) if isinstance(v, float) else v for k, v in tried.items()
    }
    timed = {k: v for k, v in tried.items() if isinstance(v, float)}
    if timed:
        best = min(timed, key=timed.__getitem__)
        w, b = (int(x.split()[-1]) for x in best.split(", "))
        found[f"birdnet 1.3.1 ({best})"] = birdnet_command(python, recording, tmp / "b.json", w, b)
    analyzer = peers.analyzer_python()
    if analyzer is None:
        notes["BirdNET-Analyzer 2.4.0"] = f"not run: no {peers.ANALYZER_VENV.name}"
    else:
        (tmp / "analyzer").mkdir(exist_ok=True)
        found["BirdNET-Analyzer 2.4.0"] = analyzer_command(analyzer, recording, tmp / "analyzer")
    return found, notes


def whole_process(quick: bool, rounds: int) -> dict[str, Any]:
    rounds, copies = (1, 2) if quick else (rounds, 10)
    cpus = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        recording = tmp / "soundscape_tiled.flac"
        audio_s = tiled_recording(recording, copies)
        found, notes = commands(recording, tmp, quick)
        seconds(found["sevensense embed"])  # warm the page cache and the model files
        times: dict[str, dict[str, list[float | str]]] = {
            name: {"quiet": [], "busy": []} for name in found
        }
        for _ in range(rounds):
            for name, command in found.items():
                times[name]["quiet"].append(seconds(command))
            if len(cpus) > 1:
                with busy_neighbour(cpus[-1]):
                    for name, command in found.items():
                        times[name]["busy"].append(seconds(command))
    medians: dict[str, dict[str, float | str]] = {}
    for name, runs in times.items():
        medians[name] = {}
        for load, values in runs.items():
            ok = [v for v in values if isinstance(v, float)]
            medians[name][load] = round(statistics.median(ok), 2) if ok else str(values[:1])
    result: dict[str, Any] = {
        "recording": f"{SOUNDSCAPE.name} x{copies} ({audio_s / 60:.0f} min)",
        "rounds": rounds,
        "cpus": len(cpus),
        "seconds_median": medians,
        "notes": notes,
    }
    result["x_faster_than"] = _ratios(medians)
    result["spinning"] = _spinning(medians)
    return result


def _spinning(medians: dict[str, dict[str, float | str]]) -> dict[str, float]:
    """The default (auto) against always and never spinning: goals quiet <= 1.05x always
    spinning, busy <= 1.3x its own quiet time."""
    auto, spin = medians["sevensense embed"], medians["sevensense embed (spin)"]
    out: dict[str, float] = {}
    if isinstance(auto.get("quiet"), float) and isinstance(spin.get("quiet"), float):
        out["auto_quiet_vs_spin_quiet"] = round(float(auto["quiet"]) / float(spin["quiet"]), 3)
    if isinstance(auto.get("busy"), float) and isinstance(auto.get("quiet"), float):
        out["auto_busy_vs_auto_quiet"] = round(float(auto["busy"]) / float(auto["quiet"]), 3)
    if isinstance(spin.get("busy"), float) and isinstance(spin.get("quiet"), float):
        out["spin_busy_vs_spin_quiet"] = round(float(spin["busy"]) / float(spin["quiet"]), 3)
    return out


def _ratios(medians: dict[str, dict[str, float | str]]) -> dict[str, dict[str, float]]:
    """Peer's time / ours, per load: the goals are >= 3 (birdnet), >= 4 (Analyzer)."""
    out: dict[str, dict[str, float]] = {}
    peers_found = [n for n in medians if not n.startswith("sevensense")]
    for ours in (n for n in medians if n.startswith("sevensense")):
        for peer in peers_found:
            for load in ("quiet", "busy"):
                a, b = medians[ours].get(load), medians[peer].get(load)
                if isinstance(a, float) and isinstance(b, float):
                    out.setdefault(f"{ours} vs {peer}", {})[load] = round(b / a, 2)
    return out


def model_macs(path: Path, window: int) -> float:
    """Multiply-accumulates of one window in the graph's Conv, MatMul and Gemm nodes."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value, dims[1].dim_value = 1, window
    model = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for info in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        shapes[info.name] = [d.dim_value for d in info.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = 0.0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if not out or 0 in out:
            continue
        if node.op_type == "Conv":
            w = shapes.get(node.input[1], [])
            if len(w) >= 3:
                macs += float(np.prod(out)) * float(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes.get(node.input[0], [])
            if a:
                k = a[-1] if not (node.op_type == "Gemm" and _attr(node, "transA")) else a[0]
                macs += float(np.prod(out)) * k
    return macs


def _attr(node: Any, name: str) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), 0)


def gemm_gflops(threads: int) -> float:
    env = {**os.environ}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    proc = subprocess.run(
        [sys.executable, "-c", GEMM_PROBE], env=env, capture_output=True, text=True, check=True
    )
    return float(proc.stdout.strip())


def _rate(run: Callable[[], object], windows: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return windows / best


def engine_figures(quick: bool) -> dict[str, Any]:
    settings = load_settings("default")
    settings.inference.providers = ["cpu"]
    engine = EmbeddingEngine(settings)
    model = engine.model()
    config = engine.preprocess_config(model)
    windows = list(prepare_windows(SOUNDSCAPE, config))[: 16 if quick else 40]
    batch = settings.inference.max_batch_size
    stacked = np.stack([w.samples for w in windows])
    names = [model.output_names[OutputRole.EMBEDDING], model.output_names[OutputRole.LOGITS]]
    rounds = 2 if quick else 4

    def raw(session: Any) -> Callable[[], object]:
        return lambda: [
            session.run(names, {model.input_name: stacked[i : i + batch]})
            for i in range(0, len(stacked), batch)
        ]

    def through_engine() -> object:
        return list(engine.embed_windows(model, (("bench", w) for w in windows)))

    figures: dict[str, Any] = {
        "windows": len(windows),
        "batch": batch,
        "intra_threads": settings.inference.resolved_intra_threads(),
    }
    rates = {"engine": 0.0, "raw ORT session.run": 0.0}
    for _ in range(rounds):  # interleaved, best of the rounds
        rates["engine"] = max(rates["engine"], _rate(through_engine, len(windows), 1))
        raw_rate = _rate(raw(model.session), len(windows), 1)
        rates["raw ORT session.run"] = max(rates["raw ORT session.run"], raw_rate)
    if openvino_available():
        ov_settings = settings.model_copy(deep=True)
        ov_settings.inference.runtime = "openvino"
        ov_model = EmbeddingEngine(ov_settings).model()
        rates["raw OpenVINO infer"] = _rate(raw(ov_model.session), len(windows), rounds)
    macs = model_macs(model.artifact.model_path, model.manifest.window_samples)
    gflops = gemm_gflops(2)
    limit = gflops * 1e9 / (2 * macs)
    figures["windows_per_s"] = {k: round(v, 1) for k, v in rates.items()}
    figures["model_gmac_per_window"] = round(macs / 1e9, 3)
    figures["numpy_fp32_gemm_gflops_2_threads"] = round(gflops, 1)
    figures["fp32_limit_windows_per_s"] = round(limit, 1)
    figures["fraction_of_fp32_limit"] = {k: round(v / limit, 2) for k, v in rates.items()}
    figures["engine_vs_raw_ort"] = round(rates["engine"] / rates["raw ORT session.run"], 3)
    return figures


def run(quick: bool, rounds: int = 2) -> dict[str, Any]:
    start = time.perf_counter()
    result: dict[str, Any] = {"loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}
    result["engine"] = engine_figures(quick)
    result["whole_process"] = whole_process(quick, rounds)
    result["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="4-minute recording, 1 round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    text = json.dumps(run(args.quick, args.rounds), indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
