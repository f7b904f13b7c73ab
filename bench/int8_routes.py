"""int8 routes for BirdNET v2.4 with mixed precision, as a Pareto table: speed vs quality.

    .venv/bin/python -m bench.int8_routes [--quick] [--json out.json]

Three families, each model scored on the same held-out real windows (embedding cosine,
top-1/top-5 as ``builders.variants.compare``) and timed on ONNX Runtime and on OpenVINO
(2 threads, batch 8, interleaved with the fp32 base, best of rounds):

* the recipe of ``builders/variants.py`` (static QDQ, u8 activations, s8 per-channel
  weights, MinMax calibration on real windows, the spectrogram front end kept float) with
  the layers that lose most kept in float as well. A layer's loss is measured once, on the
  all-int8 model: the relative error of its output against the float model's, minus the
  error that already reached its input, on calibration windows. For k in ``KEEP``, the k
  worst layers stay float;
* the head only (BirdNET's one MatMul/Gemm outside the front end; its convolutions are
  the layers measured above): the ``quantized`` variant's recipes, v2 (dynamic, per-tensor
  weights), per-channel weights, and v3 (``builders.quantize.quantize_model``, 8-bit weight
  blocks) at several block sizes;
* NNCF on OpenVINO (``bench/nncf_routes.py``), plain and with accuracy control (not with
  ``--quick``); OpenVINO only.

The issue-25 bar: >= 1.8x with cosine >= 0.99 and top-5 >= 95 %.
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
from sevensense.builders.quantize import (
    BLOCK_SIZE,
    _name_nodes,
    _quiet_quantizer,
    front_end_node_set,
    front_end_nodes,
    quantize_model,
    run_outputs,
)
from sevensense.inference.openvino_runtime import OpenVinoSession
from sevensense.inference.openvino_runtime import available as openvino_available
from sevensense.settings import repo_root

KEEP = (0, 8, 16, 32, 64)
BLOCKS = (32, 64, 128, 256)
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


def _head_dynamic(src: Path, dst: Path, per_channel: bool) -> None:
    """The ``quantized`` recipe v2 (per tensor) and its per-channel twin."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    _name_nodes(model)
    exclude = [n for name in front_end_nodes(model) for n in (name, f"{name}_MatMul")]
    with _quiet_quantizer():
        quantize_dynamic(
            model,
            dst,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            extra_options={"MatMulConstBOnly": True},
        )


def _timed_row(
    base: Path, path: Path, m: Any, speed: np.ndarray, rounds: int, *, onnx_file: bool
) -> dict[str, Any]:
    """windows/s of the route and its ratios, each runtime interleaved with its fp32 base."""
    pairs: dict[str, tuple[Any, Any]] = {}
    if onnx_file:
        pairs["ort"] = (_session(base), _session(path))
    if openvino_available():
        pairs["openvino"] = (OpenVinoSession(base, THREADS), OpenVinoSession(path, THREADS))
    fp32_ort = _rate(_session(base), m, speed) if not onnx_file else 0.0
    row: dict[str, Any] = {}
    for runtime, (b, o) in pairs.items():
        best = [0.0, 0.0]
        for _ in range(rounds):
            best[0] = max(best[0], _rate(b, m, speed))
            best[1] = max(best[1], _rate(o, m, speed))
        fp32_ort = fp32_ort or best[0]
        row[f"{runtime}_windows_s"] = round(best[1], 1)
        row[f"{runtime}_vs_its_fp32"] = round(best[1] / best[0], 2)
        row[f"{runtime}_vs_ort_fp32"] = round(best[1] / fp32_ort, 2)
    return row


def run(quick: bool) -> dict[str, Any]:
    registry = ModelRegistry(repo_root() / "models")
    base = registry.resolve(MODEL)
    m = base.manifest
    calibration_all = v.real_windows(
        m, v.audio_files(v.default_locations(v.DEFAULT_CALIBRATION)), 96
    )
    calibration = calibration_all[: v.CALIBRATION_WINDOWS]
    held = v.real_windows(
        m, v.audio_files(v.default_locations(v.DEFAULT_HOLDOUT)), 24 if quick else v.HOLDOUT_WINDOWS
    )
    speed = held[:16]
    rounds = 1 if quick else 3
    base_session = _session(base.model_path)
    base_out = run_outputs(base_session, m, held)
    rows: dict[str, Any] = {}

    def score(name: str, path: Path, session: Any, *, onnx_file: bool = True) -> None:
        quality = v.compare(base_out, run_outputs(session, m, held))
        row: dict[str, Any] = {key: round(x, 4) for key, x in quality.items()}
        row.update(_timed_row(base.model_path, path, m, speed, rounds, onnx_file=onnx_file))
        row["passes_issue25_bar"] = bool(
            quality["cosine_median"] >= 0.99
            and quality.get("top5_agreement", 0) >= 0.95
            and max(row.get("ort_vs_ort_fp32", 0), row.get("openvino_vs_ort_fp32", 0)) >= 1.8
        )
        row["passes_quality_bar"] = bool(
            quality["cosine_median"] >= 0.99 and quality.get("top5_agreement", 0) >= 0.95
        )
        rows[name] = row

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
            score(f"static int8, {k} worst layers float", path, _session(path))
        for per_channel in (False, True):
            path = tmp / f"head_dynamic_{per_channel}.onnx"
            _head_dynamic(base.model_path, path, per_channel)
            what = "per-channel" if per_channel else "per-tensor (`quantized` v2)"
            score(f"head dynamic int8, {what} weights", path, _session(path))
        for block in (BLOCK_SIZE,) if quick else BLOCKS:
            path = tmp / f"head_blocks_{block}.onnx"
            quantize_model(base.model_path, path, block_size=block)
            tag = " (`quantized` v3)" if block == BLOCK_SIZE else ""
            score(f"head 8-bit weight blocks of {block}{tag}", path, _session(path))
        if openvino_available():
            from bench.nncf_routes import nncf_models

            model = onnx.load(str(base.model_path))
            _name_nodes(model)
            irs = nncf_models(
                base.model_path,
                m,
                calibration,
                calibration_all[v.CALIBRATION_WINDOWS :],
                front_end_node_set(model),
                tmp,
                accuracy_control=not quick,
            )
            for name, path in irs.items():
                score(name, path, OpenVinoSession(path, THREADS), onnx_file=False)
    return {
        "model": str(m.identity),
        "holdout_windows": len(held),
        "calibration_windows": len(calibration),
        "nncf_validation_windows": len(calibration_all) - len(calibration),
        "threads": THREADS,
        "worst_layers": ranked[:10],
        "routes": rows,
    }


def main() -> None:
    quick_json_main(run, __doc__, "fewer windows and routes")


if __name__ == "__main__":
    main()
