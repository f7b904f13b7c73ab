"""Pure shape and index arithmetic: broadcasting, padding, reshape targets, strided-slice plans."""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from sevensense.builders.tflite_to_onnx.errors import ConversionError
from sevensense.builders.tflite_to_onnx.symbolic import (
    _Batch,
    _Dim,
    _prod,
    _Shape,
    _SymElem,
    _Unknown,
)
from sevensense.builders.tflite_to_onnx.values import _Array

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


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
