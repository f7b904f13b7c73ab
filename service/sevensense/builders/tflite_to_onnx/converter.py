"""The converter: the op-family mixins combined, and the driver that walks the TFLite graph."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper

from sevensense.builders.tflite_to_onnx.errors import ConversionError
from sevensense.builders.tflite_to_onnx.ops_math import _MathOps
from sevensense.builders.tflite_to_onnx.ops_nn import _LayerOps
from sevensense.builders.tflite_to_onnx.ops_shape import _ShapeOps
from sevensense.builders.tflite_to_onnx.ops_slicing import _SlicingOps
from sevensense.builders.tflite_to_onnx.schema import _ONNX_DTYPES, _OP_NAMES, _Op
from sevensense.builders.tflite_to_onnx.spectral import _SpectralOps
from sevensense.builders.tflite_to_onnx.symbolic import _Batch, _Shape
from sevensense.builders.tflite_to_onnx.values import _Const, _identity, _Tensor, _Value


class _Converter(_MathOps, _ShapeOps, _SlicingOps, _LayerOps, _SpectralOps):
    """All op families in one class: :meth:`convert_op` finds the handler ``op_<name>`` by
    attribute lookup."""

    def run(
        self, outputs: Mapping[str, str], input_name: str | None
    ) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
        g = self.graph
        if g.InputsLength() != 1:
            raise ConversionError(f"expected one model input, found {g.InputsLength()}")
        by_name: dict[str, int] = {}
        for i in range(g.TensorsLength()):
            by_name.setdefault(g.Tensors(i).Name().decode("utf-8"), i)
        missing = [t for t in outputs.values() if t not in by_name]
        if missing:
            raise ConversionError(f"TFLite tensors not found: {missing}")
        for name in outputs:
            if name in self.used_names:
                raise ConversionError(f"duplicate output name {name!r}")
            self.used_names.add(name)

        in_idx = int(g.InputsAsNumpy()[0])
        in_name = input_name or g.Tensors(in_idx).Name().decode("utf-8")
        if in_name in self.used_names:
            raise ConversionError(f"input name {in_name!r} collides with an output name")
        self.used_names.add(in_name)
        sig = self.tfl_signature(in_idx)
        if any(d == -1 for d in sig[1:]):
            raise ConversionError(f"only the batch dimension may be dynamic; input is {sig}")
        in_shape: _Shape = tuple(
            _Batch(1) if (i == 0 and d == -1) else d for i, d in enumerate(sig)
        )
        in_dtype = self.tfl_dtype(in_idx)
        self.values[in_idx] = _Tensor(in_name, in_shape, in_dtype, _identity(len(in_shape)))
        graph_inputs = [self.value_info(in_name, in_dtype, in_shape)]

        for i in range(g.OperatorsLength()):
            self.convert_op(i)

        graph_outputs: list[onnx.ValueInfoProto] = []
        for out_name, tfl_name in outputs.items():
            idx = by_name[tfl_name]
            if idx not in self.values:
                raise ConversionError(f"tensor {tfl_name!r} is not computed by the graph")
            t = self.canonical(self.values[idx], out_name)
            if t.dtype != np.float32:
                raise ConversionError(f"output {tfl_name!r} is {t.dtype}, expected float32")
            if any(isinstance(d, _Batch) and d.mult != 1 for d in t.shape):
                raise ConversionError(f"output {tfl_name!r} has shape {list(t.shape)}")
            self.nodes.append(helper.make_node("Identity", [t.name], [out_name], name=out_name))
            graph_outputs.append(self.value_info(out_name, t.dtype, t.shape))
        self.prune([o.name for o in graph_outputs])
        return graph_inputs, graph_outputs

    def value_info(self, name: str, dtype: np.dtype[Any], shape: _Shape) -> onnx.ValueInfoProto:
        dims: list[int | str] = ["batch" if isinstance(d, _Batch) else d for d in shape]
        return helper.make_tensor_value_info(name, _ONNX_DTYPES[dtype], dims)

    def prune(self, outputs: list[str]) -> None:
        needed = set(outputs)
        kept: list[onnx.NodeProto] = []
        for n in reversed(self.nodes):
            if any(o in needed for o in n.output):
                kept.append(n)
                needed.update(i for i in n.input if i)
        self.nodes = kept[::-1]
        self.initializers = [t for t in self.initializers if t.name in needed]

    def convert_op(self, i: int) -> None:
        raw = self.graph.Operators(i)
        code_entry = self.model.OperatorCodes(raw.OpcodeIndex())
        code = max(int(code_entry.BuiltinCode()), int(code_entry.DeprecatedBuiltinCode()))
        name = _OP_NAMES.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            custom = code_entry.CustomCode()
            name = f"CUSTOM:{custom.decode() if custom else '?'}"
        handler: Callable[[_Op], list[_Value]] | None = getattr(self, "op_" + name.lower(), None)
        if handler is None:
            raise ConversionError(f"unsupported TFLite op {name} (op #{i})")
        input_ids = [int(x) for x in raw.InputsAsNumpy()] if raw.InputsLength() else []
        inputs: list[_Value | None] = []
        for idx in input_ids:
            if idx < 0:
                inputs.append(None)
            elif idx in self.values:
                inputs.append(self.values[idx])
            else:
                arr = self.buffer_array(idx)
                if arr is None:
                    raise ConversionError(f"{name} (op #{i}) reads tensor #{idx} before it is set")
                tensor_name = self.graph.Tensors(idx).Name().decode("utf-8").split(";")[0]
                inputs.append(_Const(arr, arr.dtype, tensor_name))
        output_ids = [int(x) for x in raw.OutputsAsNumpy()]
        op = _Op(i, name, raw, inputs, output_ids)
        results = handler(op)
        if len(results) != len(output_ids):
            raise ConversionError(f"{name} (op #{i}): {len(results)} results for {len(output_ids)}")
        for idx, v in zip(output_ids, results, strict=True):
            if isinstance(v, _Const):
                self.check_shape(op, output_ids.index(idx), v.shape)
            self.values[idx] = v
