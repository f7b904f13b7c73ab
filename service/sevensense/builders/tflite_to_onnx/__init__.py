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
  accumulates in float64, as TFLite's RFFT2D does (see :meth:`_Emitter.exact_matmul`).
  ONNX's DFT op is avoided because ONNX Runtime's CPU kernel for it dominated the run time.
* A GATHER whose constant indices cut overlapping frames (``tf.signal.frame``) becomes
  slices of a hop-sized block matrix plus one Concat, because ORT's Gather copies element by
  element (it was a quarter of BirdNET's run time).
* Output bytes are reproducible: names derive from tensor indices and TFLite names, nodes and
  initializers keep emission order, folded constants are accumulated in a fixed order (not by
  BLAS, whose summation order depends on the CPU), and the IR version is the minimum for the
  opset rather than the installed onnx's default.
"""

from sevensense.builders.tflite_to_onnx.errors import ConversionError
from sevensense.builders.tflite_to_onnx.model import PRODUCER_NAME, PRODUCER_VERSION, convert_tflite
from sevensense.builders.tflite_to_onnx.shapes import _same_pads as _same_pads
from sevensense.builders.tflite_to_onnx.spectral import _real_dft_matrix as _real_dft_matrix

__all__ = ["PRODUCER_NAME", "PRODUCER_VERSION", "ConversionError", "convert_tflite"]
