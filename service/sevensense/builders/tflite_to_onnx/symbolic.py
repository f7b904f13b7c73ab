"""Shape values that scale with the dynamic batch, so shape arithmetic folds at conversion time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

import numpy as np

from sevensense.builders.tflite_to_onnx.errors import ConversionError


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
