"""A trained classifier's two forms: perch-hoplite's ``LinearClassifier`` JSON (its
``to_config_dict().to_json()``: base64 float32 ``beta`` [D, C] and ``beta_bias`` [C], the
classes, the embedding model's config), which hoplite's ``LinearClassifier.load`` reads; and
a one-MatMul ONNX head (``embedding`` [B, D] → ``logits`` [B, C]) that runs on ONNX Runtime
where the embeddings are made."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from sevensense.errors import ManifestError

HEAD_OPSET = 18
INPUT = "embedding"
OUTPUT = "logits"


@dataclass(frozen=True)
class LinearHead:
    beta: np.ndarray  # [D, C] float32
    bias: np.ndarray  # [C] float32
    classes: tuple[str, ...]

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.asarray(embeddings, dtype=np.float32) @ self.beta + self.bias
        return out

    @property
    def dim(self) -> int:
        return int(self.beta.shape[0])


def hoplite_json(head: LinearHead, model_config: dict[str, Any]) -> str:
    return json.dumps(
        {
            "beta": base64.b64encode(np.float32(head.beta).tobytes()).decode("ascii"),
            "beta_bias": base64.b64encode(np.float32(head.bias).tobytes()).decode("ascii"),
            "classes": list(head.classes),
            "model_config": model_config,
        },
        indent=2,
        sort_keys=True,
    )


def from_hoplite_json(text: str) -> LinearHead:
    try:
        cfg = json.loads(text)
        classes = tuple(str(c) for c in cfg["classes"])
        beta = np.frombuffer(base64.b64decode(cfg["beta"]), dtype=np.float32)
        bias = np.frombuffer(base64.b64decode(cfg["beta_bias"]), dtype=np.float32)
        beta = beta.reshape(-1, len(classes))
    except (KeyError, ValueError, TypeError) as exc:
        raise ManifestError(f"not a perch-hoplite LinearClassifier JSON: {exc}") from exc
    if bias.shape != (len(classes),):
        raise ManifestError(f"beta_bias has {bias.size} values for {len(classes)} classes")
    return LinearHead(beta.copy(), bias.copy(), classes)


def onnx_bytes(head: LinearHead, name: str) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [INPUT, "beta"], ["projected"]),
            helper.make_node("Add", ["projected", "bias"], [OUTPUT]),
        ],
        name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", head.dim])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", len(head.classes)])],
        initializer=[
            numpy_helper.from_array(np.ascontiguousarray(head.beta, np.float32), "beta"),
            numpy_helper.from_array(np.ascontiguousarray(head.bias, np.float32), "bias"),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", HEAD_OPSET)],
        producer_name="sevensense",
        doc_string="classes: " + json.dumps(list(head.classes)),
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
