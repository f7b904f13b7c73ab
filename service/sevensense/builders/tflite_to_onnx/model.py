"""The entry point: a TFLite file in, a checked, reproducible ONNX ModelProto out."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import onnx
from onnx import helper

from sevensense.builders.tflite_to_onnx.converter import _Converter
from sevensense.builders.tflite_to_onnx.errors import ConversionError

PRODUCER_NAME: Final = "sevensense-tflite2onnx"
PRODUCER_VERSION: Final = "1.2"  # 1.1: the RFFT2D matmul in float64; 1.2: unpaired rows
MIN_OPSET: Final = 18


def convert_tflite(
    tflite_path: Path,
    *,
    outputs: Mapping[str, str],
    input_name: str | None = None,
    opset: int = 18,
) -> onnx.ModelProto:
    """Convert a float32 TFLite model to ONNX with a dynamic ``batch`` dimension.

    ``outputs`` maps each ONNX output name to the TFLite tensor it exposes, so intermediate
    tensors such as embeddings can be outputs next to the logits. The same input bytes always
    give the same output bytes.

    Raises :class:`ConversionError` for anything that cannot be translated exactly.
    """
    if not outputs:
        raise ConversionError("at least one output is required")
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ConversionError(
            f"opset {opset} unsupported (need {MIN_OPSET}..{onnx.defs.onnx_opset_version()})"
        )
    buf = Path(tflite_path).read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ConversionError(f"{tflite_path} is not a TFLite flatbuffer")
    conv = _Converter(buf)
    graph_inputs, graph_outputs = conv.run(outputs, input_name)
    graph = helper.make_graph(
        conv.nodes, "tflite_graph", graph_inputs, graph_outputs, initializer=conv.initializers
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
    )
    model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    helper.set_model_props(model, {"source_tflite_sha256": hashlib.sha256(buf).hexdigest()})
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"generated ONNX model is invalid: {exc}") from exc
    return model
