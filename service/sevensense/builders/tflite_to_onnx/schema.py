"""Reading the TFLite flatbuffer: type and op-code tables and the operator view handlers get."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import tflite
from onnx import TensorProto

from sevensense.builders.tflite_to_onnx.errors import ConversionError
from sevensense.builders.tflite_to_onnx.values import _Value

_TFL_DTYPES: Final[dict[int, np.dtype[Any]]] = {
    0: np.dtype(np.float32),
    1: np.dtype(np.float16),
    2: np.dtype(np.int32),
    3: np.dtype(np.uint8),
    4: np.dtype(np.int64),
    6: np.dtype(np.bool_),
    7: np.dtype(np.int16),
    8: np.dtype(np.complex64),
    9: np.dtype(np.int8),
    10: np.dtype(np.float64),
}

_ONNX_DTYPES: Final[dict[np.dtype[Any], int]] = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int8): TensorProto.INT8,
    np.dtype(np.int16): TensorProto.INT16,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.bool_): TensorProto.BOOL,
}

_OP_NAMES: Final[dict[int, str]] = {
    v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")
}

_ACTIVATIONS: Final[dict[int, str]] = {
    0: "NONE",
    1: "RELU",
    2: "RELU_N1_TO_1",
    3: "RELU6",
    4: "TANH",
    5: "SIGN_BIT",
}

_TFL_SAME: Final = 0


@dataclass
class _Op:
    index: int
    name: str
    raw: Any
    inputs: list[_Value | None]
    output_ids: list[int]
    options_cache: dict[str, Any] = field(default_factory=dict)

    def options(self, cls_name: str) -> Any:
        if cls_name not in self.options_cache:
            table = self.raw.BuiltinOptions()
            expected = getattr(tflite.BuiltinOptions, cls_name)
            if table is None or int(self.raw.BuiltinOptionsType()) != expected:
                raise ConversionError(f"{self.name} (op #{self.index}) has no {cls_name}")
            opts = getattr(tflite, cls_name)()
            opts.Init(table.Bytes, table.Pos)
            self.options_cache[cls_name] = opts
        return self.options_cache[cls_name]

    def input(self, i: int) -> _Value:
        v = self.inputs[i] if i < len(self.inputs) else None
        if v is None:
            raise ConversionError(f"{self.name} (op #{self.index}) is missing input {i}")
        return v

    def optional(self, i: int) -> _Value | None:
        return self.inputs[i] if i < len(self.inputs) else None
