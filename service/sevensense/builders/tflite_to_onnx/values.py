"""What a TFLite tensor is during conversion: a constant, an ONNX tensor in some layout, or a
pending RFFT matmul."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt

from sevensense.builders.tflite_to_onnx.symbolic import _is_int, _Shape

_Array: TypeAlias = npt.NDArray[Any]


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
