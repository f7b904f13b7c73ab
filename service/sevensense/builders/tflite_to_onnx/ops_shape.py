"""Ops that only change shape or assemble tensors: SHAPE, RESHAPE, EXPAND_DIMS, SQUEEZE,
TRANSPOSE, CONCATENATION, PACK, SPLIT_V, RANGE."""

from __future__ import annotations

import numpy as np
from onnx import helper

from sevensense.builders.tflite_to_onnx.emitter import _Emitter
from sevensense.builders.tflite_to_onnx.errors import ConversionError
from sevensense.builders.tflite_to_onnx.schema import _TFL_DTYPES, _Op
from sevensense.builders.tflite_to_onnx.shapes import _resolve_reshape, _trivial_perm
from sevensense.builders.tflite_to_onnx.symbolic import _as_dim, _SymElem
from sevensense.builders.tflite_to_onnx.values import (
    _NCHW,
    _Const,
    _identity,
    _Lazy,
    _normalize,
    _Tensor,
    _Value,
)


class _ShapeOps(_Emitter):
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

    def op_range(self, op: _Op) -> list[_Value]:
        start, limit, delta = (self.int_list(op.input(k), "RANGE bound") for k in range(3))
        dtype = self.tfl_dtype(op.output_ids[0])
        return [_Const(np.arange(start[0], limit[0], delta[0]).astype(dtype), dtype)]
