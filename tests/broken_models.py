"""Deliberately broken artifacts for the Appendix B tests: BirdNET v2.4's real graph with its
embedding output rewired so that it collapses onto two dimensions, or turns NaN whenever a
window's first sample is negative. The species head still reads the healthy embedding, so
the BirdNET cross-validation item passes and only the broken item fails; real weights are
needed for that (a random-weight model fails cross-validation, as it should)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sevensense.artifacts.checksum import sha256_file
from sevensense.artifacts.manifest import MANIFEST_NAME, MODEL_FILE
from sevensense.artifacts.registry import Artifact, ModelRegistry

Breakage = Literal["none", "collapsed", "nan"]
NAME = "gate-birdnet"


def _rewire(model: onnx.ModelProto, breakage: Breakage, input_name: str) -> onnx.ModelProto:
    model.doc_string = f"TEST ARTIFACT for the Appendix B gate: {breakage}"  # its own SHA-256
    if breakage == "none":
        return model
    graph = model.graph
    for node in graph.node:  # the head reads the healthy embedding; only the output breaks
        node.output[:] = ["embedding_raw" if o == "embedding" else o for o in node.output]
        node.input[:] = ["embedding_raw" if i == "embedding" else i for i in node.input]
    dim = next(o for o in graph.output if o.name == "embedding").type.tensor_type.shape.dim[1]
    width = int(dim.dim_value)
    if breakage == "collapsed":
        mask = np.zeros(width, dtype=np.float32)
        mask[:2] = 1.0
        graph.initializer.append(numpy_helper.from_array(mask, "collapse_mask"))
        graph.node.append(
            helper.make_node("Mul", ["embedding_raw", "collapse_mask"], ["embedding"])
        )
    else:
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array([0], np.int64), "first_start"),
                numpy_helper.from_array(np.array([1], np.int64), "first_end"),
                numpy_helper.from_array(np.array([1], np.int64), "first_axis"),
                numpy_helper.from_array(np.array(0.0, np.float32), "zero_f"),
            ]
        )
        graph.node.extend(
            [
                helper.make_node(
                    "Slice",
                    [input_name, "first_start", "first_end", "first_axis"],
                    ["first_sample"],
                ),
                helper.make_node("Sqrt", ["first_sample"], ["first_root"]),  # NaN below 0
                helper.make_node("Mul", ["first_root", "zero_f"], ["nan_or_zero"]),
                helper.make_node("Add", ["embedding_raw", "nan_or_zero"], ["embedding"]),
            ]
        )
    onnx.checker.check_model(model)
    return model


def build_gate_model(
    registry: ModelRegistry, base: Artifact, version: str, breakage: Breakage
) -> Artifact:
    """A ``gate-birdnet`` version of the BirdNET artifact ``base``, healthy or broken."""
    proto = _rewire(onnx.load(str(base.model_path)), breakage, base.manifest.input.name)
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    extras = {
        f.name: f
        for f in base.directory.iterdir()
        if f.is_file()
        and f.name not in (MODEL_FILE, MANIFEST_NAME)
        and f.suffix in {".txt", ".json"}
        and not f.name.startswith("appendix_b")
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_FILE
        path.write_bytes(proto.SerializeToString())
        manifest = base.manifest.model_copy(
            update={
                "name": NAME,
                "version": version,
                "sha256": sha256_file(path, use_cache=False),
                "size_bytes": path.stat().st_size,
                "description": f"TEST ARTIFACT for the Appendix B gate: {breakage}",
            }
        )
        return registry.register(path, manifest, extra_files=extras, move=True)
