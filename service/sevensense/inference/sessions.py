"""ONNX Runtime sessions: one per (name, version, variant), providers in priority order.

The provider actually running a session is read back from the session: on a machine
without a GPU, ``onnxruntime-gpu`` still *lists* CUDA (and TensorRT) as available, then
falls back to CPU when the session is created (FACTS.md), so the available list cannot say
what will run.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort
from packaging.version import Version

from sevensense.artifacts.labels import load_labels
from sevensense.artifacts.manifest import ModelIdentity, ModelManifest, OutputRole
from sevensense.artifacts.registry import (
    Artifact,
    ModelRef,
    ModelRegistry,
    check_contract,
    contract_problems,
    raise_on_problems,
)
from sevensense.errors import ModelError
from sevensense.inference.openvino_runtime import OpenVinoSession
from sevensense.inference.spinning import spinning
from sevensense.settings import InferenceSettings

log = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_GRAPH_OPT = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

# ORT prints the CUDA→CPU fallback as an alarming error on every session on GPU-less
# machines; the provider really used is reported by us instead (log, CLI, metrics).
ort.set_default_logger_severity(4)


_preload_lock = threading.Lock()
_preloaded: list[bool] = []


def preload_cuda_libraries() -> bool:
    """Load the CUDA and cuDNN libraries from the nvidia-* wheels (the Bento's serving
    requirements) before the first CUDA session: the CUDA provider has no RUNPATH into them
    and finds them only if these sonames are loaded already. Once per process, a few
    milliseconds; where the libraries are absent (the dev venv, CPU hosts) ORT prints what
    failed, which is logged here instead of reaching stdout. True when nothing failed."""
    with _preload_lock:
        if _preloaded:
            return _preloaded[0]
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                ort.preload_dlls()
            failed = [line for line in out.getvalue().splitlines() if "Failed to load" in line]
        except Exception as exc:  # ORT raises its own untyped errors
            failed = [f"preload_dlls() raised {exc!r}"]
        if failed:
            log.info("CUDA libraries not loaded (CUDA sessions will fall back): %s", failed)
        else:
            log.info("CUDA libraries loaded from the nvidia wheels")
        _preloaded.append(not failed)
        return not failed


def provider_chain(settings: InferenceSettings) -> list[tuple[str, dict[str, str]]]:
    """Requested providers that this ORT build knows, in priority order, CPU always last."""
    available = set(ort.get_available_providers())
    chain: list[tuple[str, dict[str, str]]] = []
    for key in settings.providers:
        name = PROVIDER_NAMES[key]
        if name not in available or any(name == c[0] for c in chain):
            continue
        opts = {"device_id": str(settings.device_id)} if key == "cuda" else {}
        chain.append((name, opts))
    if not any(c[0] == "CPUExecutionProvider" for c in chain):
        chain.append(("CPUExecutionProvider", {}))
    return chain


@dataclass
class LoadedModel:
    artifact: Artifact
    session: ort.InferenceSession | OpenVinoSession
    providers: list[str]
    requested: list[str]
    labels: list[str] | None
    load_ms: float
    input_name: str = field(init=False)
    output_names: dict[OutputRole, str] = field(init=False)

    def __post_init__(self) -> None:
        self.input_name = self.manifest.input.name
        self.output_names = {role: spec.name for role, spec in self.manifest.outputs.items()}

    @property
    def manifest(self) -> ModelManifest:
        return self.artifact.manifest

    @property
    def identity(self) -> ModelIdentity:
        return self.manifest.identity

    @property
    def provider(self) -> str:
        return self.providers[0]


def create_session(
    model_path: Path, settings: InferenceSettings
) -> tuple[ort.InferenceSession | OpenVinoSession, list[str], list[str]]:
    if settings.runtime == "openvino":  # every session on OpenVINO's CPU plugin
        ov_session = OpenVinoSession(model_path, settings.resolved_intra_threads())
        return ov_session, ov_session.get_providers(), ov_session.get_providers()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.resolved_intra_threads()
    opts.inter_op_num_threads = settings.inter_threads
    opts.graph_optimization_level = _GRAPH_OPT[settings.graph_optimization]
    opts.log_severity_level = 3
    spin = spinning(settings)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if spin and settings.spin_duration_us:
        opts.add_session_config_entry(
            "session.intra_op.spin_duration_us", str(settings.spin_duration_us)
        )
    chain = provider_chain(settings)
    if any(name == PROVIDER_NAMES["cuda"] for name, _ in chain):
        preload_cuda_libraries()
    session = ort.InferenceSession(
        str(model_path),
        sess_options=opts,
        providers=[name for name, _ in chain],
        provider_options=[o for _, o in chain],
    )
    return session, session.get_providers(), [name for name, _ in chain]


def check_session_contract(
    session: ort.InferenceSession | OpenVinoSession, artifact: Artifact
) -> None:
    """The manifest's I/O contract against what the session will run."""
    if isinstance(session, OpenVinoSession):
        check_contract(artifact.model_path, artifact.manifest)
        return

    def dims(args: list[ort.NodeArg]) -> dict[str, list[int | str]]:
        return {a.name: [d if isinstance(d, int | str) else "?" for d in a.shape] for a in args}

    problems = contract_problems(
        dims(session.get_inputs()), dims(session.get_outputs()), artifact.manifest
    )
    raise_on_problems(artifact.manifest, problems)


def load_model(
    artifact: Artifact, registry: ModelRegistry, settings: InferenceSettings
) -> LoadedModel:
    """Verify, create and describe one session; not cached (hot swap warms models this way)."""
    manifest = artifact.manifest
    if Version(ort.__version__) < Version(manifest.min_onnxruntime):
        raise ModelError(
            f"{manifest.identity} needs onnxruntime >= {manifest.min_onnxruntime}, "
            f"this is {ort.__version__}"
        )
    registry.verify(artifact, contract=False)
    start = time.perf_counter()
    try:
        session, used, requested = create_session(artifact.model_path, settings)
    except Exception as exc:  # ORT raises its own untyped errors
        raise ModelError(
            f"{manifest.identity}: ONNX Runtime could not load the model: {exc}"
        ) from exc
    check_session_contract(session, artifact)
    labels = load_labels(manifest.labels, artifact.directory) if manifest.labels else None
    loaded = LoadedModel(
        artifact, session, used, requested, labels, (time.perf_counter() - start) * 1e3
    )
    if used[0] != requested[0]:
        log.info(
            "%s: requested %s first but the session runs on %s",
            manifest.identity,
            requested[0],
            used[0],
        )
    log.info("loaded %s on %s in %.0f ms", manifest.identity, used[0], loaded.load_ms)
    return loaded


class SessionManager:
    """Thread-safe cache of loaded models keyed by (name, version, variant)."""

    def __init__(self, registry: ModelRegistry, settings: InferenceSettings) -> None:
        self.registry = registry
        self.settings = settings
        self._models: dict[tuple[str, str, str], LoadedModel] = {}
        self._resolved: dict[str, Artifact] = {}
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str, str], threading.Lock] = {}

    def get(self, ref: str | ModelRef | Artifact) -> LoadedModel:
        """The loaded model for a reference; a reference is resolved on disk only once."""
        if isinstance(ref, Artifact):
            artifact = ref
        else:
            text = str(ref)
            found = self._resolved.get(text)
            if found is None:
                found = self.registry.resolve(ref, default_variant=self.settings.model_variant)
                self._resolved[text] = found
            artifact = found
        key = artifact.key
        with self._lock:
            cached = self._models.get(key)
            if cached is not None:
                return cached
            key_lock = self._loading.setdefault(key, threading.Lock())
        # Loading can take seconds (hashing, graph optimisation): hold only this model's lock
        # so requests for models already loaded are never stuck behind it.
        with key_lock:
            with self._lock:
                cached = self._models.get(key)
            if cached is not None:
                return cached
            loaded = load_model(artifact, self.registry, self.settings)
            with self._lock:
                self._models[key] = loaded
            return loaded

    def evict(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._models.pop(key, None)
            self._resolved = {k: a for k, a in self._resolved.items() if a.key != key}

    def refresh(self) -> None:
        """Forget how references resolved (call after registering new versions)."""
        with self._lock:
            self._resolved.clear()

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())
