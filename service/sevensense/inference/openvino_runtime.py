"""OpenVINO as an optional CPU runtime for the same ONNX files (``inference.runtime =
"openvino"``; the ``openvino`` extra).

OpenVINO reads the ONNX graph itself, so no second artifact is built or verified. The
class below answers the one call the engine makes of an ONNX Runtime session
(``run(output_names, feeds)``), so everything above the session stays runtime-agnostic.
Outputs are copied out of the request's buffers, which the next call reuses.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from sevensense.errors import ModelError

PROVIDER = "OpenVINO/CPU"


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class OpenVinoSession:
    """A compiled model on OpenVINO's CPU plugin; one infer request per calling thread."""

    def __init__(self, model_path: Path, threads: int) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ModelError(
                "inference.runtime = openvino needs the openvino package "
                "(pip install 'sevensense[openvino]')"
            ) from exc
        core = ov.Core()
        self._compiled: Any = core.compile_model(
            str(model_path),
            "CPU",
            {
                "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": "LATENCY",
                # f32 as ONNX Runtime computes it: parity with the base model (no bf16 here).
                "INFERENCE_PRECISION_HINT": "f32",
            },
        )
        self._outputs = {name: out for out in self._compiled.outputs for name in out.get_names()}
        self._local = threading.local()

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._compiled.create_infer_request()
            self._local.request = request
        return request

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self._request().infer(feeds)
        return [np.array(results[self._outputs[name]], copy=True) for name in output_names]

    def get_providers(self) -> list[str]:
        return [PROVIDER]
