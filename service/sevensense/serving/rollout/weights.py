"""Active model versions and canary weights, shared by every gateway worker.

A rollout maps a model name to version weights (``{"2.0.0": 90, "2.0.1": 10}``; a single
version at 100 is simply the active one). A model without a rollout serves its default, the
registry's newest version: the caller falls back to it when :meth:`RolloutStore.load` has no
entry. Two stores hold the same thing: a JSON file under ``state_dir`` (one host, many
worker processes) and the SSM parameter the Terraform in ``infra/terraform`` creates.

Routing is a consistent hash rather than a random draw, so one recording (or partner)
always reaches the same version while the weights stay put; see :func:`choose_version`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from sevensense import aws
from sevensense.artifacts.registry import sorted_versions
from sevensense.errors import ConfigError, RolloutError
from sevensense.settings import ServingSettings
from sevensense.storage.atomic import atomic_write, exclusive_lock, file_signature

log = logging.getLogger(__name__)

FULL_WEIGHT = 100.0


def _now() -> datetime:
    return datetime.now(UTC)


def validate_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights that can route traffic; RolloutError otherwise. Any scale (90/10 = 0.9/0.1)."""
    if not weights:
        raise RolloutError("a rollout needs at least one version")
    clean: dict[str, float] = {}
    for version, weight in weights.items():
        if not isinstance(version, str) or not version.strip():
            raise RolloutError(f"bad version {version!r} in rollout weights")
        try:
            value = float(weight) if not isinstance(weight, bool | str) else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise RolloutError(
                f"weight of version {version!r} must be a finite number >= 0, not {weight!r}",
                version=version,
            )
        clean[version.strip()] = value
    if sum(clean.values()) <= 0:
        raise RolloutError("at least one version needs a weight > 0", weights=clean)
    return clean


class RolloutState(BaseModel):
    """The traffic split of one model. Frozen: a loaded state is shared between requests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: dict[str, float]
    variant: str = Field("base", min_length=1, max_length=64)
    updated_at: datetime = Field(default_factory=_now)
    updated_by: str | None = None

    @field_validator("weights", mode="before")
    @classmethod
    def _routable(cls, value: Any) -> dict[str, float]:
        # RolloutError is no ValueError, so pydantic lets it through unwrapped.
        if not isinstance(value, Mapping):
            raise RolloutError(f"rollout weights must be a mapping, not {type(value).__name__}")
        return validate_weights(value)

    @property
    def active(self) -> str | None:
        """The one version taking all traffic, if there is exactly one."""
        live = [v for v, w in self.weights.items() if w > 0]
        return live[0] if len(live) == 1 else None

    def shares(self) -> dict[str, float]:
        """Weights rescaled to sum to 100, for display."""
        total = sum(self.weights.values())
        return {v: round(FULL_WEIGHT * w / total, 6) for v, w in self.weights.items()}


Rollouts = dict[str, RolloutState]
"""Every model's rollout, by model name; a name that is absent serves its default."""

_ROLLOUTS = TypeAdapter(Rollouts)


def rollouts_to_json(rollouts: Rollouts) -> bytes:
    body = {"models": json.loads(_ROLLOUTS.dump_json(rollouts))}
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()


def rollouts_from_json(data: bytes | str) -> Rollouts:
    """Parse the file format ``{"models": {name: RolloutState}}``; ValueError/RolloutError."""
    raw = json.loads(data)
    if not isinstance(raw, dict) or set(raw) != {"models"}:
        raise ValueError('expected an object {"models": {...}}')
    return _ROLLOUTS.validate_python(raw["models"])


def routing_point(routing_key: str, model_name: str) -> float:
    """Where a routing key falls in [0, 1): 64 bits of SHA-256, identical in every process."""
    digest = hashlib.sha256(f"{model_name}\0{routing_key}".encode()).hexdigest()
    return int(digest[:16], 16) / 2**64


def choose_version(state: RolloutState, routing_key: str, model_name: str) -> str:
    """The version a routing key is served by under these weights.

    The key's point ``u`` in [0, 1) comes from SHA-256 (not ``hash()``, which is salted per
    process), and the versions own consecutive slices of [0, 1) in PEP 440 order (not dict
    order, which depends on who wrote the state). So every worker, on every host and after
    every restart, sends a key to the same version, and a partner's results do not flip
    between versions from one request to the next.

    The slices make weight changes monotone between neighbours: moving weight from version A
    to an adjacent version B only moves the boundary between their slices, so only keys of A
    move, all to B, and exactly the share moved. In the usual rollouts the moving weights
    are neighbours: stable and canary, or newest-but-one and newest. No scheme can do this
    for every pair of three or more versions (if each version's set of keys depended on its
    own weight alone, two of them would have to overlap), so moving weight between versions
    that are not neighbours also shifts the slices of the versions between them.
    """
    u = routing_point(routing_key, model_name)
    ordered = sorted_versions(state.weights)
    total = sum(state.weights.values())
    cumulative = 0.0
    for version in ordered:
        cumulative += state.weights[version]
        if u < cumulative / total:
            return version
    # Float rounding can leave u just above the last boundary: that is the last live slice.
    return next(v for v in reversed(ordered) if state.weights[v] > 0)


class RolloutStore(Protocol):
    def load(self) -> Rollouts:
        """Current rollouts; cheap enough to call on every request."""
        ...

    def set_weights(
        self,
        name: str,
        weights: Mapping[str, float],
        variant: str = "base",
        by: str | None = None,
    ) -> RolloutState: ...

    def activate(
        self, name: str, version: str, variant: str = "base", by: str | None = None
    ) -> RolloutState: ...


class FileRolloutStore:
    """``<state_dir>/rollout.json``, shared by the worker processes of one host.

    Writes are read-modify-write under ``flock`` on a sidecar file, and replace the file
    atomically, so concurrent writers never lose an update and readers never see half a
    file. ``load`` only stats the file while it is unchanged. A file someone broke by hand
    is an error on the first load; later, the last good rollouts stay in force and the
    problem is logged, so a bad edit cannot take routing down.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._cache: Rollouts = {}
        self._loaded = False

    def _read(self) -> Rollouts:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"cannot read rollout file {self.path}: {exc}") from exc
        try:
            return rollouts_from_json(raw)
        except (ValueError, RolloutError) as exc:
            raise ConfigError(
                f"rollout file {self.path} is malformed: {exc}", path=str(self.path)
            ) from exc

    def load(self) -> Rollouts:
        signature = file_signature(self.path)
        with self._lock:
            if not self._loaded or signature != self._signature:
                try:
                    self._cache = self._read()
                except ConfigError as exc:
                    if not self._loaded:
                        raise
                    log.error("keeping the previous rollouts: %s", exc)
                self._signature = signature
                self._loaded = True
            return dict(self._cache)

    def _update(self, name: str, state: RolloutState) -> RolloutState:
        with exclusive_lock(self.path):
            try:
                current = self._read()
            except ConfigError as exc:
                raise ConfigError(f"{exc.message}; not overwriting it", **exc.details) from exc
            current[name] = state
            atomic_write(self.path, rollouts_to_json(current), mode=0o644)
            signature = file_signature(self.path)
        with self._lock:
            self._cache, self._signature, self._loaded = current, signature, True
        return state

    def set_weights(
        self,
        name: str,
        weights: Mapping[str, float],
        variant: str = "base",
        by: str | None = None,
    ) -> RolloutState:
        state = RolloutState(weights=dict(weights), variant=variant, updated_by=by)
        return self._update(name, state)

    def activate(
        self, name: str, version: str, variant: str = "base", by: str | None = None
    ) -> RolloutState:
        return self.set_weights(name, {version: FULL_WEIGHT}, variant, by)


class SsmRolloutStore:
    """The canary SSM parameter of ``infra/terraform`` as a :class:`RolloutStore`.

    The parameter holds one model: ``{"stable": "perch-v2/2.0.0", "canary": "perch-v2/2.0.1"
    | null, "canary_weight": 0.05}``, edited by operators with ``aws ssm put-parameter``. It
    maps to weights ``{"2.0.0": 95, "2.0.1": 5}``. What this store writes adds optional
    ``variant``, ``updated_by`` and ``updated_at`` keys, which operators may leave out.
    ``load`` polls at most every ``poll_s`` and blocks on the network when it does, so an
    asyncio caller should call it from a thread; a failed poll keeps the last good value.
    """

    def __init__(
        self,
        parameter_name: str,
        client: Any = None,
        poll_s: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.parameter_name = parameter_name
        self.poll_s = poll_s
        self._client = client
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: Rollouts | None = None
        self._fetched_at = float("-inf")

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("ssm", ConfigError)
        return self._client

    # --- format -----------------------------------------------------------------------------

    @staticmethod
    def _split(ref: str, field: str) -> tuple[str, str]:
        name, sep, version = ref.rpartition("/")
        if not sep or not name or not version:
            raise ConfigError(f"canary parameter {field} {ref!r} is not <model>/<version>")
        return name, version

    @classmethod
    def parse(cls, value: str, modified: datetime | None = None) -> Rollouts:
        """The parameter's JSON as rollouts; ConfigError naming what is wrong."""
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"canary parameter is not JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("stable"), str):
            raise ConfigError('canary parameter needs {"stable": "<model>/<version>", ...}')
        name, stable = cls._split(data["stable"], "stable")
        canary_ref = data.get("canary")
        weight = data.get("canary_weight", 0) or 0
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
            raise ConfigError(f"canary_weight must be a number in [0, 1], not {weight!r}")
        weights = {stable: FULL_WEIGHT}
        if canary_ref is not None:
            if not isinstance(canary_ref, str):
                raise ConfigError(f"canary must be <model>/<version> or null, not {canary_ref!r}")
            canary_name, canary = cls._split(canary_ref, "canary")
            if canary_name != name:
                raise ConfigError(
                    f"canary {canary_ref!r} is not a version of the stable model {name!r}"
                )
            if canary != stable and weight > 0:
                weights = {
                    stable: round(FULL_WEIGHT * (1 - weight), 6),
                    canary: round(FULL_WEIGHT * weight, 6),
                }
        updated_at = data.get("updated_at") or modified or _now()
        try:
            state = RolloutState(
                weights=weights,
                variant=data.get("variant") or "base",
                updated_at=updated_at,
                updated_by=data.get("updated_by"),
            )
        except (ValidationError, RolloutError) as exc:
            raise ConfigError(f"canary parameter is invalid: {exc}") from exc
        return {name: state}

    @staticmethod
    def render(name: str, state: RolloutState, previous_stable: str | None = None) -> str:
        """The parameter value for one model's rollout (at most two live versions).

        The canary is the newer version, unless the previous stable version is one of the
        two (a rollback canary keeps its labels); routing does not depend on the labels.
        """
        live = [v for v in sorted_versions(state.weights) if state.weights[v] > 0]
        if len(live) > 2:
            raise RolloutError(
                f"the SSM canary parameter holds at most two live versions, not {len(live)}",
                versions=live,
            )
        total = sum(state.weights.values())
        if len(live) == 1:
            stable, canary, canary_weight = live[0], None, 0.0
        else:
            stable, canary = live
            if previous_stable == canary:
                stable, canary = canary, stable
            canary_weight = round(state.weights[canary] / total, 6)
        body: dict[str, Any] = {
            "stable": f"{name}/{stable}",
            "canary": f"{name}/{canary}" if canary else None,
            "canary_weight": canary_weight,
            "variant": state.variant,
            "updated_at": state.updated_at.isoformat(),
            "updated_by": state.updated_by,
        }
        return json.dumps(body)

    # --- store ------------------------------------------------------------------------------

    def _fetch(self) -> tuple[Rollouts, str | None]:
        """The parameter's rollouts and raw value; empty when the parameter does not exist."""
        try:
            response = self.client.get_parameter(Name=self.parameter_name)
        except self.client.exceptions.ParameterNotFound:
            return {}, None
        parameter = response["Parameter"]
        return self.parse(parameter["Value"], parameter.get("LastModifiedDate")), parameter["Value"]

    def refresh(self) -> Rollouts:
        """Poll now; on failure keep (and return) the last good value, else raise."""
        try:
            rollouts, _ = self._fetch()
        except Exception as exc:
            self._fetched_at = self._clock()
            if self._cache is None:
                if isinstance(exc, ConfigError):
                    raise
                raise ConfigError(
                    f"cannot read canary parameter {self.parameter_name}: {exc}"
                ) from exc
            log.error("keeping the previous rollouts: canary parameter unreadable: %s", exc)
            return dict(self._cache)
        self._cache, self._fetched_at = rollouts, self._clock()
        return dict(rollouts)

    def load(self) -> Rollouts:
        cache = self._cache
        if cache is not None and self._clock() - self._fetched_at < self.poll_s:
            return dict(cache)
        # One poll at a time; the others keep serving the previous value meanwhile.
        if not self._lock.acquire(blocking=cache is None):
            return dict(cache or {})
        try:
            if self._cache is not None and self._clock() - self._fetched_at < self.poll_s:
                return dict(self._cache)
            return self.refresh()
        finally:
            self._lock.release()

    def set_weights(
        self,
        name: str,
        weights: Mapping[str, float],
        variant: str = "base",
        by: str | None = None,
    ) -> RolloutState:
        state = RolloutState(weights=dict(weights), variant=variant, updated_by=by)
        with self._lock:
            current, raw = self._fetch()
            other = next((n for n in current if n != name), None)
            if other is not None:
                raise RolloutError(
                    f"canary parameter {self.parameter_name} holds the rollout of {other!r}; "
                    f"it cannot also hold {name!r}",
                    model=name,
                )
            previous_stable = None
            if raw is not None:
                previous_stable = self._split(json.loads(raw)["stable"], "stable")[1]
            value = self.render(name, state, previous_stable)
            self.client.put_parameter(
                Name=self.parameter_name, Value=value, Type="String", Overwrite=True
            )
            self._cache, self._fetched_at = {name: state}, self._clock()
        return state

    def activate(
        self, name: str, version: str, variant: str = "base", by: str | None = None
    ) -> RolloutState:
        return self.set_weights(name, {version: FULL_WEIGHT}, variant, by)


def make_store(serving: ServingSettings) -> RolloutStore:
    if serving.rollout_store == "ssm":
        if not serving.canary_param:
            raise ConfigError(
                "rollout_store = 'ssm' needs canary_param (SEVENSENSE_SERVING__CANARY_PARAM)"
            )
        return SsmRolloutStore(serving.canary_param, poll_s=serving.rollout_poll_s)
    return FileRolloutStore(serving.state_dir / "rollout.json")
