"""The state and helpers every op handler shares: naming, node and initializer emission, TFLite
tensor access, layouts and materialization."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

from sevensense.builders.tflite_to_onnx.errors import ConversionError
from sevensense.builders.tflite_to_onnx.schema import _ACTIVATIONS, _TFL_DTYPES, _Op
from sevensense.builders.tflite_to_onnx.symbolic import _Batch, _Shape, _SymElem, _Unknown
from sevensense.builders.tflite_to_onnx.values import (
    _Array,
    _Const,
    _identity,
    _Lazy,
    _Tensor,
    _Value,
)


class _Emitter:
    """Conversion state and the helpers every op handler calls; the op-family mixins subclass
    it so that each sees (and type-checks against) the same helpers."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.model = tflite.Model.GetRootAs(buf, 0)
        if self.model.SubgraphsLength() < 1:
            raise ConversionError("the TFLite model has no subgraph")
        self.graph = self.model.Subgraphs(0)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.values: dict[int, _Value] = {}
        self.used_names: set[str] = set()
        self.consts: dict[tuple[str, tuple[int, ...], bytes], str] = {}
        self.layout_cache: dict[tuple[str, tuple[int, ...], tuple[int, ...]], _Tensor] = {}
        self.views: dict[str, tuple[str, _Shape]] = {}

    # names and emission

    def unique(self, base: str) -> str:
        name = base or "t"
        k = 1
        while name in self.used_names:
            name = f"{base}__{k}"
            k += 1
        self.used_names.add(name)
        return name

    def tensor_name(self, idx: int) -> str:
        return str(self.graph.Tensors(idx).Name().decode("utf-8").split(";")[0])

    def node(self, op_type: str, inputs: Sequence[str], hint: str, **attrs: Any) -> str:
        out = self.unique(hint)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def const(self, array: _Array, hint: str) -> str:
        array = np.ascontiguousarray(array)
        if array.dtype == object:
            raise ConversionError(f"batch-dependent value {hint!r} would be needed as data")
        key = (array.dtype.str, tuple(array.shape), hashlib.sha256(array.tobytes()).digest())
        if key in self.consts:
            return self.consts[key]
        name = self.unique(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        self.consts[key] = name
        return name

    def i64(self, values: Sequence[int], hint: str) -> str:
        return self.const(np.array(values, dtype=np.int64), hint)

    def reshape(self, name: str, shape: _Shape, target: _Shape, hint: str) -> str:
        """Reshape an ONNX tensor, reading through earlier reshapes so chains collapse to one."""
        src, src_shape = self.views.get(name, (name, shape))
        if target == src_shape:
            return src
        target_i = self.render_shape(target, src_shape)
        out = self.node("Reshape", [src, self.i64(target_i, "shape")], hint)
        self.views[out] = (src, src_shape)
        return out

    # TFLite access

    def tfl_dtype(self, idx: int) -> np.dtype[Any]:
        t = self.graph.Tensors(idx).Type()
        if t not in _TFL_DTYPES:
            raise ConversionError(f"tensor #{idx} has unsupported TFLite type {t}")
        return _TFL_DTYPES[t]

    def tfl_signature(self, idx: int) -> list[int]:
        t = self.graph.Tensors(idx)
        if t.ShapeSignatureLength():
            return [int(d) for d in t.ShapeSignatureAsNumpy()]
        return [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []

    def buffer_array(self, idx: int) -> _Array | None:
        t = self.graph.Tensors(idx)
        b = self.model.Buffers(t.Buffer())
        if b is None:
            return None
        shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
        if b.DataLength() > 0:
            raw = b.DataAsNumpy().tobytes()
        elif b.Offset() > 1:
            raw = self.buf[b.Offset() : b.Offset() + b.Size()]
        elif t.ShapeLength() and 0 in shape:
            raw = b""
        else:
            return None
        q = t.Quantization()
        if q is not None and q.ScaleLength() > 0:
            raise ConversionError(f"tensor {t.Name().decode()!r} is quantized; only float models")
        dtype = self.tfl_dtype(idx)
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()

    def check_shape(self, op: _Op, k: int, shape: _Shape) -> None:
        """Cross-check inferred shapes against the ones TFLite recorded, catching converter bugs."""
        t = self.graph.Tensors(op.output_ids[k])
        if t.ShapeLength() == 0 and t.ShapeSignatureLength() == 0:
            return
        sig = self.tfl_signature(op.output_ids[k])
        ok = len(sig) == len(shape) and all(
            s == -1 or (isinstance(d, int) and d == s) for s, d in zip(sig, shape, strict=False)
        )
        if not ok:
            raise ConversionError(
                f"{op.name} (op #{op.index}): inferred shape {list(shape)} for output "
                f"{k} disagrees with TFLite's {sig}"
            )

    # layout and materialization

    def to_layout(self, v: _Tensor, perm: tuple[int, ...]) -> _Tensor:
        if v.perm == perm:
            return v
        key = (v.name, v.perm, perm)
        if key in self.layout_cache:
            return self.layout_cache[key]
        move = tuple(v.perm.index(p) for p in perm)
        src_shape = v.onnx_shape
        out = _Tensor("", v.shape, v.dtype, perm)
        kept = [a for a in move if src_shape[a] != 1]
        if kept == sorted(kept):
            out.name = self.reshape(v.name, src_shape, out.onnx_shape, v.name + "/relayout")
        else:
            out.name = self.node("Transpose", [v.name], v.name + "/transpose", perm=list(move))
        self.layout_cache[key] = out
        return out

    def render_shape(self, shape: _Shape, src_shape: _Shape) -> list[int]:
        """ONNX Reshape target for a static-but-batched shape: ``-1`` or ``0`` for batch terms."""
        batched = [i for i, d in enumerate(shape) if isinstance(d, _Batch)]
        if len(batched) <= 1:
            return [-1 if isinstance(d, _Batch) else d for d in shape]
        out: list[int] = []
        for i, d in enumerate(shape):
            if isinstance(d, int):
                out.append(d)
            elif i < len(src_shape) and src_shape[i] == d:
                out.append(0)
            else:
                raise ConversionError(f"cannot express reshape to {list(shape)} with one batch")
        return out

    def materialize(self, v: _Value, hint: str) -> _Tensor:
        if isinstance(v, _Tensor):
            return v
        if isinstance(v, _Lazy):
            if v.dtype.kind == "c":
                raise ConversionError(
                    "a complex RFFT2D result is used other than by CAST to float32 (real part)"
                )
            if v.materialized is None:
                name = self.exact_matmul(v.src.name, v.matrix, v.src.name + "/rfft_real")
                v.materialized = _Tensor(name, v.shape, v.dtype, _identity(len(v.shape)))
            return v.materialized
        if v.symbolic:
            raise ConversionError(f"batch-dependent shape value {v.array!r} used as data in {hint}")
        name = self.const(v.array, v.name or hint)
        return _Tensor(name, v.shape, v.dtype, _identity(v.array.ndim))

    def canonical(self, v: _Value, hint: str) -> _Tensor:
        t = self.materialize(v, hint)
        return self.to_layout(t, _identity(len(t.shape)))

    def exact_matmul(self, src: str, matrix: _Array, hint: str) -> str:
        """float32 ``src @ matrix`` accumulated in float64, as TFLite's RFFT2D computes it.

        BirdNET compresses mel energies by x^0.23, which turns float32 rounding noise in
        near-empty bins (a silent or constant window, a pure tone, a zero-padded tail) into
        logit errors of 0.2-0.4; in doubles that noise stays ~1e-13 of the peak, as in
        TFLite. One Cast and one MatMul over the whole frame: pairing rows ``t`` and
        ``n - t`` of the DFT matrix first (half the multiply-adds) cost more in the reversed
        Slice, Pad, two Casts and Add it needed than it saved (BirdNET 1.10x faster without
        it, at batch 8 on 2 threads; issue 25).
        """
        x = self.node("Cast", [src], hint + "/f64", to=TensorProto.DOUBLE)
        m = self.const(np.ascontiguousarray(matrix, dtype=np.float64), hint + "/weights_f64")
        y = self.node("MatMul", [x, m], hint + "/f64_matmul")
        return self.node("Cast", [y], hint, to=TensorProto.FLOAT)

    # generic helpers

    def new_tensor(
        self, op: _Op, k: int, name: str, shape: _Shape, perm: tuple[int, ...] | None = None
    ) -> _Tensor:
        self.check_shape(op, k, shape)
        return _Tensor(name, shape, self.tfl_dtype(op.output_ids[k]), perm or _identity(len(shape)))

    def activation(self, name: str, code: int, hint: str) -> str:
        act = _ACTIVATIONS.get(code, str(code))
        if act == "NONE":
            return name
        if act == "RELU":
            return self.node("Relu", [name], hint + "/relu")
        if act in ("RELU6", "RELU_N1_TO_1"):
            lo, hi = (0.0, 6.0) if act == "RELU6" else (-1.0, 1.0)
            lo_n = self.const(np.array(lo, dtype=np.float32), "clip_lo")
            hi_n = self.const(np.array(hi, dtype=np.float32), "clip_hi")
            return self.node("Clip", [name, lo_n, hi_n], hint + "/clip")
        if act == "TANH":
            return self.node("Tanh", [name], hint + "/tanh")
        raise ConversionError(f"unsupported fused activation {act}")

    def operand(self, v: _Value, rank: int, perm: tuple[int, ...], hint: str) -> str:
        """``v`` as an input of a broadcasting op whose output has ``rank`` and ``perm``."""
        if isinstance(v, _Const):
            arr = v.array
            if arr.dtype == object:
                raise ConversionError(f"batch-dependent value used as data in {hint}")
            if arr.ndim and perm != _identity(rank):
                arr = arr.reshape((1,) * (rank - arr.ndim) + arr.shape).transpose(perm)
            return self.const(arr, v.name or hint + "/c")
        t = self.materialize(v, hint)
        if len(t.shape) == rank:
            return self.to_layout(t, perm).name
        if perm == _identity(rank):
            return self.canonical(t, hint).name
        c = self.canonical(t, hint)
        shape = (1,) * (rank - len(c.shape)) + c.shape
        full = _Tensor("", shape, c.dtype, _identity(rank))
        full.name = self.reshape(c.name, c.shape, shape, c.name + "/rank")
        return self.to_layout(full, perm).name

    def int_list(self, v: _Value | None, what: str) -> list[int]:
        if not isinstance(v, _Const) or v.symbolic:
            raise ConversionError(f"{what} must be a constant known at conversion time")
        return [int(x) for x in v.array.reshape(-1)]

    def sym_list(self, v: _Value | None, what: str) -> list[_SymElem]:
        if not isinstance(v, _Const):
            raise ConversionError(f"{what} must be computable at conversion time")
        return [x if isinstance(x, _Batch | _Unknown) else int(x) for x in v.array.reshape(-1)]

    def reshape_tensor(self, t: _Tensor, shape: _Shape, hint: str) -> _Tensor:
        c = self.canonical(t, hint)
        name = self.reshape(c.name, c.shape, shape, hint)
        return _Tensor(name, shape, c.dtype, _identity(len(shape)))
