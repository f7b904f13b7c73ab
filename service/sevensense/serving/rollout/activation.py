"""Hot swap and canary weights: verify, load and warm first, switch traffic last.

The switch is one write to the rollout store, which every gateway worker re-reads before
routing; a request resolves its version once, at its start, and sends that exact version
with every window, so requests in flight finish where they began. Model services keep the
previous version loaded (``max_loaded_versions``), so nothing in flight loses its session.
Any failure before the write leaves the old version serving and is returned as the reason.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping

import anyio

from sevensense.artifacts.registry import Artifact, ModelRef, sorted_versions
from sevensense.errors import ModelNotFoundError, NoModelPathError, SevensenseError
from sevensense.inference.engine import EmbeddingEngine
from sevensense.quality_gate.gate import GateOutcome, gate
from sevensense.quality_gate.store import load_stored
from sevensense.serving.model_paths.router import ModelPath, PathRouter
from sevensense.serving.model_service.rpc import PrepareResult
from sevensense.serving.rollout.resolver import ModelResolver
from sevensense.serving.rollout.weights import RolloutState
from sevensense.serving.schemas import (
    ModelDetail,
    ModelInfo,
    ModelList,
    RolloutResponse,
    VersionInfo,
)
from sevensense.serving.telemetry.metrics import metrics


class ActivationError(SevensenseError):
    """A version that could not be verified or warmed; the old one keeps serving."""

    code = "activation_failed"
    http_status = 409


class RolloutAdmin:
    """What ``/models`` and ``/admin/models`` do, given what resolves versions and what
    reaches the model services."""

    def __init__(self, resolver: ModelResolver, router: PathRouter) -> None:
        self.resolver = resolver
        self.router = router

    def _engine(self) -> EmbeddingEngine:
        """The Appendix B check runs here, on the CPU, one thread: it must not take the
        cores from the requests this gateway is serving meanwhile. A fresh engine per
        gate, so its sessions are freed once the check is done (sessions load lazily: a
        stored result costs nothing)."""
        settings = self.resolver.settings.model_copy(deep=True)
        settings.inference.providers = ["cpu"]
        settings.inference.intra_threads = 1
        settings.inference.allow_spinning = False
        return EmbeddingEngine(settings, registry=self.resolver.registry)

    async def _gate(
        self, artifacts: list[Artifact], force: bool, by: str, action: str
    ) -> list[GateOutcome]:
        """Before anything is written: a failure leaves the current state serving."""
        if not self.resolver.settings.checks.gate:
            return []
        engine = self._engine()
        outcomes = []
        for artifact in artifacts:
            outcomes.append(
                await anyio.to_thread.run_sync(
                    functools.partial(gate, engine, artifact, force=force, by=by, action=action)
                )
            )
        return outcomes

    def _info(self, name: str, artifacts: list[Artifact]) -> ModelInfo:
        state = self.resolver.store.load().get(name)
        default = self.resolver.resolve(name, "") if state is None else None
        traffic = state.shares() if state else {default.manifest.version: 100.0} if default else {}
        variant = state.variant if state else self.resolver.default_variant
        versions: dict[str, list[Artifact]] = {}
        for a in artifacts:
            versions.setdefault(a.manifest.version, []).append(a)
        return ModelInfo(
            name=name,
            default=name == self.resolver.default_model(),
            active_version=(
                state.active if state else (default.manifest.version if default else None)
            ),
            traffic=traffic,
            variant=variant,
            versions=[
                VersionInfo(
                    version=v,
                    variants=sorted(a.manifest.variant for a in versions[v]),
                    test_artifact=any(a.manifest.test_artifact for a in versions[v]),
                    weight=traffic.get(v, 0.0),
                    active=traffic.get(v, 0.0) > 0,
                )
                for v in sorted_versions(versions)
            ],
        )

    def _by_name(self) -> dict[str, list[Artifact]]:
        found: dict[str, list[Artifact]] = {}
        for a in self.resolver.artifacts(max_age_s=0.0):
            if a.present:
                found.setdefault(a.manifest.name, []).append(a)
        return found

    def model_list(self) -> ModelList:
        return ModelList(
            default_model=self.resolver.default_model(),
            models=[self._info(name, arts) for name, arts in sorted(self._by_name().items())],
        )

    def model_detail(self, name: str) -> ModelDetail:
        artifacts = self._by_name().get(name)
        if not artifacts:
            raise ModelNotFoundError(f"no servable model named {name!r}", model=name)
        info = self._info(name, artifacts)
        checks = {str(a.manifest.identity): load_stored(a) for a in artifacts}
        return ModelDetail(
            **info.model_dump(),
            manifests={
                str(a.manifest.identity): a.manifest.model_dump(mode="json") for a in artifacts
            },
            quality_checks={k: v for k, v in checks.items() if v is not None},
        )

    async def _verify(self, artifacts: list[Artifact]) -> None:
        """Digests afresh (no cache): the gate must judge the bytes that will serve."""

        def verify(artifact: Artifact) -> None:
            self.resolver.registry.verify(artifact, use_cache=False)

        for artifact in artifacts:
            try:
                await anyio.to_thread.run_sync(verify, artifact)
            except SevensenseError as exc:
                metrics().model_loads.labels("gateway", *artifact.key[:2], "rejected").inc()
                raise ActivationError(
                    f"{artifact.manifest.identity} refused, the current version keeps serving: "
                    f"{exc.message}",
                    cause=exc.code,
                ) from exc

    async def _prepare_everywhere(
        self, artifacts: list[Artifact]
    ) -> dict[str, list[PrepareResult]]:
        """Have every ready path load and warm the (verified) versions."""
        await self.router.refresh(force=True)
        ready: list[ModelPath] = [p for p in self.router.paths if p.status and p.status.ready]
        if not ready:
            raise NoModelPathError("no model path is ready to load the new version")
        prepared: dict[str, list[PrepareResult]] = {}
        for path in ready:
            refs = [str(a.manifest.identity) for a in artifacts]
            try:
                results = list(await asyncio.gather(*(path.prepare(r) for r in refs)))
            except Exception as exc:
                raise ActivationError(
                    f"{path.name} model service did not answer while loading {', '.join(refs)}; "
                    f"the current version keeps serving: {exc}"
                ) from exc
            for result in results:
                if result.error:
                    raise ActivationError(
                        f"{path.name} model service could not load {result.ref}; the current "
                        f"version keeps serving: {result.error}",
                        cause=result.error_code,
                    )
            prepared[path.name] = results
        return prepared

    def _resolve_all(self, name: str, versions: list[str], variant: str) -> list[Artifact]:
        registry = self.resolver.registry
        return [registry.resolve(ModelRef(name, version, variant)) for version in versions]

    async def set_traffic(
        self,
        name: str,
        weights: Mapping[str, float],
        variant: str | None,
        by: str,
        force: bool = False,
    ) -> RolloutResponse:
        variant = variant or self.resolver.default_variant
        checked = RolloutState(weights=dict(weights), variant=variant)  # validates the weights
        live = [v for v, w in checked.weights.items() if w > 0]
        artifacts = self._resolve_all(name, live, variant)
        await self._verify(artifacts)
        gates = await self._gate(artifacts, force, by, "traffic")
        prepared = await self._prepare_everywhere(artifacts)
        state = self.resolver.store.set_weights(name, checked.weights, variant, by)
        _publish(name, state)
        return RolloutResponse(
            model=name, variant=variant, traffic=state.shares(), prepared=prepared, quality=gates
        )

    async def activate(
        self, name: str, version: str, variant: str | None, by: str, force: bool = False
    ) -> RolloutResponse:
        variant = variant or self.resolver.default_variant
        artifacts = self._resolve_all(name, [version], variant)
        await self._verify(artifacts)
        gates = await self._gate(artifacts, force, by, "activate")
        prepared = await self._prepare_everywhere(artifacts)
        state = self.resolver.store.activate(name, version, variant, by)
        _publish(name, state)
        return RolloutResponse(
            model=name, variant=variant, traffic=state.shares(), prepared=prepared, quality=gates
        )


def _publish(name: str, state: RolloutState) -> None:
    gauge = metrics().traffic_weight
    for version, share in state.shares().items():
        gauge.labels(name, version).set(share)
