"""Elementwise, comparison, cast and reduction ops; each works in its input's layout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import TensorProto

from sevensense.builders.tflite_to_onnx.emitter import _Emitter
from sevensense.builders.tflite_to_onnx.errors import ConversionError
from sevensense.builders.tflite_to_onnx.schema import _ONNX_DTYPES, _Op
from sevensense.builders.tflite_to_onnx.shapes import _broadcast
from sevensense.builders.tflite_to_onnx.symbolic import _Batch, _sym_max, _sym_min
from sevensense.builders.tflite_to_onnx.values import (
    _Const,
    _identity,
    _Lazy,
    _normalize,
    _Tensor,
    _Value,
)


class _MathOps(_Emitter):
    def binary(
        self, op: _Op, onnx_op: str, fn: Callable[[Any, Any], Any], opts: str | None
    ) -> list[_Value]:
        a, b = op.input(0), op.input(1)
        act = op.options(opts).FusedActivationFunction() if opts and op.raw.BuiltinOptions() else 0
        dtype = self.tfl_dtype(op.output_ids[0])
        if isinstance(a, _Const) and isinstance(b, _Const) and act == 0:
            if a.symbolic or b.symbolic:
                out = np.frompyfunc(fn, 2, 1)(a.array.astype(object), b.array.astype(object))
                return [_normalize(np.asarray(out, dtype=object), dtype)]
            return [_Const(np.asarray(fn(a.array, b.array)).astype(dtype), dtype)]
        shape = _broadcast(a.shape, b.shape)
        rank = len(shape)
        perm = _identity(rank)
        for v in (a, b):
            if isinstance(v, _Tensor) and len(v.shape) == rank and v.perm != perm:
                perm = v.perm
                break
        hint = self.tensor_name(op.output_ids[0])
        x = self.operand(a, rank, perm, hint)
        y = self.operand(b, rank, perm, hint)
        if onnx_op == "FloorDiv":
            if dtype.kind != "f":
                raise ConversionError("FLOOR_DIV on runtime integer tensors is not supported")
            out = self.node("Floor", [self.node("Div", [x, y], hint + "/div")], hint)
        else:
            out = self.node(onnx_op, [x, y], hint)
        out = self.activation(out, act, hint)
        return [self.new_tensor(op, 0, out, shape, perm)]

    def op_add(self, op: _Op) -> list[_Value]:
        return self.binary(op, "Add", lambda x, y: x + y, "AddOptions")

    def op_sub(self, op: _Op) -> list[_Value]:
        return self.binary(op, "Sub", lambda x, y: x - y, "SubOptions")

    def op_mul(self, op: _Op) -> list[_Value]:
        return self.binary(op, "Mul", lambda x, y: x * y, "MulOptions")

    def op_div(self, op: _Op) -> list[_Value]:
        dtype = self.tfl_dtype(op.output_ids[0])
        if dtype.kind != "f":
            raise ConversionError("DIV on integer tensors is not supported")
        return self.binary(op, "Div", lambda x, y: x / y, "DivOptions")

    def op_floor_div(self, op: _Op) -> list[_Value]:
        return self.binary(op, "FloorDiv", lambda x, y: x // y, None)

    def op_maximum(self, op: _Op) -> list[_Value]:
        a, b = op.input(0), op.input(1)
        sym = any(isinstance(v, _Const) and v.symbolic for v in (a, b))
        return self.binary(op, "Max", _sym_max if sym else np.maximum, None)

    def op_minimum(self, op: _Op) -> list[_Value]:
        a, b = op.input(0), op.input(1)
        sym = any(isinstance(v, _Const) and v.symbolic for v in (a, b))
        return self.binary(op, "Min", _sym_min if sym else np.minimum, None)

    def op_pow(self, op: _Op) -> list[_Value]:
        return self.binary(op, "Pow", np.power, None)

    def unary(self, op: _Op, onnx_op: str) -> list[_Value]:
        x = self.materialize(op.input(0), "x")
        hint = self.tensor_name(op.output_ids[0])
        return [self.new_tensor(op, 0, self.node(onnx_op, [x.name], hint), x.shape, x.perm)]

    def op_logistic(self, op: _Op) -> list[_Value]:
        return self.unary(op, "Sigmoid")

    def op_relu(self, op: _Op) -> list[_Value]:
        return self.unary(op, "Relu")

    def op_tanh(self, op: _Op) -> list[_Value]:
        return self.unary(op, "Tanh")

    def op_sin(self, op: _Op) -> list[_Value]:
        return self.unary(op, "Sin")

    def op_greater(self, op: _Op) -> list[_Value]:
        return self.binary(op, "Greater", np.greater, None)

    def op_less(self, op: _Op) -> list[_Value]:
        return self.binary(op, "Less", np.less, None)

    def op_select_v2(self, op: _Op) -> list[_Value]:
        cond, a, b = op.input(0), op.input(1), op.input(2)
        dtype = self.tfl_dtype(op.output_ids[0])
        if all(isinstance(v, _Const) and not v.symbolic for v in (cond, a, b)):
            arrays = [v.array for v in (cond, a, b) if isinstance(v, _Const)]
            return [_Const(np.where(*arrays).astype(dtype), dtype)]
        shape = _broadcast(_broadcast(cond.shape, a.shape), b.shape)
        rank = len(shape)
        perm = next(
            (
                v.perm
                for v in (cond, a, b)
                if isinstance(v, _Tensor) and len(v.shape) == rank and v.perm != _identity(rank)
            ),
            _identity(rank),
        )
        hint = self.tensor_name(op.output_ids[0])
        names = [self.operand(v, rank, perm, hint) for v in (cond, a, b)]
        return [self.new_tensor(op, 0, self.node("Where", names, hint), shape, perm)]

    def op_cast(self, op: _Op) -> list[_Value]:
        x = op.input(0)
        dtype = self.tfl_dtype(op.output_ids[0])
        if isinstance(x, _Lazy):
            if dtype != np.float32:
                raise ConversionError(f"CAST of an RFFT2D result to {dtype} is not supported")
            return [_Lazy(x.src, x.matrix, x.shape, dtype)]
        if isinstance(x, _Const):
            if x.symbolic:
                return [_normalize(x.array, dtype)]
            if x.dtype.kind == "c":
                return [_Const(x.array.real.astype(dtype), dtype)]
            return [_Const(x.array.astype(dtype), dtype)]
        if x.dtype == dtype:
            return [x]
        hint = self.tensor_name(op.output_ids[0])
        out = self.node("Cast", [x.name], hint, to=_ONNX_DTYPES[dtype])
        return [self.new_tensor(op, 0, out, x.shape, x.perm)]

    def op_dequantize(self, op: _Op) -> list[_Value]:
        x = op.input(0)
        if isinstance(x, _Const) and x.dtype == np.float16:
            return [_Const(x.array.astype(np.float32), np.dtype(np.float32))]
        if isinstance(x, _Tensor) and x.dtype == np.float16:
            hint = self.tensor_name(op.output_ids[0])
            out = self.node("Cast", [x.name], hint, to=TensorProto.FLOAT)
            return [self.new_tensor(op, 0, out, x.shape, x.perm)]
        raise ConversionError("DEQUANTIZE of integer-quantized tensors is not supported")

    # --- reductions ---------------------------------------------------------------------

    def reduce(self, op: _Op, onnx_op: str, fn: Callable[..., Any]) -> list[_Value]:
        x = op.input(0)
        keep = bool(op.options("ReducerOptions").KeepDims())
        in_shape = x.shape
        rank = len(in_shape)
        axes = sorted({a + rank if a < 0 else a for a in self.int_list(op.input(1), "axes")})
        if isinstance(x, _Const):
            out = fn(x.array, axis=tuple(axes), keepdims=keep)
            return [_normalize(np.asarray(out, dtype=x.array.dtype), x.dtype)]
        if any(isinstance(in_shape[a], _Batch) for a in axes):
            raise ConversionError(f"{op.name} over the batch axis")
        t = self.materialize(x, "x")
        onnx_axes = sorted(t.perm.index(a) for a in axes)
        hint = self.tensor_name(op.output_ids[0])
        out = self.node(onnx_op, [t.name, self.i64(onnx_axes, "axes")], hint, keepdims=int(keep))
        if keep:
            shape = tuple(1 if a in axes else d for a, d in enumerate(in_shape))
            return [self.new_tensor(op, 0, out, shape, t.perm)]
        kept = [p for p in t.perm if p not in axes]
        order = sorted(kept)
        shape = tuple(in_shape[a] for a in order)
        return [self.new_tensor(op, 0, out, shape, tuple(order.index(p) for p in kept))]

    def op_mean(self, op: _Op) -> list[_Value]:
        return self.reduce(op, "ReduceMean", np.mean)

    def op_sum(self, op: _Op) -> list[_Value]:
        return self.reduce(op, "ReduceSum", np.sum)

    def op_reduce_max(self, op: _Op) -> list[_Value]:
        return self.reduce(op, "ReduceMax", np.max)

    def op_reduce_min(self, op: _Op) -> list[_Value]:
        return self.reduce(op, "ReduceMin", np.min)

    def op_reduce_prod(self, op: _Op) -> list[_Value]:
        return self.reduce(op, "ReduceProd", np.prod)
