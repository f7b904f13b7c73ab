"""TensorFlow-free TFLite → ONNX converter for float32 audio models such as BirdNET v2.4.

Existing converters either need TensorFlow (1.7 GB) or do not cover the ops BirdNET uses
(RFFT2D, the shape arithmetic of ``tf.signal.frame``), so the platform converts the original
flatbuffer itself with numpy, onnx and the ``tflite`` flatbuffer parser.

Design:

* Only the batch dimension may be dynamic. Every other size is inferred statically, and every
  int tensor derived from shapes (SHAPE → GATHER → PACK → RESHAPE …) is evaluated at
  conversion time; batch-dependent entries are carried symbolically as multiples of the batch
  (:class:`_Batch`) and rendered as ``-1``/``0`` in ONNX Reshape targets. The ONNX graph
  therefore contains no shape arithmetic, yet keeps a free ``batch`` dimension.
* TFLite is NHWC, ONNX Conv/Pool are NCHW. Each value remembers the permutation its ONNX
  tensor is stored in; layout-aware ops (conv, pool, elementwise, reduce, pad, concat,
  reverse) work in whatever layout their input has, and a Transpose (or a Reshape, when only
  size-1 axes move) is emitted only where a layout-sensitive op needs another one. The conv
  stack thus runs in NCHW end to end with transposes only at its edges.
* RFFT2D is only supported as BirdNET uses it: a 1-D real FFT whose complex result is CAST to
  float32, which keeps the real part. That real part is a MatMul by a cosine matrix; the
  matrix is kept symbolic until the consumer is known so that a following FULLY_CONNECTED
  (the mel filterbank) is folded into one small ``[frame, mel]`` matrix. The MatMul
  accumulates in float64, as TFLite's RFFT2D does (see :meth:`_Converter.exact_matmul`).
  ONNX's DFT op is avoided because ONNX Runtime's CPU kernel for it dominated the run time.
* A GATHER whose constant indices cut overlapping frames (``tf.signal.frame``) becomes
  slices of a hop-sized block matrix plus one Concat, because ORT's Gather copies element by
  element (it was a quarter of BirdNET's run time).
* Output bytes are reproducible: names derive from tensor indices and TFLite names, nodes and
  initializers keep emission order, folded constants are accumulated in a fixed order (not by
  BLAS, whose summation order depends on the CPU), and the IR version is the minimum for the
  opset rather than the installed onnx's default.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

__all__ = ["PRODUCER_NAME", "PRODUCER_VERSION", "ConversionError", "convert_tflite"]

PRODUCER_NAME: Final = "sevensense-tflite2onnx"
PRODUCER_VERSION: Final = "1.1"  # 1.1: the RFFT2D matmul accumulates in float64
MIN_OPSET: Final = 18

_Array: TypeAlias = npt.NDArray[Any]
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


class ConversionError(Exception):
    """The TFLite model uses something this converter does not translate faithfully."""


# --- symbolic batch ----------------------------------------------------------------------


class _Unknown:
    """A shape value that depends on the batch in a way that cannot be expressed statically."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "?"

    def _any(self, _other: object) -> _Unknown:
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _any
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _any


UNKNOWN: Final = _Unknown()


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


@dataclass(frozen=True)
class _Batch:
    """``mult × batch``: a dimension or shape entry that scales with the dynamic batch."""

    mult: int

    def __repr__(self) -> str:
        return "B" if self.mult == 1 else f"{self.mult}B"

    def __mul__(self, other: object) -> _Batch | int | _Unknown:
        if _is_int(other):
            k = int(other)  # type: ignore[call-overload]
            return _Batch(self.mult * k) if k else 0
        return UNKNOWN

    __rmul__ = __mul__

    def __add__(self, other: object) -> _Batch | _Unknown:
        return self if _is_int(other) and int(other) == 0 else UNKNOWN  # type: ignore[call-overload]

    __radd__ = __add__

    def __sub__(self, other: object) -> _Batch | int | _Unknown:
        if other == self:
            return 0
        return self.__add__(other)

    def __rsub__(self, _other: object) -> _Unknown:
        return UNKNOWN

    def __floordiv__(self, other: object) -> _Batch | int | _Unknown:
        if _is_int(other) and int(other) > 0 and self.mult % int(other) == 0:  # type: ignore[call-overload]
            return _Batch(self.mult // int(other))  # type: ignore[call-overload]
        if isinstance(other, _Batch) and self.mult % other.mult == 0:
            return self.mult // other.mult
        return UNKNOWN

    def __rfloordiv__(self, _other: object) -> _Unknown:
        return UNKNOWN


_Dim: TypeAlias = int | _Batch
_Shape: TypeAlias = tuple[_Dim, ...]
_SymElem: TypeAlias = int | _Batch | _Unknown


def _sym_max(a: _SymElem, b: _SymElem) -> _SymElem:
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    if isinstance(a, _Batch) and isinstance(b, int) and b <= a.mult:
        return a
    if isinstance(b, _Batch) and isinstance(a, int) and a <= b.mult:
        return b
    return a if a == b else UNKNOWN


def _sym_min(a: _SymElem, b: _SymElem) -> _SymElem:
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    if isinstance(a, _Batch) and isinstance(b, int) and b <= a.mult:
        return b
    if isinstance(b, _Batch) and isinstance(a, int) and a <= b.mult:
        return a
    return a if a == b else UNKNOWN


def _prod(dims: Sequence[_SymElem]) -> _SymElem:
    out: _SymElem = 1
    for d in dims:
        out = out * d
    return out


def _as_dim(x: _SymElem) -> _Dim:
    if isinstance(x, _Unknown):
        raise ConversionError("a dimension depends on the batch in an unsupported way")
    return x


# --- values --------------------------------------------------------------------------------


@dataclass
class _Const:
    """A value known at conversion time; ``array`` is object-typed when it holds batch terms."""

    array: _Array
    dtype: np.dtype[Any]
    name: str = ""

    @property
    def shape(self) -> _Shape:
        return tuple(int(d) for d in self.array.shape)

    @property
    def symbolic(self) -> bool:
        return self.array.dtype == object


@dataclass
class _Tensor:
    """A runtime ONNX tensor holding the TFLite value transposed by ``perm``."""

    name: str
    shape: _Shape
    dtype: np.dtype[Any]
    perm: tuple[int, ...]

    @property
    def onnx_shape(self) -> _Shape:
        return tuple(self.shape[p] for p in self.perm)


@dataclass
class _Lazy:
    """``src @ matrix`` not yet emitted, so that a following matmul can be folded into it."""

    src: _Tensor
    matrix: _Array
    shape: _Shape
    dtype: np.dtype[Any]
    materialized: _Tensor | None = None


_Value: TypeAlias = _Const | _Tensor | _Lazy


def _identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


_NCHW: Final = (0, 3, 1, 2)


def _normalize(array: _Array, dtype: np.dtype[Any]) -> _Const:
    """Return a numeric constant when no batch term is left, else keep the object array."""
    if array.dtype == object:
        flat = list(array.reshape(-1))
        if all(_is_int(x) for x in flat):
            return _Const(np.array([int(x) for x in flat], dtype=dtype).reshape(array.shape), dtype)
        return _Const(array, dtype)
    return _Const(np.asarray(array).astype(dtype, copy=False), dtype)


# --- TFLite schema helpers ----------------------------------------------------------------

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


def _real_dft_matrix(n_in: int, fft_len: int) -> _Array:
    """Float64 ``[n_in, fft_len // 2 + 1]`` matrix giving the real part of ``rfft(x, fft_len)``.

    Input samples beyond ``fft_len`` are cropped (zero rows), shorter inputs are implicitly
    zero-padded, as RFFT2D's ``fft_length`` does. The cosine of each distinct phase is
    computed once, after exact integer phase reduction, so large ``t * k`` products cost no
    accuracy and the matrix is the same on every platform whose libm ``cos`` agrees. Phases
    ``m`` and ``fft_len - m`` share one value, so rows ``t`` and ``fft_len - t`` are equal
    bit for bit (which :meth:`_Converter.exact_matmul` relies on).
    """
    bins = fft_len // 2 + 1
    table = np.array(
        [math.cos(2.0 * math.pi * min(m, fft_len - m) / fft_len) for m in range(fft_len)]
    )
    used = min(n_in, fft_len)
    phase = np.outer(np.arange(used, dtype=np.int64), np.arange(bins, dtype=np.int64)) % fft_len
    out = np.zeros((n_in, bins), dtype=np.float64)
    out[:used] = table[phase]
    return out


def _fold_matmul(a: _Array, b: _Array) -> _Array:
    """``a @ b`` in float64 summed in a fixed order, independent of the BLAS build and CPU."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    acc = np.zeros((a64.shape[0], b64.shape[1]), dtype=np.float64)
    for k in range(a64.shape[1]):
        acc += a64[:, k : k + 1] * b64[k : k + 1, :]
    return acc


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int, int]:
    """TensorFlow SAME padding: output ``ceil(size / stride)``, any odd pixel goes at the end."""
    eff = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return out, total // 2, total - total // 2


def _valid_out(size: int, kernel: int, stride: int, dilation: int) -> int:
    eff = (kernel - 1) * dilation + 1
    if size < eff:
        raise ConversionError(f"VALID window {eff} larger than input {size}")
    return (size - eff) // stride + 1


# --- converter ------------------------------------------------------------------------------


class _Converter:
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
        TFLite. Rows ``t`` and ``n - t`` of a real DFT matrix are equal (also after folding
        the mel filterbank), so those input pairs are added first, exactly, halving the work.
        """
        n = int(matrix.shape[0])
        half = n // 2
        if n % 2 == 0 and n >= 4 and np.array_equal(matrix[1:half], matrix[:half:-1]):
            last = self.i64([-1], "axis_last")
            head = self.node(
                "Slice",
                [src, self.i64([0], "zero"), self.i64([half + 1], "end"), last],
                hint + "/head",
            )
            tail = self.node(
                "Slice",
                [src, self.i64([n - 1], "start"), self.i64([half], "end"), last, last],
                hint + "/mirror",
            )
            tail = self.node("Pad", [tail, self.i64([1, 1], "pads"), "", last], tail + "/pad")
            x = self.node(
                "Add",
                [
                    self.node("Cast", [head], head + "/f64", to=TensorProto.DOUBLE),
                    self.node("Cast", [tail], tail + "/f64", to=TensorProto.DOUBLE),
                ],
                hint + "/sym",
            )
            matrix = matrix[: half + 1]
        else:
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

    # driver

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

    # --- elementwise -----------------------------------------------------------------------

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

    # --- shape-only and data-movement ops ---------------------------------------------------

    def op_shape(self, op: _Op) -> list[_Value]:
        dtype = _TFL_DTYPES[int(op.options("ShapeOptions").OutType())]
        shape = op.input(0).shape
        return [_normalize(np.array(list(shape) or [], dtype=object).reshape(len(shape)), dtype)]

    def op_reshape(self, op: _Op) -> list[_Value]:
        x = op.input(0)
        target_v = op.optional(1)
        if target_v is not None:
            target = self.sym_list(target_v, "RESHAPE shape")
        else:
            target = [int(d) for d in op.options("ReshapeOptions").NewShapeAsNumpy()]
        shape = _resolve_reshape(x.shape, target)
        self.check_shape(op, 0, shape)
        if isinstance(x, _Const):
            dims = [d for d in shape if isinstance(d, int)]
            return [_Const(x.array.reshape(dims), x.dtype)]
        if isinstance(x, _Lazy) and shape and shape[-1] == x.shape[-1]:
            src_shape = (*shape[:-1], x.src.shape[-1])
            src = self.reshape_tensor(x.src, src_shape, x.src.name + "/reshape")
            return [_Lazy(src, x.matrix, shape, x.dtype)]
        t = self.materialize(x, "x")
        out_perm = _identity(len(shape))
        if not _trivial_perm(t.shape, t.perm):
            t = self.canonical(t, "x")
        if len(shape) == 4 and _trivial_perm(shape, _NCHW):
            out_perm = _NCHW
        hint = self.tensor_name(op.output_ids[0])
        out = _Tensor("", shape, t.dtype, out_perm)
        out.name = self.reshape(t.name, t.onnx_shape, out.onnx_shape, hint)
        return [out]

    def reshape_tensor(self, t: _Tensor, shape: _Shape, hint: str) -> _Tensor:
        c = self.canonical(t, hint)
        name = self.reshape(c.name, c.shape, shape, hint)
        return _Tensor(name, shape, c.dtype, _identity(len(shape)))

    def op_expand_dims(self, op: _Op) -> list[_Value]:
        x = op.input(0)
        in_shape = x.shape
        (axis,) = self.int_list(op.input(1), "EXPAND_DIMS axis")
        rank = len(in_shape) + 1
        axis = axis + rank if axis < 0 else axis
        shape = (*in_shape[:axis], 1, *in_shape[axis:])
        self.check_shape(op, 0, shape)
        if isinstance(x, _Const):
            return [_Const(np.expand_dims(x.array, axis), x.dtype)]
        if isinstance(x, _Lazy) and axis < rank - 1:
            src = self.reshape_tensor(x.src, (*shape[:-1], x.src.shape[-1]), x.src.name + "/unsq")
            return [_Lazy(src, x.matrix, shape, x.dtype)]
        t = self.canonical(x, "x")
        perm = _NCHW if rank == 4 and _trivial_perm(shape, _NCHW) else _identity(rank)
        out = _Tensor("", shape, t.dtype, perm)
        out.name = self.reshape(t.name, t.shape, out.onnx_shape, self.tensor_name(op.output_ids[0]))
        return [out]

    def op_squeeze(self, op: _Op) -> list[_Value]:
        x = op.input(0)
        in_shape = x.shape
        opts = op.options("SqueezeOptions") if op.raw.BuiltinOptions() is not None else None
        if opts is not None and opts.SqueezeDimsLength():
            dims = [int(d) for d in opts.SqueezeDimsAsNumpy()]
        else:
            dims = [i for i, d in enumerate(in_shape) if d == 1]
        axes = sorted({d + len(in_shape) if d < 0 else d for d in dims})
        if any(in_shape[a] != 1 for a in axes):
            raise ConversionError(f"SQUEEZE of non-unit axes {axes} of {list(in_shape)}")
        shape = tuple(d for i, d in enumerate(in_shape) if i not in axes)
        self.check_shape(op, 0, shape)
        if isinstance(x, _Const):
            return [_Const(np.squeeze(x.array, tuple(axes)), x.dtype)]
        if isinstance(x, _Lazy) and len(in_shape) - 1 not in axes:
            src = self.reshape_tensor(x.src, (*shape[:-1], x.src.shape[-1]), x.src.name + "/sq")
            return [_Lazy(src, x.matrix, shape, x.dtype)]
        t = self.canonical(x, "x")
        name = self.reshape(t.name, t.shape, shape, self.tensor_name(op.output_ids[0]))
        return [_Tensor(name, shape, t.dtype, _identity(len(shape)))]

    def op_transpose(self, op: _Op) -> list[_Value]:
        x = op.input(0)
        perm = tuple(self.int_list(op.input(1), "TRANSPOSE perm"))
        in_shape = x.shape
        shape = tuple(in_shape[p] for p in perm)
        self.check_shape(op, 0, shape)
        if isinstance(x, _Const):
            return [_Const(np.transpose(x.array, perm), x.dtype)]
        t = self.materialize(x, "x")
        inverse = tuple(perm.index(a) for a in range(len(perm)))
        return [_Tensor(t.name, shape, t.dtype, tuple(inverse[p] for p in t.perm))]

    def op_concatenation(self, op: _Op) -> list[_Value]:
        opts = op.options("ConcatenationOptions")
        values = [op.input(k) for k in range(len(op.inputs))]
        shapes = [v.shape for v in values]
        rank = len(shapes[0])
        axis = int(opts.Axis())
        axis = axis + rank if axis < 0 else axis
        total: _SymElem = 0
        for s in shapes:
            total = total + s[axis]
        shape = (*shapes[0][:axis], _as_dim(total), *shapes[0][axis + 1 :])
        act = int(opts.FusedActivationFunction())
        consts = [v for v in values if isinstance(v, _Const)]
        if len(consts) == len(values) and act == 0:
            dtype = self.tfl_dtype(op.output_ids[0])
            return [_normalize(np.concatenate([v.array for v in consts], axis=axis), dtype)]
        self.check_shape(op, 0, shape)
        perm = _identity(rank)
        for v in values:
            if isinstance(v, _Tensor) and v.perm != perm:
                perm = v.perm
                break
        hint = self.tensor_name(op.output_ids[0])
        names = [self.operand(v, rank, perm, hint) for v in values]
        out = self.node("Concat", names, hint, axis=perm.index(axis))
        out = self.activation(out, act, hint)
        return [_Tensor(out, shape, self.tfl_dtype(op.output_ids[0]), perm)]

    def op_pack(self, op: _Op) -> list[_Value]:
        opts = op.options("PackOptions")
        values = [op.input(k) for k in range(len(op.inputs))]
        in_shape = values[0].shape
        axis = int(opts.Axis())
        axis = axis + len(in_shape) + 1 if axis < 0 else axis
        dtype = self.tfl_dtype(op.output_ids[0])
        consts = [v for v in values if isinstance(v, _Const)]
        if len(consts) == len(values):
            arrays = [v.array.astype(object) for v in consts]
            return [_normalize(np.stack(arrays, axis=axis), dtype)]
        hint = self.tensor_name(op.output_ids[0])
        axes = self.i64([axis], "axes")
        parts = [
            self.node("Unsqueeze", [self.canonical(v, hint).name, axes], hint + "/unsq")
            for v in values
        ]
        shape = (*in_shape[:axis], len(values), *in_shape[axis:])
        return [self.new_tensor(op, 0, self.node("Concat", parts, hint, axis=axis), shape)]

    def op_split_v(self, op: _Op) -> list[_Value]:
        x = op.input(0)
        sizes = self.int_list(op.input(1), "SPLIT_V sizes")
        (axis,) = self.int_list(op.input(2), "SPLIT_V axis")
        in_shape = x.shape
        axis = axis + len(in_shape) if axis < 0 else axis
        dim = in_shape[axis]
        if -1 in sizes:
            if not isinstance(dim, int):
                raise ConversionError("SPLIT_V with an inferred size along the batch axis")
            sizes[sizes.index(-1)] = dim - (sum(sizes) + 1)
        if isinstance(x, _Const):
            cuts = np.cumsum(sizes)[:-1]
            return [_normalize(p, x.dtype) for p in np.split(x.array, cuts, axis=axis)]
        t = self.canonical(x, "x")
        if not isinstance(dim, int):
            raise ConversionError("SPLIT_V along the batch axis")
        names = [self.unique(self.tensor_name(i)) for i in op.output_ids]
        split = self.i64(sizes, "split")
        self.nodes.append(
            helper.make_node("Split", [t.name, split], names, name=names[0], axis=axis)
        )
        outs: list[_Value] = []
        for k, (n, s) in enumerate(zip(names, sizes, strict=True)):
            outs.append(self.new_tensor(op, k, n, (*in_shape[:axis], s, *in_shape[axis + 1 :])))
        return outs

    def op_gather(self, op: _Op) -> list[_Value]:
        opts = op.options("GatherOptions")
        if int(opts.BatchDims()) != 0:
            raise ConversionError("GATHER with batch_dims is not supported")
        params, indices = op.input(0), op.input(1)
        in_shape = params.shape
        axis = int(opts.Axis())
        axis = axis + len(in_shape) if axis < 0 else axis
        if not isinstance(indices, _Const) or indices.symbolic:
            raise ConversionError("GATHER indices must be constant")
        if isinstance(params, _Const):
            return [_normalize(np.take(params.array, indices.array, axis=axis), params.dtype)]
        dim = in_shape[axis]
        if not isinstance(dim, int):
            raise ConversionError("GATHER along the batch axis")
        idx = indices.array
        if idx.size and (idx.min() < -dim or idx.max() >= dim):
            raise ConversionError("GATHER indices out of range")
        t = self.canonical(params, "x")
        hint = self.tensor_name(op.output_ids[0])
        idx = np.where(idx < 0, idx + dim, idx)
        shape = (*in_shape[:axis], *(int(d) for d in idx.shape), *in_shape[axis + 1 :])
        framing = _framing(idx)
        if framing is not None:
            out = self.frames(t, axis, dim, framing, hint)
        else:
            idx_name = self.const(idx, hint + "/indices")
            out = self.node("Gather", [t.name, idx_name], hint, axis=axis)
        return [self.new_tensor(op, 0, out, shape)]

    def frames(
        self, t: _Tensor, axis: int, size: int, framing: tuple[int, int, int, int], hint: str
    ) -> str:
        """Overlapping frames ``t[start + hop * i + j]`` along ``axis`` without a Gather.

        ONNX Runtime's Gather copies element by element, which made the framing of
        ``tf.signal.frame`` a quarter of BirdNET's run time. Cutting the signal into hop-sized
        blocks once and concatenating ``ceil(length / hop)`` shifted views of the block
        matrix only makes contiguous copies.
        """
        start, hop, n, length = framing
        blocks = -(-length // hop)
        rows = n + blocks - 1
        end = start + rows * hop
        name = t.name
        if end > size:
            pads = [0] * (2 * len(t.shape))
            pads[len(t.shape) + axis] = end - size
            name = self.node("Pad", [name, self.i64(pads, "pads")], hint + "/pad", mode="constant")
        if start or end < size:
            name = self.node(
                "Slice",
                [
                    name,
                    self.i64([start], "starts"),
                    self.i64([end], "ends"),
                    self.i64([axis], "axes"),
                ],
                hint + "/segment",
            )
        seg_shape = (*t.shape[:axis], rows * hop, *t.shape[axis + 1 :])
        grid = (*t.shape[:axis], rows, hop, *t.shape[axis + 1 :])
        name = self.reshape(name, seg_shape, grid, hint + "/blocks")
        parts = []
        for j in range(blocks):
            width = min(hop, length - j * hop)
            if (j, width) == (0, hop) and blocks == 1 and rows == n:
                parts.append(name)
                continue
            parts.append(
                self.node(
                    "Slice",
                    [
                        name,
                        self.i64([j, 0], "starts"),
                        self.i64([j + n, width], "ends"),
                        self.i64([axis, axis + 1], "axes"),
                    ],
                    f"{hint}/block{j}",
                )
            )
        if len(parts) == 1:
            return parts[0]
        return self.node("Concat", parts, hint, axis=axis + 1)

    def op_strided_slice(self, op: _Op) -> list[_Value]:
        opts = op.options("StridedSliceOptions")
        if bool(opts.Offset()):
            raise ConversionError("STRIDED_SLICE with offset=True is not supported")
        x = op.input(0)
        begin = self.sym_list(op.input(1), "STRIDED_SLICE begin")
        end = self.sym_list(op.input(2), "STRIDED_SLICE end")
        strides = self.int_list(op.input(3), "STRIDED_SLICE strides")
        index = _sparse_index(begin, end, strides, opts)
        if isinstance(x, _Const):
            if any(isinstance(v, _Batch | _Unknown) for v in (*begin, *end)):
                raise ConversionError("STRIDED_SLICE of a constant with batch-dependent bounds")
            return [_normalize(np.asarray(x.array[index]), x.dtype)]
        in_shape = x.shape
        plan = _dense_slices(index, in_shape)
        t = self.canonical(x, "x")
        hint = self.tensor_name(op.output_ids[0])
        starts: list[int] = []
        ends: list[int] = []
        axes: list[int] = []
        steps: list[int] = []
        shape: list[_Dim] = []
        regroup = False
        for item in plan:
            if item is None:
                regroup = True
                shape.append(1)
                continue
            axis, start, stop, step, shrink, size = item
            whole = (start, step) == (0, 1) and stop in (size, _INT64_MAX)
            if shrink or not whole:
                axes.append(axis)
                starts.append(start)
                ends.append(stop)
                steps.append(step)
            if shrink:
                regroup = True
            else:
                shape.append(_slice_len(start, stop, step) if isinstance(size, int) else size)
        name = t.name
        if axes:
            name = self.node(
                "Slice",
                [
                    name,
                    self.i64(starts, "starts"),
                    self.i64(ends, "ends"),
                    self.i64(axes, "axes"),
                    self.i64(steps, "steps"),
                ],
                hint + ("/slice" if regroup else ""),
            )
        if regroup:
            sliced = tuple(
                _slice_len(it[1], it[2], it[3]) if isinstance(it[5], int) else it[5]
                for it in plan
                if it is not None
            )
            name = self.reshape(name, sliced, tuple(shape), hint)
        return [self.new_tensor(op, 0, name, tuple(shape))]

    def op_range(self, op: _Op) -> list[_Value]:
        start, limit, delta = (self.int_list(op.input(k), "RANGE bound") for k in range(3))
        dtype = self.tfl_dtype(op.output_ids[0])
        return [_Const(np.arange(start[0], limit[0], delta[0]).astype(dtype), dtype)]

    def op_reverse_v2(self, op: _Op) -> list[_Value]:
        x = op.input(0)
        axes_in = self.int_list(op.input(1), "REVERSE_V2 axes")
        rank = len(x.shape)
        axes = [a + rank if a < 0 else a for a in axes_in]
        if isinstance(x, _Const):
            return [_Const(np.flip(x.array, tuple(axes)), x.dtype)]
        t = self.materialize(x, "x")
        onnx_axes = [t.perm.index(a) for a in axes]
        hint = self.tensor_name(op.output_ids[0])
        n = len(onnx_axes)
        out = self.node(
            "Slice",
            [
                t.name,
                self.i64([-1] * n, "starts"),
                self.i64([_INT64_MIN] * n, "ends"),
                self.i64(onnx_axes, "axes"),
                self.i64([-1] * n, "steps"),
            ],
            hint,
        )
        return [self.new_tensor(op, 0, out, t.shape, t.perm)]

    def op_pad(self, op: _Op) -> list[_Value]:
        x = op.input(0)
        pads_in = self.int_list(op.input(1), "PAD paddings")
        t = self.materialize(x, "x")
        rank = len(t.shape)
        pairs = [(pads_in[2 * a], pads_in[2 * a + 1]) for a in range(rank)]
        shape: list[_Dim] = []
        for a, d in enumerate(t.shape):
            if isinstance(d, _Batch):
                if pairs[a] != (0, 0):
                    raise ConversionError("PAD along the batch axis")
                shape.append(d)
            else:
                shape.append(d + pairs[a][0] + pairs[a][1])
        pads = [pairs[p][0] for p in t.perm] + [pairs[p][1] for p in t.perm]
        hint = self.tensor_name(op.output_ids[0])
        out = self.node("Pad", [t.name, self.i64(pads, "pads")], hint, mode="constant")
        return [self.new_tensor(op, 0, out, tuple(shape), t.perm)]

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

    # --- linear algebra and convolutions ------------------------------------------------------

    def op_fully_connected(self, op: _Op) -> list[_Value]:
        opts = op.options("FullyConnectedOptions")
        if int(opts.WeightsFormat()) != 0:
            raise ConversionError("FULLY_CONNECTED with shuffled weights is not supported")
        x = op.input(0)
        w = op.input(1)
        bias = op.optional(2)
        if not isinstance(w, _Const) or w.symbolic or w.array.ndim != 2:
            raise ConversionError("FULLY_CONNECTED weights must be a constant matrix")
        if bias is not None and not isinstance(bias, _Const):
            raise ConversionError("FULLY_CONNECTED bias must be constant")
        n_out, n_in = (int(d) for d in w.array.shape)
        in_shape = x.shape
        if in_shape[-1] != n_in:
            raise ConversionError(
                f"FULLY_CONNECTED input {list(in_shape)} vs weights {[n_out, n_in]}"
            )
        keep = bool(opts.KeepNumDims())
        lead = in_shape[:-1]
        shape: _Shape = (*lead, n_out) if keep else (_as_dim(_prod(lead)), n_out)
        hint = self.tensor_name(op.output_ids[0])
        t = x.src if isinstance(x, _Lazy) else self.canonical(x, hint)
        if len(t.shape) != 2 and not keep:
            flat = (_as_dim(_prod(t.shape[:-1])), t.shape[-1])
            t = self.reshape_tensor(t, flat, hint + "/flatten")
        if isinstance(x, _Lazy):
            folded = _fold_matmul(x.matrix, w.array.T)
            out = self.exact_matmul(t.name, folded, hint + ("/matmul" if bias is not None else ""))
            if bias is not None:
                out = self.node("Add", [out, self.const(bias.array, hint + "/bias")], hint)
        elif len(t.shape) == 2:
            inputs = [t.name, self.const(w.array, hint + "/weights")]
            if bias is not None:
                inputs.append(self.const(bias.array, hint + "/bias"))
            out = self.node("Gemm", inputs, hint, transB=1)
        else:
            wt = self.const(np.ascontiguousarray(w.array.T), hint + "/weights")
            out = self.node("MatMul", [t.name, wt], hint + ("/matmul" if bias is not None else ""))
            if bias is not None:
                out = self.node("Add", [out, self.const(bias.array, hint + "/bias")], hint)
        out = self.activation(out, int(opts.FusedActivationFunction()), hint)
        return [self.new_tensor(op, 0, out, shape)]

    def spatial(
        self,
        t: _Tensor,
        kernel: tuple[int, int],
        strides: tuple[int, int],
        dilations: tuple[int, int],
        padding: int,
    ) -> tuple[list[int], _Shape]:
        _, h, w, _ = t.shape
        if not isinstance(h, int) or not isinstance(w, int):
            raise ConversionError("spatial dimensions must be static")
        out_hw: list[int] = []
        before: list[int] = []
        after: list[int] = []
        for size, k, s, d in zip((h, w), kernel, strides, dilations, strict=True):
            if padding == _TFL_SAME:
                o, b, a = _same_pads(size, k, s, d)
            else:
                o, b, a = _valid_out(size, k, s, d), 0, 0
            out_hw.append(o)
            before.append(b)
            after.append(a)
        return before + after, (t.shape[0], out_hw[0], out_hw[1])

    def conv(self, op: _Op, depthwise: bool) -> list[_Value]:
        opts = op.options("DepthwiseConv2DOptions" if depthwise else "Conv2DOptions")
        x = self.materialize(op.input(0), "x")
        w = op.input(1)
        bias = op.optional(2)
        if (
            not isinstance(w, _Const)
            or w.symbolic
            or (bias is not None and not isinstance(bias, _Const))
        ):
            raise ConversionError(f"{op.name} needs constant weights and bias")
        if len(x.shape) != 4:
            raise ConversionError(f"{op.name} input must be 4-D, got {list(x.shape)}")
        c_in = x.shape[3]
        if not isinstance(c_in, int):
            raise ConversionError(f"{op.name} channel dimension must be static")
        if depthwise:
            _, kh, kw, c_out = (int(d) for d in w.array.shape)
            weights = w.array.reshape(kh, kw, c_out).transpose(2, 0, 1)[:, None]
            group = c_in
            if c_out % c_in:
                raise ConversionError("DEPTHWISE_CONV_2D output channels not a multiple of input")
        else:
            c_out, kh, kw, c_w = (int(d) for d in w.array.shape)
            weights = w.array.transpose(0, 3, 1, 2)
            if c_in % c_w:
                raise ConversionError(f"CONV_2D input channels {c_in} vs filter {c_w}")
            group = c_in // c_w
        strides = (int(opts.StrideH()), int(opts.StrideW()))
        dilations = (int(opts.DilationHFactor()), int(opts.DilationWFactor()))
        pads, (b, oh, ow) = self.spatial(x, (kh, kw), strides, dilations, int(opts.Padding()))
        t = self.to_layout(x, _NCHW)
        hint = self.tensor_name(op.output_ids[0])
        inputs = [t.name, self.const(np.ascontiguousarray(weights), hint + "/weights")]
        if bias is not None:
            inputs.append(self.const(bias.array, hint + "/bias"))
        out = self.node(
            "Conv",
            inputs,
            hint,
            kernel_shape=[kh, kw],
            strides=list(strides),
            dilations=list(dilations),
            pads=pads,
            group=group,
        )
        out = self.activation(out, int(opts.FusedActivationFunction()), hint)
        return [self.new_tensor(op, 0, out, (b, oh, ow, c_out), _NCHW)]

    def op_conv_2d(self, op: _Op) -> list[_Value]:
        return self.conv(op, depthwise=False)

    def op_depthwise_conv_2d(self, op: _Op) -> list[_Value]:
        return self.conv(op, depthwise=True)

    def pool(self, op: _Op, onnx_op: str) -> list[_Value]:
        opts = op.options("Pool2DOptions")
        x = self.materialize(op.input(0), "x")
        if len(x.shape) != 4:
            raise ConversionError(f"{op.name} input must be 4-D")
        kernel = (int(opts.FilterHeight()), int(opts.FilterWidth()))
        strides = (int(opts.StrideH()), int(opts.StrideW()))
        pads, (b, oh, ow) = self.spatial(x, kernel, strides, (1, 1), int(opts.Padding()))
        t = self.to_layout(x, _NCHW)
        hint = self.tensor_name(op.output_ids[0])
        attrs: dict[str, Any] = {
            "kernel_shape": list(kernel),
            "strides": list(strides),
            "pads": pads,
        }
        if onnx_op == "AveragePool":
            attrs["count_include_pad"] = 0
        out = self.node(onnx_op, [t.name], hint, **attrs)
        out = self.activation(out, int(opts.FusedActivationFunction()), hint)
        return [self.new_tensor(op, 0, out, (b, oh, ow, x.shape[3]), _NCHW)]

    def op_average_pool_2d(self, op: _Op) -> list[_Value]:
        return self.pool(op, "AveragePool")

    def op_max_pool_2d(self, op: _Op) -> list[_Value]:
        return self.pool(op, "MaxPool")

    def op_rfft2d(self, op: _Op) -> list[_Value]:
        x = op.input(0)
        fft = self.int_list(op.input(1), "RFFT2D fft_length")
        in_shape = x.shape
        if len(fft) != 2 or len(in_shape) < 2 or fft[0] != 1 or in_shape[-2] != 1:
            raise ConversionError(
                f"RFFT2D is only supported as a 1-D transform (rows 1), got {list(in_shape)}, {fft}"
            )
        n_in = in_shape[-1]
        if not isinstance(n_in, int):
            raise ConversionError("RFFT2D length must be static")
        t = self.canonical(x, "x")
        matrix = _real_dft_matrix(n_in, fft[1])
        shape = (*in_shape[:-1], fft[1] // 2 + 1)
        self.check_shape(op, 0, shape)
        return [_Lazy(t, matrix, shape, np.dtype(np.complex64))]


# --- pure helpers ------------------------------------------------------------------------------


def _broadcast(a: _Shape, b: _Shape) -> _Shape:
    rank = max(len(a), len(b))
    pa = (1,) * (rank - len(a)) + a
    pb = (1,) * (rank - len(b)) + b
    out: list[_Dim] = []
    for x, y in zip(pa, pb, strict=True):
        if y in (x, 1):
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ConversionError(f"shapes {list(a)} and {list(b)} do not broadcast")
    return tuple(out)


def _trivial_perm(shape: _Shape, perm: tuple[int, ...]) -> bool:
    """True when transposing by ``perm`` only moves size-1 axes, so a Reshape suffices."""
    kept = [p for p in perm if shape[p] != 1]
    return kept == sorted(kept)


def _resolve_reshape(in_shape: _Shape, target: list[_SymElem]) -> _Shape:
    total = _prod(in_shape)
    unknown = [i for i, d in enumerate(target) if d == -1 or isinstance(d, _Unknown)]
    if len(unknown) > 1:
        raise ConversionError(f"RESHAPE target {target} has more than one unknown dimension")
    known = _prod([d for i, d in enumerate(target) if i not in unknown])
    out: list[_Dim] = []
    for i, d in enumerate(target):
        if isinstance(d, int) and d < -1:
            raise ConversionError(f"RESHAPE target {target} has a negative dimension")
        if i in unknown:
            missing = total // known
            if isinstance(missing, _Unknown) or _prod([missing, known]) != total:
                raise ConversionError(f"cannot reshape {list(in_shape)} to {target}")
            out.append(missing)
        else:
            out.append(d)  # type: ignore[arg-type]
    if _prod(out) != total:
        raise ConversionError(f"cannot reshape {list(in_shape)} to {target}")
    return tuple(out)


def _sparse_index(
    begin: list[_SymElem], end: list[_SymElem], strides: list[int], opts: Any
) -> tuple[Any, ...]:
    """TF strided-slice masks as a numpy-style index (slices, ints, ``None``, ``...``)."""
    begin_mask, end_mask = int(opts.BeginMask()), int(opts.EndMask())
    ellipsis, new_axis, shrink = (
        int(opts.EllipsisMask()),
        int(opts.NewAxisMask()),
        int(opts.ShrinkAxisMask()),
    )
    index: list[Any] = []
    seen_ellipsis = False
    for i, (b, e, s) in enumerate(zip(begin, end, strides, strict=True)):
        bit = 1 << i
        if ellipsis & bit:
            if not seen_ellipsis:
                index.append(Ellipsis)
            seen_ellipsis = True
        elif new_axis & bit:
            index.append(None)
        elif shrink & bit:
            if not isinstance(b, int):
                raise ConversionError("STRIDED_SLICE shrinks at a batch-dependent index")
            index.append(b)
        else:
            if s == 0:
                raise ConversionError("STRIDED_SLICE stride 0")
            index.append(slice(None if begin_mask & bit else b, None if end_mask & bit else e, s))
    return tuple(index)


def _dense_slices(
    index: tuple[Any, ...], shape: _Shape
) -> list[tuple[int, int, int, int, bool, _Dim] | None]:
    """Per input axis ``(axis, start, stop, step, shrink, size)``; ``None`` marks a new axis."""
    consumed = sum(1 for it in index if it is not None and it is not Ellipsis)
    if Ellipsis not in index:
        index = (*index, Ellipsis)
    plan: list[tuple[int, int, int, int, bool, _Dim] | None] = []
    axis = 0
    for it in index:
        if it is None:
            plan.append(None)
            continue
        if it is Ellipsis:
            for _ in range(len(shape) - consumed):
                d = shape[axis]
                plan.append((axis, 0, d if isinstance(d, int) else _INT64_MAX, 1, False, d))
                axis += 1
            continue
        if axis >= len(shape):
            raise ConversionError("STRIDED_SLICE indexes more axes than the input has")
        d = shape[axis]
        if isinstance(it, int):
            if not isinstance(d, int):
                raise ConversionError("STRIDED_SLICE shrinks the batch axis")
            k = it + d if it < 0 else it
            if not 0 <= k < d:
                raise ConversionError("STRIDED_SLICE index out of range")
            plan.append((axis, k, k + 1, 1, True, d))
        elif isinstance(d, _Batch):
            full = it.start in (None, 0) and it.stop in (None, d) and it.step == 1
            if not full:
                raise ConversionError("STRIDED_SLICE may only take the whole batch axis")
            plan.append((axis, 0, _INT64_MAX, 1, False, d))
        else:
            if isinstance(it.start, _Batch | _Unknown) or isinstance(it.stop, _Batch | _Unknown):
                raise ConversionError("STRIDED_SLICE bounds depend on the batch")
            start, stop, step = it.indices(d)
            if step < 0 and stop < 0:
                stop = _INT64_MIN
            plan.append((axis, start, stop, step, False, d))
        axis += 1
    return plan


def _framing(idx: _Array) -> tuple[int, int, int, int] | None:
    """``(start, hop, frames, length)`` when ``idx[i, j] == start + hop * i + j``."""
    if idx.ndim != 2 or idx.shape[0] < 2 or idx.shape[1] < 2:
        return None
    n, length = (int(d) for d in idx.shape)
    start = int(idx[0, 0])
    hop = int(idx[1, 0]) - start
    if hop < 1:
        return None
    expected = start + hop * np.arange(n)[:, None] + np.arange(length)[None, :]
    return (start, hop, n, length) if np.array_equal(idx, expected) else None


def _slice_len(start: int, stop: int, step: int) -> int:
    if step > 0:
        return max(0, -(-(stop - start) // step))
    stop = -1 if stop == _INT64_MIN else stop
    return max(0, -(-(start - stop) // -step))


# --- entry point ------------------------------------------------------------------------------


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
