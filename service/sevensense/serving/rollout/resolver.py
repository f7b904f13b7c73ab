"""Which exact artifact serves a request: the registry on disk, the rollout weights, the
default model.

The gateway, the admin endpoints and the model services' start-up all ask the same
questions (what is the default, which version does this routing key get, what is being
served); answering them in one place keeps a canary's split identical everywhere.
"""

from __future__ import annotations

import logging
import threading
import time

from sevensense.artifacts.catalog import default_model
from sevensense.artifacts.registry import Artifact, ModelRef, ModelRegistry
from sevensense.errors import ModelNotFoundError, SevensenseError
from sevensense.serving.rollout.weights import RolloutStore, choose_version
from sevensense.settings import Settings

log = logging.getLogger(__name__)


class ModelResolver:
    def __init__(
        self, settings: Settings, store: RolloutStore, registry: ModelRegistry | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry or ModelRegistry(settings.models_dir)
        self._artifacts: list[Artifact] = []
        self._scanned_at = float("-inf")
        self._lock = threading.Lock()

    @property
    def default_variant(self) -> str:
        return self.settings.inference.model_variant

    def artifacts(self, max_age_s: float = 2.0) -> list[Artifact]:
        """The audio models on disk, rescanned at most every ``max_age_s`` (new versions
        appear); range models are never served, listed or rolled out here."""
        with self._lock:
            if time.monotonic() - self._scanned_at > max_age_s:
                self._artifacts = self.registry.artifacts(kind="audio")
                self._scanned_at = time.monotonic()
            return self._artifacts

    def default_model(self) -> str:
        return default_model(self.settings, self.artifacts())

    def resolve(self, model: str | None, routing_key: str) -> Artifact:
        """A pinned ``name:version`` is honoured; a bare name follows its rollout weights."""
        ref = ModelRef.parse(model or self.default_model())
        if ref.version is None:
            state = self.store.load().get(ref.name)
            if state is not None:
                version = choose_version(state, routing_key, ref.name)
                ref = ModelRef(ref.name, version, ref.variant or state.variant)
        variant = ref.variant or self.default_variant
        try:
            return self.registry.resolve(ref, default_variant=variant, artifacts=self.artifacts())
        except ModelNotFoundError:
            # The cached scan may predate a version registered a moment ago.
            return self.registry.resolve(ref, default_variant=variant)

    def served_refs(self) -> list[str]:
        """Every version the rollouts route to, plus the default: what a model service warms."""
        listing = self.registry.artifacts(kind="audio")
        refs: list[str] = []
        try:
            default = self.registry.resolve(
                default_model(self.settings, listing),
                default_variant=self.default_variant,
                artifacts=listing,
            )
            refs.append(str(default.manifest.identity))
        except SevensenseError as exc:
            log.error("default model unavailable: %s", exc)
        for name, state in self.store.load().items():
            refs.extend(f"{name}:{v}:{state.variant}" for v, w in state.weights.items() if w > 0)
        return list(dict.fromkeys(refs))
