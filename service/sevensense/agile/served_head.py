"""A classifier run by a model host on the raw embeddings of its batch: the model services
(GPU, CPU), the gateway's in-process quantized fallback, and through the same calls the
command line.

The gateway names the head by :class:`HeadRef`: the classifier's name, version, the
SHA-256 of its ``head.onnx``, the space it was trained on, and the request's transform
(reducer, projection), so the host rebuilds exactly the vectors the head was trained on
(L2-normalised, then the transform) without trusting the gateway's word for it: it loads
the classifier from its own registry, checks the digest, and checks the space (model
name, version, transform key) against the model that ran the batch (409 naming both).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sevensense.agile.apply import head_logits
from sevensense.agile.store import Classifier, ClassifierStore
from sevensense.artifacts.registry import Artifact
from sevensense.embeddings.transform import VectorTransform, load_transform
from sevensense.errors import (
    ChecksumMismatchError,
    ClassifierMismatchError,
    ClassifierNotFoundError,
    ModelError,
    ReducerMismatchError,
    ReducerNotFoundError,
    SevensenseError,
)
from sevensense.index.records import SpaceKey
from sevensense.inference.postprocess import assess, l2_normalize
from sevensense.settings import Settings

_CACHED_HEADS = 32
_REFUSALS: dict[str, type[SevensenseError]] = {
    e.code: e
    for e in (
        ClassifierNotFoundError,
        ClassifierMismatchError,
        ChecksumMismatchError,
        ReducerNotFoundError,
        ReducerMismatchError,
    )
}


class HeadRef(BaseModel):
    """What a window item asks its model host to run on its embedding."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    space: SpaceKey
    reduce: str | None = None
    project: str | None = None
    curvature: float = 1.0
    max_norm: float = 0.999

    @classmethod
    def of(cls, classifier: Classifier, transform: VectorTransform) -> HeadRef:
        m = classifier.manifest
        projection = transform.projection
        return cls(
            name=m.name,
            version=m.version,
            onnx_sha256=m.onnx_sha256,
            space=m.space,
            reduce=transform.reducer.ref if transform.reducer else None,
            project=projection.kind if projection else None,
            curvature=projection.curvature if projection else 1.0,
            max_norm=projection.max_norm if projection else 0.999,
        )

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class BoundHead:
    """A verified classifier and the transform that makes its input from raw embeddings."""

    classifier: Classifier
    transform: VectorTransform

    def logits(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits [n, C] (rows of dead windows are zero) and which rows are live: the
        windows whose embedding is valid, as the gateway's quality check would say."""
        normed, norms = l2_normalize(raw)
        live = np.array(
            [assess(normed[i], float(norms[i])).is_valid for i in range(len(normed))], dtype=bool
        )
        out = np.zeros((len(normed), len(self.classifier.head.classes)), dtype=np.float32)
        if live.any():
            out[live] = head_logits(self.classifier, self.transform.apply(normed[live]))
        return out, live


class HeadHost:
    """The heads one model host has loaded, most recently used kept (a few KB each)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ClassifierStore(settings.models_dir)
        self._bound: OrderedDict[tuple[HeadRef, str], BoundHead] = OrderedDict()
        self._lock = threading.Lock()

    def bound(self, ref: HeadRef, artifact: Artifact) -> BoundHead:
        m = artifact.manifest
        key = (ref, f"{m.name}:{m.version}")
        with self._lock:
            found = self._bound.get(key)
            if found is not None:
                self._bound.move_to_end(key)
                return found
        bound = self._load(ref, artifact)
        with self._lock:
            self._bound[key] = bound
            while len(self._bound) > _CACHED_HEADS:
                self._bound.popitem(last=False)
        return bound

    def _load(self, ref: HeadRef, artifact: Artifact) -> BoundHead:
        classifier = self.store.resolve(ref.ref)
        actual = classifier.manifest.onnx_sha256
        if actual != ref.onnx_sha256:
            raise ChecksumMismatchError(
                f"classifier {ref.ref}: this model host's head.onnx has sha256 {actual}, "
                f"the request names {ref.onnx_sha256}",
                expected=ref.onnx_sha256,
                actual=actual,
            )
        m = artifact.manifest
        # The file's digest is not the reducer's business here: the planner checked the
        # reducer against the request's artifact, and this host may run its int8 variant.
        transform = load_transform(
            self.settings,
            m.name,
            m.version,
            None,
            ref.reduce,
            ref.project,
            curvature=ref.curvature,
            max_norm=ref.max_norm,
        )
        here = SpaceKey(model_name=m.name, model_version=m.version, transform=transform.space_key)
        classifier.check_space(here)
        if ref.space != here:
            raise ClassifierMismatchError(
                f"classifier {ref.ref} was named for the space {ref.space}; "
                f"this batch is of {here}",
                classifier=ref.ref,
                classifier_space=str(ref.space),
                space=str(here),
            )
        return BoundHead(classifier, transform)


def head_refusal(body: dict[str, object]) -> SevensenseError:
    """A model host's in-band head error as the typed error it was (BentoML would hide an
    exception's type between services)."""
    error = _REFUSALS.get(str(body.get("code")), ModelError)
    details = body.get("details")
    return error(str(body.get("message")), **(details if isinstance(details, dict) else {}))
