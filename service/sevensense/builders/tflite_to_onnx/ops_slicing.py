"""Ops that select or move data along axes: GATHER (framing without a Gather node),
STRIDED_SLICE, REVERSE_V2, PAD."""

from __future__ import annotations

import numpy as np

from sevensense.builders.tflite_to_onnx.emitter import _Emitter
from sevensense.builders.tflite_to_onnx.errors import ConversionError
from sevensense.builders.tflite_to_onnx.schema import _Op
from sevensense.builders.tflite_to_onnx.shapes import (
    _INT64_MAX,
    _INT64_MIN,
    _dense_slices,
    _framing,
    _slice_len,
    _sparse_index,
)
from sevensense.builders.tflite_to_onnx.symbolic import _Batch, _Dim, _Unknown
from sevensense.builders.tflite_to_onnx.values import _Const, _normalize, _Tensor, _Value


class _SlicingOps(_Emitter):
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
