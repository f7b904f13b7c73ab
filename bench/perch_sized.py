"""A Perch-sized benchmark model: Perch 2.0's I/O contract on an EfficientNet-B3 backbone.

The Perch-contract test model is deliberately tiny, so its speed says nothing about how
many windows a production worker can serve or how big a batch pays off. Perch 2.0's real
weights cannot be downloaded here, so this builds a graph of the same size and shape
(EfficientNet-B3 over the 500x128 log-mel, about 12M backbone parameters) with RANDOM
weights, only to time it. It is a BENCHMARK ARTIFACT: never registered in ``models/``,
never served, its outputs mean nothing.

* frontend: the Perch-contract model's own subgraph from ``inputs`` to ``spectrogram``
  (extracted from :func:`build_perch_contract_model`), so the two cannot drift apart;
* backbone input: the log-mel standardised per window, as one channel ``[B,1,500,128]``;
* EfficientNet-B3 (width 1.2, depth 1.4 on B0's stages): stem 3x3/2 to 40 channels, 26
  MBConv blocks with squeeze-excitation 0.25 and swish, head 1x1 to 1536 channels. Each
  stride-2 convolution pads symmetrically by ``(k - 1) / 2``, which rounds up, so
  500x128 becomes 16x4 after stride 32: exactly ``spatial_embedding``'s grid;
* BatchNorm is folded into each conv's weights and bias, as an exported model would have
  it; its statistics come from four calibration windows (see :class:`_GraphBuilder`);
* ``embedding`` = global average of the 16x4 map, ``label`` = one full linear layer
  1536 -> 14795 (22.7M parameters on its own, kept dense because its cost is real).

Weights are drawn He-scaled from one seeded generator, then normalised as the folded
BatchNorm would, so activations keep a moderate scale (head RMS between 0.3 for silence and
about 12 for white noise): nothing overflows, and nothing drifts into denormals, which
would distort CPU timings.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from sevensense.builders.perch_contract import (
    EMBEDDING_DIM,
    INPUT_NAME,
    N_FRAMES,
    N_MELS,
    NUM_CLASSES,
    OPSET,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    build_perch_contract_model,
    reference_log_mel,
)
from sevensense.settings import repo_root

SEED: Final = 20261125
BUILDER_VERSION: Final = "1"
OUTPUTS: Final = ("embedding", "spatial_embedding", "spectrogram", "label")
TIME_CELLS: Final = 16
FREQ_CELLS: Final = 4
IR_VERSION: Final = 10
STANDARDISE_EPS: Final = 1e-5

WIDTH: Final = 1.2
DEPTH: Final = 1.4
SE_RATIO: Final = 0.25
STEM_CHANNELS_B0: Final = 32
HEAD_CHANNELS_B0: Final = 1280
# EfficientNet-B0's stages: (expansion, kernel, stride, repeats, output channels).
B0_STAGES: Final = (
    (1, 3, 1, 1, 16),
    (6, 3, 2, 2, 24),
    (6, 5, 2, 2, 40),
    (6, 3, 2, 3, 80),
    (6, 5, 1, 3, 112),
    (6, 5, 2, 4, 192),
    (6, 3, 1, 1, 320),
)
DOC_STRING: Final = (
    "BENCHMARK ARTIFACT, NOT PERCH. Random-weight EfficientNet-B3 on Perch 2.0's ONNX "
    "contract (inputs [batch,160000] float32 at 32 kHz; embedding [batch,1536], "
    "spatial_embedding [batch,16,4,1536], spectrogram [batch,500,128], label [batch,14795]), "
    "built by sevensense to time Perch-sized inference. Its outputs carry no meaning."
)

_F32 = npt.NDArray[np.float32]


def default_path() -> Path:
    return repo_root() / ".cache" / "bench" / "perch_sized.onnx"


def round_filters(channels: int, width: float = WIDTH, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: to a multiple of 8, never more than 10 % down."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return rounded


def round_repeats(repeats: int, depth: float = DEPTH) -> int:
    return math.ceil(depth * repeats)


@dataclass(frozen=True)
class Stage:
    expansion: int
    kernel: int
    stride: int
    repeats: int
    channels: int


def b3_stages() -> list[Stage]:
    return [Stage(e, k, s, round_repeats(r), round_filters(c)) for e, k, s, r, c in B0_STAGES]


@dataclass
class ModelStats:
    """Size and cost of the built graph, written next to the model so reuse needs no rebuild."""

    seed: int
    builder_version: str
    sha256: str = ""
    size_bytes: int = 0
    params_total: int = 0
    params_backbone: int = 0
    params_label_head: int = 0
    macs_frontend: int = 0
    macs_backbone: int = 0
    macs_label_head: int = 0
    feature_map: list[int] = field(default_factory=list)

    @property
    def macs_total(self) -> int:
        return self.macs_frontend + self.macs_backbone + self.macs_label_head


@dataclass(frozen=True)
class _T:
    """A graph tensor's name and its value on the calibration batch."""

    name: str
    value: _F32


def _sigmoid(x: _F32) -> _F32:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float32)


def _conv_np(x: _F32, w: _F32, b: _F32, stride: int, groups: int) -> _F32:
    """Reference convolution ``[N,C,H,W]``, symmetric ``(k-1)/2`` padding, groups 1 or C only."""
    k = w.shape[-1]
    pad = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    h = (x.shape[2] + 2 * pad - k) // stride + 1
    wd = (x.shape[3] + 2 * pad - k) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], h, wd), dtype=np.float32)
    for dy in range(k):
        for dx in range(k):
            rows = slice(dy, dy + stride * (h - 1) + 1, stride)
            cols = slice(dx, dx + stride * (wd - 1) + 1, stride)
            patch = xp[:, :, rows, cols]
            if groups == 1:
                out += np.moveaxis(np.tensordot(patch, w[:, :, dy, dx], axes=([1], [1])), 3, 1)
            else:
                out += w[None, :, 0, dy, dx, None, None] * patch
    return np.asarray(out + b[None, :, None, None], dtype=np.float32)


def _fp16_grid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Round to half precision so last-bit BLAS differences between machines keep the bytes."""
    return np.asarray(x, dtype=np.float16).astype(np.float64)


def _shift_grid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The same for shifts, on an absolute grid: they may be large, and precision is absolute."""
    return np.round(x, 4)


def _calibration_batch(seed: int) -> _F32:
    """Four unlike windows, standardised as the graph does, to fold BatchNorm statistics from.

    Statistics from one window overfit: channels nearly constant on it got huge scales and
    blew up on other audio. Tones with a sweep, white noise, low-frequency-heavy noise and
    sparse chirps over a quiet floor cover what the benchmark (and a real recorder) feeds.
    """
    rng = np.random.default_rng(seed + 1)
    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE
    tones = 0.05 * rng.standard_normal(WINDOW_SAMPLES)
    for hz in (800.0, 2500.0, 6000.0):
        tones += 0.1 * np.sin(2 * np.pi * hz * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    tones += 0.1 * np.sin(2 * np.pi * (1000.0 * t + 1200.0 * t * t))
    white = rng.standard_normal(WINDOW_SAMPLES)
    brown = np.cumsum(rng.standard_normal(WINDOW_SAMPLES))
    chirps = 1e-3 * rng.standard_normal(WINDOW_SAMPLES)
    for start in rng.uniform(0.0, 4.8, size=8):
        on = (t >= start) & (t < start + 0.15)
        chirps[on] += np.sin(2 * np.pi * (3000.0 * (t[on] - start) + 2e4 * (t[on] - start) ** 2))
    audio = np.stack([tones, white, brown - brown.mean(), chirps])
    audio = 0.25 * audio / np.abs(audio).max(axis=1, keepdims=True)
    log_mel = reference_log_mel(audio)
    mean = log_mel.mean(axis=(1, 2), keepdims=True)
    var = log_mel.var(axis=(1, 2), keepdims=True)
    normed = (log_mel - mean) / np.sqrt(var + STANDARDISE_EPS)
    return np.asarray(normed[:, None], dtype=np.float32)


class _GraphBuilder:
    """Emits nodes and initialisers and, alongside, runs each op in numpy on calibration audio.

    Running the calibration batch through as the graph grows lets every conv be followed
    by what BatchNorm would have been, folded in: each output channel scaled and shifted to
    mean 0 and variance 1 on that batch. Without it, random convolutions multiply the
    signal's scale block after block (measured: activations near 800 at the head with He
    init alone, saturated SE gates). SE convolutions have no BatchNorm in EfficientNet; they
    get one overall scale so their logits have unit second moment.
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.params = 0
        self.macs = 0

    def const(self, name: str, value: npt.ArrayLike, dtype: type = np.float32) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def param(self, name: str, value: npt.ArrayLike) -> str:
        data = np.asarray(value, dtype=np.float32)
        self.params += data.size
        return self.const(name, data)

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def swish(self, x: _T) -> _T:
        gate = self.node("Sigmoid", [x.name], f"{x.name}_sigmoid")
        return _T(self.node("Mul", [x.name, gate], f"{x.name}_swish"), x.value * _sigmoid(x.value))

    def conv(
        self,
        name: str,
        x: _T,
        cout: int,
        kernel: int = 1,
        stride: int = 1,
        depthwise: bool = False,
        folded_bn: bool = True,
    ) -> _T:
        cin = x.value.shape[1]
        groups = cin if depthwise else 1
        fan_in = (cin // groups) * kernel * kernel
        shape = (cout, cin // groups, kernel, kernel)
        w = self.rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
        b = self.rng.standard_normal(cout) * 0.01
        y = _conv_np(x.value, w.astype(np.float32), b.astype(np.float32), stride, groups)
        y64 = y.astype(np.float64)
        if folded_bn:
            mean = y64.mean(axis=(0, 2, 3))
            var = y64.var(axis=(0, 2, 3))
            var = np.maximum(var, 0.01 * float(np.median(var)) + 1e-5)
            scale = _fp16_grid(1.0 / np.sqrt(var))
            shift = _shift_grid(-mean * scale)
        else:
            scale = _fp16_grid(np.full(cout, 1.0 / math.sqrt(float(np.mean(y64**2)) + 1e-5)))
            shift = np.zeros(cout)
        w = w * scale[:, None, None, None]
        b = b * scale + shift
        value = (y64 * scale[:, None, None] + shift[:, None, None]).astype(np.float32)
        pad = (kernel - 1) // 2
        out = self.node(
            "Conv",
            [x.name, self.param(f"{name}_w", w), self.param(f"{name}_b", b)],
            name,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
            group=groups,
        )
        self.macs += value.shape[2] * value.shape[3] * cout * fan_in
        return _T(out, value)

    def mbconv(self, name: str, x: _T, stage: Stage, stride: int) -> _T:
        cin = x.value.shape[1]
        h = x
        if stage.expansion != 1:
            h = self.swish(self.conv(f"{name}_expand", h, cin * stage.expansion))
        mid = h.value.shape[1]
        h = self.swish(self.conv(f"{name}_dw", h, mid, stage.kernel, stride, depthwise=True))
        pooled = _T(
            self.node("GlobalAveragePool", [h.name], f"{name}_se_pool"),
            h.value.mean(axis=(2, 3), keepdims=True),
        )
        squeezed = max(1, int(cin * SE_RATIO))
        s = self.swish(self.conv(f"{name}_se_reduce", pooled, squeezed, folded_bn=False))
        s = self.conv(f"{name}_se_expand", s, mid, folded_bn=False)
        gate = self.node("Sigmoid", [s.name], f"{name}_se_gate")
        h = _T(self.node("Mul", [h.name, gate], f"{name}_se"), h.value * _sigmoid(s.value))
        h = self.conv(f"{name}_project", h, stage.channels)
        if stride == 1 and cin == stage.channels:
            return _T(self.node("Add", [x.name, h.name], f"{name}_residual"), x.value + h.value)
        return h


def _frontend() -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """The Perch-contract model's nodes and constants that compute ``spectrogram``."""
    contract = build_perch_contract_model()
    sub = onnx.utils.Extractor(contract).extract_model([INPUT_NAME], ["spectrogram"])
    return list(sub.graph.node), list(sub.graph.initializer)


def build_perch_sized_model(seed: int = SEED) -> tuple[onnx.ModelProto, ModelStats]:
    """Build the graph; the same seed always gives the same bytes."""
    stats = ModelStats(seed=seed, builder_version=BUILDER_VERSION)
    front_nodes, front_inits = _frontend()
    g = _GraphBuilder(seed)
    g.nodes.extend(front_nodes)
    g.initializers.extend(front_inits)
    stats.macs_frontend = sum(
        N_FRAMES * int(np.prod(numpy_helper.to_array(i).shape))
        for i in front_inits
        if i.name in ("dft_matrix", "mel_matrix")
    )

    g.const("bb_axes", [1, 2], np.int64)
    g.const("bb_eps", STANDARDISE_EPS)
    g.const("bb_image_shape", [0, 1, N_FRAMES, N_MELS], np.int64)
    mean = g.node("ReduceMean", ["spectrogram", "bb_axes"], "bb_mean", keepdims=1)
    centred = g.node("Sub", ["spectrogram", mean], "bb_centred")
    power = g.node("Mul", [centred, centred], "bb_power")
    var = g.node("ReduceMean", [power, "bb_axes"], "bb_var", keepdims=1)
    std = g.node("Sqrt", [g.node("Add", [var, "bb_eps"], "bb_var_eps")], "bb_std")
    normed = g.node("Div", [centred, std], "bb_normed")
    x = _T(g.node("Reshape", [normed, "bb_image_shape"], "bb_image"), _calibration_batch(seed))

    x = g.swish(g.conv("stem", x, round_filters(STEM_CHANNELS_B0), kernel=3, stride=2))
    for si, stage in enumerate(b3_stages(), start=1):
        for bi in range(stage.repeats):
            x = g.mbconv(f"s{si}b{bi}", x, stage, stage.stride if bi == 0 else 1)
    features = g.swish(g.conv("head", x, round_filters(HEAD_CHANNELS_B0)))
    grid = list(features.value.shape[1:])
    if grid != [EMBEDDING_DIM, TIME_CELLS, FREQ_CELLS]:
        raise AssertionError(f"feature map {grid}, expected [1536, 16, 4]")
    stats.params_backbone, stats.macs_backbone = g.params, g.macs
    stats.feature_map = grid

    g.node("Transpose", [features.name], "spatial_embedding", perm=[0, 2, 3, 1])
    g.const("spatial_axes", [2, 3], np.int64)
    g.node("ReduceMean", [features.name, "spatial_axes"], "embedding", keepdims=0)
    emb_power = float(np.mean(features.value.mean(axis=(2, 3)).astype(np.float64) ** 2))
    w = g.rng.standard_normal((EMBEDDING_DIM, NUM_CLASSES)) / math.sqrt(EMBEDDING_DIM * emb_power)
    b = g.rng.standard_normal(NUM_CLASSES) * 0.1
    label_w, label_b = g.param("label_w", w), g.param("label_b", b)
    g.node("Add", [g.node("MatMul", ["embedding", label_w], "label_proj"), label_b], "label")
    stats.params_label_head = g.params - stats.params_backbone
    stats.macs_label_head = EMBEDDING_DIM * NUM_CLASSES
    stats.params_total = g.params

    batch = "batch"
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        g.nodes,
        "perch_sized_benchmark_model",
        [helper.make_tensor_value_info(INPUT_NAME, f32, [batch, WINDOW_SAMPLES])],
        [
            helper.make_tensor_value_info("embedding", f32, [batch, EMBEDDING_DIM]),
            helper.make_tensor_value_info(
                "spatial_embedding", f32, [batch, TIME_CELLS, FREQ_CELLS, EMBEDDING_DIM]
            ),
            helper.make_tensor_value_info("spectrogram", f32, [batch, N_FRAMES, N_MELS]),
            helper.make_tensor_value_info("label", f32, [batch, NUM_CLASSES]),
        ],
        initializer=g.initializers,
        doc_string=DOC_STRING,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="sevensense-bench-perch-sized",
        producer_version=BUILDER_VERSION,
        doc_string=DOC_STRING,
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            "sevensense.benchmark_artifact": "true",
            "sevensense.io_contract": "perch_v2",
            "sevensense.seed": str(seed),
        },
    )
    onnx.checker.check_model(model)
    return model, stats


def _stats_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def ensure_perch_sized_model(path: Path | None = None, seed: int = SEED) -> tuple[Path, ModelStats]:
    """The cached model, built first if it is missing or was built by another seed/version.

    Written to a temporary name and renamed, so a concurrent reader never sees half a file.
    """
    path = path or default_path()
    sidecar = _stats_path(path)
    if path.is_file() and sidecar.is_file():
        raw = json.loads(sidecar.read_text())
        if (
            raw.get("seed") == seed
            and raw.get("builder_version") == BUILDER_VERSION
            and raw.get("size_bytes") == path.stat().st_size
        ):
            return path, ModelStats(**raw)
    model, stats = build_perch_sized_model(seed)
    data = model.SerializeToString()
    stats.sha256 = hashlib.sha256(data).hexdigest()
    stats.size_bytes = len(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, payload in ((path, data), (sidecar, json.dumps(asdict(stats), indent=2).encode())):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.chmod(tmp, 0o644)
        Path(tmp).replace(target)
    return path, stats


def describe(stats: ModelStats) -> str:
    def m(n: int) -> str:
        return f"{n / 1e6:.2f}M"

    def gmac(n: int) -> str:
        return f"{n / 1e9:.3f}"

    return (
        f"params: backbone {m(stats.params_backbone)}, label head {m(stats.params_label_head)}, "
        f"total {m(stats.params_total)} ({stats.size_bytes / 1e6:.0f} MB)\n"
        f"GMAC/window: frontend {gmac(stats.macs_frontend)}, backbone "
        f"{gmac(stats.macs_backbone)}, label head {gmac(stats.macs_label_head)}, total "
        f"{gmac(stats.macs_total)}; feature map {stats.feature_map}"
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.perch_sized [OUT.onnx]``: build (or reuse) and describe the model."""
    args = sys.argv[1:] if argv is None else argv
    path, stats = ensure_perch_sized_model(Path(args[0]) if args else None)
    print(f"{path} sha256={stats.sha256} (BENCHMARK ARTIFACT, not Perch)")
    print(describe(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
