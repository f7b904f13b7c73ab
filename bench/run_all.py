"""Engine benchmarks on the 120-s soundscape with BirdNET v2.4, all figures from one run.

    make bench            # or: .venv/bin/python -m bench.run_all [--threads 2] [--json out.json]

Ratios are measured in the same process, interleaved (A, B, A, B, …) and summarised by the
median, because these machines are noisy; absolute figures are for orientation only.

1. pre-processing (decode + resample + window + normalise) in × real time;
2. engine windows/s vs raw ``InferenceSession.run`` on the same prepared batches;
3. end-to-end embedding (decode → Parquet) × real time vs the LiteRT interpreter running
   the original TFLite on the same windows, at equal thread counts;
4. peak RSS of embedding a synthetic 2-hour recording (separate process).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench.synthetic_audio import write_long_recording
from sevensense.artifacts.manifest import OutputRole
from sevensense.audio.pipeline import prepare_windows
from sevensense.inference.engine import EmbeddingEngine
from sevensense.inference.recordings import embed_recordings
from sevensense.outputs.writers import open_writer
from sevensense.settings import load_settings, repo_root

REPO = repo_root()
SOUNDSCAPE = REPO.parent / "shared" / "audio" / "soundscape_birdnet_120s_48k.flac"
AUDIO_S = 120.0


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median wall time of each callable, run in alternation so drift hits all equally."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(rounds):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def litert_runner(tflite: Path, batch: np.ndarray, threads: int) -> Callable[[], None]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite), num_threads=threads)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], list(batch.shape))
    interp.allocate_tensors()
    out = interp.get_output_details()[0]["index"]

    def run() -> None:
        interp.set_tensor(inp["index"], batch)
        interp.invoke()
        interp.get_tensor(out)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--no-spin", action="store_true", help="ORT threads do not busy-wait (shared cores)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rss-model", default="birdnet-v2.4", help="model for the 2-hour RSS run")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    settings = load_settings("default")
    settings.inference.providers = ["cpu"]
    settings.inference.intra_threads = args.threads
    settings.inference.max_batch_size = args.batch
    settings.inference.allow_spinning = not args.no_spin
    engine = EmbeddingEngine(settings)
    model = engine.model("birdnet-v2.4")
    perch = engine.model("perch-contract")
    results: dict[str, Any] = {
        "threads": args.threads,
        "batch": args.batch,
        "input": SOUNDSCAPE.name,
    }

    # 1. pre-processing
    cfg_bn = engine.preprocess_config(model)
    cfg_pc = engine.preprocess_config(perch)
    pre = interleaved(
        {
            "birdnet_48k": lambda: list(prepare_windows(SOUNDSCAPE, cfg_bn)),
            "perch_32k_resampled": lambda: list(prepare_windows(SOUNDSCAPE, cfg_pc)),
        },
        args.rounds,
    )
    results["preprocess_x_realtime"] = {k: AUDIO_S / v for k, v in pre.items()}

    # 2. engine vs raw session on identical prepared batches
    windows = list(prepare_windows(SOUNDSCAPE, cfg_bn))
    stack = np.stack([w.samples for w in windows]).astype(np.float32)
    batches = [stack[i : i + args.batch] for i in range(0, len(stack), args.batch)]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0" if args.no_spin else "1")
    raw = ort.InferenceSession(
        str(model.artifact.model_path), opts, providers=["CPUExecutionProvider"]
    )
    names = [model.output_names[OutputRole.EMBEDDING], model.output_names[OutputRole.LOGITS]]
    tagged = [("soundscape", w) for w in windows]
    timing = interleaved(
        {
            "raw_session_run": lambda: [raw.run(names, {model.input_name: b}) for b in batches],
            "engine": lambda: list(engine.embed_windows(model, tagged)),
        },
        args.rounds,
    )
    n = len(windows)
    results["windows"] = n
    results["raw_windows_per_s"] = n / timing["raw_session_run"]
    results["engine_windows_per_s"] = n / timing["engine"]
    results["engine_vs_raw"] = timing["raw_session_run"] / timing["engine"]

    # 3. end-to-end vs LiteRT on the same windows
    from sevensense.builders.birdnet import cached_birdnet_files

    tflite = cached_birdnet_files(REPO / ".cache").tflite_path
    lite_runs = [litert_runner(tflite, b, args.threads) for b in batches]

    def end_to_end() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            writer = open_writer(Path(tmp) / "o.parquet", "parquet", model.manifest.embedding_dim)
            summary = embed_recordings(engine, [SOUNDSCAPE], writer.write, model=model)
            writer.close(summary.to_dict())

    e2e = interleaved(
        {"sevensense_embed": end_to_end, "litert_inference_only": lambda: [r() for r in lite_runs]},
        args.rounds,
    )
    results["end_to_end_x_realtime"] = AUDIO_S / e2e["sevensense_embed"]
    results["litert_x_realtime"] = AUDIO_S / e2e["litert_inference_only"]
    results["end_to_end_vs_litert"] = e2e["litert_inference_only"] / e2e["sevensense_embed"]

    # 4. 2-hour synthetic recording, fresh process
    if not args.skip_rss:
        with tempfile.TemporaryDirectory() as tmp:
            path = write_long_recording(Path(tmp) / "two_hours.wav", 7200)
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.rss_probe",
                    str(path),
                    "--model",
                    args.rss_model,
                    "--threads",
                    str(args.threads),
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            results["two_hour"] = json.loads(out.stdout.strip().splitlines()[-1])

    print(json.dumps(results, indent=2))
    print()
    pre_x = results["preprocess_x_realtime"]
    lines = [
        f"pre-processing       : BirdNET 48 kHz {pre_x['birdnet_48k']:.0f}x real time, "
        f"48->32 kHz resampled {pre_x['perch_32k_resampled']:.0f}x",
        f"engine vs raw ORT    : {results['engine_windows_per_s']:.1f} vs "
        f"{results['raw_windows_per_s']:.1f} windows/s = {results['engine_vs_raw']:.3f}x "
        "(target >= 0.9)",
        f"end-to-end vs LiteRT : {results['end_to_end_x_realtime']:.1f}x vs "
        f"{results['litert_x_realtime']:.1f}x real time = "
        f"{results['end_to_end_vs_litert']:.2f}x (target >= 1.3)",
    ]
    if "two_hour" in results:
        t = results["two_hour"]
        lines.append(
            f"2-hour synthetic     : peak RSS {t['peak_rss_mb']:.0f} MB, {t['windows']} windows, "
            f"{t['x_realtime']:.0f}x real time"
        )
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
