"""Layer ops: FULLY_CONNECTED (folded into a preceding RFFT2D's matrix), CONV_2D,
DEPTHWISE_CONV_2D and 2-D pooling in NCHW."""

from __future__ import annotations

from typing import Any

import numpy as np

from sevensense.builders.tflite_to_onnx.emitter import _Emitter
from sevensense.builders.tflite_to_onnx.errors import ConversionError
from sevensense.builders.tflite_to_onnx.schema import _TFL_SAME, _Op
from sevensense.builders.tflite_to_onnx.shapes import _same_pads, _valid_out
from sevensense.builders.tflite_to_onnx.spectral import _fold_matmul
from sevensense.builders.tflite_to_onnx.symbolic import _as_dim, _prod, _Shape
from sevensense.builders.tflite_to_onnx.values import _NCHW, _Const, _Lazy, _Tensor, _Value


class _LayerOps(_Emitter):
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
