"""RFFT2D as BirdNET uses it: the real part of a 1-D real FFT as a cosine matrix, kept lazy
so that the mel filterbank after it folds into one matrix."""

from __future__ import annotations

import math

import numpy as np

from sevensense.builders.tflite_to_onnx.emitter import _Emitter
from sevensense.builders.tflite_to_onnx.errors import ConversionError
from sevensense.builders.tflite_to_onnx.schema import _Op
from sevensense.builders.tflite_to_onnx.values import _Array, _Lazy, _Value


def _real_dft_matrix(n_in: int, fft_len: int) -> _Array:
    """Float64 ``[n_in, fft_len // 2 + 1]`` matrix giving the real part of ``rfft(x, fft_len)``.

    Input samples beyond ``fft_len`` are cropped (zero rows), shorter inputs are implicitly
    zero-padded, as RFFT2D's ``fft_length`` does. The cosine of each distinct phase is
    computed once, after exact integer phase reduction, so large ``t * k`` products cost no
    accuracy and the matrix is the same on every platform whose libm ``cos`` agrees. Phases
    ``m`` and ``fft_len - m`` share one value, so rows ``t`` and ``fft_len - t`` are equal
    bit for bit (which :meth:`_Emitter.exact_matmul` relies on).
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


class _SpectralOps(_Emitter):
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
