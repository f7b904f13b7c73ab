"""Int8 variants of base artifacts, and their quality measured against the base.

The ``quantized`` variant is what the serving fallback chain runs when the primary model
path fails, and what the ``field`` profile runs on CPU-only devices, so it must stay close
to the base model and must not be slower on a CPU.

Method, chosen by measurement. BirdNET v2.4 on the 64 windows of :func:`synthetic_windows`,
onnxruntime 1.31.1, AMD EPYC (AVX512-VNNI); cosine of L2-normalised embeddings to the base;
top-1 agreement of the logits; size as a fraction of the base; CPU latency per window with
one thread at batch 1 / batch 8 (base: 16.3 / 15.7 ms):

==================================================  =====  =====  =====  =====  ===========
variant                                             cos    cos    top-1  size   ms/window
                                                    mean   min                  b1 / b8
==================================================  =====  =====  =====  =====  ===========
dynamic, all supported ops (Conv, MatMul, Gemm)     0.752  0.504  0.30   0.256  54.6 / 55.1
same, per-channel weights                           0.777  0.577  0.34   0.256
dynamic, all ops, front end kept float              0.804  0.606  0.42   0.273  56.6 / 56.9
dynamic, MatMul/Gemm only                           0.884  0.486  0.69   0.600  13.3 / 13.2
static QDQ, U8S8 per-channel, MinMax calibration    0.558  0.419  0.19   0.287   9.9 /  9.0
same, percentile calibration                        0.588  0.406  0.19   0.287
static QDQ of the 11 least sensitive conv groups    0.986  0.969  0.78   0.405  14.3 / 13.9
int8 weights only (DequantizeLinear, float math)    0.999  0.997  0.89   0.275  22.3 / 20.1
**dynamic, MatMul/Gemm only, front end float**      1.000  1.000  1.00   0.617  15.3 / 15.1
==================================================  =====  =====  =====  =====  ===========

(Static calibration used 32 windows of another seed; latencies left blank were not timed.)
Two things rule out the obvious choices. The spectrogram front end (STFT and mel
projections done as MatMul/Gemm on the waveform) cannot take 8-bit activations: waveform
and power spectrum span far more than 48 dB, so per-tensor uint8 activations erase the
quiet bins (0.884 from that alone). And BirdNET's convolutions do not survive quantized
activations: probing one node at a time, the first block's expansion and depthwise convs
each drop the cosine to about 0.8, and ``ConvInteger`` runs about 3.5x slower than float
convolution. Static QDQ is fast but far off; keeping only the insensitive convs needs a
per-model search and still moves embeddings (0.986) that vector indexes built from the
base would be searched with. Int8 weights with float math keep the quality but are slower,
since dequantised weights block ORT's NCHWc conv fusions.

So: dynamic quantization (int8 weights, uint8 activations quantized at run time) of
MatMul/Gemm only, leaving Conv and every MatMul/Gemm of the front end (reached from the
waveform before the first Conv or Log, :func:`front_end_nodes`) in float. For BirdNET that
quantizes the 6522-class head, its largest tensor (6.7 M of 13 M weights): the embedding is
untouched, the file is 0.62 of the base, and it is no slower. Where the backbone is MatMul,
as in the Perch-contract model, the backbone is quantized too (cosine 0.9999, top-1 0.94
on windows whose random-weight logits are nearly tied, size 0.47, 5.7 / 6.0 ms against
6.1 / 6.4 ms; all ops including the front end: cosine 0.595). Weights are per tensor:
per-channel changed nothing measurable for BirdNET's head, and ORT 1.31 rejects per-channel
zero points on batched (3-D) MatMul weights at run time, as the Perch-contract bands have.

The figures recorded in each manifest's ``quality`` come from :func:`measure`, run at
build time on that model with its own pre-processing, and the ``holdout_*`` ones from
:func:`sevensense.builders.variants.measure` on real recordings (the module of the static
int8 and fp16 variants, with the configurations tried for them this time).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from sevensense.artifacts.manifest import ModelManifest, OutputRole
from sevensense.audio.normalize import normalize
from sevensense.inference.postprocess import l2_normalize
from sevensense.inference.sessions import create_session
from sevensense.settings import InferenceSettings

VARIANT: Final = "quantized"
RECIPE: Final = "int8-blocks-matmul-v3"
QUANTIZED_OPS: Final = ("MatMul", "Gemm")
# 8-bit weights in blocks of 64 along K with int8 activations per block (accuracy level 4):
# on BirdNET's head the only setting of those tried that kept top-5 on the held-out windows.
BLOCK_BITS: Final = 8
BLOCK_SIZE: Final = 64
BLOCK_ACCURACY_LEVEL: Final = 4
EVAL_SEED: Final = 20260101
EVAL_WINDOWS: Final = 64
EVAL_BATCH: Final = 8
_KINDS: Final = ("chirps", "chorus", "trill", "harmonic", "tone", "noise_burst", "pink", "noisy")
_LEVELS: Final = (0.005, 0.03, 0.15, 0.6)
EVAL_SET: Final = (
    f"{EVAL_WINDOWS} seeded synthetic windows (seed {EVAL_SEED}): single and overlapping "
    "chirp trains (clean and in noise), trills, harmonic sweeps, tones, noise bursts and pink "
    f"noise at peak levels {', '.join(map(str, _LEVELS))}, each pre-processed as the engine "
    "does for the model"
)
# The front-end trace stops here: past a Conv or Log the signal is features, not waveform,
# and a Shape's output is metadata that would otherwise reach every later node.
_FRONT_END_STOP: Final = frozenset({"Conv", "Log", "Shape"})

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class QuantizedModel:
    """A freshly quantized file, the front-end nodes left in float, its measured figures."""

    path: Path
    kept_float: list[str]
    quality: dict[str, float]


def front_end_node_set(model: onnx.ModelProto) -> list[str]:
    """Every node the waveform reaches before a Conv or Log: the spectrogram front end, which
    every reduced-precision variant keeps in float32."""
    nodes = list(model.graph.node)
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    initializers = {i.name for i in model.graph.initializer}
    frontier = [i.name for i in model.graph.input if i.name not in initializers]
    seen: set[int] = set()
    found: list[str] = []
    while frontier:
        for index in consumers.get(frontier.pop(), []):
            if index in seen or nodes[index].op_type in _FRONT_END_STOP:
                continue
            seen.add(index)
            found.append(nodes[index].name)
            frontier.extend(nodes[index].output)
    return found


def front_end_nodes(model: onnx.ModelProto) -> list[str]:
    """MatMul/Gemm nodes of the front end: what dynamic quantization must leave float."""
    ops = {n.name: n.op_type for n in model.graph.node}
    return [name for name in front_end_node_set(model) if ops[name] in QUANTIZED_OPS]


def _name_nodes(model: onnx.ModelProto) -> None:
    """Exclusion is by node name, and ONNX allows unnamed nodes."""
    taken = {n.name for n in model.graph.node}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"sevensense_node_{i}"
            while node.name in taken:
                node.name += "_"
            taken.add(node.name)


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer advises pre-processing on the root logger; that advice is for Conv."""
    root = logging.getLogger()

    def drop(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _gemm_to_matmul(model: onnx.ModelProto, keep: set[str]) -> None:
    """Gemm with a constant 2-D weight -> MatMul (+ Add): the block quantizer takes MatMul only.

    The MatMul keeps the Gemm's name, so exclusions by name still hold.
    """
    from onnx import helper, numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type != "Gemm"
            or node.name in keep
            or node.input[1] not in weights
            or attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
        ):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weights[node.input[1]])
        name = f"{node.input[1]}_k_by_n"
        model.graph.initializer.append(
            numpy_helper.from_array(
                np.ascontiguousarray(w.T if attrs.get("transB", 0) else w), name
            )
        )
        if len(node.input) < 3 or not node.input[2]:
            nodes.append(helper.make_node("MatMul", [node.input[0], name], node.output, node.name))
            continue
        product = f"{node.name}_product"
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], node.name))
        nodes.append(
            helper.make_node("Add", [product, node.input[2]], node.output, f"{node.name}_bias")
        )
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def quantize_model(src: Path, dst: Path, *, block_size: int = BLOCK_SIZE) -> list[str]:
    """Write the int8 model to ``dst``; returns the front-end nodes left in float.

    MatMul/Gemm with a 2-D weight: 8-bit weights in blocks (``MatMulNBits``); those with a
    batched (3-D) weight, which that operator cannot take: dynamic int8 (per tensor).
    ``block_size`` is for the benchmark's comparison (``bench/int8_routes.py``).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(src))
    _name_nodes(model)
    keep_float = front_end_nodes(model)
    _gemm_to_matmul(model, set(keep_float))
    blocks = MatMulNBitsQuantizer(
        model,
        bits=BLOCK_BITS,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=BLOCK_ACCURACY_LEVEL,
        nodes_to_exclude=keep_float,
        op_types_to_quantize=("MatMul",),
    )
    with _quiet_quantizer(), _quiet_block_quantizer():
        blocks.process()
        # The quantizer turns a Gemm into "<name>_MatMul" before it looks at the exclusions.
        exclude = [n for name in keep_float for n in (name, f"{name}_MatMul")]
        quantize_dynamic(
            blocks.model.model,
            dst,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=False,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            extra_options={"MatMulConstBOnly": True},
        )
    return keep_float


@contextmanager
def _quiet_block_quantizer() -> Iterator[None]:
    """The block quantizer logs every node it looks at, at INFO."""
    logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _envelope(n: int) -> npt.NDArray[np.float64]:
    return np.asarray(np.sin(np.linspace(0.0, np.pi, n)) ** 2, dtype=np.float64)


def _chirp_train(rng: np.random.Generator, sr: int, n: int, voices: int) -> npt.NDArray[np.float64]:
    """Repeated frequency-swept syllables, 50-120 ms, as many songbird phrases are built."""
    x = np.zeros(n)
    top = min(9000.0, 0.4 * sr)
    for _ in range(voices):
        f0, f1 = rng.uniform(1500.0, 4000.0), rng.uniform(4000.0, top)
        if rng.random() < 0.5:
            f0, f1 = f1, f0
        dur, period = rng.uniform(0.05, 0.12), rng.uniform(0.15, 0.6)
        m = round(dur * sr)
        t = np.arange(m) / sr
        syllable = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * dur))) * _envelope(m)
        start = rng.uniform(0.0, 0.3 * n / sr)
        while (a := round(start * sr)) + m <= n:
            x[a : a + m] += syllable * rng.uniform(0.5, 1.0)
            start += period * rng.uniform(0.8, 1.2)
    return x


def _harmonic_sweep(rng: np.random.Generator, sr: int, n: int) -> npt.NDArray[np.float64]:
    t = np.arange(n) / sr
    f = rng.uniform(400.0, 1500.0) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(h * phase) / h for h in range(1, 5) if f.max() * h < 0.45 * sr)
    return np.asarray(x, dtype=np.float64) * (
        0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t)
    )


def _trill(rng: np.random.Generator, sr: int, n: int) -> npt.NDArray[np.float64]:
    t = np.arange(n) / sr
    rate = rng.uniform(10.0, 30.0)
    f = rng.uniform(2000.0, min(6000.0, 0.4 * sr)) * (1 + 0.15 * np.sin(2 * np.pi * rate * t))
    gate = np.sin(np.pi * rate * t) > 0
    return np.asarray(np.sin(2 * np.pi * np.cumsum(f) / sr) * gate, dtype=np.float64)


def _tones(rng: np.random.Generator, sr: int, n: int) -> npt.NDArray[np.float64]:
    t = np.arange(n) / sr
    freqs = rng.uniform(200.0, min(10_000.0, 0.4 * sr), size=int(rng.integers(1, 4)))
    return np.asarray(
        sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs),
        dtype=np.float64,
    )


def _noise_bursts(rng: np.random.Generator, sr: int, n: int) -> npt.NDArray[np.float64]:
    x = np.zeros(n)
    for _ in range(int(rng.integers(2, 8))):
        a = int(rng.integers(0, n - sr // 10))
        m = min(int(rng.integers(sr // 50, sr // 4)), n - a)
        x[a : a + m] += rng.standard_normal(m) * _envelope(m)
    return x


def _pink(rng: np.random.Generator, sr: int, n: int) -> npt.NDArray[np.float64]:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    freqs[0] = freqs[1]
    return np.asarray(np.fft.irfft(spectrum / np.sqrt(freqs), n), dtype=np.float64)


def _signal(kind: str, rng: np.random.Generator, sr: int, n: int) -> npt.NDArray[np.float64]:
    if kind == "chirps":
        return _chirp_train(rng, sr, n, 1)
    if kind == "chorus":
        return _chirp_train(rng, sr, n, 3) + 0.1 * rng.standard_normal(n)
    if kind == "noisy":
        return _chirp_train(rng, sr, n, 1) + 0.3 * rng.standard_normal(n)
    if kind == "trill":
        return _trill(rng, sr, n)
    if kind == "harmonic":
        return _harmonic_sweep(rng, sr, n)
    if kind == "tone":
        return _tones(rng, sr, n)
    if kind == "noise_burst":
        return _noise_bursts(rng, sr, n)
    return _pink(rng, sr, n)


def synthetic_windows(
    sample_rate: int, window_samples: int, *, seed: int = EVAL_SEED, count: int = EVAL_WINDOWS
) -> FloatArray:
    """Raw (un-normalised) windows, the same for the same arguments on every machine.

    Generated, not read from files: a fresh install has no test audio, and the quality
    figures must be reproducible wherever the artifact is built.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((count, window_samples), dtype=np.float32)
    for i in range(count):
        kind = _KINDS[(i // len(_LEVELS)) % len(_KINDS)]
        level = _LEVELS[i % len(_LEVELS)]
        x = _signal(kind, rng, sample_rate, window_samples)
        x = x / (np.max(np.abs(x)) + 1e-12) + 0.01 * rng.standard_normal(window_samples)
        out[i] = (level * x / np.max(np.abs(x))).astype(np.float32)
    return out


def run_outputs(
    session: ort.InferenceSession,
    manifest: ModelManifest,
    windows: FloatArray,
    batch: int = EVAL_BATCH,
) -> tuple[FloatArray, FloatArray | None]:
    """Embeddings (L2-normalised, as served) and logits of ``windows``, by output name."""
    names = [manifest.outputs[OutputRole.EMBEDDING].name]
    logits_spec = manifest.outputs.get(OutputRole.LOGITS)
    if logits_spec is not None:
        names.append(logits_spec.name)
    runs = [
        session.run(names, {manifest.input.name: windows[i : i + batch]})
        for i in range(0, len(windows), batch)
    ]
    embeddings, _ = l2_normalize(np.concatenate([r[0] for r in runs]))
    logits = np.concatenate([r[1] for r in runs]) if logits_spec is not None else None
    return embeddings.astype(np.float32), logits


def _outputs(
    path: Path, manifest: ModelManifest, windows: FloatArray
) -> tuple[FloatArray, FloatArray | None]:
    """Through the engine's CPU session, as the model is served."""
    session, _, _ = create_session(path, InferenceSettings(providers=["cpu"]))
    return run_outputs(session, manifest, windows)


def prepare(manifest: ModelManifest, raw: FloatArray) -> FloatArray:
    """Per-window normalisation from the manifest, as the engine applies it."""
    return np.stack([normalize(w, manifest.normalization) for w in raw])


def compare(
    base: tuple[FloatArray, FloatArray | None], other: tuple[FloatArray, FloatArray | None]
) -> dict[str, float]:
    """Cosine of normalised embeddings per window, and top-1 agreement of the logits."""
    cos = np.einsum("ij,ij->i", base[0], other[0], dtype=np.float64)
    figures = {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "cosine_p05": float(np.percentile(cos, 5)),
        "n_windows": float(len(cos)),
    }
    if base[1] is not None and other[1] is not None:
        agree = np.argmax(base[1], axis=1) == np.argmax(other[1], axis=1)
        figures["top1_agreement"] = float(agree.mean())
    return figures


def measure(base_path: Path, quantized_path: Path, manifest: ModelManifest) -> dict[str, float]:
    """The ``quality`` figures of a quantized model against its base, rounded for the manifest."""
    raw = synthetic_windows(manifest.sample_rate, manifest.window_samples)
    windows = prepare(manifest, raw)
    figures = compare(
        _outputs(base_path, manifest, windows), _outputs(quantized_path, manifest, windows)
    )
    figures["size_ratio"] = quantized_path.stat().st_size / base_path.stat().st_size
    return {k: round(v, 6) for k, v in figures.items()}


def source_text(identity: str, digest: str) -> str:
    """What the quantized file was made from and how; a change to any part means rebuild."""
    return (
        f"int8 quantization of {identity} sha256={digest} by onnxruntime {ort.__version__} "
        f"MatMulNBits {BLOCK_BITS}-bit blocks of {BLOCK_SIZE} + quantize_dynamic, recipe {RECIPE}"
    )


def description_text(identity: str, digest: str, kept_float: int) -> str:
    return (
        f"INT8 variant of {identity} (sha256 {digest}), made by onnxruntime {ort.__version__} "
        f"quantization of MatMul/Gemm: {BLOCK_BITS}-bit weights in blocks of {BLOCK_SIZE} with "
        "int8 activations per block (MatMulNBits) where the weight is 2-D, dynamic int8 where "
        f"it is batched; Conv and the spectrogram front end ({kept_float} nodes) left in float. "
        "`quality` "
        f"compares it with the base on {EVAL_SET}; the holdout_* figures on real recordings "
        "(builders/variants.py); embeddings are compared after L2 normalisation."
    )


def quantize_artifact(base_path: Path, manifest: ModelManifest, workdir: Path) -> QuantizedModel:
    """Quantize and measure, leaving ``model.onnx`` in ``workdir`` for the registry."""
    path = workdir / "model.onnx"
    kept = quantize_model(base_path, path)
    return QuantizedModel(path, kept, measure(base_path, path, manifest))
