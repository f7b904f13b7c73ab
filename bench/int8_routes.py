"""int8 routes for BirdNET v2.4 with mixed precision, as a Pareto table: speed vs quality.

    .venv/bin/python -m bench.int8_routes [--quick] [--json out.json]

The recipe of ``builders/variants.py`` (static QDQ, u8 activations, s8 per-channel weights,
MinMax calibration on real windows, the spectrogram front end kept float) with the layers
that lose most kept in float as well. A layer's loss is measured once, on the all-int8
model: the relative error of its output against the float model's, minus the error that
already reached its input, on calibration windows. For k in ``KEEP``, the k worst layers stay
float; each model is scored on held-out real windows (embedding cosine, top-1/top-5 as
``builders.variants.compare``) and timed on ONNX Runtime and on OpenVINO (2 threads, batch 8,
interleaved with the fp32 base). The issue-25 bar: >= 1.8x with cosine >= 0.99 and top-5
>= 95 %.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from bench.report import quick_json_main
from sevensense.artifacts.registry import ModelRegistry
from sevensense.builders import variants as v
from sevensense.builders.quantize import _name_nodes, run_outputs
from sevensense.inference.openvino_runtime import OpenVinoSession
from sevensense.inference.openvino_runtime import available as openvino_available
from sevensense.settings import repo_root

KEEP = (0, 8, 16, 32, 64)
MODEL = "birdnet-v2.4"
THREADS = 2


def _session(path: Path) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _with_outputs(src: Path, dst: Path, names: list[str]) -> None:
    model = onnx.load(str(src))
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    onnx.save(model, str(dst))


def layer_losses(base: Path, quantized: Path, windows: np.ndarray, tmp: Path) -> dict[str, float]:
    """Per quantised node: relative output error minus the relative error at its input."""
    model = onnx.load(str(base))
    _name_nodes(model)
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    tensors = sorted({t for n in nodes for t in (n.input[0], n.output[0])})
    outs = []
    for src, name in ((base, "f.onnx"), (quantized, "q.onnx")):
        _with_outputs(src, tmp / name, tensors)
        session = _session(tmp / name)
        names = [o.name for o in session.get_outputs() if o.name in tensors]
        values = session.run(names, {session.get_inputs()[0].name: windows})
        outs.append(dict(zip(names, values, strict=True)))
    f, q = outs

    def rel(t: str) -> float:
        if t not in f or t not in q:
            return 0.0
        return float(np.linalg.norm(f[t] - q[t]) / (np.linalg.norm(f[t]) + 1e-12))

    return {n.name: rel(n.output[0]) - rel(n.input[0]) for n in nodes}


def _rate(session: Any, manifest: Any, windows: np.ndarray) -> float:
    start = time.perf_counter()
    run_outputs(session, manifest, windows)
    return len(windows) / (time.perf_counter() - start)


def run(quick: bool) -> dict[str, Any]:
    registry = ModelRegistry(repo_root() / "models")
    base = registry.resolve(MODEL)
    m = base.manifest
    calibration = v.real_windows(
        m, v.audio_files(v.default_locations(v.DEFAULT_CALIBRATION)), v.CALIBRATION_WINDOWS
    )
    held = v.real_windows(
        m, v.audio_files(v.default_locations(v.DEFAULT_HOLDOUT)), 24 if quick else v.HOLDOUT_WINDOWS
    )
    speed = held[:16]
    rounds = 1 if quick else 3
    base_out = run_outputs(_session(base.model_path), m, held)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp_name:
        tmp = Path(tmp_name)
        all_int8 = tmp / "k0.onnx"
        v.quantize_static_model(base.model_path, all_int8, m, calibration)
        losses = layer_losses(base.model_path, all_int8, calibration[:8], tmp)
        ranked = sorted(losses, key=losses.__getitem__, reverse=True)
        for k in KEEP[:3] if quick else KEEP:
            path = tmp / f"k{k}.onnx"
            if k:
                v.quantize_static_model(
                    base.model_path, path, m, calibration, keep_float=ranked[:k]
                )
            quality = v.compare(base_out, run_outputs(_session(path), m, held))
            row: dict[str, Any] = {key: round(x, 4) for key, x in quality.items()}
            row["float_layers_kept"] = k
            sessions = {"ort": (_session(base.model_path), _session(path))}
            if openvino_available():
                sessions["openvino"] = (
                    OpenVinoSession(base.model_path, THREADS),
                    OpenVinoSession(path, THREADS),
                )
            fp32_ort = 0.0
            for runtime, (b, o) in sessions.items():
                best = [0.0, 0.0]
                for _ in range(rounds):
                    best[0] = max(best[0], _rate(b, m, speed))
                    best[1] = max(best[1], _rate(o, m, speed))
                fp32_ort = fp32_ort or best[0]
                row[f"{runtime}_windows_s"] = round(best[1], 1)
                row[f"{runtime}_vs_its_fp32"] = round(best[1] / best[0], 2)
                row[f"{runtime}_vs_ort_fp32"] = round(best[1] / fp32_ort, 2)
            row["passes_issue25_bar"] = bool(
                quality["cosine_median"] >= 0.99
                and quality.get("top5_agreement", 0) >= 0.95
                and max(row.get("ort_vs_ort_fp32", 0), row.get("openvino_vs_ort_fp32", 0)) >= 1.8
            )
            rows[f"static int8, {k} worst layers float"] = row
    return {
        "model": str(m.identity),
        "holdout_windows": len(held),
        "calibration_windows": len(calibration),
        "threads": THREADS,
        "worst_layers": ranked[:10],
        "routes": rows,
    }


def main() -> None:
    quick_json_main(run, __doc__, "fewer windows and routes")


if __name__ == "__main__":
    main()
